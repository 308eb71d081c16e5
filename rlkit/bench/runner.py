"""Run every (training engine, rollout engine, placement) pairing of `rlkit bench` and summarise what it measured.

Each pairing is a plain `rlkit train CONFIG` in its own process (under torchrun with --nproc > 1), so one
engine's memory never leaks into the next measurement and the code measured is the code users run. The
run writes metrics.jsonl; the summary takes medians over the steps after the warm-up:

  phases             time/<phase> of the trainer (weight_sync, generate, reward, old/ref log-probs, update, ...)
  rollout tokens/s   generated tokens / generate time
  train tokens/s     prompt + response tokens / update time
  MFU                6 * parameters * tokens * ppo_epochs / update time / peak bf16 FLOP/s of the GPUs used
  peak memory        the largest memory/peak_gb of the measured steps (torch's allocator, CUDA only)

Each run prints the speed options it resolved (every `auto` with its value and reason) in its header; they are
read back from its log into the result (`settings`), so the record shows what was measured.

Unless switched off, "vLLM alone" generates the same prompts with the same sampling settings, and so does
"SGLang alone" when a pairing rolls out with SGLang (rlkit.bench.alone), before the pairings and again after
them: what a step's time and its generate phase are compared with (the mean of the two runs).

Placements (`--placement`): 'colocated', or 'split:K' (placement.mode=split with placement.staleness=K; one
rollout rank unless an override says placement.rollout_ranks). In a split run the rollout rank reports its own
generate time, which overlaps training when K > 0: the step time is what to compare; MFU counts the training
GPUs only.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rlkit.bench import alone
from rlkit.bench.alone import BaselineResult
from rlkit.bench.machine import Machine, probe_machine
from rlkit.bench.shapes import count_parameters
from rlkit.bench.workload import Workload, ensure_model, model_dir, run_settings, write_prompts
from rlkit.config import RunConfig, build_config
from rlkit.errors import ConfigError, PluginError
from rlkit.registry import ROLLOUT_ENGINES, TRAIN_ENGINES, Entry, Registry, is_reference
from rlkit.trainer.speed import parse_header_line

log = logging.getLogger(__name__)

PHASES = ("weight_sync", "generate", "reward", "old_logprobs", "ref_logprobs", "values", "advantages", "update")
COLOCATED = "colocated"
@dataclass(frozen=True)
class BenchRequest:
    """One `rlkit bench` invocation. Exactly one of `shape` and `model` is set."""

    engines: tuple[str, ...]
    rollouts: tuple[str, ...]
    workload: Workload
    out: Path
    shape: str | None = None
    model: Path | None = None
    nproc: int = 1
    overrides: tuple[str, ...] = ()
    baseline: bool = True  # also time vLLM alone (and SGLang alone, with an SGLang pairing) on the same prompts
    placements: tuple[str, ...] = (COLOCATED,)  # 'colocated' or 'split:K'

    def command(self) -> str:
        """The command line that repeats this benchmark."""
        w = self.workload
        source = f"--model {self.model}" if self.model is not None else f"--shape {self.shape}"
        parts = [
            "rlkit bench", f"--engine {','.join(self.engines)}", f"--rollout {','.join(self.rollouts)}", source,
            *([f"--data {w.data_file}"] if w.data_file is not None else []),
            f"--prompts {w.num_prompts} --n {w.n} --prompt-len {w.prompt_len} --response-len {w.response_len}",
            f"--steps {w.steps} --warmup {w.warmup}", *([f"--nproc {self.nproc}"] if self.nproc > 1 else []),
            *([f"--placement {','.join(self.placements)}"] if self.placements != (COLOCATED,) else []),
            *([] if self.baseline else ["--no-baseline"]), f"--out {self.out}", *self.overrides,
        ]
        return " ".join(parts)


@dataclass
class PairingResult:
    """What one pairing measured (medians over the measured steps), or why it did not run."""

    engine: str
    rollout: str
    status: Literal["ok", "skipped", "failed"]
    reason: str | None = None
    placement: str = COLOCATED
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step
    step_s: float | None = None
    rollout_tokens_per_s: float | None = None
    train_tokens_per_s: float | None = None
    mfu: float | None = None
    peak_memory_gb: float | None = None
    num_steps: int = 0
    output_dir: str | None = None
    # the speed options the run resolved, from its header: {key: {"value", "source" (auto/set), "reason"}}
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        suffix = "" if self.placement == COLOCATED else f" {self.placement}"
        return f"{self.engine} x {self.rollout}{suffix}"


@dataclass
class BenchResult:
    request: BenchRequest
    machine: Machine
    model_path: str | None
    num_params: int | None
    pairings: list[PairingResult]
    baselines: list[BaselineResult] = field(default_factory=list)

    def alone_seconds(self, rollout: str = "vllm") -> float | None:
        """Seconds `rollout` alone took to generate a step's prompts without log-probs: the mean of its medians
        before and after the pairings (whichever ran); None if it did not run."""
        seconds = [b.generate_s for b in self.baselines if b.rollout == rollout and b.status == "ok" and not b.logprobs]
        return statistics.fmean(seconds) if seconds else None

    def alone_drift(self, rollout: str = "vllm") -> tuple[float, float] | None:
        """(seconds before the pairings, seconds after) of `rollout` alone without log-probs, when both ran."""
        runs = {b.before: b.generate_s for b in self.baselines
                if b.rollout == rollout and b.status == "ok" and not b.logprobs}
        return (runs[True], runs[False]) if len(runs) == 2 else None


# -- the bench ----------------------------------------------------------------------------------------
def run_bench(request: BenchRequest) -> BenchResult:
    """Skip what cannot run here, validate every config, run vLLM alone (and SGLang alone), the pairings one
    after another, then the engines alone again."""
    machine = probe_machine()
    data_file = request.workload.data_file
    if data_file is not None and not data_file.is_file():
        raise ConfigError(f"--data {data_file} does not exist; give a prompt file (rlkit data gsm8k writes one)")
    pairings = [(engine, rollout, placement) for engine in request.engines for rollout in request.rollouts
                for placement in request.placements]
    results: dict[tuple[str, str, str], PairingResult] = {}
    for engine, rollout, placement in pairings:
        reason = skip_reason(engine, rollout, machine)
        if reason is not None:
            results[engine, rollout, placement] = PairingResult(engine, rollout, "skipped", reason, placement)
    runnable = [pairing for pairing in pairings if pairing not in results]
    modules = alone.modules(request.rollouts) if request.baseline else []
    if not runnable:
        baselines = [row for module in modules
                     for row in alone.skipped(module.ROLLOUT, module.VARIANTS,
                                              module.skip_reason(machine.cuda) or "no pairing could run here")]
        return BenchResult(request, machine, None, None, [results[pairing] for pairing in pairings], baselines)

    cache_dir = request.out / "cache"
    model_path = request.model if request.model is not None else model_dir(request.shape, cache_dir)
    prompts_path = data_file if data_file is not None else request.out / "prompts.jsonl"
    # Every config is validated before anything is built or run: a typo in an override fails in a second.
    configs = {(engine, rollout, placement): pairing_config(request, engine, rollout, model_path, prompts_path,
                                                            placement)
               for engine, rollout, placement in runnable}
    if request.model is None:
        ensure_model(request.shape, cache_dir)
    first = next(iter(configs.values()))
    if data_file is None:
        write_prompts(_tokenizer(first), request.workload, prompts_path)
    num_params = _num_params(first)

    # each engine alone before the pairings and after them: the ratios use the mean of the two (a machine's
    # speed drifts); with the settings of a pairing of that engine when there is one, else rlkit's defaults
    alone_configs = {module: next((cfg for cfg in configs.values() if cfg.rollout.name == module.ROLLOUT), first)
                     for module in modules if module.skip_reason(machine.cuda) is None}
    baselines: list[BaselineResult] = []
    for module, cfg in alone_configs.items():
        log.info("bench: %s alone before the pairings, %d steps (%d warm-up)", module.ROLLOUT,
                 request.workload.total_steps, request.workload.warmup)
        baselines += module.run_baseline(cfg, request.workload, request.out / f"{module.ROLLOUT}_alone_before",
                                         before=True)
    for key, cfg in configs.items():
        log.info("bench: %s x %s %s, %d steps (%d warm-up)", *key, request.workload.total_steps,
                 request.workload.warmup)
        results[key] = run_pairing(cfg, request, machine, num_params, key[2])
        log.info("bench: %s x %s %s %s", *key, results[key].status)
    for module in modules:
        if module not in alone_configs:
            baselines += alone.skipped(module.ROLLOUT, module.VARIANTS, module.skip_reason(machine.cuda))
            continue
        log.info("bench: %s alone, %d steps (%d warm-up)", module.ROLLOUT, request.workload.total_steps,
                 request.workload.warmup)
        baselines += module.run_baseline(alone_configs[module], request.workload,
                                         request.out / f"{module.ROLLOUT}_alone")
    return BenchResult(request, machine, str(model_path), num_params, [results[pairing] for pairing in pairings],
                       baselines)


def skip_reason(engine: str, rollout: str, machine: Machine) -> str | None:
    """Why a pairing cannot run on this machine (missing packages, no CUDA), or None when it can."""
    reasons = []
    for registry, name in ((TRAIN_ENGINES, engine), (ROLLOUT_ENGINES, rollout)):
        reasons += _missing(registry, name)
        # A backend whose registry entry says it has no CPU path is skipped without CUDA, not failed.
        if not machine.cuda and _needs_gpu(registry, name):
            reasons.append(f"{registry.kind} {name} needs a CUDA GPU")
    return "; ".join(reasons) or None


def _needs_gpu(registry: Registry, name: str) -> bool:
    if is_reference(name):
        return False  # a plugin named as 'module:attr': the run finds out
    try:
        return registry.backend(name).needs_gpu
    except PluginError:
        return False  # a plugin that cannot be imported here: _missing reports it


def _missing(registry: Registry, name: str) -> list[str]:
    if is_reference(name):
        return []  # a plugin named as 'module:attr': importing it is the only check, and the run does that
    if name not in registry:
        raise ConfigError(registry.unknown_message(name))
    entry: Entry = next(entry for entry in registry.entries() if entry.name == name)
    if entry.missing:
        return [f"{registry.kind} {name} needs {', '.join(entry.missing)} (pip install 'rlkit[{name}]')"]
    module = entry.target.partition(":")[0]
    if ":" in entry.target and importlib.util.find_spec(module) is None:
        return [f"{registry.kind} {name}: module {module} is not installed"]
    return []


def placement_settings(placement: str) -> dict[str, Any]:
    """The placement keys of a --placement name: 'colocated', or 'split:K' (staleness K)."""
    if placement == COLOCATED:
        return {}
    kind, _, staleness = placement.partition(":")
    if kind != "split" or not staleness.isdigit():
        raise ConfigError(f"--placement {placement}: write 'colocated' or 'split:K' with K the staleness (split:0, "
                          "split:1, ...)")
    return {"placement.mode": "split", "placement.staleness": int(staleness)}


def pairing_config(request: BenchRequest, engine: str, rollout: str, model_path: Path, prompts_path: Path,
                   placement: str = COLOCATED) -> RunConfig:
    """The validated run config of one pairing: the fixed workload and placement, then the user's overrides."""
    suffix = "" if placement == COLOCATED else "-" + placement.replace(":", "")
    output_dir = request.out / "runs" / f"{engine}-{rollout}{suffix}"
    settings = run_settings(request.workload, engine=engine, rollout=rollout, model_path=model_path,
                            prompts_path=prompts_path, output_dir=output_dir)
    try:
        return build_config(RunConfig, None, request.overrides, {**settings, **placement_settings(placement)})
    except ConfigError as error:
        raise ConfigError(f"pairing {engine} x {rollout} {placement}: {error}") from None


