"""What a run checks about the run before it in its output directory, before any model loads.

* A fresh start never replaces a metrics.jsonl it cannot account for: one left by a run that finished
  without a checkpoint to resume from, or by a program rlkit has no record of. Only the metrics of an attempt
  that was interrupted (killed, failed or stopped) before its first checkpoint are started over.
* A checkpoint of the other kind (an RL run's for `rlkit sft`, or the other way round) is an error.
* A resume whose trainer.total_steps lies below the checkpoint's step is an error, not a run that does nothing
  (with trainer.total_steps null, once the data has given the run's length: :func:`check_total_steps`).
* A resume with a changed config lists the changes. Changes after which the checkpoint's state no longer fits
  the run are refused unless trainer.force_resume=true: the training data and its order (files, batch size,
  shuffling, seed, length filters), the world size (which ranks' shares make up each mini-batch) and LoRA.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlkit.config.loading import read_yaml
from rlkit.distributed import raise_on_every_rank
from rlkit.errors import CheckpointError, ConfigError, RlkitError
from rlkit.trainer.checkpoint import TRAINER_STATE
from rlkit.trainer.output_dir import OutputDir

log = logging.getLogger(__name__)
# What a checkpoint of the other kind is, and what to do, in the words of the run kind that refuses it.
_WRONG_KIND = {
    "sft": "is not an SFT checkpoint (an `rlkit train` run's?); give `rlkit sft` its own trainer.output_dir, or "
           "start from an exported model with model.path",
    "rl": "is not an RL checkpoint (an `rlkit sft` run's?); give `rlkit train` its own trainer.output_dir, or "
          "start from an exported model with model.path",
}

# Keys that say where and how a run reports, not what it trains: their changes are not listed.
_BOOKKEEPING = (
    "trainer.output_dir", "trainer.resume", "trainer.force_resume", "trainer.progress_bar", "trainer.loggers",
    "trainer.project_name", "trainer.experiment_name", "trainer.preempt_signals",
)
# Keys (and sections) whose change leaves the checkpoint's data position, seeds or weights wrong for the run.
_BREAKS_RESUME = {
    "trainer.seed": "the data order and sampling seeds",
    "data.train_files": "the training data",
    "data.max_train_samples": "the training data",
    "data.max_prompt_length": "which prompts are kept",
    "data.filter_overlong_prompts": "which prompts are kept",
    "data.max_length": "which samples are kept",
    "data.shuffle": "the data order",
    "data.train_batch_size": "the sampler position",
    "model.lora": "the weights the checkpoint holds",
}


def check_start(checkpoint: Path | None, cfg: BaseModel, output: OutputDir, *, kind: str, world_size: int) -> None:
    """Check a fresh start (checkpoint None) or a resume from `checkpoint` against the run before it. `kind`:
    the run's ("rl" or "sft", as trainer_state.json records it).

    Reads files on rank 0; an error is raised on every rank. trainer.total_steps null (the length comes from
    the data) is checked once the data is loaded (:func:`check_total_steps`).
    """

    def check() -> None:
        if checkpoint is None:
            _check_fresh_start(output, writes_metrics="jsonl" in cfg.trainer.loggers)
        else:
            _check_resume(checkpoint, cfg, kind=kind, world_size=world_size)

    raise_on_every_rank(check, is_main=output.is_main)


def _check_fresh_start(output: OutputDir, *, writes_metrics: bool) -> None:
    metrics = output.path / "metrics.jsonl"
    if not writes_metrics or not metrics.exists():
        return
    previous = output.previous_state
    if previous in ("running", "failed", "stopped"):
        log.warning("%s holds the metrics of an earlier attempt that stopped (%s) before its first checkpoint; "
                    "this run starts over and writes them again", metrics, "killed" if previous == "running"
                    else previous)
        return
    whose = ("a run that finished without saving a checkpoint to resume from" if previous == "finished"
             else "a run rlkit has no record of")
    raise ConfigError(
        f"trainer.output_dir={output.path} holds the metrics.jsonl of {whose}; a new run there would overwrite it. "
        "Choose another trainer.output_dir, or move metrics.jsonl away to start over in this one"
    )


def check_total_steps(total_steps: int, step: int, checkpoint: Path) -> None:
    """A run of `total_steps` cannot resume from step `step` of `checkpoint` when that lies beyond its end."""
    if total_steps < step:
        raise ConfigError(
            f"trainer.total_steps={total_steps} is below step {step} of {checkpoint}, which this run resumes from; "
            f"raise trainer.total_steps above {step} to train on, or start a new run in another trainer.output_dir"
        )


def _check_resume(checkpoint: Path, cfg: BaseModel, *, kind: str, world_size: int) -> None:
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # loading the checkpoint names what is wrong with it
    if state.get("kind", "rl") != kind:  # RL checkpoints before the kind was written have none
        raise CheckpointError(f"{checkpoint} {_WRONG_KIND[kind]}")
    if cfg.trainer.total_steps is not None:
        check_total_steps(cfg.trainer.total_steps, step, checkpoint)
    try:
        saved = read_yaml(checkpoint / "config.yaml")
    except RlkitError:
        return
    changes = config_changes(saved, cfg.model_dump(mode="json", by_alias=True))
    saved_world = state.get("world_size")
    breaking = [f"{key} {before} -> {after} ({_BREAKS_RESUME[_breaking_key(key)]})"
                for key, before, after in changes if _breaking_key(key)]
    if saved_world is not None and saved_world != world_size:
        breaking.append(f"world size {saved_world} -> {world_size} (which ranks' shares make up each mini-batch)")
    if changes:
        log.warning("resuming %s with a changed config: %s", checkpoint,
                    "; ".join(f"{key} {before} -> {after}" for key, before, after in changes))
    if breaking and not cfg.trainer.force_resume:
        raise ConfigError(
            f"{checkpoint} cannot be continued exactly with this config: {'; '.join(breaking)}. Set them back, start "
            "a new run in another trainer.output_dir, or set trainer.force_resume=true to continue anyway"
        )


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) for every key whose value differs, bookkeeping keys left out."""
    before, after = _flatten(saved), _flatten(current)
    missing = "(unset)"
    return [
        (key, before.get(key, missing), after.get(key, missing))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, missing) != after.get(key, missing) and not key.startswith(_BOOKKEEPING)
    ]


def _breaking_key(key: str) -> str | None:
    return next((known for known in _BREAKS_RESUME if key == known or key.startswith(known + ".")), None)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
