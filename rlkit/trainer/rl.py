"""The RL training step: next batch -> prepare -> update -> publish, each phase timed.

The experience stage (rlkit.experience) produces the batch: prompts, generation, rewards, greedy baselines,
dynamic sampling. This module prepares it (old and reference log-probs, critic values, rewards with KL,
advantages), runs the critic and actor updates over PPO epochs and mini-batches, and publishes the new
weights back to the experience source. The loop around the steps (validation, logging, checkpoints, resume,
cleanup) is rlkit.trainer.shell's, shared with SFT. Algorithm differences live in rlkit.algorithms (chosen by
name through the registries), backend differences in the engines; nothing here asks which engine or
estimator it runs.

Every training rank runs this loop on its own share of the prompts (SPMD); rank 0 logs and publishes
checkpoints. In a split placement the training ranks are a world of their own and the rollout ranks run
rlkit.experience.rollout_worker instead (docs/placement.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from rlkit.algorithms.kl import AdaptiveKLController, FixedKLController
from rlkit.batch import Batch
from rlkit.config.schema import RunConfig
from rlkit.distributed import DistInfo, all_reduce_sum
from rlkit.experience import ExperienceSource
from rlkit.placement import Placement, colocated_placement
from rlkit.trainer.components import (
    Components,
    build_components,
    build_experience,
    check_against_world,
    loss_agg_mode,
    loss_norm_length,
    memory_shape,
)
from rlkit.trainer.guards import check_update, explain_out_of_memory
from rlkit.trainer.losses import GlobalCounts, actor_loss_fn, critic_loss_fn
from rlkit.trainer.memory_plan import settle_memory
from rlkit.trainer.preflight import check_components
from rlkit.trainer.prepare import add_overlong_penalty, global_advantages, scores_on_last_token, token_level_rewards
from rlkit.trainer.shell import TrainerShell
from rlkit.trainer.speed import FROM_UPDATE, SpeedPlan, log_header

log = logging.getLogger(__name__)
_COUNTS = ("update/skipped", "critic/update_skipped")  # metrics summed over a step's optimizer steps


class RLTrainer(TrainerShell):
    kind = "rl"
    command = "rlkit train"

    def __init__(self, cfg: RunConfig, dist: DistInfo, placement: Placement | None = None):
        """`placement`: this rank's place in the job (rlkit.placement.init_placement); default colocated."""
        check_against_world(cfg, dist)
        check_components(cfg)  # every name resolves before anything is written or any model loads
        self.placement = placement or colocated_placement(cfg, dist)
        super().__init__(cfg, dist)

    def setup(self) -> None:
        cfg = self.cfg
        self.parts: Components = build_components(cfg, self.dist, self.placement)
        self.resources.callback(self.parts.reward.close)  # its worker process must not outlive the run
        self.tokenizer = self.parts.tokenizer
        self.total_steps = self.parts.total_steps
        engines = [engine for engine in (self.parts.actor, self.parts.ref, self.parts.critic) if engine is not None]
        self.speed: SpeedPlan = settle_memory(
            self.parts.speed, cfg, engines=engines, rollout=self.parts.rollout, dist=self.dist,
            **memory_shape(cfg, self.dist))
        log_header(self.speed, self.dist)
        self.experience: ExperienceSource = build_experience(cfg, self.parts, self.speed, self.dist, self.timer,
                                                             self.placement)
        self.resources.callback(self.experience.close)
        kl = cfg.algorithm.kl_ctrl
        self.kl_ctrl = (AdaptiveKLController(kl.kl_coef, kl.target_kl, kl.horizon) if kl.type == "adaptive"
                        else FixedKLController(kl.kl_coef))
        # The initial weights; a resumed run publishes the checkpoint's in load_trainer_state.
        self.experience.publish(self.parts.actor.full_weights, version=0)
        # The algorithm section with old_logprobs_from_update resolved: what the prepare and update phases read.
        self.algorithm = cfg.algorithm.resolve_auto(old_logprobs_from_update=self.speed.value(FROM_UPDATE))

    # -- one step ---------------------------------------------------------------------------------
    def train_one_step(self) -> dict[str, float]:
        return self.train_step()

    @explain_out_of_memory
    def train_step(self) -> dict[str, float]:
        """next batch -> prepare -> update -> publish; the shell then validates, logs and saves."""
        start = time.perf_counter()
        experience = self.experience.next_batch()  # phases weight_sync, generate, reward, baseline
        metrics = dict(experience.metrics)
        batch = self._prepare(experience.batch, experience.scores, metrics)  # log-probs, values, advantages
        with self.timer.phase("update"):
            metrics.update(self._update(batch))
        self.experience.publish(self.parts.actor.full_weights, version=self.step)
        metrics.update(self.step_costs(start, float(batch["attention_mask"].sum())))
        metrics["lr"] = metrics.pop("lr", 0.0)
        return metrics

    # -- prepare and update -----------------------------------------------------------------------
    def _prepare(self, batch: Batch, scores: torch.Tensor, metrics: dict[str, float]) -> Batch:
        cfg = self.algorithm
        micro = cfg.micro_batch_size_per_device
        scores = add_overlong_penalty(scores, batch, cfg, self.cfg.rollout.response_budget)
        batch["token_level_scores"] = scores_on_last_token(scores, batch["response_mask"])
        # With old_logprobs_from_update there are no old log-probs before the update: the loss takes them from
        # the update's own forward and reports kl and rollout/logprob_abs_diff from there.
        if not cfg.old_logprobs_from_update:
            self._add_old_logprobs(batch, metrics)
        if cfg.use_kl_in_reward or cfg.use_kl_loss:
            with self.timer.phase("ref_logprobs"):
                ref_engine = self.parts.ref or self.parts.actor
                batch["ref_logprobs"] = ref_engine.compute_logprobs(
                    batch, micro_batch_size=micro, base_model=self.parts.ref is None).logprobs
            if not cfg.old_logprobs_from_update:
                metrics["kl"] = self._masked_mean(batch["old_logprobs"] - batch["ref_logprobs"],
                                                  batch["response_mask"])
        if self.parts.critic is not None:
            with self.timer.phase("values"):
                batch["values"] = self.parts.critic.compute_values(batch, micro_batch_size=micro)
        with self.timer.phase("advantages"):
            rewards, kl_in_reward = token_level_rewards(batch, cfg, self.kl_ctrl.value)
            batch["token_level_rewards"] = rewards
            if kl_in_reward is not None:
                kl_mean = all_reduce_sum(kl_in_reward * len(batch)) / all_reduce_sum(len(batch))
                metrics["kl_in_reward"], metrics["kl_coef"] = kl_mean, self.kl_ctrl.value
                self.kl_ctrl.update(kl_mean, n_steps=self.cfg.data.train_batch_size * self.cfg.rollout.n)
            batch["advantages"], batch["returns"] = global_advantages(batch, cfg)
        return batch

    def _add_old_logprobs(self, batch: Batch, metrics: dict[str, float]) -> None:
        cfg = self.algorithm
        if cfg.reuse_rollout_logprobs and "rollout_logprobs" in batch:
            # On-policy (the config validator checks it): the rollout sampled with the weights about to be
            # updated, so its log-probs are the old log-probs up to kernel noise and that pass is skipped.
            batch["old_logprobs"] = batch["rollout_logprobs"]
            return
        with self.timer.phase("old_logprobs"):
            # No entropy here: the update reports it, and it costs arithmetic over every full-vocabulary chunk.
            output = self.parts.actor.compute_logprobs(batch, micro_batch_size=cfg.micro_batch_size_per_device)
            batch["old_logprobs"] = output.logprobs
            if "rollout_logprobs" in batch:
                metrics["rollout/logprob_abs_diff"] = self._masked_mean(
                    (batch["old_logprobs"] - batch["rollout_logprobs"]).abs(), batch["response_mask"])

    def _update(self, batch: Batch) -> dict[str, float]:
        cfg = self.algorithm
        agg_mode, norm_length = loss_agg_mode(self.cfg), loss_norm_length(self.cfg)
        train_actor = self.step > self.cfg.critic.warmup_steps
        local_mini = cfg.mini_batch_size * self.cfg.rollout.n // self.dist.world_size
        sums: dict[str, float] = {}
        num_reports: dict[str, int] = {}
        for _ in range(cfg.ppo_epochs):
            for mini in batch.split(local_mini):
                tokens, seqs = GlobalCounts.of_local(mini)
                counts = GlobalCounts(all_reduce_sum(tokens), all_reduce_sum(seqs))
                step_metrics: dict[str, float] = {}
                if self.parts.critic is not None:
                    step_metrics.update(self.parts.critic.forward_backward(
                        mini, critic_loss_fn(self.cfg.critic, agg_mode, norm_length, counts),
                        micro_batch_size=cfg.micro_batch_size_per_device))
                    critic_step = self.parts.critic.optimizer_step()
                    check_update(critic_step, role="critic", step=self.step, policy=self.cfg.trainer.on_nonfinite)
                    step_metrics["critic/grad_norm"] = critic_step["grad_norm"]
                    step_metrics["critic/update_skipped"] = critic_step.get("skipped", 0.0)
                if train_actor:
                    step_metrics.update(self.parts.actor.forward_backward(
                        mini, actor_loss_fn(cfg, agg_mode, norm_length, counts),
                        micro_batch_size=cfg.micro_batch_size_per_device, entropy_grad=cfg.entropy_coeff != 0))
                    actor_step = self.parts.actor.optimizer_step()
                    check_update(actor_step, role="actor", step=self.step, policy=self.cfg.trainer.on_nonfinite)
                    step_metrics.update({"grad_norm": actor_step["grad_norm"],
                                         "update/skipped": actor_step.get("skipped", 0.0)})
                    if "lr" in actor_step:  # a skipped step may not report one
                        step_metrics["lr"] = actor_step["lr"]
                for key, value in step_metrics.items():
                    # Loss shares and weighted means add up over ranks; norms, lr and skips are the same on every rank.
                    total = value if key in ("grad_norm", "critic/grad_norm", "lr") + _COUNTS else all_reduce_sum(value)
                    sums[key] = sums.get(key, 0.0) + total
                    num_reports[key] = num_reports.get(key, 0) + 1
        # Means over the optimizer steps that reported each key; skipped updates are counted, not averaged.
        return {key: value if key in _COUNTS else value / num_reports[key] for key, value in sums.items()}

    # -- validation and checkpoints ---------------------------------------------------------------
    def has_validation(self) -> bool:
        return self.parts.val_data is not None

    @explain_out_of_memory
    def validate(self) -> dict[str, float]:
        return self.experience.validate()

    def save_engines(self, directory: Path) -> None:
        self.parts.actor.save(directory / "actor")
        if self.parts.critic is not None:
            self.parts.critic.save(directory / "critic")

    def load_engines(self, directory: Path) -> None:
        self.parts.actor.load(directory / "actor")
        if self.parts.critic is not None:
            self.parts.critic.load(directory / "critic")

    def trainer_state(self) -> dict[str, Any]:
        return {"kl_ctrl": self.kl_ctrl.state_dict(), **self.experience.state_dict()}  # sampler, rollout

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        self.experience.load_state_dict(state)
        self.experience.publish(self.parts.actor.full_weights, version=self.step)

    def finish(self, last: dict[str, float]) -> None:
        if self.dist.is_main and "val/reward/mean" in last:
            first = self.first_validation
            before = f"{first['val/reward/mean']:.3f} -> " if first else ""
            log.info("validation reward %s%.3f (accuracy %.3f); outputs in %s", before, last["val/reward/mean"],
                     last.get("val/accuracy", float("nan")), self.output_dir)

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
        return all_reduce_sum((values * mask).sum()) / max(all_reduce_sum(mask.sum()), 1.0)
