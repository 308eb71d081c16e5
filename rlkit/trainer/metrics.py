"""Where metrics go: the console (a progress bar and one compact line per step), metrics.jsonl,
TensorBoard and wandb. Only rank 0 logs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Iterable, Protocol

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
    def __init__(self, path: Path, *, truncate_after_step: int | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and path.exists():
            # A resumed run rewrites the steps after its checkpoint, so the file matches an uninterrupted run.
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= truncate_after_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif truncate_after_step is None and path.exists():
            path.unlink()
        self._handle = path.open("a")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{key: _jsonable(value) for key, value in metrics.items()}}
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


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

            raise ConfigError("trainer.loggers has 'wandb' but wandb is not installed: pip install 'rlkit[wandb]'") from None
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
        "jsonl": lambda: JsonlSink(output_dir / "metrics.jsonl", truncate_after_step=resumed),
        "tensorboard": lambda: TensorBoardSink(output_dir / "tensorboard"),
        "wandb": lambda: WandbSink(project, name, config or {}),
    }
    return MetricsLogger(factories[name]() for name in loggers)
