"""Evaluate a policy on a prompt set: sample with any rollout engine, score with the rewards, summarise.

`evaluate` takes the pieces `rlkit train` uses (a RolloutEngine from the registry, a RewardManager from
rlkit.rewards.loading, PromptRecords from the data loaders), so an evaluation samples and scores exactly as
training's validation does; `rlkit eval` (rlkit.cli.eval) builds them from flags. The per-response rows and
the summary are written atomically (a temporary sibling renamed into place).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rlkit.data.prompts import PromptRecord
from rlkit.evaluation.metrics import EvalSummary, summarize
from rlkit.evaluation.prompts import score_responses
from rlkit.rewards.base import RewardManager, correctness
from rlkit.rollout.base import RolloutEngine, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResponseResult:
    """One scored response: sample `sample_index` of prompt `prompt_index` (its row in the data)."""

    prompt_index: int
    sample_index: int
    prompt: str
    response: str
    ground_truth: Any
    score: float
    correct: float  # 1.0 or 0.0, by rlkit.rewards.base.correctness
    response_length: int  # tokens
    finish_reason: str  # "stop" or "length"
    extras: dict[str, float] = field(default_factory=dict)  # the reward's numeric extras (acc, ...)


@dataclass
class EvalReport:
    summary: EvalSummary
    responses: list[ResponseResult]
    generate_seconds: float  # sampling only
    score_seconds: float


def evaluate(
    rollout: RolloutEngine, records: Sequence[PromptRecord], reward: RewardManager, params: SamplingParams, *,
    batch_size: int | None = None,
) -> EvalReport:
    """params.n responses to each record, scored; `batch_size` prompts per generate call (default: all)."""
    if not records:
        raise ValueError("no prompts to evaluate")
    step = batch_size or len(records)
    responses: list[ResponseResult] = []
    generate_seconds = score_seconds = 0.0
    for start in range(0, len(records), step):
        chunk = records[start:start + step]
        began = time.perf_counter()
        completions = rollout.generate([record.prompt_ids for record in chunk], params)
        generate_seconds += time.perf_counter() - began
        began = time.perf_counter()
        owners = [record for record in chunk for _ in range(params.n)]
        scores, extras = score_responses(reward, owners, [completion.text for completion in completions])
        correct = correctness(scores, extras.get("acc"))
        score_seconds += time.perf_counter() - began
        for position, (owner, completion) in enumerate(zip(owners, completions, strict=True)):
            responses.append(ResponseResult(
                prompt_index=owner.index, sample_index=position % params.n, prompt=owner.prompt_text,
                response=completion.text, ground_truth=owner.ground_truth, score=scores[position],
                correct=correct[position], response_length=len(completion.response_ids),
                finish_reason=completion.finish_reason,
                extras={name: values[position] for name, values in extras.items() if not math.isnan(values[position])},
            ))
        log.info("evaluated %d of %d prompts", min(start + step, len(records)), len(records))
    summary = summarize([r.score for r in responses], [r.correct for r in responses],
                        [r.response_length for r in responses], [r.finish_reason == "length" for r in responses],
                        params.n)
    return EvalReport(summary, responses, generate_seconds, score_seconds)


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------
def summary_line(summary: EvalSummary, *, reward: str, seconds: float) -> str:
    """One human line: accuracy with its interval, mean reward, pass@k, length, truncation, time."""
    low, high = summary.accuracy_ci95
    parts = [
        f"accuracy {summary.accuracy:.4f} (95% CI {low:.4f}-{high:.4f}, Wilson over {summary.num_prompts} prompts)",
        f"reward {reward} {summary.reward_mean:.4f}",
        *(f"pass@{k} {value:.4f}" for k, value in summary.pass_at_k.items()),
        f"response length {summary.response_length_mean:.1f} tokens",
        f"truncated {summary.truncation_rate:.1%}",
        f"{summary.num_prompts} prompts x {summary.num_samples} in {seconds:.1f} s",
    ]
    return " | ".join(parts)


def write_responses(path: Path, responses: list[ResponseResult]) -> None:
    """One JSON object a line: prompt_index, sample_index, prompt, response, ground_truth, score, correct,
    response_length, finish_reason, and the reward's extras (acc, ...)."""
    lines = []
    for result in responses:
        row = asdict(result)
        row.update(row.pop("extras"))
        lines.append(json.dumps(row, default=str, ensure_ascii=False))
    write_atomically(path, "\n".join(lines) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """`path` holds the old content or all of `text`, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        staging.write_text(text)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
