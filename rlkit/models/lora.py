"""LoRA through peft: wrapping a model, and its weights merged back into Hugging Face names.

`hf_weights` is how every engine streams weights to a rollout engine or writes an export: it walks the
Hugging Face state dict one tensor at a time, asks the engine to materialise each (DTensor.full_tensor
for FSDP2, a ZeRO-3 gather for DeepSpeed), and for a LoRA model yields the merged base weight
W + (B @ A) * alpha / r under the base name, exactly what peft's `merge_and_unload` would store, with no
`lora_` or `base_layer` names; a module in `modules_to_save` (trained in full) yields its trained copy under
the module's own name. The merge runs per layer on full tensors, so the sharded model itself is never
touched (peft's own merge fails on it).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from rlkit.config.schema import LoraConfig
from rlkit.errors import ConfigError

ADAPTER_NAME = "default"
_BASE_LAYER = ".base_layer"
_TRAINED_COPY = f".modules_to_save.{ADAPTER_NAME}."  # peft's ModulesToSaveWrapper: the copy that trains
_ORIGINAL = ".original_module."  # ... and the original it keeps for the adapters-off (reference) pass


def apply_lora(
    model: nn.Module, config: LoraConfig, *, task_type: str | None = "CAUSAL_LM", fully_trained: tuple[str, ...] = ()
) -> nn.Module:
    """Wrap `model` in a peft LoRA model; only the adapters train, the modules of `config.modules_to_save`
    (a trained copy beside the original, which the adapters-off reference pass uses), and the modules named
    in `fully_trained` (a critic's new value head), which get no adapter. lora_A is drawn from torch's RNG:
    seed it for identical copies on every rank."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from peft.tuners.lora import Linear as LoraLinear

    check_modules_to_save(model, config.modules_to_save or [])
    peft_config = PeftLoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        exclude_modules=list(fully_trained) or None,
        modules_to_save=list(config.modules_to_save or []) or None,
        task_type=task_type,
    )
    try:
        peft_model = get_peft_model(model, peft_config)
    except ValueError as error:
        raise ConfigError(f"model.lora.target_modules={config.target_modules!r}: {error}") from error
    for name in fully_trained:
        getattr(hf_model_of(peft_model), name).requires_grad_(True)
    for name, module in lora_layers(peft_model).items():
        if type(module) is not LoraLinear:
            raise ConfigError(
                f"model.lora.target_modules matches '{name}' ({type(module).__name__}); rlkit merges LoRA into "
                "linear layers only: list linear modules (e.g. q_proj, v_proj) or use 'all-linear'"
            )
    return peft_model


def check_modules_to_save(model: nn.Module, names: list[str]) -> None:
    """Each name is a module of `model`, and none is an output layer tied to the input embeddings: its trained
    copy would be untied, and the saved folder, which says the two are tied, would lose it."""
    modules = dict(model.named_modules())
    tied_head = model.get_output_embeddings() if getattr(model.config, "tie_word_embeddings", False) else None
    for name in names:
        matches = [module for path, module in modules.items() if path == name or path.endswith(f".{name}")]
        if not matches:
            raise ConfigError(f"model.lora.modules_to_save names '{name}', which this model does not have; "
                              "give module names such as lm_head")
        if tied_head is not None and any(module is tied_head for module in matches):
            raise ConfigError(f"model.lora.modules_to_save: '{name}' is tied to the input embeddings in this model "
                              "(tie_word_embeddings), so it cannot train as a separate copy; remove it")


def is_peft_model(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def hf_model_of(model: nn.Module) -> nn.Module:
    """The transformers model: itself, or the one inside a peft wrapper (LoRA layers injected in place)."""
    return model.get_base_model() if is_peft_model(model) else model


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """LoRA layers by their name in the transformers model."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in hf_model_of(model).named_modules() if isinstance(module, LoraLayer)}


def hf_weights(model: nn.Module, materialize: Callable[[Tensor], Tensor]) -> Iterator[tuple[str, Tensor]]:
    """(name, full tensor) for every entry of the Hugging Face state dict, LoRA merged in, one at a time.

    `materialize` turns a (possibly sharded) parameter or buffer into a full, detached tensor; with FSDP2
    every rank must call this generator in step, since each materialisation is a collective.
    """
    hf_model = hf_model_of(model)
    layers = lora_layers(model)
    for name, tensor in hf_model.state_dict(keep_vars=True).items():
        owner, _, leaf = name.rpartition(".")
        if ".lora_" in f".{name}" or _ORIGINAL in f".{name}":
            continue  # lora_A / lora_B: folded into their base weight below; a trained module's original: replaced
        if _TRAINED_COPY in name:
            yield name.replace(_TRAINED_COPY, "."), materialize(tensor)
            continue
        if owner.endswith(_BASE_LAYER) and owner[: -len(_BASE_LAYER)] in layers:
            layer_name = owner[: -len(_BASE_LAYER)]
            full = materialize(tensor)
            if leaf == "weight":
                full = merge_lora(full, layers[layer_name], materialize)
            yield f"{layer_name}.{leaf}", full
        else:
            yield name, materialize(tensor)


def merge_lora(weight: Tensor, layer: nn.Module, materialize: Callable[[Tensor], Tensor]) -> Tensor:
    """weight + transpose(B @ A) * scaling, in weight's dtype: peft's `Linear.get_delta_weight` + merge."""
    if ADAPTER_NAME not in layer.lora_A:
        return weight
    lora_A = materialize(layer.lora_A[ADAPTER_NAME].weight)
    lora_B = materialize(layer.lora_B[ADAPTER_NAME].weight)
    # peft upcasts half-precision adapters on CPU before the product; mirror it for identical numbers
    upcast = lora_B.device.type == "cpu" and lora_B.dtype in (torch.float16, torch.bfloat16)
    delta = lora_B.float() @ lora_A.float() if upcast else lora_B @ lora_A
    if layer.fan_in_fan_out:
        delta = delta.T
    delta = delta * layer.scaling[ADAPTER_NAME]
    return weight + delta.to(lora_B.dtype if upcast else delta.dtype)
