"""The DeepSpeed config dict of one engine, built from DeepSpeedOptions, OptimConfig and runtime values.

rlkit, not DeepSpeed, drives gradient accumulation: `forward_backward` may run any number of micro-batches
before `optimizer_step`, so the micro-batch count is unknown when the engine is built. The config therefore
turns DeepSpeed's counter off (`managed_gradient_accumulation: false`: every `engine.step()` is the
accumulation boundary) and sets `gradient_accumulation_steps: 1`, so that `engine.backward` never divides
the loss; `train_micro_batch_size_per_gpu` is then only DeepSpeed's sample bookkeeping. The optimizer and
the learning-rate schedule are rlkit's own (rlkit/engines/optim.py), passed to `deepspeed.initialize`, so
the config has no "optimizer" or "scheduler" block.

Speed at world size 1 (docs/engines.md). ZeRO-3 gathers a module's parameters in a hook before each forward
and backward and frees them after (`PartitionedParameterCoordinator.fetch_sub_module` / `release_sub_module`),
even when its one rank already holds every element: an allocation, a copy and Python bookkeeping per module
per micro-batch. On one rank every parameter is made persistent instead (gathered once, kept; DeepSpeed
refreshes them after each optimizer step), at the cost of a second bf16 copy of the weights, and the
reference model, which has no optimizer state to partition, is a plain DeepSpeed engine (stage 0) unless it
is offloaded to CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from rlkit.config.engines import OptimConfig
from rlkit.engines.base import Role
from rlkit.engines.deepspeed.options import DeepSpeedOptions

# DeepSpeed prints a progress line every `steps_per_print` steps; rlkit logs its own metrics.
_NEVER = 2**62
# stage3_param_persistence_threshold above any parameter's size: every parameter stays gathered
_EVERY_PARAMETER = 2**62
# DeepSpeed's memory-efficient linear (on by default under ZeRO-3) replaces torch.nn.functional.linear for the
# whole process, for good: every other model in it (the in-process vLLM engine's, a FSDP2 critic's) then runs
# DeepSpeed's autograd Function, and torch.compile guards on each weight's ZeRO id. Plain F.linear gives the same
# results; ZeRO-3 gathers the weights for backward either way.
_PLAIN_LINEAR = {"memory_efficient_linear": False}


def build_ds_config(
    options: DeepSpeedOptions,
    *,
    role: Role,
    optim: OptimConfig | None,
    world_size: int,
    compute_dtype: torch.dtype,
    on_cuda: bool,
) -> dict[str, Any]:
    """The dict handed to `deepspeed.initialize(config=...)`.

    Actor and critic: ZeRO `options.zero_stage` with an optimizer. The reference: a ZeRO-3 inference engine
    (parameters partitioned, no optimizer), its parameters on CPU with `offload_ref`; at world size 1 without
    `offload_ref`, a plain engine (stage 0: nothing to partition, no hooks). See the module docstring.
    """
    bf16 = compute_dtype == torch.bfloat16
    ds_config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "bf16": {"enabled": bf16},
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }
    if role == "ref":
        ds_config["zero_optimization"] = _reference_zero_block(options, world_size, on_cuda)
        return ds_config

    assert optim is not None, "a trainable engine needs its OptimConfig"
    ds_config.update(
        {
            "managed_gradient_accumulation": False,
            # DeepSpeed clips at 1.0 unless told; 0 switches clipping off
            "gradient_clipping": optim.grad_clip if optim.grad_clip is not None else 0.0,
            # a torch AdamW passed to deepspeed.initialize: nothing is compiled
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": options.optimizer_impl == "deepspeed",
            "zero_optimization": _zero_block(options, world_size, on_cuda),
        }
    )
    if bf16:
        # bf16 compute, fp32 gradient accumulation and reduction (as FSDP2's reduce_dtype=fp32)
        ds_config["data_types"] = {"grad_accum_dtype": "fp32"}
        ds_config["communication_data_type"] = "fp32"
    return ds_config


def reference_zero_stage(options: DeepSpeedOptions, world_size: int) -> int:
    """The reference engine's ZeRO stage: 3 (partitioned, or offloaded with offload_ref), 0 on one rank."""
    return 3 if world_size > 1 or options.offload_ref else 0


def _reference_zero_block(options: DeepSpeedOptions, world_size: int, on_cuda: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": reference_zero_stage(options, world_size), **_PLAIN_LINEAR}
    if options.offload_ref:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_cuda}
    return zero


def _zero_block(options: DeepSpeedOptions, world_size: int, on_cuda: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {
        "stage": options.zero_stage,
        # overlapping reduction with backward needs side streams (GPU), with caller-driven accumulation
        # partitioned gradients (ZeRO-2/3), and other ranks: one rank has nothing to overlap
        "overlap_comm": on_cuda and options.zero_stage >= 2 and world_size > 1,
        "contiguous_gradients": True,
        **_PLAIN_LINEAR,
    }
    if options.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_cuda}
    if options.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_cuda}
    elif options.zero_stage == 3 and world_size == 1:
        # one rank holds every element anyway: gather each parameter once instead of per module and pass
        zero["stage3_param_persistence_threshold"] = _EVERY_PARAMETER
        zero["stage3_model_persistence_threshold"] = _EVERY_PARAMETER
    return zero
