"""The algorithm, critic and reward sections."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from rlkit.config.auto import AUTO, AutoSwitch
from rlkit.config.base import LocalPath, Section
from rlkit.config.engines import OptimConfig


class KLControlConfig(Section):
    type: Annotated[Literal["fixed", "adaptive"], Field(description="Fixed or adaptive (Ziegler et al. 2019).")] = (
        "fixed"
    )
    kl_coef: Annotated[float, Field(ge=0, description="(Initial) KL coefficient in the reward.")] = 0.001
    target_kl: Annotated[float, Field(gt=0, description="Adaptive: the KL the controller steers to.")] = 0.1
    horizon: Annotated[int, Field(ge=1, description="Adaptive: the controller's horizon in samples.")] = 10000


class DynamicSamplingConfig(Section):
    max_generate_batches: Annotated[
        int, Field(ge=1, description="Generation rounds a step at most: each round after the first takes the next "
                   "batch of prompts of the data order to replace the groups whose rewards were all equal (DAPO).")
    ] = 4


class OverlongPenaltyConfig(Section):
    buffer_length: Annotated[
        int, Field(ge=1, description="Tokens before the response budget (rollout.max_new_tokens; for conversations, "
                   "rollout.max_total_tokens) where the penalty ramps.")
    ] = 4
    penalty_factor: Annotated[float, Field(ge=0, description="Penalty at the response budget.")] = 1.0


class AlgorithmConfig(Section):
    FIXED_DEFAULTS: ClassVar[dict[str, Any]] = {"old_logprobs_from_update": False}

    adv_estimator: Annotated[
        str,
        Field(description="Advantage estimator: gae, grpo, drgrpo, reinforce, reinforce_plus_plus, "
              "reinforce_plus_plus_baseline, rloo, remax, or a plugin's name."),
    ] = "grpo"
    policy_loss: Annotated[str, Field(description="Policy loss: ppo (clip), gspo, cispo, or a plugin's name.")] = "ppo"
    gamma: Annotated[float, Field(ge=0, le=1, description="Discount factor.")] = 1.0
    lam: Annotated[float, Field(ge=0, le=1, description="GAE lambda.")] = 1.0
    clip_ratio_low: Annotated[float, Field(ge=0, description="PPO clip below 1.")] = 0.2
    clip_ratio_high: Annotated[
        float, Field(ge=0, description="PPO clip above 1 (raise it for DAPO's clip-higher).")
    ] = 0.2
    clip_ratio_c: Annotated[float, Field(gt=1, description="Dual-clip bound for negative advantages.")] = 3.0
    loss_agg_mode: Annotated[
        Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] | None,
        Field(description="How token losses become one number; default: the one the policy loss declares "
              "(gspo seq-mean-token-mean, cispo token-mean), else the estimator's (drgrpo seq-mean-token-sum-norm, "
              "the others token-mean)."),
    ] = None
    loss_agg_norm_length: Annotated[
        int | None, Field(ge=1, description="The constant T of seq-mean-token-sum-norm; default: the response budget "
                      "(rollout.max_new_tokens; for conversations, rollout.max_total_tokens).")
    ] = None
    entropy_coeff: Annotated[float, Field(ge=0, description="Entropy bonus coefficient.")] = 0.0
    use_kl_in_reward: Annotated[bool, Field(description="Subtract a KL penalty from the token rewards.")] = False
    kl_penalty: Annotated[
        Literal["k1", "kl", "k2", "mse", "k3", "low_var_kl", "abs"], Field(description="KL estimator in the reward.")
    ] = "k1"
    kl_ctrl: Annotated[KLControlConfig, Field(description="KL-in-reward coefficient control.")] = KLControlConfig()
    use_kl_loss: Annotated[bool, Field(description="Add a KL term to the policy loss (GRPO style).")] = False
    kl_loss_coef: Annotated[float, Field(ge=0, description="Weight of the KL loss.")] = 0.001
    kl_loss_type: Annotated[
        Literal["k1", "kl", "k2", "mse", "k3", "low_var_kl", "abs"], Field(description="KL estimator in the loss.")
    ] = "low_var_kl"
    ppo_epochs: Annotated[int, Field(ge=1, description="Passes over each batch.")] = 1
    mini_batch_size: Annotated[
        int, Field(ge=1, description="Prompts per optimizer step (times rollout.n responses).")
    ] = 16
    micro_batch_size_per_device: Annotated[
        int, Field(ge=1, description="Sequences per forward/backward on one device (memory knob).")
    ] = 16
    dynamic_sampling: Annotated[
        DynamicSamplingConfig | None,
        Field(description="DAPO dynamic sampling: drop groups whose rewards are all equal, then refill."),
    ] = None
    overlong_penalty: Annotated[
        OverlongPenaltyConfig | None, Field(description="DAPO soft overlong punishment added to the reward.")
    ] = None
    reuse_rollout_logprobs: Annotated[
        bool,
        Field(description="Use the rollout engine's log-probs as the old log-probs and skip that pass; only for "
              "on-policy updates (ppo_epochs 1, mini_batch_size == data.train_batch_size)."),
    ] = False
    old_logprobs_from_update: Annotated[
        AutoSwitch,
        Field(description="Skip the old log-prob pass: the update's own log-probs, detached, are the old ones "
              "(ratio exactly 1, as TRL's GRPO with num_iterations=1); only for on-policy updates (ppo_epochs 1, "
              "mini_batch_size == data.train_batch_size), not with reuse_rollout_logprobs, use_kl_in_reward or "
              "rollout_is_cap. 'auto': on on a GPU wherever it is allowed; off on CPU."),
    ] = AUTO
    rollout_is_cap: Annotated[
        float | None,
        Field(gt=0, description="Truncated importance sampling: weight the loss by min(p_train/p_rollout, cap)."),
    ] = None


class CriticConfig(Section):
    model_path: Annotated[
        LocalPath | None,
        Field(description="Critic model directory; default: a copy of the policy with a value head."),
    ] = None
    optim: Annotated[OptimConfig, Field(description="Critic optimizer.")] = OptimConfig(lr=1e-5)
    cliprange_value: Annotated[float, Field(gt=0, description="Value clipping around the old values.")] = 0.5
    warmup_steps: Annotated[int, Field(ge=0, description="Train only the critic for the first N steps.")] = 0


class RewardConfig(Section):
    name: Annotated[
        str,
        Field(description="Reward for every sample: a registered name, 'module:attr' or 'file.py:attr' "
              "(a function or a RewardManager class); 'auto' picks the built-in for each data_source."),
    ] = "auto"
    per_data_source: Annotated[
        dict[str, str], Field(description="Reward by data_source, overriding `name` for those sources.")
    ] = {}
    kwargs: Annotated[dict[str, Any], Field(description="Keyword arguments for the reward (or its manager).")] = {}
    timeout_s: Annotated[
        float | None,
        Field(gt=0, description="Seconds a reward may take per sample (a RewardManager's call: per sample it "
              "scores) before it fails; a reward function's worker process is killed then. null: no limit."),
    ] = 60.0
    on_error: Annotated[
        Literal["raise", "zero"],
        Field(description="'raise' stops on a failing reward; 'zero' scores it 0 and counts a warning."),
    ] = "raise"
