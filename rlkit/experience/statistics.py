"""Reward and length statistics of generated responses (gathered from every rank by the caller)."""

from __future__ import annotations

import math

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


def accuracy(scores: list[float], acc: list[float] | None) -> list[float]:
    """A response is correct when its reward reports acc=1, or (where it reports none) when it scores >= 1."""
    acc = acc or [math.nan] * len(scores)
    return [value if not math.isnan(value) else float(score >= 1.0) for score, value in zip(scores, acc)]
