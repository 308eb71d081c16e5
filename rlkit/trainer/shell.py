"""What a training run does around its steps, the same for RL and SFT.

    lock -> setup -> resume -> (validate) -> steps -> cleanup -> unlock
    one step: train -> (validate) -> log -> (save) -> (after a preemption signal: save, stop)

* **The output directory** is checked, created and locked (`.rlkit.lock`) before anything is written there,
  and the lock is given back last, after everything else has closed (rlkit.trainer.output_dir).
* **Setup** fails cleanly: what it started (engines, loggers) is closed, then what it created under
  trainer.output_dir is removed (only that). Before any model loads, the run is checked against the one
  before it in the directory (rlkit.trainer.resume_checks): no finished run's metrics overwritten, no
  checkpoint of the other kind, a config change listed (refused where the checkpoint no longer fits it).
* **One order per step.** The step's metrics line is written before its checkpoint: a crash in between
  leaves a line past the last checkpoint, which the resumed run truncates and writes again, never a
  checkpoint whose step has no line. So `time/save`, the seconds spent writing a checkpoint, is reported on
  the line of the step after it; `time/validate` and the step's own phases on the step's line.
* **Stopping.** After each step the ranks agree whether any received a preemption signal
  (trainer.preempt_signals); if so the step is saved (unless it just was) and the run raises RunStopped (exit
  75). Ctrl-C stops at once with RunStopped (exit 130). Both say where the run stopped and how to resume
  (rlkit.trainer.preemption).
* **The heap.** What setup built is collected once and frozen for the steps (rlkit.heap): the collections
  during the steps, counted in each step's `time/gc`, walk only what the steps create.
* **Checkpoints** hold the engines (the subclass's), `trainer_state.json` (kind, step, world size and the
  subclass's state), every rank's torch RNG state, the config and the tokenizer. A resume restores them all,
  so a resumed run continues exactly, dropout included.
* **Cleanup** closes every engine, the reward (its worker process) and the loggers, then records in the lock
  file how the run ended, whether the run ends or fails.
"""

from __future__ import annotations

import abc
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
from rlkit.heap import frozen_heap
from rlkit.timing import PhaseTimer
from rlkit.trainer.checkpoint import TRAINER_STATE, CheckpointManager, resume_point
from rlkit.trainer.metrics import MetricsLogger, build_logger
from rlkit.trainer.output_dir import OutputDir
from rlkit.trainer.preemption import StopRequests
from rlkit.trainer.resume_checks import check_start, check_total_steps

log = logging.getLogger(__name__)
RNG_DIR = "rng"


