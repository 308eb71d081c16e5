"""Where metrics go: the console (a progress bar and one compact line per step), metrics.jsonl,
TensorBoard and wandb. Only rank 0 logs."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Iterable, Protocol

from rlkit.errors import RlkitError

log = logging.getLogger(__name__)

# Keys shown on the console line, in order, when present.
CONSOLE_KEYS = (
    "loss",
    "val/loss",
    "reward/mean",
    "val/reward/mean",
    "val/accuracy",
    "response_length/mean",
    "pg_loss",
    "vf_loss",
    "kl",
    "entropy",
    "grad_norm",
    "time/step",
)


class Sink(Protocol):
    def write(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """metrics.jsonl: one JSON line per logged step, flushed as it is written.

    A resumed run (`keep_through_step` = its checkpoint's step) keeps the lines up to that step and writes the
    later ones again, so the file ends up as an uninterrupted run's. A fresh start (None) keeps none: the
    trainer has checked before that a file already there is an interrupted run's to replace
    (rlkit.trainer.resume_checks). The old file is replaced atomically, and a last line cut short by a crash
    during its write is dropped with a warning.
    """

    def __init__(self, path: Path, *, keep_through_step: int | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            records = [] if keep_through_step is None else read_records(path)
            kept = [line for step, line in records if step <= keep_through_step]
            replace_atomically(path, "".join(line + "\n" for line in kept))
        self._handle = path.open("a")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{key: _jsonable(value) for key, value in metrics.items()}}
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_records(path: Path) -> list[tuple[int, str]]:
    """(step, line) of every record in a metrics.jsonl; a cut-off last line is dropped with a warning."""
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
            if not isinstance(step, int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # no newline after it: the write was cut off
                log.warning("%s ends in a cut-off line (a crash during its write); dropped it: %.80s", path, line)
                continue
            raise RlkitError(
                f"{path} line {number} is not a metrics record (JSON with an integer 'step'); fix or remove that "
                "line, then start the run again"
            ) from None
        records.append((step, line))
    return records


def replace_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary sibling and a rename: a crash leaves the old file or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class TensorBoardSink:
    def __init__(self, directory: Path):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._writer = SummaryWriter(log_dir=str(directory))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    def __init__(self, project: str, name: str, config: dict):
        try:
            import wandb
        except ImportError:
            from rlkit.errors import ConfigError

            raise ConfigError("trainer.loggers has 'wandb' but wandb is not installed: "
                              "pip install 'rlkit[wandb]'") from None
        self._run = wandb.init(project=project, name=name, config=config)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        self._run.finish()


class ConsoleSink:
    """One compact line per step, printed above a tqdm progress bar."""

    def __init__(self, total_steps: int, start_step: int, progress_bar: bool):
        self._bar = None
        if progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
                             dynamic_ncols=True, leave=False, disable=not sys.stderr.isatty())

    def write(self, step: int, metrics: dict[str, float]) -> None:
        line = format_line(step, metrics)
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
            if not any(key.startswith("val/") for key in metrics) or "reward/mean" in metrics:
                self._bar.update(max(0, step - self._bar.n))
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def format_line(step: int, metrics: dict[str, float]) -> str:
    parts = [f"step {step:>4}"]
    for key in CONSOLE_KEYS:
        if key in metrics:
            parts.append(f"{key.replace('/mean', '')} {_short(metrics[key])}")
    return " | ".join(parts)


def _short(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:g}"
    return f"{value:.3f}" if abs(value) >= 0.01 else f"{value:.2e}"


def _jsonable(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


class MetricsLogger:
    """Fans metrics out to the configured sinks on rank 0; a no-op elsewhere."""

    def __init__(self, sinks: Iterable[Sink]):
        self._sinks = list(sinks)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self._sinks:
            sink.write(step, metrics)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()


def build_logger(
    loggers: list[str],
    output_dir: Path,
    *,
    is_main: bool,
    total_steps: int,
    start_step: int,
    progress_bar: bool,
    project: str = "rlkit",
    name: str = "run",
    config: dict | None = None,
) -> MetricsLogger:
    if not is_main:
        return MetricsLogger([])
    resumed = start_step if start_step > 0 else None
    factories = {
        "console": lambda: ConsoleSink(total_steps, start_step, progress_bar),
        "jsonl": lambda: JsonlSink(output_dir / "metrics.jsonl", keep_through_step=resumed),
        "tensorboard": lambda: TensorBoardSink(output_dir / "tensorboard"),
        "wandb": lambda: WandbSink(project, name, config or {}),
    }
    return MetricsLogger(factories[name]() for name in loggers)