def training_gpus(cfg: RunConfig, nproc: int) -> int:
    """The processes that train: all of them, but a split placement's rollout ranks."""
    return nproc - cfg.placement.rollout_ranks if cfg.placement.mode == "split" else nproc


def run_pairing(cfg: RunConfig, request: BenchRequest, machine: Machine, num_params: int,
                placement: str = COLOCATED) -> PairingResult:
    """`rlkit train` the pairing's config in a child process and summarise its metrics.jsonl."""
    engine, rollout = cfg.engine.name, cfg.rollout.name
    output_dir = Path(cfg.trainer.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / "bench_config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False))
    metrics_path = output_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)  # a failed run must not be summarised from an older run's metrics
    log_path = output_dir / "bench.log"
    with log_path.open("w") as log_file:
        returncode = subprocess.run(train_command(config_path, request.nproc), stdout=log_file,
                                    stderr=subprocess.STDOUT).returncode
    settings = resolved_settings(log_path)
    if returncode != 0:
        return PairingResult(engine, rollout, "failed", f"exit code {returncode}: {_last_line(log_path)} "
                             f"(log: {log_path})", placement, output_dir=str(output_dir), settings=settings)
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    summary = summarize(records, warmup=request.workload.warmup,
                        num_samples=cfg.data.train_batch_size * cfg.rollout.n, num_params=num_params,
                        ppo_epochs=cfg.algorithm.ppo_epochs,
                        peak_flops=None if cfg.trainer.device == "cpu" else machine.peak_flops(
                            training_gpus(cfg, request.nproc)))
    if summary["num_steps"] < request.workload.steps:
        return PairingResult(engine, rollout, "failed", f"{summary['num_steps']} of {request.workload.steps} "
                             f"measured steps in {metrics_path}", placement, output_dir=str(output_dir),
                             settings=settings)
    return PairingResult(engine, rollout, "ok", placement=placement, output_dir=str(output_dir), settings=settings,
                         **summary)