class TrainerShell(abc.ABC):
    """The run around the steps. A subclass builds its parts in `setup` and defines one step (`train_one_step`),
    `validate`, and what its checkpoints hold (`save_engines`, `load_engines`, `trainer_state`,
    `load_trainer_state`). `cfg` has the `trainer`, `model` and `engine` sections of both run kinds."""

    kind: ClassVar[str]  # "rl" or "sft", written into trainer_state.json
    command: ClassVar[str]  # "rlkit train" or "rlkit sft": how the lock file names the run to another one

    def __init__(self, cfg: Any, dist: DistInfo):
        torch.manual_seed(cfg.trainer.seed + dist.rank)  # dropout streams: reproducible, distinct per rank
        self.cfg = cfg
        self.dist = dist
        self.step = 0
        self.total_steps = 0
        self.first_validation: dict[str, float] = {}
        self.timer = PhaseTimer(cuda=dist.device.startswith("cuda"))
        self.output = OutputDir.open(cfg.trainer.output_dir, dist, command=self.command)  # checked and locked
        self.output_dir = self.output.path
        # A setup that fails (bad model path, data file, plugin, checkpoint) closes what it started, then removes
        # what it created in output_dir, and only that, and gives the lock back.
        with self.output.setup(), ExitStack() as resources:
            self.resources = resources  # setup registers what close() must close
            self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", cfg.trainer.keep_last, dist.is_main)
            resume_from = resume_point(cfg.trainer.resume, self.checkpoints, self.output_dir)
            check_start(resume_from, cfg, self.output, kind=self.kind, world_size=dist.world_size)
            self.setup()
            if resume_from is not None:
                self._load(resume_from)
            self.logger: MetricsLogger = build_logger(
                cfg.trainer.loggers, self.output_dir, is_main=dist.is_main, total_steps=self.total_steps,
                start_step=self.step, progress_bar=cfg.trainer.progress_bar, project=cfg.trainer.project_name,
                name=cfg.trainer.experiment_name or self.output_dir.name, config=cfg.model_dump(mode="json"),
            )
            resources.callback(self.logger.close)
            # Set up: kept open until close(), which closes it all and then, last, gives the lock back.
            self.resources = ExitStack()
            self.resources.callback(self.output.release)
            self.resources.push(resources.pop_all())

    # -- what a run kind defines ------------------------------------------------------------------
    @abc.abstractmethod
    def setup(self) -> None:
        """Build the run's parts, set `total_steps` and `tokenizer`, register closers on `self.resources`."""

    @abc.abstractmethod
    def train_one_step(self) -> dict[str, float]:
        """Train step `self.step`; its metrics. Phases go to `self.timer`, which the loop reports."""

    @abc.abstractmethod
    def has_validation(self) -> bool:
        """Whether the run has validation data (then `validate` runs at trainer.test_freq and at the end)."""

    @abc.abstractmethod
    def validate(self) -> dict[str, float]:
        """The validation metrics of the current weights (every rank calls it)."""

    @abc.abstractmethod
    def save_engines(self, directory: Path) -> None:
        """Write the engines' state into the checkpoint directory (collective)."""

    @abc.abstractmethod
    def load_engines(self, directory: Path) -> None:
        """Restore the engines' state from the checkpoint directory (collective)."""

    def trainer_state(self) -> dict[str, Any]:
        """The run kind's entries of trainer_state.json (JSON-serialisable; rank 0's are written)."""
        return {}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        pass

    def finish(self, last: dict[str, float]) -> None:
        """After the last step (rank 0 may report)."""

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Run to trainer.total_steps (validating first with trainer.val_before_train); the last step's metrics.
        A preemption signal or Ctrl-C ends it with RunStopped (see the module docstring)."""
        trainer = self.cfg.trainer
        last: dict[str, float] = {}
        try:
            with self.output.running(), StopRequests(trainer.preempt_signals, self._progress) as stops, \
                    frozen_heap():
                if trainer.val_before_train and self.step == 0 and self.has_validation():
                    self.first_validation = self.validate()
                    self.logger.log(0, self.first_validation)
                # the first step's line counts its own phases and collections, not those of setup (model loads,
                # the rollout engine's start-up) or of the validation before training
                self.timer.reset()
                while self.step < self.total_steps:
                    self.step += 1
                    last = self._run_step()
                    self.logger.log(self.step, last)  # before the save: see the module docstring
                    saved = self.save() if self._checkpoint_due() else None
                    if stops.agreed():  # a collective: every rank stops after this same step, with it saved
                        raise stops.preempted(self.step, saved or self.save())
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

    def _checkpoint_due(self) -> bool:
        trainer, is_last = self.cfg.trainer, self.step == self.total_steps
        return bool(trainer.save_freq and self.step % trainer.save_freq == 0) or (is_last and trainer.save_at_end)

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
        """Close the loggers and everything the run started (engines, the reward's worker process), then give the
        output directory's lock back (idempotent)."""
        self.resources.close()

    def _progress(self) -> tuple[int, Path | None]:
        """The step in progress and the newest checkpoint, for the message of a stopped run."""
        published = self.checkpoints.complete_checkpoints()
        return self.step, published[-1] if published else None

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
        state = json.loads((directory / TRAINER_STATE).read_text())  # its kind was checked before setup
        if self.cfg.trainer.total_steps is None:  # the run's length came from the data
            check_total_steps(self.cfg.trainer, self.total_steps, state["step"], directory)
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
