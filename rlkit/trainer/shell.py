"""What a training run does around its steps, the same for RL and SFT.

    setup -> resume -> (validate) -> steps -> cleanup,   one step: train -> (validate) -> log -> (save)

* **Setup** fails cleanly: what it created under trainer.output_dir is removed, and what it started (engines,
  loggers) is closed.
* **One order per step.** The step's metrics line is written before its checkpoint: a crash in between
  leaves a line past the last checkpoint, which the resumed run truncates and writes again, never a
  checkpoint whose step has no line. So `time/save`, the seconds spent writing a checkpoint, is reported on
  the line of the step after it; `time/validate` and the step's own phases on the step's line.
* **Checkpoints** hold the engines (the subclass's), `trainer_state.json` (kind, step, world size and the
  subclass's state), every rank's torch RNG state, the config and the tokenizer. A resume restores them all,
  so a resumed run continues exactly, dropout included.
* **Cleanup** closes every engine and logger, whether the run ends or fails.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from rlkit.distributed import DistInfo, all_reduce_sum
from rlkit.errors import CheckpointError
from rlkit.timing import PhaseTimer
from rlkit.trainer.checkpoint import CheckpointManager, resume_point
from rlkit.trainer.guards import check_output_dir, removed_on_error
from rlkit.trainer.metrics import MetricsLogger, build_logger

log = logging.getLogger(__name__)
TRAINER_STATE = "trainer_state.json"
RNG_DIR = "rng"
# What a checkpoint of the other kind is, and what to do, in the words of the run that refuses it.
_WRONG_KIND = {
    "sft": "is not an SFT checkpoint (an `rlkit train` run's?); give `rlkit sft` its own trainer.output_dir, or "
           "start from an exported model with model.path",
    "rl": "is not an RL checkpoint (an `rlkit sft` run's?); give `rlkit train` its own trainer.output_dir, or "
          "start from an exported model with model.path",
}


class TrainerShell:
    """The run around the steps. A subclass builds its parts in `setup` and defines one step (`train_one_step`),
    `validate`, and what its checkpoints hold (`save_engines`, `load_engines`, `trainer_state`,
    `load_trainer_state`). `cfg` has the `trainer`, `model` and `engine` sections of both run kinds."""

    kind: ClassVar[str]  # "rl" or "sft", written into trainer_state.json

    def __init__(self, cfg: Any, dist: DistInfo):
        torch.manual_seed(cfg.trainer.seed + dist.rank)  # dropout streams: reproducible, distinct per rank
        self.cfg = cfg
        self.dist = dist
        self.output_dir = Path(cfg.trainer.output_dir)
        self.step = 0
        self.total_steps = 0
        self.first_validation: dict[str, float] = {}
        self.timer = PhaseTimer(cuda=dist.device.startswith("cuda"))
        check_output_dir(self.output_dir)
        # A setup that fails (bad model path, data file, plugin, checkpoint) leaves no trace in output_dir and
        # closes what it started.
        with removed_on_error(self.output_dir, is_main=dist.is_main), ExitStack() as resources:
            self.resources = resources  # setup registers what close() must close
            self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", cfg.trainer.keep_last, dist.is_main)
            resume_from = resume_point(cfg.trainer.resume, self.checkpoints, self.output_dir)
            self.setup()
            if resume_from is not None:
                self._load(resume_from)
            self.logger: MetricsLogger = build_logger(
                cfg.trainer.loggers, self.output_dir, is_main=dist.is_main, total_steps=self.total_steps,
                start_step=self.step, progress_bar=cfg.trainer.progress_bar, project=cfg.trainer.project_name,
                name=cfg.trainer.experiment_name or self.output_dir.name, config=cfg.model_dump(mode="json"),
            )
            resources.callback(self.logger.close)
            self.resources = resources.pop_all()  # set up: kept open until close()

    # -- what a run kind defines ------------------------------------------------------------------
    def setup(self) -> None:
        """Build the run's parts, set `total_steps` and `tokenizer`, register closers on `self.resources`."""
        raise NotImplementedError

    def train_one_step(self) -> dict[str, float]:
        """Train step `self.step`; its metrics. Phases go to `self.timer`, which the loop reports."""
        raise NotImplementedError

    def has_validation(self) -> bool:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        raise NotImplementedError

    def save_engines(self, directory: Path) -> None:
        """Write the engines' state into the checkpoint directory (collective)."""
        raise NotImplementedError

    def load_engines(self, directory: Path) -> None:
        raise NotImplementedError

    def trainer_state(self) -> dict[str, Any]:
        """The run kind's entries of trainer_state.json (JSON-serialisable; rank 0's are written)."""
        return {}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        pass

    def finish(self, last: dict[str, float]) -> None:
        """After the last step (rank 0 may report)."""

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Run to trainer.total_steps (validating first with trainer.val_before_train); the last step's metrics."""
        trainer = self.cfg.trainer
        last: dict[str, float] = {}
        try:
            if trainer.val_before_train and self.step == 0 and self.has_validation():
                self.first_validation = self.validate()
                self.logger.log(0, self.first_validation)
            while self.step < self.total_steps:
                self.step += 1
                last = self._run_step()
                # Logged before the save: see the module docstring.
                self.logger.log(self.step, last)
                is_last = self.step == self.total_steps
                if (trainer.save_freq and self.step % trainer.save_freq == 0) or (is_last and trainer.save_at_end):
                    self.save()
        finally:
            self.close()
        self.finish(last)
        return last

    def _run_step(self) -> dict[str, float]:
        trainer = self.cfg.trainer
        metrics = self.train_one_step()
        is_last = self.step == self.total_steps
        if self.has_validation() and ((trainer.test_freq and self.step % trainer.test_freq == 0) or is_last):
            with self.timer.phase("validate"):
                metrics.update(self.validate())
        metrics.update(self.timer.metrics())  # the step's phases, its validation, the previous step's save
        self.timer.reset()
        return metrics

    def step_costs(self, start: float, num_tokens: float) -> dict[str, float]:
        """time/step since `start`, throughput over `num_tokens` (this rank's; summed over ranks), memory peaks."""
        seconds = time.perf_counter() - start
        metrics = {"time/step": seconds, "throughput/tokens_per_s": all_reduce_sum(num_tokens) / seconds}
        if self.dist.device.startswith("cuda"):
            metrics["memory/peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        metrics["memory/peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        return metrics

    def close(self) -> None:
        """Close the loggers and every engine the run started (idempotent)."""
        self.resources.close()

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        with self.timer.phase("save"):
            return self.checkpoints.save(self.step, self._write_checkpoint)

    def _write_checkpoint(self, directory: Path) -> None:
        self.save_engines(directory)
        (directory / RNG_DIR).mkdir(exist_ok=True)
        torch.save(rng_state(), directory / RNG_DIR / f"rank_{self.dist.rank}.pt")
        if self.dist.is_main:
            state = {"kind": self.kind, "step": self.step, "world_size": self.dist.world_size,
                     **self.trainer_state()}
            (directory / TRAINER_STATE).write_text(json.dumps(state, indent=1))
            (directory / "config.yaml").write_text(yaml.safe_dump(self.cfg.model_dump(mode="json", by_alias=True),
                                                                  sort_keys=False))
            self.tokenizer.save_pretrained(str(directory / "tokenizer"))

    def _load(self, directory: Path) -> None:
        state = json.loads((directory / TRAINER_STATE).read_text())
        if state.get("kind", "rl") != self.kind:  # RL checkpoints before the kind was written have none
            raise CheckpointError(f"{directory} {_WRONG_KIND[self.kind]}")
        self.load_engines(directory)
        self.step = state["step"]
        self.load_trainer_state(state)
        rng_file = directory / RNG_DIR / f"rank_{self.dist.rank}.pt"
        if state.get("world_size") == self.dist.world_size and rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        elif self.dist.is_main:
            log.warning("%s holds no random state for these %d ranks (written by %s): random streams (dropout) "
                        "start afresh", directory, self.dist.world_size, state.get("world_size", "an older rlkit"))
        if self.dist.is_main:
            log.info("resumed from %s at step %d", directory, self.step)


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
