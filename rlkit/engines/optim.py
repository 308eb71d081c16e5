"""AdamW and its learning-rate schedule: linear warm-up, then constant or cosine decay.

Engine-agnostic: the FSDP2 and DeepSpeed engines both build their optimizer here. Steps count optimizer
steps. With W warm-up steps and S steps in all, the multiplier of the peak learning rate at step s
(0-based, the step about to be taken) is

    s < W:   (s + 1) / W                                   (the first step already moves; step W-1 is at peak)
    s >= W:  1                                              (constant)
             m + (1 - m) * (1 + cos(pi * p)) / 2,  p = (s - W) / max(1, S - W)   (cosine down to m = min_lr_ratio)
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from rlkit.config.schema import OptimConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `params` (weight decay on every parameter, as verl does).

    fused: one kernel per device and dtype does the whole update, where foreach needs about a dozen multi-tensor
    kernels and as many dispatches of FSDP2's DTensors on the host (torchtitan's default too). torch never picks
    it by itself. It runs on CPU and CUDA; the same arithmetic as torch's other implementations.
    """
    return torch.optim.AdamW(
        list(params), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay,
        fused=True,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int) -> LambdaLR:
    """The warm-up + decay schedule over `total_steps` optimizer steps; call `.step()` after each step."""
    warmup = num_warmup_steps(config, total_steps)
    def multiplier(step: int) -> float:
        return lr_multiplier(
            step,
            num_warmup=warmup,
            total_steps=total_steps,
            scheduler=config.scheduler,
            min_lr_ratio=config.min_lr_ratio,
        )

    return LambdaLR(optimizer, multiplier)


def num_warmup_steps(config: OptimConfig, total_steps: int) -> int:
    """warmup_ratio * total_steps (rounded) when the ratio is set, else warmup_steps."""
    if config.warmup_ratio is not None:
        return int(round(config.warmup_ratio * total_steps))
    return config.warmup_steps


def lr_multiplier(step: int, *, num_warmup: int, total_steps: int, scheduler: str, min_lr_ratio: float) -> float:
    """The factor on the peak learning rate at optimizer step `step` (see the module docstring)."""
    if step < num_warmup:
        return (step + 1) / num_warmup
    if scheduler == "constant":
        return 1.0
    if scheduler == "cosine":
        progress = min(1.0, (step - num_warmup) / max(1, total_steps - num_warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown scheduler '{scheduler}'; choose 'constant' or 'cosine'")
