"""Getting weights out of a DeepSpeed engine and back in: streaming, checkpoints and Hugging Face exports.

The files are every engine's (rlkit/engines/checkpoint_files.py), so a checkpoint does not depend on the
engine, ZeRO stage or world size that wrote it:
    model.safetensors  full fp32 weights in Hugging Face names (LoRA: only the trainable tensors)
    optimizer.pt       {"state": {name: {step, exp_avg, exp_avg_sq}}, "param_groups": [...]}, keyed by the
                       scorer's parameter names (torch.save of tensors and numbers: weights_only loads it)
    scheduler.json     the LambdaLR state
DeepSpeed's own checkpoints are not used: they are per-rank partitions, and loading them unpickles.

Under ZeRO the optimizer updates flat fp32 partitions, not the module's parameters; DeepSpeed's tensor-
fragment API (`deepspeed.utils.safe_get_full_fp32_param`, `safe_get_full_optimizer_state` and their
setters) maps a module parameter to its fp32 master copy and AdamW moments, one parameter at a time and
collectively. Rank 0 writes and reads the files; loading broadcasts each tensor from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from rlkit.distributed import barrier, broadcast_object, is_distributed
from rlkit.engines import checkpoint_files as files
from rlkit.engines.sequences import strip_wrapper_prefix
from rlkit.errors import CheckpointError
from rlkit.models.lora import hf_weights, is_peft_model

_MOMENTS = ("exp_avg", "exp_avg_sq")


# -- weights -------------------------------------------------------------------------------------------
def materialize(tensor: Tensor) -> Tensor:
    """The full tensor of a parameter or buffer on its device. Collective for ZeRO-3 parameters and for
    trainable parameters the module holds in bf16: those come from the optimizer's fp32 master copy."""
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters
    from deepspeed.utils import safe_get_full_fp32_param

    if isinstance(tensor, nn.Parameter) and tensor.requires_grad and tensor.dtype != torch.float32:
        master = safe_get_full_fp32_param(tensor)
        if master is not None:
            return master.detach()
    if hasattr(tensor, "ds_id"):  # a ZeRO-3 partition: gather this one parameter
        with GatheredParameters([tensor]):
            return tensor.detach().clone()
    return tensor.detach()


