"""Getting weights out of an FSDP2-sharded scorer and back in: streaming, checkpoints and Hugging Face exports.

The files are rlkit.engines.checkpoint_files' (which documents them). torch's distributed state-dict API
gathers everything to rank 0, which writes; on load rank 0 reads and broadcasts to the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
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
from rlkit.engines import checkpoint_files as files
from rlkit.engines.sequences import WRAPPER_PREFIX, strip_wrapper_prefix
from rlkit.errors import CheckpointError
from rlkit.models.lora import hf_weights, is_peft_model


def materialize(tensor: Tensor) -> Tensor:
    """The full tensor of a (possibly sharded) parameter or buffer, on the compute device: for a DTensor a copy of
    its own. Collective."""
    if not isinstance(tensor, DTensor):
        return tensor.detach()
    device_type = tensor.device_mesh.device_type
    with torch.no_grad():
        local = tensor.to_local()
        if tensor.device_mesh.size() == 1 and local.shape == tensor.shape:
            # one rank holds the whole tensor: copy it, without full_tensor's all-gather machinery, which costs
            # ~0.1 ms of host time a tensor (streaming SmolLM2-shaped weights on an H200: 29-47 ms with it, 8-11 ms
            # without; docs/benchmarks.md, eleventh session)
            return local.to(device_type, copy=True)
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
        hf_state = {strip_wrapper_prefix(k): v for k, v in model_state.items()}
        files.write_checkpoint(directory, hf_state, optimizer_state, scheduler)
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
    files.require_files(directory, with_optimizer=optimizer is not None)

    lora = is_peft_model(scorer.model)
    model_state = {}
    if is_main:
        model_state = {WRAPPER_PREFIX + k: v for k, v in files.read_model_state(directory).items()}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=not lora)
    try:
        set_model_state_dict(scorer, model_state, options=options)
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(f"{directory / files.MODEL_FILE} does not fit this model: {error}") from error
    if optimizer is not None:
        optimizer_state = files.read_optimizer_state(directory) if is_main else {}
        set_optimizer_state_dict(scorer, optimizer, optimizer_state, options=options)
        scheduler.load_state_dict(files.read_scheduler_state(directory))


# -- Hugging Face export ------------------------------------------------------------------------------
def export_hf(scorer: nn.Module, directory: Path, *, is_main: bool, save_adapter: bool) -> None:
    """checkpoint_files' export layout, LoRA merged (collective; rank 0 writes)."""
    files.export_hf(scorer, directory, materialize, is_main=is_main, save_adapter=save_adapter)