def resolved_settings(log_path: Path) -> dict[str, dict[str, Any]]:
    """The speed options a run printed in its header (rlkit.trainer.speed), read back from its log."""
    found = (parse_header_line(line) for line in log_path.read_text(errors="replace").splitlines())
    return dict(item for item in found if item is not None)


def train_command(config_path: Path, nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "rlkit", "train", str(config_path)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "rlkit", "train", str(config_path)]


def summarize(records: list[dict[str, Any]], *, warmup: int, num_samples: int, num_params: int, ppo_epochs: int,
              peak_flops: float | None) -> dict[str, Any]:
    """Medians over the steps after `warmup` of a run's metrics.jsonl records (see the module docstring).

    Args:
        num_samples: responses per step (prompts x n), to turn response_length/mean into generated tokens.
        num_params: the model's parameters, for MFU; ppo_epochs: passes the update makes over the tokens.
        peak_flops: peak FLOP/s of all the GPUs used; None gives MFU None.
    """
    measured = [record for record in records if record.get("step", 0) > warmup and "time/step" in record]
    timed = sorted({key.removeprefix("time/") for record in measured for key in record
                    if key.startswith("time/") and key != "time/step"})
    phases = {phase: _median(record.get(f"time/{phase}") for record in measured)
              for phase in [*[p for p in PHASES if p in timed], *[p for p in timed if p not in PHASES]]}
    # The trainer logs tokens/s over the whole step; times the step it gives the step's tokens exactly.
    tokens = [record["throughput/tokens_per_s"] * record["time/step"] for record in measured]
    update = [record.get("time/update") for record in measured]
    generated = [record["response_length/mean"] * num_samples for record in measured]
    memory = [record["memory/peak_gb"] for record in measured if "memory/peak_gb" in record]
    return {
        "phases": phases,
        "step_s": _median(record["time/step"] for record in measured),
        "rollout_tokens_per_s": _median(g / r.get("time/generate", 0.0) for g, r in zip(generated, measured)
                                        if r.get("time/generate")),
        "train_tokens_per_s": _median(t / u for t, u in zip(tokens, update) if u),
        "mfu": None if peak_flops is None else _median(
            6 * num_params * t * ppo_epochs / u / peak_flops for t, u in zip(tokens, update) if u),
        "peak_memory_gb": max(memory) if memory else None,
        "num_steps": len(measured),
    }


def _median(values) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _tokenizer(cfg: RunConfig):
    from rlkit.models.loading import load_tokenizer

    return load_tokenizer(cfg.model.tokenizer_path or cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)


def _num_params(cfg: RunConfig) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model.path, local_files_only=True,
                                        trust_remote_code=cfg.model.trust_remote_code)
    return count_parameters(config, trust_remote_code=cfg.model.trust_remote_code)
