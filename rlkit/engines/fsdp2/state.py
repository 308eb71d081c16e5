"""Getting weights out of a sharded scorer and back in: streaming, checkpoints and Hugging Face exports.

Checkpoint format (one folder per engine, written as given; the trainer makes it atomic):
    model.safetensors  full weights in Hugging Face names (a LoRA run: only the trainable tensors, i.e. the
                       adapters in peft names and a critic's value head; the base comes from model_path)
    optimizer.pt       full AdamW state keyed by parameter name (torch.save; loaded with weights_only=True)
    scheduler.json     the LambdaLR state
Everything is gathered to rank 0, which writes; on load rank 0 reads and broadcasts to the others.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LambdaLR

from rlkit.distributed import barrier
from rlkit.engines.sequences import WRAPPER_PREFIX, strip_wrapper_prefix
from rlkit.errors import CheckpointError
from rlkit.models.lora import hf_model_of, hf_weights, is_peft_model

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"
ADAPTER_DIR = "adapter"


def materialize(tensor: Tensor) -> Tensor:
    """The full tensor of a (possibly sharded) parameter or buffer, on the compute device. Collective."""
    tensor = tensor.detach()
    if not isinstance(tensor, DTensor):
        return tensor
    device_type = tensor.device_mesh.device_type
    if tensor.device.type != device_type:  # cpu_offload keeps shards on CPU; the collective runs on the device
        tensor = tensor.to(device_type)
    return tensor.full_tensor()


def full_weights(scorer: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(Hugging Face name, full tensor) one at a time, LoRA merged in. Every rank must iterate in step."""
    yield from hf_weights(scorer.model, materialize)


# -- checkpoints ---------------------------------------------------------------------------------------
def save_checkpoint(
    scorer: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: LambdaLR | None,
    directory: Path,
    *,
    is_main: bool,
) -> None:
    """Write the checkpoint files into `directory` (collective; rank 0 writes)."""
    directory = Path(directory)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=is_peft_model(scorer.model))
    model_state = get_model_state_dict(scorer, options=options)
    optimizer_state = get_optimizer_state_dict(scorer, optimizer, options=options) if optimizer else None
    if is_main:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(_unshared({strip_wrapper_prefix(k): v for k, v in model_state.items()}), directory / MODEL_FILE)
        if optimizer_state is not None:
            torch.save(optimizer_state, directory / OPTIMIZER_FILE)
            (directory / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict(), indent=1))
    barrier()


def load_checkpoint(
    scorer: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: LambdaLR | None,
    directory: Path,
    *,
    is_main: bool,
) -> None:
    """Restore what `save_checkpoint` wrote (collective; rank 0 reads and broadcasts)."""
    directory = Path(directory)
    needed = [MODEL_FILE] + ([OPTIMIZER_FILE, SCHEDULER_FILE] if optimizer else [])
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {directory} lacks {', '.join(missing)}: it is incomplete or not an engine checkpoint"
        )

    lora = is_peft_model(scorer.model)
    model_state = {}
    if is_main:
        model_state = {WRAPPER_PREFIX + k: v for k, v in load_file(directory / MODEL_FILE).items()}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=not lora)
    try:
        set_model_state_dict(scorer, model_state, options=options)
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(f"{directory / MODEL_FILE} does not fit this model: {error}") from error
    if optimizer is not None:
        optimizer_state = torch.load(directory / OPTIMIZER_FILE, weights_only=True) if is_main else {}
        set_optimizer_state_dict(scorer, optimizer, optimizer_state, options=options)
        scheduler.load_state_dict(json.loads((directory / SCHEDULER_FILE).read_text()))


# -- Hugging Face export ------------------------------------------------------------------------------
def export_hf(scorer: nn.Module, directory: Path, *, is_main: bool, save_adapter: bool) -> None:
    """A folder `from_pretrained` loads: config.json, model.safetensors (LoRA merged), generation_config.json;
    with `save_adapter` also the peft adapter in `directory/adapter`. Collective; rank 0 writes."""
    directory = Path(directory)
    hf_model = hf_model_of(scorer.model)
    tied = _tied_duplicates(hf_model)
    weights = {}
    for name, tensor in full_weights(scorer):
        if is_main and name not in tied:
            weights[name] = tensor.cpu()
    adapter = _adapter_weights(scorer) if save_adapter else None
    if is_main:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(weights, directory / MODEL_FILE, metadata={"format": "pt"})
        config = copy.deepcopy(hf_model.config)
        config.architectures = [type(hf_model).__name__]
        config.save_pretrained(directory)
        if hf_model.can_generate() and hf_model.generation_config is not None:
            hf_model.generation_config.save_pretrained(directory)
        if adapter is not None:
            _save_adapter(scorer.model, adapter, directory / ADAPTER_DIR)
    barrier()


def _adapter_weights(scorer: nn.Module) -> dict[str, Tensor]:
    """Full LoRA tensors in the peft model's names (collective)."""
    return {
        name: materialize(param).cpu()
        for name, param in scorer.model.named_parameters()
        if ".lora_" in f".{name}"
    }


def _save_adapter(peft_model: nn.Module, adapter: dict[str, Tensor], directory: Path) -> None:
    """peft's save_pretrained on an unsharded copy (it fails on the sharded model). The copy is built on the
    meta device: an adapter file holds only the adapters, so the base weights are never materialised."""
    from peft import get_peft_model

    hf_model = hf_model_of(peft_model)
    peft_config = copy.deepcopy(peft_model.peft_config["default"])
    with torch.device("meta"):
        base = type(hf_model)(copy.deepcopy(hf_model.config))  # the loaded class: no auto mapping, no remote code
    copy_model = get_peft_model(base, peft_config)
    copy_model.load_state_dict(adapter, strict=False, assign=True)
    copy_model.save_pretrained(directory)


def _tied_duplicates(hf_model: nn.Module) -> set[str]:
    """State-dict names that repeat an earlier entry's tensor (a tied LM head): save_pretrained drops them."""
    seen, duplicates = set(), set()
    for name, tensor in hf_model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            duplicates.add(name)
        seen.add(id(tensor))
    return duplicates


def _unshared(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors that share memory (tied weights): give repeats their own copy."""
    seen, result = set(), {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        result[name] = tensor.clone() if key in seen else tensor.contiguous()
        seen.add(key)
    return result
