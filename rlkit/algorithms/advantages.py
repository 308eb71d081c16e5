"""Advantage estimators: token rewards (and critic values, group ids, baselines) -> advantages, returns.

Shape legend: B = responses in the batch, T = response tokens per response (padded width).

Every estimator has one signature, ``fn(inputs: AdvantageInputs, gamma, lam) -> (advantages, returns)``,
and is registered by name in ``ADV_ESTIMATORS`` wrapped in an :class:`AdvantageEstimator` that says
what the trainer must provide (a critic, several responses per prompt, a greedy baseline). The
trainer calls ``compute_advantages(name, ...)`` and never branches on the name.

Conventions shared by all estimators:
  * tokens with ``response_mask == 0`` are skipped: their rewards are ignored by the token-wise
    recursions (GAE, return-to-go), which carry their running values over them;
  * both outputs are 0 on tokens with ``response_mask == 0``;
  * "score" is a response's summed token rewards (an outcome reward sits on its last token);
  * a group of one (a prompt with a single response) has mean 0 and std 1.
See docs/algorithms.md for the formulas and the papers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from rlkit.algorithms.aggregation import masked_whiten
from rlkit.registry import ADV_ESTIMATORS

GROUP_STD_EPS = 1e-6


@dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator may read. Shapes: (B, T) unless noted."""

    token_level_rewards: torch.Tensor
    response_mask: torch.Tensor
    group_index: Sequence | None = None  # length B; responses to one prompt share a value
    values: torch.Tensor | None = None  # critic values
    reward_baselines: torch.Tensor | None = None  # (B,) reward of a baseline (greedy) response


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered estimator and the inputs the trainer must produce for it."""

    fn: Callable[[AdvantageInputs, float, float], tuple[torch.Tensor, torch.Tensor]]
    needs_values: bool = False  # the trainer must run a critic
    needs_groups: bool = False  # rollout.n must be > 1
    needs_baselines: bool = False  # the trainer must generate a greedy baseline response
    default_loss_agg_mode: str = "token-mean"

    def __post_init__(self):
        # The registry and `rlkit list` name a component by its __module__/__qualname__; show the
        # wrapped function's, not this class's (a plugin's estimator must not look built-in).
        object.__setattr__(self, "__module__", getattr(self.fn, "__module__", type(self).__module__))
        object.__setattr__(self, "__qualname__", getattr(self.fn, "__qualname__", repr(self.fn)))

    def __call__(self, inputs: AdvantageInputs, gamma: float = 1.0, lam: float = 1.0):
        return self.fn(inputs, gamma, lam)


def register_adv_estimator(
    name: str,
    *,
    aliases: Sequence[str] = (),
    needs_values: bool = False,
    needs_groups: bool = False,
    needs_baselines: bool = False,
    default_loss_agg_mode: str = "token-mean",
) -> Callable:
    """Decorator: wrap ``fn(inputs, gamma, lam)`` in an AdvantageEstimator and register it by name.

    The decorated function itself is returned unchanged. A duplicate name raises PluginError.
    """

    def register(fn: Callable) -> Callable:
        estimator = AdvantageEstimator(fn, needs_values, needs_groups, needs_baselines, default_loss_agg_mode)
        ADV_ESTIMATORS.register(name, estimator, aliases=aliases)
        return fn

    return register


def estimator_for(name: str) -> AdvantageEstimator:
    """The estimator registered as ``name`` (a plugin's bare function is wrapped with default needs)."""
    estimator = ADV_ESTIMATORS.get(name)
    return estimator if isinstance(estimator, AdvantageEstimator) else AdvantageEstimator(estimator)


def compute_advantages(
    name: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: Sequence | None = None,
    values: torch.Tensor | None = None,
    reward_baselines: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the estimator registered as ``name`` (or a ``module:attr`` / ``file.py:attr`` reference).

    Args:
        token_level_rewards: (B, T).
        response_mask: (B, T) 1.0 on response tokens.
        group_index: length B, for group estimators.
        values: (B, T) critic values, for ``gae``.
        reward_baselines: (B,), for ``remax``.

    Returns:
        advantages, returns: (B, T) each (the same tensor twice for estimators without returns).
    """
    estimator = estimator_for(name)
    if token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            f"advantage estimator '{name}': token_level_rewards {tuple(token_level_rewards.shape)} and "
            f"response_mask {tuple(response_mask.shape)} must have the same (B, T) shape"
        )
    required = {
        "values": (estimator.needs_values, values, "critic values of shape (B, T); enable the critic"),
        "group_index": (estimator.needs_groups, group_index, "one group id per response; sample n > 1 per prompt"),
        "reward_baselines": (estimator.needs_baselines, reward_baselines, "(B,) rewards of greedy baselines"),
    }
    for argument, (needed, given, what) in required.items():
        if needed and given is None:
            raise ValueError(f"advantage estimator '{name}' needs `{argument}` ({what}), but it was not given")
    inputs = AdvantageInputs(token_level_rewards, response_mask, group_index, values, reward_baselines)
    return estimator(inputs, gamma, lam)


# -- helpers -------------------------------------------------------------------------------------
def group_ids(group_index: Sequence, batch_size: int) -> torch.Tensor:
    """Map group labels (strings, ints, ...) to ids 0..G-1 in order of first appearance. -> (B,) long."""
    labels = group_index.tolist() if hasattr(group_index, "tolist") else list(group_index)
    if len(labels) != batch_size:
        raise ValueError(f"group_index has {len(labels)} entries but the batch has {batch_size} responses")
    id_of: dict = {}
    return torch.tensor([id_of.setdefault(label, len(id_of)) for label in labels], dtype=torch.long)


def group_mean_std(scores: torch.Tensor, group_index: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-response group mean, unbiased group std and group size, each (B,).

    A group of one has mean 0 and std 1, so its response keeps its raw score.
    """
    ids = group_ids(group_index, scores.shape[0]).to(scores.device)  # (B,)
    num_groups = int(ids.max()) + 1 if ids.numel() else 0
    counts = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device)
    counts = counts.index_add_(0, ids, torch.ones_like(scores))  # (G,)
    sums = torch.zeros_like(counts).index_add_(0, ids, scores)
    means = sums / counts  # (G,)
    squared_deviations = torch.zeros_like(counts).index_add_(0, ids, (scores - means[ids]) ** 2)
    stds = (squared_deviations / (counts - 1).clamp(min=1)).sqrt()  # (G,)
    single = counts[ids] == 1  # (B,)
    mean = torch.where(single, torch.zeros_like(scores), means[ids])
    std = torch.where(single, torch.ones_like(scores), stds[ids])
    return mean, std, counts[ids]


def _scores(inputs: AdvantageInputs) -> torch.Tensor:
    """Each response's summed token rewards. (B,)"""
    return inputs.token_level_rewards.sum(dim=-1)


def _broadcast(per_response: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, T), 0 on masked tokens."""
    return per_response.unsqueeze(-1) * response_mask


def _return_to_go(rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_(next response token); masked tokens carry G through. (B, T), 0 on masked."""
    mask = response_mask.to(rewards.dtype)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(rewards.shape[1])):
        running = mask[:, t] * (rewards[:, t] + gamma * running) + (1 - mask[:, t]) * running
        returns[:, t] = running
    return returns * mask


