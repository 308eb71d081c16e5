"""Policy losses: log-probs of the current and the old (rollout) policy plus advantages -> a scalar loss.

Shape legend: B = responses in the micro-batch, T = response tokens per response (padded width).

Every loss has one signature, registered by name in ``POLICY_LOSSES``::

    fn(old_logprob, logprob, advantages, response_mask, *, clip_ratio_low, clip_ratio_high, clip_ratio_c,
       loss_agg_mode, num_tokens=None, num_seqs=None, norm_length=None) -> (loss, metrics)

``metrics`` always holds ``pg_clipfrac``, ``ppo_kl`` and ``pg_clipfrac_lower`` (local masked means, for
logging), each a float or a detached 0-dim tensor: the built-in losses keep them on the device, so no
micro-batch waits for the GPU to read them (the engine sums them and reads them once, rlkit.engines.passes).
A loss whose paper fixes the aggregation declares it as ``default_loss_agg_mode`` (GSPO's
seq-mean-token-mean, CISPO's token-mean); PPO declares none, so the estimator's applies.
:func:`loss_agg_mode_for` says which mode a run uses. See docs/algorithms.md.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from rlkit.algorithms.advantages import estimator_for
from rlkit.algorithms.aggregation import LOSS_AGG_MODES, agg_loss, masked_mean
from rlkit.registry import POLICY_LOSSES

LOG_RATIO_LIMIT = 20.0  # exp(20) ~ 5e8: far outside any clip range, still finite in fp32


def register_policy_loss(
    name: str, *, aliases: Sequence[str] = (), default_loss_agg_mode: str | None = None
) -> Callable:
    """Decorator: register a policy loss by name; `default_loss_agg_mode` declares the aggregation its paper
    uses (None: the loss has no preference and the estimator's default applies)."""
    if default_loss_agg_mode is not None and default_loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"policy loss '{name}': default_loss_agg_mode '{default_loss_agg_mode}' is not one of "
                         f"{', '.join(LOSS_AGG_MODES)}")

    def register(fn: Callable) -> Callable:
        fn.default_loss_agg_mode = default_loss_agg_mode
        POLICY_LOSSES.register(name, fn, aliases=aliases)
        return fn

    return register


def loss_agg_mode_for(configured: str | None, *, policy_loss: str, adv_estimator: str) -> str:
    """The aggregation a run uses: the configured mode; else the one the policy loss declares (its paper's,
    e.g. GSPO's seq-mean-token-mean); else the advantage estimator's (Dr. GRPO's seq-mean-token-sum-norm,
    token-mean for the others)."""
    if configured is not None:
        return configured
    declared = getattr(POLICY_LOSSES.get(policy_loss), "default_loss_agg_mode", None)
    return declared or estimator_for(adv_estimator).default_loss_agg_mode


@register_policy_loss("ppo", aliases=("vanilla",))
def ppo_loss(
    old_logprob: torch.Tensor,
    logprob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """PPO clipped surrogate (Schulman et al. 2017) with dual clip (Ye et al. 2020). All tensors (B, T).

    ratio = exp(logprob - old_logprob); per token
    loss = max(-A * ratio, -A * clip(ratio, 1 - low, 1 + high)), and where A < 0 at most -A * clip_ratio_c,
    so a token whose ratio exploded cannot push the loss without bound.
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 (the dual-clip bound, 3.0 in the paper), got {clip_ratio_c}")
    log_ratio = logprob - old_logprob  # (B, T)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clip_loss = torch.maximum(unclipped, clipped)
    dual_bound = -advantages * clip_ratio_c
    negative = advantages < 0
    loss_mat = torch.where(negative, torch.minimum(clip_loss, dual_bound), clip_loss)

    loss = agg_loss(
        loss_mat, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length
    )
    metrics = {
        "pg_clipfrac": masked_mean((clipped > unclipped).float(), response_mask).detach(),
        "ppo_kl": masked_mean(-log_ratio, response_mask).detach(),
        "pg_clipfrac_lower": masked_mean(((clip_loss > dual_bound) & negative).float(), response_mask).detach(),
    }
    return loss, metrics


policy_loss = ppo_loss  # the default policy loss


@register_policy_loss("gspo", default_loss_agg_mode="seq-mean-token-mean")
def gspo_loss(
    old_logprob: torch.Tensor,
    logprob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "seq-mean-token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """GSPO-token (Zheng et al. 2025): one length-normalised importance ratio per sequence. All tensors (B, T).

    s_i = exp(mean over the valid tokens of (logprob - old_logprob)), the geometric mean of the token ratios;
    s_it = sg(s_i) * exp(logprob_t - sg(logprob_t)): its value is s_i, its gradient that of logprob_t;
    loss = max(-A * s_it, -A * clip(s_it, 1 - low, 1 + high)). No dual clip: clip_ratio_c is unused.
    The paper's clip ranges are far tighter than PPO's (3e-4 and 4e-4).
    """
    log_ratio = logprob - old_logprob  # (B, T)
    mask = response_mask.to(log_ratio.dtype)
    seq_log_ratio = (log_ratio * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)  # (B,)
    # clamp only the detached part, so the gradient path through logprob is never cut
    seq_log_ratio = seq_log_ratio.detach().clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    ratio = torch.exp(seq_log_ratio.unsqueeze(-1) + logprob - logprob.detach())  # (B, T)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    loss_mat = torch.maximum(unclipped, clipped)

    loss = agg_loss(
        loss_mat, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length
    )
    metrics = {
        "pg_clipfrac": masked_mean((clipped > unclipped).float(), response_mask).detach(),
        "ppo_kl": masked_mean(-log_ratio, response_mask).detach(),
        "pg_clipfrac_lower": 0.0,  # no dual clip
    }
    return loss, metrics


@register_policy_loss("cispo", default_loss_agg_mode="token-mean")
def cispo_loss(
    old_logprob: torch.Tensor,
    logprob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """CISPO (MiniMax-M1, 2025): clip the importance weight, not the update. All tensors (B, T).

    loss = -sg(clip(ratio, 1 - low, 1 + high)) * A * logprob, so every token keeps a gradient (PPO zeroes
    the gradient of clipped tokens). The paper sets no lower bound (clip_ratio_low >= 1) and tunes only
    clip_ratio_high. clip_ratio_c is unused.
    """
    log_ratio = logprob - old_logprob  # (B, T)
    ratio = torch.exp(log_ratio.detach().clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    weight = ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)  # detached: a constant per token
    loss_mat = -weight * advantages * logprob

    loss = agg_loss(
        loss_mat, response_mask, loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length
    )
    metrics = {
        "pg_clipfrac": masked_mean((weight != ratio).float(), response_mask).detach(),
        "ppo_kl": masked_mean(-log_ratio, response_mask).detach(),
        "pg_clipfrac_lower": 0.0,  # no dual clip
    }
    return loss, metrics
