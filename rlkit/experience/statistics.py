"""Reward, length and conversation statistics of generated responses (gathered from every rank by the caller)."""

from __future__ import annotations

import torch

from rlkit.batch import Batch


def summarize(scores: list[float], lengths: list[int], finish_reasons: list[str], prefix: str = "") -> dict[str, float]:
    """Reward and length statistics of a whole (already gathered) batch."""
    scores_t = torch.tensor(scores, dtype=torch.float32)
    lengths_t = torch.tensor(lengths, dtype=torch.float32)
    return {
        f"{prefix}reward/mean": float(scores_t.mean()),
        f"{prefix}reward/std": float(scores_t.std()) if len(scores) > 1 else 0.0,
        f"{prefix}reward/max": float(scores_t.max()),
        f"{prefix}reward/min": float(scores_t.min()),
        f"{prefix}response_length/mean": float(lengths_t.mean()),
        f"{prefix}response_length/max": float(lengths_t.max()),
        f"{prefix}response_length/clip_ratio": sum(r == "length" for r in finish_reasons) / len(finish_reasons),
    }


def response_stats(batch: Batch, scores: torch.Tensor) -> tuple[list[float], list[int], list[str]]:
    """What `summarize` needs of a batch: scores, response lengths, finish reasons."""
    return scores.tolist(), batch["response_mask"].sum(dim=1).long().tolist(), list(batch["finish_reason"])


def summarize_gathered(gathered: list[tuple[list[float], list[int], list[str]]], prefix: str = "") -> dict[str, float]:
    """`summarize` over every rank's `response_stats`."""
    return summarize(*(sum((list(part[i]) for part in gathered), []) for i in range(3)), prefix=prefix)


def conversation_counts(batch: Batch) -> list[tuple[int, int, int]]:
    """(turns, tool calls, failed tool calls) of each response; [] for a batch without trajectories."""
    return [(trajectory.num_turns, len(trajectory.tool_calls), trajectory.num_tool_errors)
            for trajectory in batch.get("trajectory") or []]


def summarize_conversations(counts: list[tuple[int, int, int]], prefix: str = "") -> dict[str, float]:
    """Per-sample means of turns and tool calls, the share of samples that called a tool, and the share of tool
    calls that failed, over a whole (already gathered) batch; {} without conversations."""
    if not counts:
        return {}
    turns, calls, errors = (torch.tensor(column, dtype=torch.float32) for column in zip(*counts))
    return {
        f"{prefix}env/turns/mean": float(turns.mean()),
        f"{prefix}env/tool_calls/mean": float(calls.mean()),
        f"{prefix}env/tool_call_rate": float((calls > 0).float().mean()),
        f"{prefix}env/tool_error_rate": float(errors.sum() / calls.sum().clamp(min=1)),
    }

