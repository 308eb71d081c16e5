"""The "alone" rows of `rlkit bench`: a rollout engine by itself, generating the bench's prompts.

What a training step is compared with: the same prompt token ids per step, in the order the trainer takes them
(its data loader and sampler), the same sampling settings and the same engine settings as rlkit's rollout, but
nothing else (no sleep mode, no weight sync, no training). One module per engine holds what differs:
rlkit.bench.vllm_alone (an in-process `vllm.LLM`) and rlkit.bench.sglang_alone (an `sglang.Engine`). Each runs in
a child process (`python -m MODULE SPEC OUT`) as every pairing does, so that no memory of it stays behind: the
parent writes the spec (the prompts of every step, the engine and sampling arguments, the variants), the child
times each step's generate call and writes medians over the steps after the warm-up.

vLLM alone runs whatever the pairings' rollout engines (the issue's targets compare every step with it);
SGLang alone runs when a pairing rolls out with SGLang. Each runs twice, before the pairings (without log-probs
only) and after them (every variant): a GPU machine's speed can drift by a quarter within minutes, so a step is
compared with the mean of the two, and the report shows both.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rlkit.bench.workload import Workload
    from rlkit.config.schema import RunConfig

# rollout engine -> the module of its "alone" rows; vLLM's first: it runs for every bench
MODULES = {"vllm": "rlkit.bench.vllm_alone", "sglang": "rlkit.bench.sglang_alone"}


@dataclass
class BaselineResult:
    """One variant: median seconds of a step's generate call and generated tokens per second, or why not."""

    name: str
    logprobs: bool
    status: Literal["ok", "skipped", "failed"]
    reason: str | None = None
    generate_s: float | None = None
    tokens_per_s: float | None = None
    num_steps: int = 0
    rollout: str = "vllm"  # the engine that ran alone
    before: bool = False  # run before the pairings (the variant without log-probs only), else after them


def modules(rollouts: tuple[str, ...]) -> list[Any]:
    """The modules of the "alone" rows a bench of these rollout engines runs: vLLM's always, SGLang's with an
    SGLang pairing."""
    return [importlib.import_module(module) for rollout, module in MODULES.items()
            if rollout == "vllm" or rollout in rollouts]


def skip_reason(package: str, extra: str, cuda: bool) -> str | None:
    """Why an engine cannot run alone here (its package missing, no CUDA GPU), or None."""
    reasons = []
    if importlib.util.find_spec(package) is None:
        reasons.append(f"{package} is not installed (pip install 'rlkit[{extra}]')")
    if not cuda:
        reasons.append("it needs a CUDA GPU")
    return "; ".join(reasons) or None


def skipped(rollout: str, variants: tuple[tuple[str, bool], ...], reason: str) -> list[BaselineResult]:
    return [BaselineResult(name, logprobs, "skipped", reason, rollout=rollout) for name, logprobs in variants]


# -- the parent's side ------------------------------------------------------------------------------------
def step_prompts(cfg: RunConfig, workload: Workload) -> list[list[list[int]]]:
    """The prompt token ids of every step (warm-up included), as the trainer's data loader takes them."""
    from rlkit.data import load_prompt_dataset
    from rlkit.data.sampler import EpochSampler
    from rlkit.models.loading import load_tokenizer

    tokenizer = load_tokenizer(cfg.model.tokenizer_path or cfg.model.path,
                               trust_remote_code=cfg.model.trust_remote_code)
    data = load_prompt_dataset(cfg.data.train_files, cfg.data, tokenizer, max_samples=cfg.data.max_train_samples)
    order = iter(EpochSampler(len(data), cfg.data.train_batch_size, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle))
    return [[data[index].prompt_ids for index in next(order)] for _ in range(workload.total_steps)]


def sampling(cfg: RunConfig) -> Any:
    """The run's sampling settings as rlkit's rollout engines take them (rlkit.rollout.base.SamplingParams),
    without log-probs: each variant asks for them or not."""
    from rlkit.rollout.base import SamplingParams

    rollout = cfg.rollout
    return SamplingParams(n=rollout.n, temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                          max_new_tokens=rollout.max_new_tokens, stop_token_ids=tuple(rollout.stop_token_ids),
                          ignore_eos=rollout.ignore_eos, logprobs=False)


def run_child(module: str, rollout: str, variants: tuple[tuple[str, bool], ...], spec: dict[str, Any],
              out: Path, *, before: bool = False) -> list[BaselineResult]:
    """Write the spec, run `python -m MODULE SPEC RESULT`, read its results (a failed child fails every variant,
    with the last line of its log). before: the run ahead of the pairings, of the variant without log-probs
    only, its row named so."""
    if before:
        variants = tuple((f"{name}, before the pairings", logprobs) for name, logprobs in variants if not logprobs)
    out.mkdir(parents=True, exist_ok=True)
    stem = module.rsplit(".", 1)[-1]
    spec_path, result_path, log_path = out / "spec.json", out / "result.json", out / f"{stem}.log"
    spec_path.write_text(json.dumps({**spec, "variants": [{"name": name, "logprobs": lp} for name, lp in variants]}))
    result_path.unlink(missing_ok=True)
    with log_path.open("w") as log_file:
        returncode = subprocess.run([sys.executable, "-m", module, str(spec_path), str(result_path)],
                                    stdout=log_file, stderr=subprocess.STDOUT).returncode
    if returncode != 0 or not result_path.is_file():
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        reason = f"exit code {returncode}: {lines[-1][:300] if lines else 'no output'} (log: {log_path})"
        return [BaselineResult(name, logprobs, "failed", reason, rollout=rollout, before=before)
                for name, logprobs in variants]
    return [BaselineResult(**entry, rollout=rollout, before=before) for entry in json.loads(result_path.read_text())]


# -- the child's side -------------------------------------------------------------------------------------
def summarize(seconds: list[float], tokens: list[int], warmup: int) -> tuple[float, float, int]:
    """(median seconds, median tokens/s, measured steps) over the steps after `warmup`."""
    measured = list(zip(seconds, tokens))[warmup:]
    return (statistics.median(s for s, _ in measured), statistics.median(t / s for s, t in measured), len(measured))


def write_results(spec: dict[str, Any], result_path: str, time_variant) -> None:
    """For each variant of the spec: `time_variant(logprobs) -> (seconds, tokens)` of every step; medians to
    `result_path`, each variant's raw numbers printed as a JSON line."""
    results = []
    for variant in spec["variants"]:
        seconds, tokens = time_variant(variant["logprobs"])
        median_s, tokens_per_s, num_steps = summarize(seconds, tokens, spec["warmup"])
        results.append({"name": variant["name"], "logprobs": variant["logprobs"], "status": "ok",
                        "generate_s": median_s, "tokens_per_s": tokens_per_s, "num_steps": num_steps})
        print(json.dumps({**results[-1], "seconds": seconds, "tokens": tokens}), flush=True)
    Path(result_path).write_text(json.dumps(results))
