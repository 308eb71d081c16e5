"""Supervised fine-tuning: setup -> (validate) -> steps -> save.

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
RL update. Checkpoints have the RL trainer's layout (actor/, config.yaml, tokenizer/, trainer_state.json),
so `rlkit export` and `rlkit generate` read both, and `trainer.resume` continues exactly: the sampler
position, the engine's model, optimizer and scheduler, and every rank's RNG state are restored.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import yaml

from rlkit.algorithms.aggregation import agg_loss
from rlkit.batch import Batch
from rlkit.config.sft import SFTConfig
from rlkit.data.sampler import EpochSampler
from rlkit.data.sft import SFTSample, collate_sft, load_sft_dataset, without_loss
from rlkit.distributed import all_reduce_sum
from rlkit.engines.base import DistInfo, EngineSpec, LossFn, ModelOutput, TrainEngine
from rlkit.errors import CheckpointError, ConfigError
from rlkit.models.loading import load_tokenizer
from rlkit.trainer.checkpoint import CheckpointManager, resume_point
from rlkit.trainer.components import build_engine, resolve_model_path
from rlkit.trainer.metrics import MetricsLogger, build_logger
from rlkit.trainer.output_dir import OutputDir
from rlkit.trainer.preemption import StopRequests
from rlkit.trainer.resume_checks import check_start
from rlkit.trainer.timing import PhaseTimer

log = logging.getLogger(__name__)
TRAINER_STATE = "trainer_state.json"
RNG_DIR = "rng"


def sft_loss_fn(num_tokens: float) -> LossFn:
    """Token-mean NLL normalised by the global number of trained tokens: the micro-batch's share.

    With logprobs (B, T) and response_mask (B, T) the share is -sum(logprobs * response_mask) / num_tokens.
    Metrics: `loss` (the share; shares add up to the global loss) and `entropy` (weighted the same way).
    """

    def loss_fn(output: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["response_mask"]
        loss = agg_loss(-output.logprobs, mask, "token-mean", num_tokens=num_tokens)
        metrics = {"loss": float(loss.detach())}
        if output.entropy is not None:
            metrics["entropy"] = float(agg_loss(output.entropy.detach(), mask, "token-mean", num_tokens=num_tokens))
        return loss, metrics

    return loss_fn


class SFTTrainer:
    def __init__(self, cfg: SFTConfig, dist: DistInfo):
        check_against_world(cfg, dist)
        torch.manual_seed(cfg.trainer.seed + dist.rank)  # dropout streams: reproducible, distinct per rank
        self.cfg = cfg
        self.dist = dist
        self.step = 0
        # -- reliability hooks (rlkit.trainer.output_dir, resume_checks): the output directory is locked; a setup
        # that fails removes only what it created there.
        self.output = OutputDir.open(cfg.trainer.output_dir, dist, command="rlkit sft")
        self.output_dir = self.output.path
        with self.output.setup():
            self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", cfg.trainer.keep_last, dist.is_main)
            resume_from = resume_point(cfg.trainer.resume, self.checkpoints, self.output_dir)

            self.model_path = resolve_model_path(cfg.model.path, self.output_dir)
            self.tokenizer = load_tokenizer(cfg.model.tokenizer_path or self.model_path,
                                            trust_remote_code=cfg.model.trust_remote_code)
            pad = self.tokenizer.pad_token_id
            self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
            data = cfg.data
            self.train_data = load_sft_dataset(data.train_files, data, self.tokenizer, max_samples=data.max_train_samples)
            self.val_data = (load_sft_dataset(data.val_files, data, self.tokenizer, max_samples=data.max_val_samples)
                             if data.val_files else None)
            self.sampler = EpochSampler(len(self.train_data), data.train_batch_size, seed=cfg.trainer.seed,
                                        shuffle=data.shuffle)
            self.total_steps = cfg.trainer.total_steps or self.sampler.steps_per_epoch * cfg.trainer.total_epochs
            check_start(resume_from, cfg, self.output, world_size=dist.world_size, total_steps=self.total_steps)
            self.engine: TrainEngine = build_engine(cfg, EngineSpec(
                role="actor", model_path=self.model_path, optim=cfg.optim, lora=cfg.model.lora,
                trust_remote_code=cfg.model.trust_remote_code, total_optimizer_steps=self.total_steps,
                seed=cfg.trainer.seed), dist)

            if resume_from is not None:
                self._load(resume_from)
            self.timer = PhaseTimer(cuda=dist.device.startswith("cuda"))
            self.logger: MetricsLogger = build_logger(
                cfg.trainer.loggers, self.output_dir, is_main=dist.is_main, total_steps=self.total_steps,
                start_step=self.step, progress_bar=cfg.trainer.progress_bar, project=cfg.trainer.project_name,
                name=cfg.trainer.experiment_name or self.output_dir.name, config=cfg.model_dump(mode="json"),
            )
        self.batches = iter(self.sampler)
        if dist.is_main:
            log.info("SFT on %d samples (%d validation), %d steps of %d samples, model %s",
                     len(self.train_data), len(self.val_data or ()), self.total_steps, data.train_batch_size,
                     self.model_path)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        # -- reliability hook (rlkit.trainer.output_dir, preemption): the lock records how the run ended, and a
        # preemption signal stops the loop after a saved step.
        with self.output.running(), StopRequests(self.cfg.trainer.preempt_signals, self._progress) as self.stops:
            return self._fit()

    def _fit(self) -> dict[str, float]:
        cfg = self.cfg.trainer
        last: dict[str, float] = {}
        if cfg.val_before_train and self.step == 0 and self.val_data is not None:
            self.logger.log(0, self.validate())
        while self.step < self.total_steps:
            self.step += 1
            metrics = self.train_step(next(self.batches))
            is_last = self.step == self.total_steps
            if self.val_data is not None and ((cfg.test_freq and self.step % cfg.test_freq == 0) or is_last):
                with self.timer.phase("validate"):
                    metrics.update(self.validate())
            saved = None
            if (cfg.save_freq and self.step % cfg.save_freq == 0) or (is_last and cfg.save_at_end):
                saved = self.save()
            metrics.update(self.timer.metrics())  # with validate and save, when they ran
            self.logger.log(self.step, metrics)
            last = metrics
            if self.stops.agreed():  # a collective: every rank stops after this same step
                raise self.stops.preempted(self.step, saved or self.save())
        self.logger.close()
        return last

    def train_step(self, sample_indices: list[int]) -> dict[str, float]:
        self.timer.reset()
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
                micro_metrics = self.engine.forward_backward(micro, loss_fn, micro_batch_size=len(micro), entropy_grad=False)
                for key, value in micro_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
            update = self.engine.optimizer_step()
        metrics = {key: self._sum(value) for key, value in sums.items()}  # shares add up over ranks
        metrics.update({"grad_norm": update["grad_norm"], "lr": update.get("lr", 0.0),
                        "update/skipped": update.get("skipped", 0.0)})
        metrics.update(self.timer.metrics())
        metrics["time/step"] = time.perf_counter() - start
        num_all_tokens = self._sum(sum(float(micro["attention_mask"].sum()) for micro in micro_batches))
        metrics["throughput/tokens_per_s"] = num_all_tokens / metrics["time/step"]
        metrics["tokens/trained"] = num_tokens
        metrics["epoch"] = self.sampler.epoch + self.sampler.position / self.sampler.steps_per_epoch
        if self.dist.device.startswith("cuda"):
            metrics["memory/peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        return metrics

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

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        with self.timer.phase("save"):
            return self.checkpoints.save(self.step, self._write_checkpoint)

    def _write_checkpoint(self, directory: Path) -> None:
        self.engine.save(directory / "actor")
        (directory / RNG_DIR).mkdir(exist_ok=True)
        torch.save(rng_state(), directory / RNG_DIR / f"rank_{self.dist.rank}.pt")
        if self.dist.is_main:
            state = {"kind": "sft", "step": self.step, "sampler": self.sampler.state_dict(),
                     "world_size": self.dist.world_size}
            (directory / TRAINER_STATE).write_text(json.dumps(state, indent=1))
            (directory / "config.yaml").write_text(yaml.safe_dump(self.cfg.model_dump(mode="json", by_alias=True),
                                                                  sort_keys=False))
            self.tokenizer.save_pretrained(str(directory / "tokenizer"))

    def _load(self, directory: Path) -> None:
        state = json.loads((directory / TRAINER_STATE).read_text())
        if state.get("kind") != "sft":
            raise CheckpointError(
                f"{directory} is not an SFT checkpoint (an `rlkit train` run's?); give `rlkit sft` its own "
                "trainer.output_dir, or start from an exported model with model.path"
            )
        self.engine.load(directory / "actor")
        self.step = state["step"]
        self.sampler.load_state_dict(state["sampler"])
        rng_file = directory / RNG_DIR / f"rank_{self.dist.rank}.pt"
        if state.get("world_size") == self.dist.world_size and rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        elif self.dist.is_main:
            log.warning("%s was written by %s ranks, this run has %d: random streams (dropout) start afresh",
                        directory, state.get("world_size"), self.dist.world_size)
        if self.dist.is_main:
            log.info("resumed from %s at step %d", directory, self.step)

    # -- helpers ----------------------------------------------------------------------------------
    def _progress(self) -> tuple[int, Path | None]:
        """The step in progress and the newest checkpoint, for messages when the run is stopped."""
        published = self.checkpoints.complete_checkpoints()
        return self.step, published[-1] if published else None

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


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU, and the current CUDA device's when there is one)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
