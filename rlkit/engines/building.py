"""What every engine builds before it shards: the compute dtype, the scorer, activation checkpointing and
torch.compile of the decoder layers.

With engine.pack_sequences the model is switched to the packed attention (rlkit.engines.varlen_attention) for
good: every forward an engine runs is then a packed one (rlkit.engines.passes).

Both engines load the same model, add the same LoRA adapters and wrap it in the same scorer
(rlkit.engines.sequences); they differ only in what happens next (`fully_shard` or `deepspeed.initialize`).
"""

from __future__ import annotations

import torch
from torch import nn

from rlkit.config.engines import EngineConfig
from rlkit.engines.base import EngineSpec
from rlkit.engines.sequences import PolicyScorer, ValueScorer
from rlkit.engines.varlen_attention import use_varlen_attention
from rlkit.models.loading import load_causal_lm, load_critic
from rlkit.models.lora import apply_lora, hf_model_of

VALUE_HEAD = "score"  # the head of transformers' *ForTokenClassification decoders


def compute_dtype(config: EngineConfig, device: str) -> torch.dtype:
    """'auto' is bf16 on GPU and fp32 on CPU."""
    if config.precision == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[config.precision]


def build_scorer(spec: EngineSpec, config: EngineConfig, *, reference_dtype: torch.dtype | None) -> nn.Module:
    """Load the model in fp32, add LoRA, wrap it in its scorer. A frozen reference is cast to `reference_dtype`
    (None: left as loaded, for an engine that casts it itself). Seeded, so every rank builds identical new
    weights (value head, lora_A)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.role == "critic":
            model = load_critic(spec.model_path, trust_remote_code=spec.trust_remote_code)
        else:
            model = load_causal_lm(spec.model_path, trust_remote_code=spec.trust_remote_code)
        if spec.role == "ref":
            model.requires_grad_(False)
            if reference_dtype is not None:
                # cast parameters only: buffers such as rotary inv_freq stay fp32, as in the actor
                for param in model.parameters():
                    param.data = param.data.to(reference_dtype)
        elif spec.lora is not None:
            if spec.role == "critic":  # its new value head trains in full, next to the adapters
                model = apply_lora(model, spec.lora, task_type=None, fully_trained=(VALUE_HEAD,))
            else:
                model = apply_lora(model, spec.lora, task_type="CAUSAL_LM")
    if config.pack_sequences:
        use_varlen_attention(hf_model_of(model))
    if spec.role == "critic":
        return ValueScorer(model)
    return PolicyScorer(
        model, chunk_size=config.logprob_chunk_size, temperature=spec.temperature, compiled=config.torch_compile
    )


def decoder_layers(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks, found by the class names transformers lists in `_no_split_modules`."""
    layer_classes = set()
    for submodule in module.modules():
        layer_classes.update(getattr(submodule, "_no_split_modules", None) or ())
    return [submodule for submodule in module.modules() if type(submodule).__name__ in layer_classes]


def compile_decoder_layers(module: nn.Module) -> None:
    """torch.compile the forward of every decoder layer (engine.torch_compile). The layers share one code
    object and, with their parameters as graph inputs, one compiled graph; a new sequence length compiles
    once more, as a dynamic shape. Module hooks (FSDP, DeepSpeed, checkpointing) stay outside."""
    for layer in decoder_layers(module):
        layer.forward = torch.compile(layer.forward)


def apply_activation_checkpointing(hf_model: nn.Module) -> None:
    """Recompute each decoder layer in backward (transformers 5 only does it in train mode)."""
    # transformers before ~5.20 knows it only by its older name, gradient_checkpointing_enable
    enable = getattr(hf_model, "activation_checkpointing_enable", None) or hf_model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


def activation_checkpointing_is_on(hf_model: nn.Module) -> bool:
    # transformers before ~5.20 has only the older name, is_gradient_checkpointing
    if getattr(type(hf_model), "is_activation_checkpointing", None) is not None:
        return hf_model.is_activation_checkpointing
    return hf_model.is_gradient_checkpointing


def set_activation_checkpointing(hf_model: nn.Module, on: bool) -> None:
    """Switch activation checkpointing on or off after the model is sharded or compiled: transformers' layers
    read the switch at each call, outside the compiled forward and inside the sharding hooks."""
    if on == activation_checkpointing_is_on(hf_model):
        return
    if on:
        apply_activation_checkpointing(hf_model)
    else:
        disable = getattr(hf_model, "activation_checkpointing_disable", None) or \
            hf_model.gradient_checkpointing_disable
        disable()
