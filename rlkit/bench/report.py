"""What `rlkit bench` shows and keeps: a terminal table (rich), bench.json, and a stacked bar chart of phases."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any

from rlkit.bench.runner import PHASES, BenchResult, PairingResult

# Table columns for the phases, in step order.
PHASE_HEADERS = {
    "generate": "generate",
    "reward": "reward",
    "old_logprobs": "old lp",
    "ref_logprobs": "ref lp",
    "values": "values",
    "update": "update",
    "weight_sync": "sync",
}
# A column even when no pairing ran it: the switches that skip this pass are what bench runs compare, and a
# missing column would read as a table of a different layout rather than as a phase that did not run.
ALWAYS_SHOWN = ("old_logprobs",)


def to_json(result: BenchResult) -> dict[str, Any]:
    """The whole result as plain JSON: machine, workload, and one entry per pairing (times in seconds)."""
    import torch

    from rlkit import __version__

    request, machine, workload = result.request, result.machine, result.request.workload
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": request.command(),
        "rlkit": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": {"gpu": machine.gpu, "num_gpus": machine.num_gpus, "cpu": machine.cpu,
                    "num_cpu_cores": machine.num_cpu_cores},
        "workload": {
            "shape": request.shape, "model": result.model_path, "num_params": result.num_params,
            "prompts": workload.num_prompts, "n": workload.n, "prompt_len": workload.prompt_len,
            "response_len": workload.response_len, "steps": workload.steps, "warmup": workload.warmup,
            "nproc": request.nproc, "overrides": list(request.overrides),
        },
        "pairings": [
            {"engine": p.engine, "rollout": p.rollout, "status": p.status, "reason": p.reason, "phases": p.phases,
             "step_s": p.step_s, "rollout_tokens_per_s": p.rollout_tokens_per_s,
             "train_tokens_per_s": p.train_tokens_per_s, "mfu": p.mfu, "peak_memory_gb": p.peak_memory_gb,
             "num_steps": p.num_steps, "output_dir": p.output_dir}
            for p in result.pairings
        ],
    }


def write_json(result: BenchResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(result), indent=1) + "\n")
    return path


def print_table(result: BenchResult, console=None) -> None:
    """One row per pairing: median phase times, throughputs, MFU, peak memory; then why pairings did not run."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or CI: rich would squeeze the table into 80 columns
            console = Console(width=200)
    phases = [phase for phase in PHASE_HEADERS
              if phase in ALWAYS_SHOWN or any(phase in p.phases for p in result.pairings)]
    workload = result.request.workload
    source = result.request.shape or result.model_path or str(result.request.model)
    table = Table(title=f"rlkit bench: {source}, {workload.num_prompts} prompts x {workload.n}, "
                        f"{workload.prompt_len}+{workload.response_len} tokens; median seconds per step over "
                        f"{workload.steps} steps")
    for header in ("pairing", "status", *(PHASE_HEADERS[phase] for phase in phases), "step", "rollout tok/s",
                   "train tok/s", "MFU", "peak GB"):
        table.add_column(header, justify="left" if header in ("pairing", "status") else "right", no_wrap=True)
    for p in result.pairings:
        table.add_row(
            p.name, p.status, *[_phase_time(p, phase) for phase in phases], _number(p.step_s),
            _number(p.rollout_tokens_per_s), _number(p.train_tokens_per_s),
            "-" if p.mfu is None else f"{100 * p.mfu:.1f}%", _number(p.peak_memory_gb),
        )
    console.print(table)
    for p in result.pairings:
        if p.reason:
            console.print(f"{p.status} {p.name}: {p.reason}", highlight=False, markup=False)


def plot_phases(result: BenchResult, path: Path) -> Path:
    """A PNG of stacked median phase times per pairing that ran (skipped and failed ones are named below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [p for p in result.pairings if p.status == "ok"]
    phases = [phase for phase in PHASES if any(phase in p.phases for p in ran)]
    phases += sorted({phase for p in ran for phase in p.phases} - set(phases))
    figure, axis = plt.subplots(figsize=(max(4.0, 1.6 * len(ran) + 2.5), 4.5))
    bottoms = [0.0] * len(ran)
    for phase in phases:
        heights = [p.phases.get(phase, 0.0) for p in ran]
        axis.bar([p.name for p in ran], heights, bottom=bottoms, label=phase)
        bottoms = [bottom + height for bottom, height in zip(bottoms, heights)]
    axis.set_ylabel("median seconds per step")
    workload = result.request.workload
    axis.set_title(f"{result.request.shape or result.model_path}: {workload.num_prompts}x{workload.n} samples, "
                   f"{workload.prompt_len}+{workload.response_len} tokens", fontsize=10)
    if ran:
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        axis.text(0.5, 0.5, "no pairing ran", ha="center", va="center", transform=axis.transAxes)
    not_run = [f"{p.name}: {p.status}" for p in result.pairings if p.status != "ok"]
    if not_run:
        figure.text(0.01, 0.01, "; ".join(not_run), fontsize=7)
    figure.tight_layout(rect=(0, 0.05 if not_run else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _phase_time(pairing: PairingResult, phase: str) -> str:
    """The median seconds of a phase; 'not run' where the pairing ran but its steps skipped the phase."""
    if pairing.status == "ok" and phase not in pairing.phases:
        return "not run"
    return _number(pairing.phases.get(phase))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
