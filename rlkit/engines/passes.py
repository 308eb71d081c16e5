"""Micro-batch passes over a scorer (rlkit.engines.sequences), the same for every engine.

Shape legend: B sequences, T response width (see rlkit.batch).

`module` is whatever runs the scorer's forward: the FSDP2 root itself, or the DeepSpeed engine around it.
Batches arrive on CPU; each micro-batch moves to `device` for its pass. The engine sets train or eval mode,
`torch.no_grad` and placement around these calls, and owns the backward. `batching` says how micro-batches
are formed and what the model runs on: the padded rows, the rows trimmed of their padding
(rlkit.engines.micro_batches), or all their real tokens packed into one row (rlkit.engines.packing); either
way callers and loss functions see (B, T) outputs in the batch's row order.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch
from torch import Tensor, nn

from rlkit.batch import Batch, to_device
from rlkit.engines.base import LossFn, ModelOutput
from rlkit.engines.micro_batches import MicroBatching, in_batch_order, pad_response, plan, settle_sharing, trim
from rlkit.engines.packing import pack
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


def model_inputs(
    micro: Batch, device: torch.device, batching: MicroBatching
) -> tuple[dict[str, Tensor | int | None], Callable[[Tensor], Tensor]]:
    """The scorer's inputs on `device`, and what maps its per-token outputs back to (B, T): (B, L) inputs,
    trimmed to (B, P' + T') with `remove_padding`, or one packed (1, N) row with `pack_sequences`."""
    if batching.pack_sequences:
        # moved whole, so that to_batch's indices are on the device before the forward is queued
        packed = pack(micro, share_prompts=batching.share_prompts).to(device)
        return packed.scorer_inputs(device), packed.to_batch
    if batching.remove_padding:
        inputs, response_width = trim(micro)
    else:
        inputs, response_width = {key: micro[key] for key in MODEL_INPUTS}, micro.response_width
    inputs = {key: to_device(value, device) for key, value in inputs.items()}
    return {**inputs, "response_width": response_width}, functools.partial(
        pad_response, response_width=micro.response_width
    )


def score(
    module: Callable, micro: Batch, device: torch.device, *, with_entropy: bool,
    batching: MicroBatching = MicroBatching(), entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """A policy scorer's (logprobs (B, T), entropy (B, T) or None) on `device`."""
    inputs, to_batch = model_inputs(micro, device, batching)
    logprobs, entropy = module(**inputs, with_entropy=with_entropy, entropy_grad=entropy_grad)
    return to_batch(logprobs), to_batch(entropy) if entropy is not None else None


def values(
    module: Callable, micro: Batch, device: torch.device, *, batching: MicroBatching = MicroBatching()
) -> Tensor:
    """A value scorer's values (B, T) on `device`."""
    inputs, to_batch = model_inputs(micro, device, batching)
    return to_batch(module(**inputs))


def logprobs_of(
    module: Callable, batch: Batch, device: torch.device, *, micro_batch_size: int, with_entropy: bool,
    batching: MicroBatching = MicroBatching(),
) -> ModelOutput:
    """Log-probs (and entropy) of the whole batch, fp32 (B, T) on CPU."""
    batching = settle_sharing(batch, batching)
    runs = plan(batch, micro_batch_size, batching)
    logprobs, entropies = [], []
    for rows in runs:
        micro = batch.select(rows)
        logprobs_BT, entropy_BT = score(module, micro, device, with_entropy=with_entropy, batching=batching)
        logprobs.append(logprobs_BT)
        entropies.append(entropy_BT)
    return ModelOutput(logprobs=on_cpu_in_batch_order(logprobs, runs),
                       entropy=on_cpu_in_batch_order(entropies, runs) if with_entropy else None)


def values_of(
    module: Callable, batch: Batch, device: torch.device, *, micro_batch_size: int,
    batching: MicroBatching = MicroBatching(),
) -> Tensor:
    """Values of the whole batch, fp32 (B, T) on CPU."""
    batching = settle_sharing(batch, batching)
    runs = plan(batch, micro_batch_size, batching)
    return on_cpu_in_batch_order([values(module, batch.select(rows), device, batching=batching) for rows in runs],
                                 runs)


def on_cpu_in_batch_order(pieces: list[Tensor], runs: list[list[int]]) -> Tensor:
    """The micro-batches' outputs, joined where they are and copied to the CPU in one transfer once every
    micro-batch is queued (a copy per micro-batch would wait for the GPU each time), in the batch's row order."""
    return in_batch_order([torch.cat(pieces).cpu()], [[row for run in runs for row in run]])


def accumulate_gradients(
    module: Callable,
    batch: Batch,
    loss_fn: LossFn,
    device: torch.device,
    *,
    micro_batch_size: int,
    critic: bool,
    backward: Callable[[Tensor], None],
    batching: MicroBatching = MicroBatching(),
    entropy_grad: bool = True,
) -> dict[str, float]:
    """Forward and `backward(loss)` per micro-batch (outputs stay on the device, with grad); returns the
    loss function's metrics summed over micro-batches. The loss function sees each micro-batch whole (B, T),
    trimmed, packed or not: it returns a share of the global loss, so the grouping does not change the sum.
    `entropy_grad=False` hands it a detached entropy (TrainEngine.forward_backward).

    Nothing in the loop waits for the GPU: the model's inputs are cut from the micro-batch's CPU rows and copied
    without a stream sync (rlkit.batch.to_device), and tensor metrics are summed where they are and read once at
    the end, so the host queues micro-batch after micro-batch while the GPU runs."""
    metrics: dict[str, Tensor | float] = {}
    batching = settle_sharing(batch, batching)
    for rows in plan(batch, micro_batch_size, batching):
        rows_on_cpu = batch.select(rows)
        micro = rows_on_cpu.to(device)
        if critic:
            output = ModelOutput(values=values(module, rows_on_cpu, device, batching=batching))
        else:
            logprobs_BT, entropy_BT = score(
                module, rows_on_cpu, device, with_entropy=True, batching=batching, entropy_grad=entropy_grad
            )
            output = ModelOutput(logprobs=logprobs_BT, entropy=entropy_BT)
        loss, micro_metrics = loss_fn(output, micro)
        backward(loss)
        for key, value in micro_metrics.items():
            value = to_device(value.detach(), device) if isinstance(value, Tensor) else value
            metrics[key] = metrics.get(key, 0.0) + value
    return read_metrics(metrics)


def read_metrics(metrics: dict[str, Tensor | float]) -> dict[str, float]:
    """{key: float}, the tensors among `metrics` read in one transfer."""
    keys = [key for key, value in metrics.items() if isinstance(value, Tensor)]
    read = dict(zip(keys, torch.stack([metrics[key].float().reshape(()) for key in keys]).tolist())) if keys else {}
    return {key: read[key] if key in read else float(value) for key, value in metrics.items()}
