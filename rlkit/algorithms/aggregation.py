"""Turning a (B, T) matrix of per-token losses into one scalar, and masked statistics.

Shape legend: B = sequences in the (micro-)batch, T = response tokens per sequence (padded width).

Every mode divides a *sum* by a count. When the trainer passes the global counts of the whole
mini-batch (``num_tokens``, ``num_seqs``), each micro-batch's loss is its share of the global loss,
so summing the losses of all micro-batches and ranks gives the same number as one pass over
everything, however the data is sharded. Without them the local counts are used.
"""

from __future__ import annotations

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def agg_loss(
    loss_mat: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_length: int | None = None,
) -> torch.Tensor:
    """Aggregate per-token losses into a scalar.

    Args:
        loss_mat: (B, T) per-token losses.
        response_mask: (B, T) 1.0 on tokens that count, 0.0 elsewhere.
        loss_agg_mode: one of ``LOSS_AGG_MODES``:
            ``token-mean``: masked sum / number of valid tokens;
            ``seq-mean-token-sum``: mean over sequences (with >= 1 valid token) of each sequence's token sum;
            ``seq-mean-token-mean``: the same mean of each sequence's token mean;
            ``seq-mean-token-sum-norm``: ``seq-mean-token-sum`` / ``norm_length`` (Dr. GRPO).
        num_tokens: global number of valid tokens; defaults to the local count.
        num_seqs: global number of sequences with >= 1 valid token; defaults to the local count.
        norm_length: the constant of ``seq-mean-token-sum-norm``; defaults to T.

    Returns:
        A 0-dim tensor. An empty mask gives 0, not NaN.
    """
    mask = response_mask.to(loss_mat.dtype)
    masked = loss_mat * mask  # (B, T)
    if loss_agg_mode == "token-mean":
        return masked.sum() / _denominator(num_tokens, mask.sum())

    tokens_per_seq = mask.sum(dim=-1)  # (B,)
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        seq_losses = masked.sum(dim=-1)  # (B,)
    elif loss_agg_mode == "seq-mean-token-mean":
        seq_losses = masked.sum(dim=-1) / tokens_per_seq.clamp(min=1)  # (B,)
    else:
        raise ValueError(f"unknown loss_agg_mode '{loss_agg_mode}'; choose one of: {', '.join(LOSS_AGG_MODES)}")

    loss = seq_losses.sum() / _denominator(num_seqs, (tokens_per_seq > 0).sum())
    if loss_agg_mode == "seq-mean-token-sum-norm":
        loss = loss / (norm_length if norm_length is not None else loss_mat.shape[-1])
    return loss


def _denominator(global_count: float | None, local_count: torch.Tensor) -> torch.Tensor | float:
    """The global count when given, else the local one; at least 1 so an empty batch gives 0."""
    if global_count is not None:
        return max(float(global_count), 1.0)
    return local_count.clamp(min=1)


def masked_mean(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the tokens where ``response_mask`` is 1 (0 for an empty mask). Any shape."""
    mask = response_mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, response_mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) with the masked mean and the unbiased masked variance.

    Args:
        values: (B, T).
        response_mask: (B, T).

    Returns:
        (B, T), times the mask. Fewer than two valid tokens have no variance: it is taken as 0.
    """
    mask = response_mask.to(values.dtype)
    num_valid = mask.sum()
    mean = masked_mean(values, mask)
    squared_deviation_sum = ((values - mean) ** 2 * mask).sum()
    variance = squared_deviation_sum / (num_valid - 1) if num_valid > 1 else torch.zeros_like(mean)
    return (values - mean) * torch.rsqrt(variance + eps) * mask
