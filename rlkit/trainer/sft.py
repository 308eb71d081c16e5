"""Supervised fine-tuning: the SFT step and validation inside the trainer shell (rlkit.trainer.shell).

One step is one optimizer step over the global batch of `data.train_batch_size` samples: the seeded
EpochSampler picks the samples, each rank takes its contiguous share and runs forward/backward over it in
micro-batches of `data.micro_batch_size_per_device` (gradients accumulate), then the engine steps.

The loss is the mean negative log-likelihood over every trained response token of the global batch:

    loss = sum over trained tokens t of the global batch of -log p(t)  /  N,   N = their number over all ranks

Each micro-batch's loss function returns its share (its tokens' sum / N), so shares add up over micro-batches
and ranks to the same number whatever the world size or micro-batch size; the engine turns that into the
gradient of the global loss (see rlkit.engines.base.LossFn). A mean per micro-batch, averaged afterwards,
would instead weigh the tokens of short micro-batches more.

Batches have the RL layout (rlkit.data.sft.collate_sft), so engines compute the log-probs exactly as for an
RL update. The shell writes checkpoints in the RL trainer's layout (actor/, config.yaml, tokenizer/, rng/,
trainer_state.json), so `rlkit export` and `rlkit generate` read both, and `trainer.resume` continues
exactly: the sampler position, the engine's model, optimizer and scheduler, and every rank's RNG state are
restored.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from rlkit.algorithms.aggregation import agg_loss
from rlkit.batch import Batch
from rlkit.config.sft import SFTConfig
from rlkit.data.sampler import EpochSampler
from rlkit.data.sft import SFTSample, collate_sft, load_sft_dataset, without_loss
from rlkit.distributed import DistInfo, all_reduce_sum
from rlkit.engines.base import EngineSpec, LossFn, ModelOutput, TrainEngine
from rlkit.errors import ConfigError
from rlkit.models.loading import load_tokenizer
from rlkit.trainer.components import build_engine, resolve_model_path
from rlkit.trainer.memory_plan import settle_memory
from rlkit.trainer.shell import TrainerShell
from rlkit.trainer.speed import log_header, plan_speed

log = logging.getLogger(__name__)


def sft_loss_fn(num_tokens: float) -> LossFn:
    """Token-mean NLL normalised by the global number of trained tokens: the micro-batch's share.

    With logprobs (B, T) and response_mask (B, T) the share is -sum(logprobs * response_mask) / num_tokens.
    Metrics: `loss` (the share; shares add up to the global loss) and `entropy` (weighted the same way).
    """

    def loss_fn(output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = batch["response_mask"]
        loss = agg_loss(-output.logprobs, mask, "token-mean", num_tokens=num_tokens)
        metrics = {"loss": loss.detach()}
        if output.entropy is not None:
            metrics["entropy"] = agg_loss(output.entropy.detach(), mask, "token-mean", num_tokens=num_tokens)
        return loss, metrics

    return loss_fn


class SFTTrainer(TrainerShell):
    kind = "sft"
    command = "rlkit sft"

    def __init__(self, cfg: SFTConfig, dist: DistInfo):
        check_against_world(cfg, dist)
        super().__init__(cfg, dist)

    def setup(self) -> None:
        cfg, data = self.cfg, self.cfg.data
        self.model_path = resolve_model_path(cfg.model.path, self.output_dir)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer_path or self.model_path,
                                        trust_remote_code=cfg.model.trust_remote_code)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.train_data = load_sft_dataset(data.train_files, data, self.tokenizer, max_samples=data.max_train_samples)
        self.val_data = (load_sft_dataset(data.val_files, data, self.tokenizer, max_samples=data.max_val_samples)
                         if data.val_files else None)
        self.sampler = EpochSampler(len(self.train_data), data.train_batch_size, seed=cfg.trainer.seed,
                                    shuffle=data.shuffle)
        self.total_steps = cfg.trainer.num_steps(self.sampler.steps_per_epoch)
        speed = plan_speed(cfg, self.dist, model_path=self.model_path)
        self.engine: TrainEngine = build_engine(cfg, EngineSpec(
            role="actor", model_path=self.model_path, optim=cfg.optim, lora=cfg.model.lora,
            trust_remote_code=cfg.model.trust_remote_code, total_optimizer_steps=self.total_steps,
            seed=cfg.trainer.seed), self.dist, speed)
        # A micro-batch is at most data.micro_batch_size_per_device samples: the budget only splits it further.
        self.speed = settle_memory(speed, cfg, engines=[self.engine], rollout=None, dist=self.dist,
                                   longest=data.max_length, batch_sequences=data.micro_batch_size_per_device)
        log_header(self.speed, self.dist)
        self.batches = iter(self.sampler)
        if self.dist.is_main:
            log.info("SFT on %d samples (%d validation), %d steps of %d samples, model %s",
                     len(self.train_data), len(self.val_data or ()), self.total_steps, data.train_batch_size,
                     self.model_path)

    # -- one step ---------------------------------------------------------------------------------
    def train_one_step(self) -> dict[str, float]:
        return self.train_step(next(self.batches))

    def train_step(self, sample_indices: list[int]) -> dict[str, float]:
        start = time.perf_counter()
        with self.timer.phase("data"):
            samples = self._local_samples(sample_indices)
            micro_batches = [collate_sft(samples[i : i + self._micro], self.pad_token_id)
                             for i in range(0, len(samples), self._micro)]
            num_tokens = self._sum(sum(float(micro["response_mask"].sum()) for micro in micro_batches))
        loss_fn = sft_loss_fn(num_tokens)
        sums: dict[str, float] = {}
        with self.timer.phase("update"):
            # One call per micro-batch: each is padded to its own widths, not the local batch's.
            for micro in micro_batches:
                # the entropy is only reported: no backward through it
                micro_metrics = self.engine.forward_backward(micro, loss_fn, micro_batch_size=len(micro),
                                                             entropy_grad=False)
                for key, value in micro_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
            update = self.engine.optimizer_step()
        metrics = {key: self._sum(value) for key, value in sums.items()}  # shares add up over ranks
        metrics.update({"grad_norm": update["grad_norm"], "lr": update.get("lr", 0.0),
                        "update/skipped": update.get("skipped", 0.0)})
        metrics.update(self.step_costs(start, sum(float(micro["attention_mask"].sum()) for micro in micro_batches)))
        metrics["tokens/trained"] = num_tokens
        metrics["epoch"] = self.sampler.epoch + self.sampler.position / self.sampler.steps_per_epoch
        return metrics

    # -- validation and checkpoints ---------------------------------------------------------------
    def has_validation(self) -> bool:
        return self.val_data is not None

    def validate(self) -> dict[str, float]:
        """val/loss: the token-mean NLL over every trained token of the validation set.

        Rank r scores samples r, r + W, ...; ranks short of the longest share score a masked filler sample,
        since every rank must make the same number of engine calls (each is a collective).
        """
        samples = list(self.val_data)[self.dist.rank :: self.dist.world_size]
        per_rank = math.ceil(len(self.val_data) / self.dist.world_size)
        samples += [without_loss(self.val_data[0])] * (per_rank - len(samples))
        nll_sum, num_tokens = 0.0, 0.0
        for start in range(0, per_rank, self._micro):
            micro = collate_sft(samples[start : start + self._micro], self.pad_token_id)
            logprobs = self.engine.compute_logprobs(micro, micro_batch_size=len(micro)).logprobs
            nll_sum -= float((logprobs * micro["response_mask"]).sum())
            num_tokens += float(micro["response_mask"].sum())
        return {"val/loss": self._sum(nll_sum) / max(self._sum(num_tokens), 1.0)}

    def save_engines(self, directory: Path) -> None:
        self.engine.save(directory / "actor")

    def load_engines(self, directory: Path) -> None:
        self.engine.load(directory / "actor")

    def trainer_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def _micro(self) -> int:
        return self.cfg.data.micro_batch_size_per_device

    def _local_samples(self, sample_indices: list[int]) -> list[SFTSample]:
        per_rank = len(sample_indices) // self.dist.world_size
        mine = sample_indices[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]
        return [self.train_data[index] for index in mine]

    def _sum(self, value: float) -> float:
        return all_reduce_sum(value, device=self.dist.device)


def check_against_world(cfg: SFTConfig, dist: DistInfo) -> None:
    """The global batch must split evenly over the ranks (a runtime value, never written into the config)."""
    if cfg.data.train_batch_size % dist.world_size:
        raise ConfigError(
            f"data.train_batch_size={cfg.data.train_batch_size} does not split over {dist.world_size} ranks; "
            f"make it a multiple of {dist.world_size}"
        )
