"""Reward and length statistics of generated responses, over every rank."""

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
