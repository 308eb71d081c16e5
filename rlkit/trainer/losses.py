"""The actor and critic loss functions handed to the training engines.

Each returns the micro-batch's share of the *global* mini-batch loss (normalised by the token and
sequence counts of the whole mini-batch over all ranks), so shares add up over micro-batches and ranks
and the result does not depend on how the batch is sharded. Metrics that are masked means are weighted
by the micro-batch's token share for the same reason: summing them gives the global value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlkit.algorithms import agg_loss, kl_penalty, value_loss
from rlkit.batch import Batch
from rlkit.config.schema import AlgorithmConfig, CriticConfig
from rlkit.engines.base import LossFn, ModelOutput
from rlkit.registry import POLICY_LOSSES


@dataclass(frozen=True)
class GlobalCounts:
    """Valid tokens and sequences (with at least one valid token) of a mini-batch over all ranks."""

    num_tokens: float
    num_seqs: float

    @staticmethod
    def of_local(batch: Batch) -> tuple[float, float]:
        mask = batch["response_mask"]
        return float(mask.sum()), float((mask.sum(dim=1) > 0).sum())


def _token_share(mask: Tensor, counts: GlobalCounts) -> Tensor:
    return mask.sum() / max(counts.num_tokens, 1.0)


def actor_loss_fn(cfg: AlgorithmConfig, agg_mode: str, norm_length: int, counts: GlobalCounts) -> LossFn:
    """PPO-family policy loss, minus the entropy bonus, plus the KL loss (when configured). A run hands in its
    algorithm section resolved (rlkit.trainer.speed); an `auto` left in it counts as its fixed default."""
    cfg = cfg.resolve_auto()
    policy_fn = POLICY_LOSSES.get(cfg.policy_loss)
    agg = dict(num_tokens=counts.num_tokens, num_seqs=counts.num_seqs, norm_length=norm_length)

    def loss_fn(output: ModelOutput, batch: Batch) -> tuple[Tensor, dict[str, Tensor | float]]:
        mask = batch["response_mask"]
        advantages = batch["advantages"]
        old_logprobs = _old_logprobs(cfg, output, batch)
        if cfg.rollout_is_cap is not None and "rollout_logprobs" in batch:
            # Truncated importance sampling (TIS): weight each token by min(p_old / p_rollout, cap). Scaling the
            # advantage by a positive detached weight scales that token's clipped loss by it exactly.
            weight = torch.exp(old_logprobs - batch["rollout_logprobs"]).clamp(max=cfg.rollout_is_cap)
            advantages = advantages * weight.detach()
        pg_loss, pg_metrics = policy_fn(
            old_logprobs, output.logprobs, advantages, mask,
            clip_ratio_low=cfg.clip_ratio_low, clip_ratio_high=cfg.clip_ratio_high, clip_ratio_c=cfg.clip_ratio_c,
            loss_agg_mode=agg_mode, **agg,
        )
        share = _token_share(mask, counts)
        loss = pg_loss
        # detached tensors: the engine reads them once a mini-batch, not the GPU once a micro-batch
        metrics = {"pg_loss": pg_loss.detach()}
        metrics.update({key: value * share for key, value in pg_metrics.items()})
        if cfg.old_logprobs_from_update:
            metrics.update(_old_logprob_metrics(old_logprobs, batch, agg))
        if output.entropy is not None:
            # Reported per token whatever the loss mode, so runs with different modes compare.
            metrics["entropy"] = agg_loss(output.entropy.detach(), mask, "token-mean", **agg)
            if cfg.entropy_coeff:
                loss = loss - cfg.entropy_coeff * agg_loss(output.entropy, mask, agg_mode, **agg)
        if cfg.use_kl_loss:
            kl = agg_loss(kl_penalty(output.logprobs, batch["ref_logprobs"], cfg.kl_loss_type), mask, agg_mode, **agg)
            loss = loss + cfg.kl_loss_coef * kl
            metrics["kl_loss"] = kl.detach()
        metrics["actor_loss"] = loss.detach()
        return loss, metrics

    return loss_fn


def _old_logprobs(cfg: AlgorithmConfig, output: ModelOutput, batch: Batch) -> Tensor:
    """(B, T) log-probs of the policy before the update: the old-logprob pass's, or with
    `old_logprobs_from_update` the update's own, detached. On-policy (the config validator checks it) the
    update's forward runs on the weights before the optimizer step, so the two are the same numbers and the
    ratio is exactly 1; PPO's gradient there, -A * grad logprob, is the one the separate pass gives."""
    if cfg.old_logprobs_from_update:
        return output.logprobs.detach()
    return batch["old_logprobs"]


def _old_logprob_metrics(old_logprobs: Tensor, batch: Batch, agg: dict) -> dict[str, Tensor]:
    """What the trainer logs from the old-logprob pass, here from the update's forward instead: `kl`
    (old - ref, k1) and `rollout/logprob_abs_diff`, as this micro-batch's share of the global token mean."""
    mask = batch["response_mask"]
    metrics = {}
    if "ref_logprobs" in batch:
        metrics["kl"] = agg_loss(old_logprobs - batch["ref_logprobs"], mask, "token-mean", **agg)
    if "rollout_logprobs" in batch:
        diff = (old_logprobs - batch["rollout_logprobs"]).abs()
        metrics["rollout/logprob_abs_diff"] = agg_loss(diff, mask, "token-mean", **agg)
    return metrics


def critic_loss_fn(cfg: CriticConfig, agg_mode: str, norm_length: int, counts: GlobalCounts) -> LossFn:
    def loss_fn(output: ModelOutput, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        mask = batch["response_mask"]
        loss, clipfrac = value_loss(
            output.values, batch["returns"], batch["values"], mask, cliprange_value=cfg.cliprange_value,
            loss_agg_mode=agg_mode, num_tokens=counts.num_tokens, num_seqs=counts.num_seqs, norm_length=norm_length,
        )
        share = _token_share(mask, counts)
        return loss, {"vf_loss": loss.detach(), "vf_clipfrac": clipfrac * share}

    return loss_fn
