"""The DeepSpeed config dict of one engine, built from DeepSpeedOptions, OptimConfig and runtime values.

rlkit, not DeepSpeed, drives gradient accumulation: `forward_backward` may run any number of micro-batches
before `optimizer_step`, so the micro-batch count is unknown when the engine is built. The config therefore
turns DeepSpeed's counter off (`managed_gradient_accumulation: false`: every `engine.step()` is the
accumulation boundary) and sets `gradient_accumulation_steps: 1`, so that `engine.backward` never divides
the loss; `train_micro_batch_size_per_gpu` is then only DeepSpeed's sample bookkeeping. The optimizer and
the learning-rate schedule are rlkit's own (rlkit/engines/optim.py), passed to `deepspeed.initialize`, so
the config has no "optimizer" or "scheduler" block.
"""

from __future__ import annotations

from typing import Any

import torch

from rlkit.config.engines import OptimConfig
from rlkit.engines.base import Role
from rlkit.engines.deepspeed.options import DeepSpeedOptions

# DeepSpeed prints a progress line every `steps_per_print` steps; rlkit logs its own metrics.
_NEVER = 2**62


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
    (parameters partitioned, no optimizer), its parameters on CPU with `offload_ref`.
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
        zero: dict[str, Any] = {"stage": 3}
        if options.offload_ref:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_cuda}
        ds_config["zero_optimization"] = zero
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
            "zero_optimization": _zero_block(options, on_cuda),
        }
    )
    if bf16:
        # bf16 compute, fp32 gradient accumulation and reduction (as FSDP2's reduce_dtype=fp32)
        ds_config["data_types"] = {"grad_accum_dtype": "fp32"}
        ds_config["communication_data_type"] = "fp32"
    return ds_config


def _zero_block(options: DeepSpeedOptions, on_cuda: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {
        "stage": options.zero_stage,
        # overlapping reduction with backward needs side streams (GPU) and, with caller-driven
        # accumulation, partitioned gradients (ZeRO-2/3)
        "overlap_comm": on_cuda and options.zero_stage >= 2,
        "contiguous_gradients": True,
    }
    if options.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_cuda}
    if options.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_cuda}
    return zero