# -- estimators ----------------------------------------------------------------------------------
@register_adv_estimator("gae", needs_values=True)
def gae(inputs: AdvantageInputs, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), whitened over the batch's valid tokens.

    delta_t = r_t + gamma * V_(next) - V_t;  A_t = delta_t + gamma * lam * A_(next);
    "next" is the next response token (masked tokens are skipped), V and A are 0 past the end.
    returns = A + V (before whitening).
    """
    rewards, values = inputs.token_level_rewards, inputs.values
    mask = inputs.response_mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,)
    running_advantage = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage_t = delta + gamma * lam * running_advantage
        # a masked token leaves both carries untouched, as if it were not there
        next_value = mask[:, t] * values[:, t] + (1 - mask[:, t]) * next_value
        running_advantage = mask[:, t] * advantage_t + (1 - mask[:, t]) * running_advantage
        advantages[:, t] = running_advantage
    returns = (advantages + values) * mask
    return masked_whiten(advantages, mask), returns


@register_adv_estimator("grpo", needs_groups=True)
def grpo(inputs: AdvantageInputs, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO (Shao et al. 2024, DeepSeekMath): (score - group mean) / (group std + 1e-6), on every token."""
    scores = _scores(inputs)
    mean, std, _ = group_mean_std(scores, inputs.group_index)
    advantages = _broadcast((scores - mean) / (std + GROUP_STD_EPS), inputs.response_mask)
    return advantages, advantages


@register_adv_estimator(
    "drgrpo", aliases=("dr_grpo",), needs_groups=True, default_loss_agg_mode="seq-mean-token-sum-norm"
)
def drgrpo(inputs: AdvantageInputs, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr. GRPO (Liu et al. 2025): score - group mean, without the std division."""
    scores = _scores(inputs)
    mean, _, _ = group_mean_std(scores, inputs.group_index)
    advantages = _broadcast(scores - mean, inputs.response_mask)
    return advantages, advantages


@register_adv_estimator("reinforce")
def reinforce(inputs: AdvantageInputs, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE (Williams 1992) without a baseline: the discounted return-to-go, not normalised."""
    returns = _return_to_go(inputs.token_level_rewards, inputs.response_mask, gamma)
    return returns, returns


@register_adv_estimator("reinforce_plus_plus")
def reinforce_plus_plus(inputs: AdvantageInputs, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025): the discounted return-to-go whitened over the batch's valid tokens."""
    returns = _return_to_go(inputs.token_level_rewards, inputs.response_mask, gamma)
    return masked_whiten(returns, inputs.response_mask), returns


@register_adv_estimator("reinforce_plus_plus_baseline", needs_groups=True)
def reinforce_plus_plus_baseline(
    inputs: AdvantageInputs, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline (Hu 2025): score - group mean on every token, whitened over the batch."""
    scores = _scores(inputs)
    mean, _, _ = group_mean_std(scores, inputs.group_index)
    advantages = masked_whiten(_broadcast(scores - mean, inputs.response_mask), inputs.response_mask)
    return advantages, advantages


@register_adv_estimator("rloo", needs_groups=True)
def rloo(inputs: AdvantageInputs, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO (Ahmadian et al. 2024): score minus the mean score of the other n - 1 responses of the group.

    score - (sum - score) / (n - 1) = (score - mean) * n / (n - 1); a group of one keeps its score.
    """
    scores = _scores(inputs)
    mean, _, counts = group_mean_std(scores, inputs.group_index)
    scale = torch.where(counts > 1, counts / (counts - 1).clamp(min=1), torch.ones_like(counts))
    advantages = _broadcast((scores - mean) * scale, inputs.response_mask)
    return advantages, advantages


@register_adv_estimator("remax", needs_baselines=True)
def remax(inputs: AdvantageInputs, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ReMax (Li et al. 2024): undiscounted return-to-go minus the greedy response's reward."""
    mask = inputs.response_mask.to(inputs.token_level_rewards.dtype)
    returns = (inputs.token_level_rewards * mask).flip(-1).cumsum(-1).flip(-1) * mask
    advantages = returns - inputs.reward_baselines.unsqueeze(-1) * mask
    return advantages, returns