def full_weights(scorer: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(Hugging Face name, full tensor) one at a time, LoRA merged in. Every rank must iterate in step."""
    yield from hf_weights(scorer.model, materialize)


def weights_the_cast_rounds(scorer: nn.Module, dtype: torch.dtype) -> dict[str, Tensor]:
    """The trainable parameters whose fp32 values `dtype` cannot hold exactly (none for fp32): the loaded tensors
    themselves, not copies. DeepSpeed's cast and move make new tensors, so these keep the loaded values at no more
    memory than the model held before the cast, until `restore_fp32_weights` has used them.

    With bf16 or fp16 on, `deepspeed.initialize` casts the module and builds its fp32 master copy from the
    cast, so a model saved in fp32 (an rlkit export, any fine-tuned checkpoint) would train from rounded
    weights: an update smaller than half a bf16 step from a rounded value never changes the forward, while
    FSDP2, whose fp32 masters keep the loaded values, moves (a GRPO run at lr 5e-6 on one H200 kept its KL to
    the reference flat for 20 steps). `restore_fp32_weights` puts the values back into the masters.
    """
    if dtype == torch.float32:
        return {}
    return {
        name: param.detach()
        for name, param in _trainable(scorer)
        if param.dtype == torch.float32 and not torch.equal(param, param.to(dtype).to(torch.float32))
    }


def restore_fp32_weights(scorer: nn.Module, weights: dict[str, Tensor]) -> None:
    """Set the fp32 masters (and the module's cast copies) of `weights`' parameters to their values. Every
    rank holds the whole model before ZeRO partitions it, so each sets its own share (collective)."""
    for name, param in _trainable(scorer):
        if name in weights:
            _assign(param, weights[name])


# -- optimizer state -------------------------------------------------------------------------------------
def init_optimizer_state(optimizer: torch.optim.Optimizer, zero_optimizer: object) -> None:
    """Create now the state AdamW creates at its first step (step 0, zero moments) for each flat fp32
    partition, and link DeepSpeed's per-parameter views into it, so that `load_checkpoint` can fill it in
    before any step. The first step then runs exactly as it would have from a lazily created state."""
    for flat in _flat_partitions(zero_optimizer):
        state = optimizer.state[flat]
        if state:
            continue
        state["step"] = _initial_step(optimizer, flat)
        for key in _MOMENTS:
            state[key] = torch.zeros_like(flat, memory_format=torch.preserve_format)
    link_optimizer_state(zero_optimizer)


def _initial_step(optimizer: torch.optim.Optimizer, flat: Tensor) -> Tensor | int:
    """Step 0 as the optimizer keeps it: DeepSpeed's Adams count in an int, torch's AdamW in a float32 tensor, on
    the CPU unless fused or capturable (then on the parameter's device, which the fused kernel requires)."""
    if not isinstance(optimizer, torch.optim.AdamW):
        return 0
    on_device = optimizer.defaults.get("fused") or optimizer.defaults.get("capturable")
    return torch.tensor(0.0, dtype=torch.float32, device=flat.device if on_device else "cpu")


def link_optimizer_state(zero_optimizer: object) -> None:
    """Point the per-parameter views of ZeRO-1/2 (and bf16 ZeRO-1) at the current optimizer state tensors.
    DeepSpeed links them once, after its first step, and `offload_states` drops them; ZeRO-3 needs no
    views (it reads the state directly)."""
    if hasattr(zero_optimizer, "_lazy_init_hp_params_optimizer_state"):
        zero_optimizer._hp_optimizer_states_linked = False
        zero_optimizer._lazy_init_hp_params_optimizer_state()


def _flat_partitions(zero_optimizer: object) -> list[Tensor]:
    """The fp32 tensors the base optimizer updates, keys of its state: this rank's partition of each group
    (ZeRO-1/2), of each group with bf16 ZeRO-1 (DeepSpeed's BF16_Optimizer), of each sub-group (ZeRO-3)."""
    for name in ("single_partition_of_fp32_groups", "fp32_groups_flat_partition", "fp32_partitioned_groups_flat"):
        if hasattr(zero_optimizer, name):
            return list(getattr(zero_optimizer, name))
    raise TypeError(f"rlkit does not know where {type(zero_optimizer).__name__} keeps its fp32 partitions")


def _step_count(optimizer: torch.optim.Optimizer) -> float:
    """The number of steps taken: the same for every flat partition, since ZeRO steps them together."""
    steps = {float(state["step"]) for state in optimizer.state.values() if "step" in state}
    assert len(steps) <= 1, f"flat partitions disagree on the step count: {steps}"
    return steps.pop() if steps else 0.0


def _set_step_count(optimizer: torch.optim.Optimizer, step: float) -> None:
    for state in optimizer.state.values():
        if isinstance(state.get("step"), Tensor):
            state["step"].fill_(step)
        elif "step" in state:
            state["step"] = int(step)


# -- checkpoints -----------------------------------------------------------------------------------------
def save_checkpoint(
    scorer: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: LambdaLR | None,
    directory: Path,
    *,
    is_main: bool,
) -> None:
    """Write the checkpoint files into `directory` (collective; rank 0 writes)."""
    from deepspeed.utils import safe_get_full_optimizer_state

    directory = Path(directory)
    model_state = {}
    for name, tensor in _checkpoint_entries(scorer):
        full = _fp32(tensor)
        if is_main:
            model_state[strip_wrapper_prefix(name)] = full.cpu()
    optimizer_state = None
    if optimizer is not None:
        step = torch.tensor(_step_count(optimizer))
        state = {}
        for name, param in _trainable(scorer):
            moments = {key: safe_get_full_optimizer_state(param, key) for key in _MOMENTS}
            if is_main:
                state[name] = {"step": step.clone(), **{key: value.cpu() for key, value in moments.items()}}
        hyper = {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}
        optimizer_state = {"state": state, "param_groups": [{**hyper, "params": list(state)}]}
    if is_main:
        files.write_checkpoint(directory, model_state, optimizer_state, scheduler)
    barrier()


def load_checkpoint(
    scorer: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: LambdaLR | None,
    directory: Path,
    *,
    is_main: bool,
    device: torch.device,
) -> None:
    """Restore what `save_checkpoint` wrote (collective; rank 0 reads, every tensor is broadcast from it)."""
    from deepspeed.utils import safe_set_full_optimizer_state

    directory = Path(directory)
    entries = dict(_checkpoint_entries(scorer))
    trainable = dict(_trainable(scorer)) if optimizer is not None else {}
    model_state, optimizer_state, error = {}, {}, None
    if is_main:
        try:
            model_state, optimizer_state = _read_files(directory, optimizer is not None)
            _check_fits(model_state, optimizer_state, entries, trainable, directory)
        except CheckpointError as caught:
            error = str(caught)
    error = broadcast_object(error)
    if error is not None:
        raise CheckpointError(error)

    for name, tensor in entries.items():
        _assign(tensor, _broadcast(model_state.get(strip_wrapper_prefix(name)), tensor, device))
    if optimizer is None:
        return
    for name, param in trainable.items():
        for key in _MOMENTS:
            value = _broadcast(optimizer_state["state"][name][key] if is_main else None, param, device)
            safe_set_full_optimizer_state(param, value, key)
    meta = broadcast_object(
        (
            float(next(iter(optimizer_state["state"].values()))["step"]) if is_main and trainable else 0.0,
            {k: v for k, v in optimizer_state["param_groups"][0].items() if k != "params"} if is_main else {},
            files.read_scheduler_state(directory) if is_main else {},
        )
    )
    step, hyper, scheduler_state = meta
    _set_step_count(optimizer, step)
    for group in optimizer.param_groups:
        group.update({key: value for key, value in hyper.items() if key in group})
    scheduler.load_state_dict(scheduler_state)


def _read_files(directory: Path, with_optimizer: bool) -> tuple[dict[str, Tensor], dict]:
    files.require_files(directory, with_optimizer=with_optimizer)
    try:
        model_state = files.read_model_state(directory)
        optimizer_state = files.read_optimizer_state(directory) if with_optimizer else {}
    except Exception as error:  # safetensors and torch.load raise several types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {directory}: {error}") from error
    return model_state, optimizer_state


def _check_fits(
    model_state: dict[str, Tensor], optimizer_state: dict, entries: dict, trainable: dict, directory: Path
) -> None:
    """Names and shapes of the files must be this model's, so that every rank then broadcasts in step."""
    expected = {strip_wrapper_prefix(name): _full_shape(tensor) for name, tensor in entries.items()}
    found = {name: tuple(tensor.shape) for name, tensor in model_state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:5]
        unexpected = sorted(set(found) - set(expected))[:5]
        wrong = sorted(name for name in set(expected) & set(found) if expected[name] != found[name])[:5]
        raise CheckpointError(
            f"{directory / files.MODEL_FILE} does not fit this model: missing {missing}, unexpected {unexpected}, "
            f"shape mismatch {wrong}"
        )
    if trainable:
        state = optimizer_state.get("state", {})
        missing = [name for name in trainable if not {"step", *_MOMENTS} <= set(state.get(name, {}))]
        if missing:
            raise CheckpointError(f"{directory / files.OPTIMIZER_FILE} lacks AdamW state for {missing[:5]}")
        if len({float(state[name]["step"]) for name in trainable}) > 1:
            raise CheckpointError(
                f"{directory / files.OPTIMIZER_FILE} holds different step counts per parameter, which ZeRO's flat "
                "optimizer cannot represent"
            )


def _broadcast(value: Tensor | None, like: Tensor, device: torch.device) -> Tensor:
    """Rank 0's full fp32 `value` on every rank (shaped as the full `like`)."""
    if not is_distributed():
        return value
    if value is None:
        value = torch.empty(_full_shape(like), dtype=torch.float32, device=device)
    else:
        value = value.to(device=device, dtype=torch.float32)
    torch.distributed.broadcast(value, src=0)
    return value


def _assign(tensor: Tensor, value: Tensor) -> None:
    """Set a module parameter (and its fp32 master copy) or buffer to the full `value`, on every rank."""
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters
    from deepspeed.utils import safe_set_full_fp32_param

    value = value.to(tensor.device)
    if isinstance(tensor, nn.Parameter) and tensor.requires_grad:
        safe_set_full_fp32_param(tensor, value)
    if hasattr(tensor, "ds_id"):
        # every rank holds `value`; DeepSpeed repartitions rank 0's copy on exit
        with GatheredParameters([tensor], modifier_rank=0):
            tensor.data.copy_(value)
    else:
        tensor.data.copy_(value)


def _checkpoint_entries(scorer: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(scorer name, parameter or buffer) of the state dict a checkpoint holds: a LoRA model's frozen base
    is left out (it comes from model_path again)."""
    lora = is_peft_model(scorer.model)
    for name, tensor in scorer.state_dict(keep_vars=True).items():
        if lora and isinstance(tensor, nn.Parameter) and not tensor.requires_grad:
            continue
        yield name, tensor


def _trainable(scorer: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((name, param) for name, param in scorer.named_parameters() if param.requires_grad)


def _fp32(tensor: Tensor) -> Tensor:
    return materialize(tensor).float()


def _full_shape(tensor: Tensor) -> tuple[int, ...]:
    return tuple(tensor.ds_shape) if hasattr(tensor, "ds_shape") else tuple(tensor.shape)


# -- Hugging Face export ----------------------------------------------------------------------------------
def export_hf(scorer: nn.Module, directory: Path, *, is_main: bool, save_adapter: bool) -> None:
    """checkpoint_files' export layout, LoRA merged (collective; rank 0 writes)."""
    files.export_hf(scorer, directory, materialize, is_main=is_main, save_adapter=save_adapter)
