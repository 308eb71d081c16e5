"""The files engines write and read, whatever shards them: checkpoints and Hugging Face exports.

Checkpoint format (one folder per engine, written as given; the trainer makes it atomic), the same for every
engine, stage and world size, so a checkpoint moves between them:
    model.safetensors  full weights in Hugging Face names (a LoRA run: only the trainable tensors, i.e. the
                       adapters in peft names and a critic's value head; the base comes from model_path)
    optimizer.pt       full AdamW state keyed by parameter name (torch.save; loaded with weights_only=True)
    scheduler.json     the LambdaLR state
Hugging Face export: config.json, model.safetensors (LoRA merged, tied duplicates left out),
generation_config.json, and a LoRA actor's peft adapter in adapter/.

How the full tensors are gathered is the engine's (its state.py); everything here runs on rank 0 only,
except `export_hf`, which is collective.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from rlkit.distributed import barrier
from rlkit.errors import CheckpointError
from rlkit.models.lora import hf_model_of, hf_weights

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"
ADAPTER_DIR = "adapter"


# -- checkpoints ---------------------------------------------------------------------------------------
def write_checkpoint(
    directory: Path, model_state: dict[str, Tensor], optimizer_state: dict | None, scheduler: LambdaLR | None
) -> None:
    """Write the checkpoint files (rank 0): `model_state` in Hugging Face names, full CPU tensors; the
    optimizer and scheduler files only with an `optimizer_state`."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_unshared(model_state), directory / MODEL_FILE)
    if optimizer_state is not None:
        torch.save(optimizer_state, directory / OPTIMIZER_FILE)
        (directory / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict(), indent=1))


def require_files(directory: Path, *, with_optimizer: bool) -> None:
    """Raise CheckpointError naming the files `directory` lacks."""
    needed = [MODEL_FILE] + ([OPTIMIZER_FILE, SCHEDULER_FILE] if with_optimizer else [])
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {directory} lacks {', '.join(missing)}: it is incomplete or not an engine checkpoint"
        )


def read_model_state(directory: Path) -> dict[str, Tensor]:
    return load_file(directory / MODEL_FILE)


def read_optimizer_state(directory: Path) -> dict:
    return torch.load(directory / OPTIMIZER_FILE, weights_only=True)  # tensors and numbers: nothing unpickles


def read_scheduler_state(directory: Path) -> dict:
    return json.loads((directory / SCHEDULER_FILE).read_text())


def _unshared(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors that share memory (tied weights): give repeats their own copy."""
    seen, result = set(), {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        result[name] = tensor.clone() if key in seen else tensor.contiguous()
        seen.add(key)
    return result


# -- Hugging Face export ------------------------------------------------------------------------------
def export_hf(
    scorer: nn.Module, directory: Path, materialize: Callable[[Tensor], Tensor], *, is_main: bool, save_adapter: bool
) -> None:
    """A folder `from_pretrained` loads: config.json, model.safetensors (LoRA merged), generation_config.json;
    with `save_adapter` also the peft adapter in `directory/adapter`. `materialize` gives the full tensor of
    one (possibly sharded) parameter or buffer, collectively. Collective; rank 0 writes."""
    directory = Path(directory)
    hf_model = hf_model_of(scorer.model)
    tied = _tied_duplicates(hf_model)
    weights = {}
    for name, tensor in hf_weights(scorer.model, materialize):
        if is_main and name not in tied:
            weights[name] = tensor.cpu()
    adapter = None
    if save_adapter:  # full LoRA tensors (and modules trained in full) in the peft model's names
        adapter = {
            name: materialize(param).cpu() for name, param in scorer.model.named_parameters()
            if ".lora_" in f".{name}" or ".modules_to_save." in name
        }
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
