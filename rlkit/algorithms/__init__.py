"""RL algorithms as pure tensor functions: advantage estimators, policy and value losses, KL, aggregation.

Nothing here touches torch.distributed, logging or configs; everything runs on CPU in milliseconds.
Estimators and policy losses are looked up by name in ``rlkit.registry`` (ADV_ESTIMATORS,
POLICY_LOSSES); see docs/algorithms.md.
"""

from rlkit.algorithms.advantages import (
    AdvantageEstimator,
    AdvantageInputs,
    compute_advantages,
    register_adv_estimator,
)
from rlkit.algorithms.aggregation import LOSS_AGG_MODES, agg_loss, masked_mean, masked_whiten
from rlkit.algorithms.kl import (
    KL_KINDS,
    AdaptiveKLController,
    FixedKLController,
    apply_kl_in_reward,
    kl_penalty,
)
from rlkit.algorithms.policy_losses import (
    cispo_loss,
    gspo_loss,
    loss_agg_mode_for,
    policy_loss,
    ppo_loss,
    register_policy_loss,
)
from rlkit.algorithms.sampling import keep_groups_with_signal, overlong_penalty
from rlkit.algorithms.value_loss import value_loss

__all__ = [
    "LOSS_AGG_MODES",
    "KL_KINDS",
    "AdaptiveKLController",
    "AdvantageEstimator",
    "AdvantageInputs",
    "FixedKLController",
    "agg_loss",
    "apply_kl_in_reward",
    "cispo_loss",
    "compute_advantages",
    "gspo_loss",
    "keep_groups_with_signal",
    "kl_penalty",
    "loss_agg_mode_for",
    "masked_mean",
    "masked_whiten",
    "overlong_penalty",
    "policy_loss",
    "ppo_loss",
    "register_adv_estimator",
    "register_policy_loss",
    "value_loss",
]
