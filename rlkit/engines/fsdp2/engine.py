"""The FSDP2 training engine: one actor, critic or reference model sharded with `fully_shard`.

Shape legend: B sequences, T response width (see rlkit.batch).

Batches arrive on CPU; each micro-batch is moved to the engine's device for its pass. Per-token outputs
of `compute_logprobs` / `compute_values` come back on CPU as fp32 (B, T), since the trainer keeps the batch
on CPU between phases; those `forward_backward` hands to the loss function stay on the device (with grad).
Entries at padded response positions are finite but meaningless: mask them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

from rlkit.batch import Batch
from rlkit.config.schema import FSDP2Config
from rlkit.engines.base import DistInfo, EngineSpec, LossFn, ModelOutput
from rlkit.engines.fsdp2 import parallelize, state
from rlkit.engines.optim import build_optimizer, build_scheduler
from rlkit.engines.sequences import PolicyScorer, ValueScorer
from rlkit.errors import ConfigError
from rlkit.models.loading import load_causal_lm, load_critic
from rlkit.models.lora import apply_lora, is_peft_model

_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")
VALUE_HEAD = "score"  # the head of transformers' *ForTokenClassification decoders


class FSDP2Engine:
    """TrainEngine over FSDP2 (see rlkit.engines.base.TrainEngine for the contract of each method)."""

    def __init__(self, config: FSDP2Config, spec: EngineSpec, dist: DistInfo):
        if spec.role in ("actor", "critic") and spec.optim is None:
            raise ConfigError(f"the {spec.role} engine needs an optimizer config (EngineSpec.optim is None)")
        self.role = spec.role
        self.config = config
        self.spec = spec
        self.dist = dist
        self.device = torch.device(dist.device)
        self.param_dtype = parallelize.compute_dtype(config, dist.device)
        self.trainable = spec.role != "ref"

        self.mesh = parallelize.build_mesh(dist)  # before any fully_shard
        self.scorer = self._build_scorer()
        parallelize.parallelize(
            self.scorer, self.mesh, config, param_dtype=self.param_dtype, device=dist.device, trainable=self.trainable
        )

        self.optimizer = self.scheduler = None
        if self.trainable:
            trainable = [param for param in self.scorer.parameters() if param.requires_grad]
            self.optimizer = build_optimizer(trainable, spec.optim)
            self.scheduler = build_scheduler(self.optimizer, spec.optim, spec.total_optimizer_steps)
        self._ref_offloaded = False
        if self.role == "ref" and config.offload_ref:
            self.offload()
            self._ref_offloaded = True

    def _build_scorer(self) -> torch.nn.Module:
        """Load the model (fp32 master weights; a frozen reference directly in the compute dtype), add LoRA,
        wrap it in its scorer. Seeded, so every rank builds identical new weights (value head, lora_A)."""
        spec = self.spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            if spec.role == "critic":
                model = load_critic(spec.model_path, trust_remote_code=spec.trust_remote_code)
            else:
                model = load_causal_lm(spec.model_path, trust_remote_code=spec.trust_remote_code)
            if spec.role == "ref":
                # cast parameters only: buffers such as rotary inv_freq stay fp32, as in the actor
                model.requires_grad_(False)
                for param in model.parameters():
                    param.data = param.data.to(self.param_dtype)
            elif spec.lora is not None:
                if spec.role == "critic":  # its new value head trains in full, next to the adapters
                    model = apply_lora(model, spec.lora, task_type=None, fully_trained=(VALUE_HEAD,))
                else:
                    model = apply_lora(model, spec.lora, task_type="CAUSAL_LM")
        if spec.role == "critic":
            return ValueScorer(model)
        return PolicyScorer(model, chunk_size=self.config.logprob_chunk_size, temperature=spec.temperature)

    # -- forward passes ---------------------------------------------------------------------------
    def compute_logprobs(
        self, batch: Batch, *, micro_batch_size: int, with_entropy: bool = False, base_model: bool = False
    ) -> ModelOutput:
        assert self.role != "critic", "the critic has no log-probs"
        if base_model and not is_peft_model(self.scorer.model):
            raise ConfigError("base_model=True needs a LoRA model (model.lora); use a reference engine instead")
        logprobs, entropies = [], []
        with self._eval_pass(), (self.scorer.model.disable_adapter() if base_model else nullcontext()):
            for micro in batch.split(micro_batch_size):
                logprobs_BT, entropy_BT = self._score(micro, with_entropy=with_entropy)
                logprobs.append(logprobs_BT.cpu())
                entropies.append(entropy_BT.cpu() if with_entropy else None)
        return ModelOutput(
            logprobs=torch.cat(logprobs), entropy=torch.cat(entropies) if with_entropy else None
        )

    def compute_values(self, batch: Batch, *, micro_batch_size: int) -> Tensor:
        assert self.role == "critic", f"the {self.role} has no values"
        with self._eval_pass():
            return torch.cat([self._values(micro).cpu() for micro in batch.split(micro_batch_size)])

    def forward_backward(self, batch: Batch, loss_fn: LossFn, *, micro_batch_size: int) -> dict[str, float]:
        """Every rank must run the same number of micro-batches: each backward is a collective."""
        assert self.trainable, "the reference model is frozen"
        self.scorer.train()
        metrics: dict[str, float] = {}
        for micro in batch.split(micro_batch_size):
            micro = micro.to(self.device)
            if self.role == "critic":
                output = ModelOutput(values=self._values(micro))
            else:
                logprobs_BT, entropy_BT = self._score(micro, with_entropy=True)
                output = ModelOutput(logprobs=logprobs_BT, entropy=entropy_BT)
            loss, micro_metrics = loss_fn(output, micro)
            # loss is this micro-batch's share of the global loss; FSDP averages gradients over ranks, so
            # scaling by the world size makes the update the gradient of the global loss
            (loss * self.dist.world_size).backward()
            for key, value in micro_metrics.items():
                metrics[key] = metrics.get(key, 0.0) + float(value)
        return metrics

    def _score(self, micro: Batch, *, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
        inputs = {key: micro[key].to(self.device) for key in _MODEL_INPUTS}
        return self.scorer(**inputs, response_width=micro.response_width, with_entropy=with_entropy)

    def _values(self, micro: Batch) -> Tensor:
        inputs = {key: micro[key].to(self.device) for key in _MODEL_INPUTS}
        return self.scorer(**inputs, response_width=micro.response_width)

    @contextmanager
    def _eval_pass(self) -> Iterator[None]:
        with self._on_device(), torch.no_grad():
            self.scorer.eval()
            yield

    # -- optimizer ---------------------------------------------------------------------------------
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
            for grad in grads:
                _local(grad).mul_(clip_coef)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": grad_norm, "lr": lr, "skipped": 0.0}

    def _global_grad_norm(self, grads: list[Tensor]) -> float:
        """L2 norm of the full gradient: each rank's shards' squared norms, summed over ranks on the device.
        Reducing plain tensors rather than DTensors also serves cpu_offload, whose shards live on CPU where
        an NCCL-only group cannot reduce them."""
        squares = [torch.linalg.vector_norm(_local(grad), dtype=torch.float32) ** 2 for grad in grads]
        total = torch.zeros((), device=self.device)
        for device in {square.device for square in squares}:
            total += torch.stack([s for s in squares if s.device == device]).sum().to(self.device)
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
        if self.device.type == "cpu" or self.config.cpu_offload:
            return
        self._move(torch.device("cpu"))
        torch.cuda.empty_cache()

    def onload(self) -> None:
        if self.device.type == "cpu" or self.config.cpu_offload:
            return
        self._move(self.device)

    def _move(self, device: torch.device) -> None:
        self.scorer.to(device)  # FSDP2 reshards first, then moves the shards
        if self.optimizer is not None:
            for param_state in self.optimizer.state.values():
                for key, value in param_state.items():
                    if isinstance(value, Tensor) and key != "step":  # AdamW's step count lives on CPU
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


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (a view: in-place ops change the DTensor), or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
