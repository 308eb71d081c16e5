"""KL between the policy and a reference policy: per-token estimators, the coefficient, the reward penalty.

Shape legend: B = responses, T = response tokens per response (padded width).
The estimators are Schulman's k1/k2/k3 ("Approximating KL divergence", 2020), computed from the
sampled tokens' log-probs only.
"""

from __future__ import annotations

import torch

from rlkit.algorithms.aggregation import agg_loss

KL_KINDS = ("k1", "kl", "k2", "mse", "k3", "low_var_kl", "abs")


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate of the policy against the reference. (B, T) -> (B, T).

    k1 ("kl"): logprob - ref_logprob (unbiased, high variance, can be negative);
    k2 ("mse"): 0.5 * (logprob - ref_logprob)^2;
    k3 ("low_var_kl"): exp(d) - d - 1 with d = ref_logprob - logprob (unbiased, >= 0, low variance);
    abs: |logprob - ref_logprob|.
    """
    if kind in ("k1", "kl"):
        return logprob - ref_logprob
    if kind == "abs":
        return (logprob - ref_logprob).abs()
    if kind in ("k2", "mse"):
        return 0.5 * (logprob - ref_logprob) ** 2
    if kind in ("k3", "low_var_kl"):
        # clamps for numerical stability: exp(20) is finite in fp32 and 10 bounds one token's penalty
        log_ratio = (ref_logprob - logprob).clamp(-20, 20)
        return (torch.exp(log_ratio) - log_ratio - 1).clamp(-10, 10)
    raise ValueError(f"unknown KL kind '{kind}'; choose one of: {', '.join(KL_KINDS)}")


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """The KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences").

    After each batch: error = clip(current_kl / target_kl - 1, -0.2, 0.2);
    coef *= 1 + error * n_steps / horizon. The coefficient grows while the KL is above the target.
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: float):
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(f"target_kl and horizon must be > 0, got target_kl={target_kl}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target_kl = float(target_kl)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """current_kl: the batch's mean KL; n_steps: samples (or steps) it covered."""
        proportional_error = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def apply_kl_in_reward(
    token_level_scores: torch.Tensor,
    logprob: torch.Tensor,
    ref_logprob: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    kind: str,
) -> tuple[torch.Tensor, float]:
    """Subtract the KL penalty from the rewards (the InstructGPT-style reward, Ouyang et al. 2022).

    Args:
        token_level_scores: (B, T) rewards from the reward function.
        logprob, ref_logprob: (B, T) rollout-policy and reference log-probs.
        response_mask: (B, T).

    Returns:
        token_level_rewards: (B, T) scores - kl_coef * kl * mask.
        mean_kl: the mean over sequences (with >= 1 valid token) of each sequence's masked token-mean
            KL; feed it to a KL controller's ``update``.
    """
    kl = kl_penalty(logprob, ref_logprob, kind) * response_mask  # (B, T)
    token_level_rewards = token_level_scores - kl_coef * kl
    mean_kl = agg_loss(kl, response_mask, "seq-mean-token-mean").item()
    return token_level_rewards, mean_kl
