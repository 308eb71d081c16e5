"""Training curves from metrics.jsonl, drawn with matplotlib (headless)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rlkit.errors import DataError

DEFAULT_KEYS = (
    "reward/mean",
    "val/reward/mean",
    "val/accuracy",
    "response_length/mean",
    "pg_loss",
    "vf_loss",
    "loss",
    "val/loss",
    "kl",
    "entropy",
    "grad_norm",
    "time/step",
)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} does not exist: point `rlkit plot` at a run's trainer.output_dir")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path}, line {number}: not valid JSON") from None
    if not records:
        raise DataError(f"{path} holds no metrics yet")
    return records


def plot_metrics(paths: Path | list[Path], out: Path, keys: list[str] | None = None,
                 labels: list[str] | None = None, *, x: str = "step") -> Path:
    """Curves of one metrics.jsonl, or of several overlaid (one line a run, labelled by `labels`, default each
    run's folder name), to a PNG. `x`: 'step', or 'time' (seconds of training: the sum of time/step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [paths] if isinstance(paths, Path) else list(paths)
    runs = [read_metrics(path) for path in paths]
    labels = labels or [path.parent.name for path in paths]
    present = [key for key in (keys or DEFAULT_KEYS)
               if any(record.get(key) is not None for records in runs for record in records)]
    if not present:
        raise DataError(f"{', '.join(map(str, paths))} have none of the metrics {', '.join(keys or DEFAULT_KEYS)}")
    columns = min(3, len(present))
    rows = math.ceil(len(present) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for axis, key in zip(axes.flat, present):
        for records, label in zip(runs, labels, strict=True):
            points = [(position, record[key]) for position, record in zip(_positions(records, x), records)
                      if record.get(key) is not None]
            if not points:
                continue
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        axis.set_title(key)
        axis.set_xlabel("step" if x == "step" else "training seconds")
        axis.grid(alpha=0.3)
        if len(runs) > 1:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(present):]:
        axis.axis("off")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def _positions(records: list[dict], x: str) -> list[float]:
    """Each record's place on the x axis: its step, or the seconds of the steps up to it."""
    if x == "step":
        return [record["step"] for record in records]
    elapsed, positions = 0.0, []
    for record in records:
        elapsed += record.get("time/step", 0.0)
        positions.append(elapsed)
    return positions
