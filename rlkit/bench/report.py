"""What `rlkit bench` shows and keeps: a terminal table (rich), bench.json, and a stacked bar chart of phases."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any

from rlkit.bench.alone import MODULES as ALONE_MODULES
from rlkit.bench.runner import PHASES, BenchResult, PairingResult

ALONE_ROLLOUTS = tuple(ALONE_MODULES)  # bench.json has a list of "alone" rows for each

# Table columns for the phases, in step order.
PHASE_HEADERS = {
    "generate": "generate",
    "reward": "reward",
    "old_logprobs": "old lp",
    "ref_logprobs": "ref lp",
    "values": "values",
    "update": "update",
    "weight_sync": "sync",
    "experience_wait": "wait",  # split: the trainer waiting for the rollout ranks' batch
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
            "data": None if workload.data_file is None else str(workload.data_file),
            "prompts": workload.num_prompts, "n": workload.n, "prompt_len": workload.prompt_len,
            "response_len": workload.response_len, "steps": workload.steps, "warmup": workload.warmup,
            "nproc": request.nproc, "overrides": list(request.overrides),
        },
        "pairings": [
            {"engine": p.engine, "rollout": p.rollout, "placement": p.placement, "status": p.status, "reason": p.reason,
             "phases": p.phases,
             "step_s": p.step_s, "rollout_tokens_per_s": p.rollout_tokens_per_s,
             "train_tokens_per_s": p.train_tokens_per_s, "mfu": p.mfu, "peak_memory_gb": p.peak_memory_gb,
             "num_steps": p.num_steps, "output_dir": p.output_dir, "settings": p.settings,
             "step_over_vllm_alone": _ratio(p.step_s, result.alone_seconds("vllm")),
             "generate_over_vllm_alone": _ratio(p.phases.get("generate"), result.alone_seconds("vllm")),
             # over the same rollout engine alone (vLLM's, SGLang's): None for an engine without such rows
             "generate_over_rollout_alone": _ratio(p.phases.get("generate"), result.alone_seconds(p.rollout))}
            for p in result.pairings
        ],
        **{f"{rollout}_alone": [
            {"name": b.name, "logprobs": b.logprobs, "status": b.status, "reason": b.reason,
             "generate_s": b.generate_s, "tokens_per_s": b.tokens_per_s, "num_steps": b.num_steps,
             "before_the_pairings": b.before}
            for b in result.baselines if b.rollout == rollout
        ] for rollout in ALONE_ROLLOUTS},
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
    alone = result.alone_seconds("vllm")
    # a column against each pairing's own rollout engine alone, once an engine other than vLLM ran alone
    own = any(b.rollout != "vllm" and b.status == "ok" for b in result.baselines)
    table = Table(title=f"rlkit bench: {_source(result)}, {workload.num_prompts} prompts x {workload.n}, "
                        f"{_lengths(workload)}; median seconds per step over {workload.steps} steps")
    ratios = (("step / vLLM", "gen / vLLM") if alone is not None else ()) + (("gen / own alone",) if own else ())
    for header in ("pairing", "status", *(PHASE_HEADERS[phase] for phase in phases), "step", *ratios,
                   "rollout tok/s", "train tok/s", "MFU", "peak GB"):
        table.add_column(header, justify="left" if header in ("pairing", "status") else "right", no_wrap=True)
    for p in result.pairings:
        ratio_cells = ([_times(_ratio(p.step_s, alone)), _times(_ratio(p.phases.get("generate"), alone))]
                       if alone is not None else [])
        ratio_cells += [_times(_ratio(p.phases.get("generate"), result.alone_seconds(p.rollout)))] if own else []
        table.add_row(
            p.name, p.status, *[_phase_time(p, phase) for phase in phases], _number(p.step_s), *ratio_cells,
            _number(p.rollout_tokens_per_s), _number(p.train_tokens_per_s),
            "-" if p.mfu is None else f"{100 * p.mfu:.1f}%", _number(p.peak_memory_gb),
        )
    for b in result.baselines:  # generation only: the generate column and the step are the same number
        cells = ["-"] * len(phases)
        if "generate" in phases:
            cells[phases.index("generate")] = _number(b.generate_s)
        ratio_cells = [_times(_ratio(b.generate_s, alone))] * (2 if alone is not None else 0)
        ratio_cells += [_times(_ratio(b.generate_s, result.alone_seconds(b.rollout)))] if own else []
        table.add_row(b.name, b.status, *cells, _number(b.generate_s), *ratio_cells, _number(b.tokens_per_s),
                      "-", "-", "-")
    console.print(table)
    for p in result.pairings:
        if p.settings:
            console.print(f"{p.name} ran with {settings_text(p.settings)}", highlight=False, markup=False)
    for rollout in ALONE_ROLLOUTS:
        if (line := drift_text(result, rollout)) is not None:
            console.print(line, highlight=False, markup=False)
    for item in [*result.pairings, *result.baselines]:
        if item.reason:
            console.print(f"{item.status} {item.name}: {item.reason}", highlight=False, markup=False)


def drift_text(result: BenchResult, rollout: str) -> str | None:
    """How far `rollout` alone moved between its runs before and after the pairings, or None."""
    drift = result.alone_drift(rollout)
    if drift is None:
        return None
    before, after = drift
    return (f"{rollout} alone took {before:.3g} s a step before the pairings and {after:.3g} s after "
            f"({100 * (after - before) / before:+.0f}%); the ratios use their mean, {(before + after) / 2:.3g} s")


def settings_text(settings: dict[str, dict[str, Any]]) -> str:
    """`key=value` of each resolved speed option, `(set)` after those the command gave (the others are auto)."""
    return ", ".join(f"{key}={json.dumps(item['value'])}{' (set)' if item['source'] == 'set' else ''}"
                     for key, item in settings.items())


def plot_phases(result: BenchResult, path: Path) -> Path:
    """A PNG of stacked median phase times per pairing that ran, then the "alone" rows' generate bars (what did
    not run is named below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = {p.name: p.phases for p in result.pairings if p.status == "ok"}
    ran.update({b.name: {"generate": b.generate_s} for b in result.baselines if b.status == "ok"})
    phases = [phase for phase in PHASES if any(phase in bars for bars in ran.values())]
    phases += sorted({phase for bars in ran.values() for phase in bars} - set(phases))
    figure, axis = plt.subplots(figsize=(max(4.0, 1.6 * len(ran) + 2.5), 4.5))
    bottoms = [0.0] * len(ran)
    for phase in phases:
        heights = [bars.get(phase, 0.0) for bars in ran.values()]
        axis.bar(list(ran), heights, bottom=bottoms, label=phase)
        bottoms = [bottom + height for bottom, height in zip(bottoms, heights)]
    axis.set_ylabel("median seconds per step")
    workload = result.request.workload
    axis.set_title(f"{_source(result)}: {workload.num_prompts}x{workload.n} samples, {_lengths(workload)}", fontsize=10)
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


def _source(result: BenchResult) -> str:
    model = result.request.shape or result.model_path or str(result.request.model)
    data = result.request.workload.data_file
    return model if data is None else f"{model} on {data}"


def _lengths(workload) -> str:
    if workload.data_file is None:
        return f"{workload.prompt_len}+{workload.response_len} tokens"
    return f"<={workload.response_len} new tokens"


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _phase_time(pairing: PairingResult, phase: str) -> str:
    """The median seconds of a phase; 'not run' where the pairing ran but its steps skipped the phase."""
    if pairing.status == "ok" and phase not in pairing.phases:
        return "not run"
    return _number(pairing.phases.get(phase))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
