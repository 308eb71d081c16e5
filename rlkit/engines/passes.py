"""Micro-batch passes over a scorer (rlkit.engines.sequences), the same for every engine.

Shape legend: B sequences, T response width (see rlkit.batch).

`module` is whatever runs the scorer's forward: the FSDP2 root itself, or the DeepSpeed engine around it.
Batches arrive on CPU; each micro-batch moves to `device` for its pass. The engine sets train or eval mode,
`torch.no_grad` and placement around these calls, and owns the backward.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch
from torch import Tensor, nn

from rlkit.batch import Batch
from rlkit.engines.base import LossFn, ModelOutput
from rlkit.errors import ConfigError
from rlkit.models.lora import is_peft_model

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def adapters_off(model: nn.Module, base_model: bool) -> AbstractContextManager:
    """peft's `disable_adapter()` when `base_model` asks for the base model's log-probs, else a no-op."""
    if not base_model:
        return nullcontext()
    if not is_peft_model(model):
        raise ConfigError("base_model=True needs a LoRA model (model.lora); use a reference engine instead")
    return model.disable_adapter()


def score(module: Callable, micro: Batch, device: torch.device, *, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    """A policy scorer's (logprobs (B, T), entropy (B, T) or None) on `device`."""
    inputs = {key: micro[key].to(device) for key in MODEL_INPUTS}
    return module(**inputs, response_width=micro.response_width, with_entropy=with_entropy)


def values(module: Callable, micro: Batch, device: torch.device) -> Tensor:
    """A value scorer's values (B, T) on `device`."""
    inputs = {key: micro[key].to(device) for key in MODEL_INPUTS}
    return module(**inputs, response_width=micro.response_width)


def logprobs_of(
    module: Callable, batch: Batch, device: torch.device, *, micro_batch_size: int, with_entropy: bool
) -> ModelOutput:
    """Log-probs (and entropy) of the whole batch, fp32 (B, T) on CPU."""
    logprobs, entropies = [], []
    for micro in batch.split(micro_batch_size):
        logprobs_BT, entropy_BT = score(module, micro, device, with_entropy=with_entropy)
        logprobs.append(logprobs_BT.cpu())
        entropies.append(entropy_BT.cpu() if with_entropy else None)
    return ModelOutput(logprobs=torch.cat(logprobs), entropy=torch.cat(entropies) if with_entropy else None)


def values_of(module: Callable, batch: Batch, device: torch.device, *, micro_batch_size: int) -> Tensor:
    """Values of the whole batch, fp32 (B, T) on CPU."""
    return torch.cat([values(module, micro, device).cpu() for micro in batch.split(micro_batch_size)])


def accumulate_gradients(
    module: Callable,
    batch: Batch,
    loss_fn: LossFn,
    device: torch.device,
    *,
    micro_batch_size: int,
    critic: bool,
    backward: Callable[[Tensor], None],
) -> dict[str, float]:
    """Forward and `backward(loss)` per micro-batch (outputs stay on the device, with grad); returns the
    loss function's metrics summed over micro-batches."""
    metrics: dict[str, float] = {}
    for micro in batch.split(micro_batch_size):
        micro = micro.to(device)
        if critic:
            output = ModelOutput(values=values(module, micro, device))
        else:
            logprobs_BT, entropy_BT = score(module, micro, device, with_entropy=True)
            output = ModelOutput(logprobs=logprobs_BT, entropy=entropy_BT)
        loss, micro_metrics = loss_fn(output, micro)
        backward(loss)
        for key, value in micro_metrics.items():
            metrics[key] = metrics.get(key, 0.0) + float(value)
    return metrics
