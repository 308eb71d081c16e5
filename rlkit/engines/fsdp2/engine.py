"""The FSDP2 training engine: one actor, critic or reference model sharded with `fully_shard`.

Shape legend: B sequences, T response width (see rlkit.batch).

Batches arrive on CPU; each micro-batch is moved to the engine's device for its pass. Per-token outputs
of `compute_logprobs` / `compute_values` come back on CPU as fp32 (B, T), since the trainer keeps the batch
on CPU between phases; those `forward_backward` hands to the loss function stay on the device (with grad).
Entries at padded response positions are finite but meaningless: mask them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from rlkit.batch import Batch
from rlkit.config.engines import EngineConfig
from rlkit.distributed import DistInfo
from rlkit.engines import passes
from rlkit.engines.base import EngineSpec, LossFn, ModelOutput
from rlkit.engines.building import build_scorer, compute_dtype, set_activation_checkpointing
from rlkit.engines.fsdp2 import parallelize, state
from rlkit.engines.fsdp2.options import FSDP2Options
from rlkit.engines.micro_batches import MicroBatching
from rlkit.engines.optim import build_optimizer, build_scheduler
from rlkit.errors import ConfigError
from rlkit.models.lora import hf_model_of, is_peft_model


class FSDP2Engine:
    """TrainEngine over FSDP2 (see rlkit.engines.base.TrainEngine for the contract of each method)."""

    def __init__(self, config: EngineConfig, options: FSDP2Options, spec: EngineSpec, dist: DistInfo):
        """`config`: the options every engine shares (engine.*), as the run resolved them (rlkit.trainer.speed;
        an `auto` left in it is its fixed default); `options`: FSDP2's own (engine.fsdp2.*)."""
        config, options = config.resolve_auto(), options.resolve_auto()
        if spec.role in ("actor", "critic") and spec.optim is None:
            raise ConfigError(f"the {spec.role} engine needs an optimizer config (EngineSpec.optim is None)")
        self.role = spec.role
        self.config = config
        self.options = options
        self.spec = spec
        self.dist = dist
        self.device = torch.device(dist.device)
        self.batching = MicroBatching.of(config)
        self.param_dtype = compute_dtype(config, dist.device)
        self.trainable = spec.role != "ref"

        self.mesh = parallelize.build_mesh(dist)  # before any fully_shard
        # fp32 master weights; a frozen reference is stored in the compute dtype directly
        self.scorer = build_scorer(spec, config, reference_dtype=self.param_dtype)
        parallelize.parallelize(
            self.scorer, self.mesh, config, options, param_dtype=self.param_dtype, device=dist.device,
            trainable=self.trainable,
        )

        self.optimizer = self.scheduler = None
        if self.trainable:
            trainable = [param for param in self.scorer.parameters() if param.requires_grad]
            self.optimizer = build_optimizer(trainable, spec.optim)
            self.scheduler = build_scheduler(self.optimizer, spec.optim, spec.total_optimizer_steps)
        self._ref_offloaded = False
        if self.role == "ref" and options.offload_ref:
            self.offload()
            self._ref_offloaded = True

    def apply_memory_plan(self, *, max_tokens_per_micro_batch: int | None, gradient_checkpointing: bool) -> None:
        self.batching = replace(self.batching, max_tokens=max_tokens_per_micro_batch)
        if self.trainable:
            set_activation_checkpointing(hf_model_of(self.scorer.model), gradient_checkpointing)

    # -- forward passes ---------------------------------------------------------------------------
    def compute_logprobs(
        self, batch: Batch, *, micro_batch_size: int, with_entropy: bool = False, base_model: bool = False
    ) -> ModelOutput:
        assert self.role != "critic", "the critic has no log-probs"
        adapters = passes.adapters_off(self.scorer.model, base_model)
        with self._eval_pass(), adapters:
            return passes.logprobs_of(
                self.scorer, batch, self.device, micro_batch_size=micro_batch_size, with_entropy=with_entropy,
                batching=self.batching,
            )

    def compute_values(self, batch: Batch, *, micro_batch_size: int) -> Tensor:
        assert self.role == "critic", f"the {self.role} has no values"
        with self._eval_pass():
            return passes.values_of(
                self.scorer, batch, self.device, micro_batch_size=micro_batch_size, batching=self.batching
            )

    def forward_backward(
        self, batch: Batch, loss_fn: LossFn, *, micro_batch_size: int, entropy_grad: bool = True
    ) -> dict[str, float]:
        """Every rank must run the same number of micro-batches: each backward is a collective."""
        assert self.trainable, "the reference model is frozen"
        self.scorer.train()
        return passes.accumulate_gradients(
            self.scorer, batch, loss_fn, self.device, micro_batch_size=micro_batch_size,
            critic=self.role == "critic", backward=self._backward, batching=self.batching, entropy_grad=entropy_grad,
        )

    def _backward(self, loss: Tensor) -> None:
        # loss is this micro-batch's share of the global loss; FSDP averages gradients over ranks, so
        # scaling by the world size makes the update the gradient of the global loss
        (loss * self.dist.world_size).backward()

    @contextmanager
    def _eval_pass(self) -> Iterator[None]:
        with self._on_device(), torch.no_grad():
            self.scorer.eval()
            yield

    # -- optimizer ---------------------------------------------------------------------------------
    # no_grad: outside it each `to_local` on a gradient (twice per tensor: the norm, the clipping) is an autograd
    # function call, host time on every step
    @torch.no_grad()
    def optimizer_step(self) -> dict[str, float]:
        assert self.optimizer is not None, "the reference model has no optimizer"
        grads = [param.grad for group in self.optimizer.param_groups for param in group["params"]
                 if param.grad is not None]
        grad_norm = self._global_grad_norm(grads)
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return {"grad_norm": float("nan"), "skipped": 1.0}
        if self.spec.optim.grad_clip is not None:
            clip_coef = min(1.0, self.spec.optim.grad_clip / (grad_norm + 1e-6))  # torch's clip_grad_norm_ rule
            if clip_coef < 1.0:
                for device_grads in _by_device([_local(grad) for grad in grads]):
                    torch._foreach_mul_(device_grads, clip_coef)  # one kernel per device, as clip_grad_norm_ does
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": grad_norm, "lr": lr, "skipped": 0.0}

    def _global_grad_norm(self, grads: list[Tensor]) -> float:
        """L2 norm of the full gradient: each rank's shards' squared norms, summed over ranks on the device.
        Reducing plain tensors rather than DTensors also serves cpu_offload, whose shards live on CPU where
        an NCCL-only group cannot reduce them."""
        total = torch.zeros((), device=self.device)
        # torch's foreach norm, device by device (fp32 master gradients): a few kernels, not three per tensor
        for device_grads in _by_device([_local(grad) for grad in grads]):
            total += torch.nn.utils.get_total_norm(device_grads).float().square().to(self.device)
        torch.distributed.all_reduce(total, group=self.mesh.get_group())
        return float(total.sqrt())

    # -- weights -----------------------------------------------------------------------------------
    def full_weights(self) -> Iterator[tuple[str, Tensor]]:
        """Full tensors in Hugging Face names on the engine's device, in the stored dtype (fp32 master
        weights; a bf16 reference: bf16). LoRA: merged base weights. Collective."""
        with self._on_device():
            yield from state.full_weights(self.scorer)

    def save(self, directory: Path) -> None:
        with self._on_device():
            state.save_checkpoint(self.scorer, self.optimizer, self.scheduler, directory, is_main=self.dist.is_main)

    def load(self, directory: Path) -> None:
        with self._on_device():
            state.load_checkpoint(self.scorer, self.optimizer, self.scheduler, directory, is_main=self.dist.is_main)

    def export_hf(self, directory: Path) -> None:
        with self._on_device():
            save_adapter = self.role == "actor" and is_peft_model(self.scorer.model)
            state.export_hf(self.scorer, directory, is_main=self.dist.is_main, save_adapter=save_adapter)

    # -- placement ---------------------------------------------------------------------------------
    def offload(self) -> None:
        """Parameters, gradients and optimizer state to CPU (a no-op on CPU and with cpu_offload)."""
        if self.device.type == "cpu" or self.options.cpu_offload:
            return
        self._move(torch.device("cpu"))
        torch.cuda.empty_cache()

    def onload(self) -> None:
        if self.device.type == "cpu" or self.options.cpu_offload:
            return
        self._move(self.device)

    def _move(self, device: torch.device) -> None:
        self.scorer.to(device)  # FSDP2 reshards first, then moves the shards
        if self.optimizer is not None:
            for param_state in self.optimizer.state.values():
                for key, value in param_state.items():
                    if isinstance(value, Tensor):  # fused AdamW keeps even its step count beside the parameter
                        param_state[key] = value.to(device)

    @contextmanager
    def _on_device(self) -> Iterator[None]:
        """A reference kept on CPU (offload_ref) comes to the device for the duration of a pass."""
        if self._ref_offloaded:
            self.onload()
        try:
            yield
        finally:
            if self._ref_offloaded:
                self.offload()


def _by_device(tensors: list[Tensor]) -> list[list[Tensor]]:
    """The tensors grouped by device (cpu_offload keeps the shards on CPU), in order."""
    groups: dict[torch.device, list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.device, []).append(tensor)
    return list(groups.values())


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (a view: in-place ops change the DTensor), or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
