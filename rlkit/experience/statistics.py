"""Reward, length and conversation statistics of generated responses, over every rank."""

from __future__ import annotations


import torch

from rlkit.batch import Batch
from rlkit.distributed import all_gather_objects


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


def gathered_summary(batch: Batch, scores: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """`summarize` over the responses of every rank (a collective)."""
    lengths = batch["response_mask"].sum(dim=1).long().tolist()
    gathered = all_gather_objects((scores.tolist(), lengths, batch["finish_reason"]))
    return summarize(*(sum((part[i] for part in gathered), []) for i in range(3)), prefix=prefix)


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


def gathered_conversations(batch: Batch, prefix: str = "") -> dict[str, float]:
    """`summarize_conversations` over the responses of every rank (a collective)."""
    return summarize_conversations(sum(all_gather_objects(conversation_counts(batch)), []), prefix=prefix)
