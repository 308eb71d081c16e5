"""The PPO critic loss with value clipping.

Shape legend: B = responses in the micro-batch, T = response tokens per response (padded width).
"""

from __future__ import annotations

import torch

from rlkit.algorithms.aggregation import agg_loss, masked_mean


def value_loss(
    vpreds: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float = 0.2,
    loss_agg_mode: str = "token-mean",
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 * agg(max((v - R)^2, (clip(v, V_old - eps, V_old + eps) - R)^2)).

    Taking the max means a prediction may move further than eps from the rollout-time value only
    where that does not lower the loss, as in PPO's policy clip.

    Args:
        vpreds: (B, T) values predicted by the critic being trained.
        returns: (B, T) targets from the advantage estimator.
        values: (B, T) the critic's values at rollout time.
        response_mask: (B, T).
        cliprange_value: eps.
        loss_agg_mode, num_tokens, num_seqs, norm_length: see ``agg_loss``.

    Returns:
        loss (0-dim tensor), clipfrac (detached 0-dim tensor): the fraction of valid tokens where the clipped
        term is the larger.
    """
    vpreds_clipped = torch.clamp(vpreds, values - cliprange_value, values + cliprange_value)
    unclipped = (vpreds - returns) ** 2
    clipped = (vpreds_clipped - returns) ** 2
    loss_mat = torch.maximum(unclipped, clipped)
    loss = 0.5 * agg_loss(
        loss_mat, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length
    )
    clipfrac = masked_mean((clipped > unclipped).float(), response_mask).detach()
    return loss, clipfrac
