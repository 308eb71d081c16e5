"""The RL training loop: setup -> (validate) -> steps -> save -> cleanup.

One step, each phase timed: generate (after pushing the latest weights), reward, reference and old
log-probs, critic values, advantages, critic and actor updates over PPO epochs and mini-batches. Algorithm
differences live in rlkit.algorithms (chosen by name through the registries), backend differences in the
engines; nothing here asks which engine or estimator it runs.

Every rank runs this loop on its own share of the prompts (SPMD); rank 0 logs and publishes checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from pathlib import Path

import torch
import yaml

from rlkit.algorithms.advantages import estimator_for
from rlkit.algorithms.kl import AdaptiveKLController, FixedKLController
from rlkit.batch import Batch
from rlkit.config.schema import RunConfig
from rlkit.data.sampler import EpochSampler
from rlkit.distributed import all_gather_objects, all_reduce_min, all_reduce_sum
from rlkit.engines.base import DistInfo
from rlkit.rollout.base import SamplingParams
from rlkit.trainer import experience
from rlkit.trainer.checkpoint import CheckpointManager, resume_point
from rlkit.trainer.components import (
    Components,
    build_components,
    check_against_world,
    loss_agg_mode,
    loss_norm_length,
)
from rlkit.trainer.guards import check_update, explain_out_of_memory
from rlkit.trainer.losses import GlobalCounts, actor_loss_fn, critic_loss_fn
from rlkit.trainer.metrics import MetricsLogger, build_logger
from rlkit.trainer.output_dir import OutputDir
from rlkit.trainer.preemption import StopRequests
from rlkit.trainer.preflight import check_components
from rlkit.trainer.prepare import add_overlong_penalty, global_advantages, scores_on_last_token, token_level_rewards
from rlkit.trainer.resume_checks import check_start
from rlkit.trainer.timing import PhaseTimer

log = logging.getLogger(__name__)
_COUNTS = ("update/skipped", "critic/update_skipped")  # metrics summed over a step's optimizer steps


class RLTrainer:
    def __init__(self, cfg: RunConfig, dist: DistInfo):
        check_against_world(cfg, dist)
        self.cfg = cfg
        self.dist = dist
        self.step = 0
        # -- reliability hooks (rlkit.trainer.output_dir, preflight, resume_checks): names resolve before anything is
        # written; the output directory is locked; a setup that fails removes only what it created there.
        check_components(cfg)
        self.output = OutputDir.open(cfg.trainer.output_dir, dist, command="rlkit train")
        self.output_dir = self.output.path
        with self.output.setup():
            self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", cfg.trainer.keep_last, dist.is_main)
            resume_from = resume_point(cfg.trainer.resume, self.checkpoints, self.output_dir)
            check_start(resume_from, cfg, self.output, world_size=dist.world_size, total_steps=cfg.trainer.total_steps)
            self.parts: Components = build_components(cfg, dist)
            self.estimator = estimator_for(cfg.algorithm.adv_estimator)
            self.sampler = EpochSampler(len(self.parts.train_data), cfg.data.train_batch_size, seed=cfg.trainer.seed,
                                        shuffle=cfg.data.shuffle)
            self.kl_ctrl = (
                AdaptiveKLController(cfg.algorithm.kl_ctrl.kl_coef, cfg.algorithm.kl_ctrl.target_kl,
                                     cfg.algorithm.kl_ctrl.horizon)
                if cfg.algorithm.kl_ctrl.type == "adaptive"
                else FixedKLController(cfg.algorithm.kl_ctrl.kl_coef)
            )
            if resume_from is not None:
                self._load(resume_from)
            self.timer = PhaseTimer(cuda=dist.device.startswith("cuda"))
            self.logger: MetricsLogger = build_logger(
                cfg.trainer.loggers, self.output_dir, is_main=dist.is_main, total_steps=self.parts.total_steps,
                start_step=self.step, progress_bar=cfg.trainer.progress_bar, project=cfg.trainer.project_name,
                name=cfg.trainer.experiment_name or self.output_dir.name, config=cfg.model_dump(mode="json"),
            )
        self.batches = iter(self.sampler)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        # -- reliability hook (rlkit.trainer.output_dir, preemption): the lock records how the run ended, and a
        # preemption signal stops the loop after a saved step.
        with self.output.running(), StopRequests(self.cfg.trainer.preempt_signals, self._progress) as self.stops:
            return self._fit()

    def _fit(self) -> dict[str, float]:
        cfg = self.cfg.trainer
        last: dict[str, float] = {}
        first_val: dict[str, float] = {}
        if cfg.val_before_train and self.step == 0 and self.parts.val_data is not None:
            first_val = self.validate()
            self.logger.log(0, first_val)
        while self.step < self.parts.total_steps:
            self.step += 1
            metrics = self.train_step(next(self.batches))
            is_last = self.step == self.parts.total_steps
            if self.parts.val_data is not None and ((cfg.test_freq and self.step % cfg.test_freq == 0) or is_last):
                metrics.update(self.validate())
            # Logged before the save: a crash in between leaves a line past the last checkpoint, which the
            # resumed run truncates and writes again, never a checkpoint whose step has no line.
            self.logger.log(self.step, metrics)
            saved = None
            if (cfg.save_freq and self.step % cfg.save_freq == 0) or (is_last and cfg.save_at_end):
                saved = self.save()
            last = metrics
            if self.stops.agreed():  # a collective: every rank stops after this same step
                raise self.stops.preempted(self.step, saved or self.save())
        self.logger.close()
        if self.dist.is_main and "val/reward/mean" in last:
            before = f"{first_val['val/reward/mean']:.3f} -> " if first_val else ""
            log.info("validation reward %s%.3f (accuracy %.3f); outputs in %s", before, last["val/reward/mean"],
                     last.get("val/accuracy", float("nan")), self.output_dir)
        return last

    @explain_out_of_memory
    def train_step(self, prompt_indices: list[int]) -> dict[str, float]:
        self.timer.reset()
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        with self.timer.phase("weight_sync"):
            self._sync_weights()
        batch, scores, reward_metrics = self._rollout(prompt_indices)
        metrics.update(reward_metrics)
        batch = self._prepare(batch, scores, metrics)
        with self.timer.phase("update"):
            metrics.update(self._update(batch))
        metrics.update(self.timer.metrics())
        metrics["time/step"] = time.perf_counter() - start
        num_tokens = all_reduce_sum(batch["attention_mask"].sum())
        metrics["throughput/tokens_per_s"] = num_tokens / metrics["time/step"]
        if self.dist.device.startswith("cuda"):
            metrics["memory/peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        metrics["memory/peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        metrics["lr"] = metrics.pop("lr", 0.0)
        return metrics

    # -- phases -----------------------------------------------------------------------------------
    def _sync_weights(self) -> None:
        experience.sync_weights(self.parts.rollout, self.parts.actor, self.dist.device)

    def _rollout(self, prompt_indices: list[int]) -> tuple[Batch, torch.Tensor, dict[str, float]]:
        params = self._sampling_params(train=True)
        prompts = self._local_prompts(prompt_indices)
        with self.timer.phase("generate"):
            batch = experience.generate(self.parts.rollout, prompts, params, self._pad_id())
        with self.timer.phase("reward"):
            scores, _, metrics = experience.score(batch, self.parts.reward)
        metrics.update(self._gathered_summary(batch, scores, prefix=""))
        if self.estimator.needs_baselines:
            with self.timer.phase("baseline"):
                batch["reward_baselines"] = self._greedy_baselines(prompts, params)
        dynamic = self.cfg.algorithm.dynamic_sampling
        if dynamic is not None:
            batch, scores = self._refill_with_signal(batch, scores, prompts, params, dynamic.max_generate_batches)
            metrics["dynamic_sampling/kept_samples"] = all_reduce_sum(len(batch))
        self.parts.rollout.sleep()
        return batch, scores, metrics

    def _greedy_baselines(self, prompts, params: SamplingParams) -> torch.Tensor:
        """ReMax: the reward of one greedy response per prompt, the baseline of its sampled responses."""
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=params.max_new_tokens,
                                stop_token_ids=params.stop_token_ids, ignore_eos=params.ignore_eos, logprobs=False)
        baseline_batch = experience.generate(self.parts.rollout, prompts, greedy, self._pad_id())
        baseline_scores, _, _ = experience.score(baseline_batch, self.parts.reward)
        return baseline_scores.repeat_interleave(params.n)

    def _refill_with_signal(self, batch, scores, prompts, params, max_batches):
        """DAPO dynamic sampling: drop groups whose responses all scored the same, and generate again for the
        same prompts to refill. Every rank keeps the same number of whole groups, so that ranks run the same
        number of mini-batches; a batch without any informative group on some rank is kept as it was."""
        kept, kept_scores = experience.drop_groups_without_signal(batch, scores)
        pieces, piece_scores = [kept], [kept_scores]
        for round_index in range(1, max_batches):
            if all_reduce_min(sum(len(piece) for piece in pieces)) >= len(batch):
                break
            with self.timer.phase("generate"):
                extra = experience.generate(self.parts.rollout, prompts, params, self._pad_id())
            # A regenerated group is a new group: its own mean and std, not pooled with the first attempt.
            extra["group_index"] = [g + round_index * self.cfg.data.train_batch_size for g in extra["group_index"]]
            with self.timer.phase("reward"):
                extra_scores, _, _ = experience.score(extra, self.parts.reward)
            extra, extra_scores = experience.drop_groups_without_signal(extra, extra_scores)
            pieces.append(extra)
            piece_scores.append(extra_scores)
        num_groups = int(all_reduce_min(min(sum(len(piece) for piece in pieces), len(batch)) // params.n))
        if num_groups == 0:
            return batch, scores
        merged = Batch.concat([_pad_prompt(piece, max(p.prompt_width for p in pieces)) for piece in pieces])
        keep = num_groups * params.n
        return merged.slice(0, keep), torch.cat(piece_scores)[:keep]

    def _prepare(self, batch: Batch, scores: torch.Tensor, metrics: dict[str, float]) -> Batch:
        cfg = self.cfg.algorithm
        micro = cfg.micro_batch_size_per_device
        scores = add_overlong_penalty(scores, batch, cfg, self.cfg.rollout.max_new_tokens)
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
        cfg = self.cfg.algorithm
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
        cfg = self.cfg.algorithm
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

    # -- validation -------------------------------------------------------------------------------
    @explain_out_of_memory
    def validate(self) -> dict[str, float]:
        data = self.parts.val_data
        params = self._sampling_params(train=False)
        local = [index for position, index in enumerate(range(len(data)))
                 if position % self.dist.world_size == self.dist.rank]
        self._sync_weights()
        batch_size = self.cfg.data.val_batch_size or len(local) or 1
        scores, lengths, reasons, accuracy = [], [], [], []
        for start in range(0, len(local), batch_size):
            prompts = [self._prompt_item(i, i) for i in local[start:start + batch_size]]
            batch = experience.generate(self.parts.rollout, prompts, params, self._pad_id())
            piece_scores, extras, _ = experience.score(batch, self.parts.reward)
            scores += piece_scores.tolist()
            lengths += batch["response_mask"].sum(dim=1).long().tolist()
            reasons += batch["finish_reason"]
            accuracy += _accuracy(piece_scores.tolist(), extras.get("acc"))
        self.parts.rollout.sleep()
        gathered = all_gather_objects((scores, lengths, reasons, accuracy))
        scores, lengths, reasons, accuracy = (sum((part[i] for part in gathered), []) for i in range(4))
        metrics = experience.summarize(scores, lengths, reasons, prefix="val/")
        metrics["val/accuracy"] = sum(accuracy) / max(len(accuracy), 1)
        return metrics

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        with self.timer.phase("save"):
            return self.checkpoints.save(self.step, self._write_checkpoint)

    def _write_checkpoint(self, directory: Path) -> None:
        self.parts.actor.save(directory / "actor")
        if self.parts.critic is not None:
            self.parts.critic.save(directory / "critic")
        if self.dist.is_main:
            state = {
                "step": self.step,
                "sampler": self.sampler.state_dict(),
                "kl_ctrl": self.kl_ctrl.state_dict(),
                "rollout": self.parts.rollout.state_dict() if hasattr(self.parts.rollout, "state_dict") else {},
                "world_size": self.dist.world_size,  # rlkit.trainer.resume_checks compares it
            }
            (directory / "trainer_state.json").write_text(json.dumps(state, indent=1))
            (directory / "config.yaml").write_text(yaml.safe_dump(self.cfg.model_dump(mode="json", by_alias=True),
                                                                  sort_keys=False))
            self.parts.tokenizer.save_pretrained(str(directory / "tokenizer"))

    def _load(self, directory: Path) -> None:
        self.parts.actor.load(directory / "actor")
        if self.parts.critic is not None:
            self.parts.critic.load(directory / "critic")
        state = json.loads((directory / "trainer_state.json").read_text())
        self.step = state["step"]
        self.sampler.load_state_dict(state["sampler"])
        self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        if state.get("rollout") and hasattr(self.parts.rollout, "load_state_dict"):
            self.parts.rollout.load_state_dict(state["rollout"])
        if self.dist.is_main:
            log.info("resumed from %s at step %d", directory, self.step)

    # -- helpers ----------------------------------------------------------------------------------
    def _progress(self) -> tuple[int, Path | None]:
        """The step in progress and the newest checkpoint, for messages when the run is stopped."""
        published = self.checkpoints.complete_checkpoints()
        return self.step, published[-1] if published else None

    def _sampling_params(self, *, train: bool) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            n=r.n if train else r.val_n,
            temperature=r.temperature if train else r.val_temperature,
            top_p=r.top_p, top_k=r.top_k, max_new_tokens=r.max_new_tokens,
            stop_token_ids=tuple(r.stop_token_ids), ignore_eos=r.ignore_eos,
            logprobs=train and self._needs_rollout_logprobs(),
        )

    def _needs_rollout_logprobs(self) -> bool:
        algorithm = self.cfg.algorithm
        return self.cfg.rollout.return_logprobs or algorithm.reuse_rollout_logprobs or algorithm.rollout_is_cap is not None

    def _local_prompts(self, prompt_indices: list[int]) -> list[experience.PromptItem]:
        per_rank = len(prompt_indices) // self.dist.world_size
        mine = range(self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank)
        return [self._prompt_item(position, prompt_indices[position], train=True) for position in mine]

    def _prompt_item(self, group: int, index: int, train: bool = False) -> experience.PromptItem:
        record = (self.parts.train_data if train else self.parts.val_data)[index]
        return experience.PromptItem(group, record.prompt_ids, record.prompt_text, record.data_source,
                                     record.ground_truth, record.extra_info)

    def _pad_id(self) -> int:
        tokenizer = self.parts.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _gathered_summary(self, batch: Batch, scores: torch.Tensor, prefix: str) -> dict[str, float]:
        lengths = batch["response_mask"].sum(dim=1).long().tolist()
        gathered = all_gather_objects((scores.tolist(), lengths, batch["finish_reason"]))
        return experience.summarize(*(sum((part[i] for part in gathered), []) for i in range(3)), prefix=prefix)

    @staticmethod
    def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
        return all_reduce_sum((values * mask).sum()) / max(all_reduce_sum(mask.sum()), 1.0)


def _accuracy(scores: list[float], acc: list[float] | None) -> list[float]:
    """A response is correct when its reward reports acc=1, or (where it reports none) when it scores >= 1."""
    acc = acc or [math.nan] * len(scores)
    return [value if not math.isnan(value) else float(score >= 1.0) for score, value in zip(scores, acc)]


def _pad_prompt(batch: Batch, width: int) -> Batch:
    """Left-pad a batch's prompt part to `width` so batches from different generate calls concatenate."""
    extra = width - batch.prompt_width
    if extra == 0 or len(batch) == 0:
        return batch
    padded = Batch(dict(batch.tensors), dict(batch.meta))
    for name in ("input_ids", "attention_mask", "position_ids"):
        tensor = batch[name]
        padded.tensors[name] = torch.cat([tensor.new_zeros((len(batch), extra)), tensor], dim=1)
    return padded
