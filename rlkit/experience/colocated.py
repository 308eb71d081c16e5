"""The synchronous experience source: every rank rolls out its share of the prompts on its own rollout engine,
which shares the device with training and sleeps while the trainer works.

One `next_batch`: the next prompts of the seeded order (this rank's contiguous share), the published weights
pushed into the woken rollout engine, `rollout.n` responses per prompt, their rewards, then what the algorithm
asks for: a greedy response per prompt whose reward is the baseline (ReMax), and DAPO's dynamic sampling,
which replaces groups whose responses all scored the same. The engine sleeps again before the batch is
returned. Every method is a collective: ranks call them together.
"""

from __future__ import annotations

from typing import Any

import torch

from rlkit.algorithms.advantages import estimator_for
from rlkit.algorithms.sampling import keep_groups_with_signal
from rlkit.batch import Batch
from rlkit.config.schema import RunConfig
from rlkit.data import PromptDataset
from rlkit.data.sampler import EpochSampler
from rlkit.distributed import DistInfo, all_gather_objects, all_reduce_min, all_reduce_sum
from rlkit.experience.base import Experience, WeightsFn
from rlkit.experience.generation import Generation, PromptItem, score, sync_weights
from rlkit.experience.statistics import (
    conversation_counts,
    gathered_conversations,
    gathered_summary,
    summarize,
    summarize_conversations,
)
from rlkit.rewards.base import RewardManager, correctness
from rlkit.rollout.base import RolloutEngine, SamplingParams
from rlkit.timing import PhaseTimer


class ColocatedExperience:
    """ExperienceSource on the training ranks: publish is taken up at the rollout engine's next wake.

    Args:
        cfg: the run (rollout sampling options, data batch sizes, algorithm switches, the seed).
        rollout: this rank's rollout engine (woken, fed weights and put to sleep here; closed by `close`).
        generation: prompts -> responses on `rollout` (SingleTurnGeneration).
        reward: scores the responses.
        train_data, val_data: the prompts (val_data None: no validation).
        dist: this rank; the prompts of a step are split over the ranks in contiguous shares.
        timer: receives the phases weight_sync, generate, reward and baseline.
        return_logprobs: the run's rollout.return_logprobs, resolved (rlkit.trainer.speed); None: the config's,
            `auto` at its fixed default. The rollout returns log-probs when it is on or the algorithm reads them.
    """

    def __init__(self, cfg: RunConfig, *, rollout: RolloutEngine, generation: Generation, reward: RewardManager,
                 train_data: PromptDataset, val_data: PromptDataset | None, dist: DistInfo, timer: PhaseTimer,
                 return_logprobs: bool | None = None):
        self.cfg = cfg
        self.rollout = rollout
        self.generation = generation
        self.reward = reward
        self.train_data = train_data
        self.val_data = val_data
        self.dist = dist
        self.timer = timer
        self.return_logprobs = (cfg.rollout.resolve_auto().return_logprobs if return_logprobs is None
                                else return_logprobs)
        self.sampler = EpochSampler(len(train_data), cfg.data.train_batch_size, seed=cfg.trainer.seed,
                                    shuffle=cfg.data.shuffle)
        self.needs_baselines = estimator_for(cfg.algorithm.adv_estimator).needs_baselines
        self.version: int | None = None
        self._weights: WeightsFn | None = None
        self._prompt_batches = iter(self.sampler)

    # -- ExperienceSource -------------------------------------------------------------------------
    def publish(self, weights: WeightsFn, version: int) -> None:
        """Remembered, not pushed: the rollout engine sleeps until the next generation, and an engine that drops
        its weights while asleep (vLLM sleep level 2) needs them after every wake anyway."""
        self._weights, self.version = weights, version

    def next_batch(self) -> Experience:
        prompts = self._local_prompts(next(self._prompt_batches))
        with self.timer.phase("weight_sync"):
            self._sync_weights()
        params = self._sampling_params(train=True)
        with self.timer.phase("generate"):
            batch = self._generate(prompts, params)
        with self.timer.phase("reward"):
            scores, _, metrics = score(batch, self.reward)
        metrics.update(gathered_summary(batch, scores))
        metrics.update(gathered_conversations(batch))
        if self.needs_baselines:
            with self.timer.phase("baseline"):
                batch["reward_baselines"] = self._greedy_baselines(prompts, params)
        dynamic = self.cfg.algorithm.dynamic_sampling
        if dynamic is not None:
            batch, scores = self._refill_with_signal(batch, scores, prompts, params, dynamic.max_generate_batches)
            metrics["dynamic_sampling/kept_samples"] = all_reduce_sum(len(batch))
        self.rollout.sleep()
        return Experience(batch, scores, metrics)

    def validate(self) -> dict[str, float]:
        """Rank r answers validation prompts r, r + W, ... in generate calls of data.val_batch_size prompts."""
        data = self.val_data
        params = self._sampling_params(train=False)
        local = [index for index in range(len(data)) if index % self.dist.world_size == self.dist.rank]
        self._sync_weights()
        batch_size = self.cfg.data.val_batch_size or len(local) or 1
        scores, lengths, reasons, correct, conversations = [], [], [], [], []
        for start in range(0, len(local), batch_size):
            prompts = [self._prompt_item(data, index, index) for index in local[start:start + batch_size]]
            batch = self.generation(prompts, params)
            piece_scores, extras, _ = score(batch, self.reward)
            scores += piece_scores.tolist()
            lengths += batch["response_mask"].sum(dim=1).long().tolist()
            reasons += batch["finish_reason"]
            correct += correctness(piece_scores.tolist(), extras.get("acc"))
            conversations += conversation_counts(batch)
        self.rollout.sleep()
        gathered = all_gather_objects((scores, lengths, reasons, correct, conversations))
        scores, lengths, reasons, correct, conversations = (sum((part[i] for part in gathered), []) for i in range(5))
        metrics = summarize(scores, lengths, reasons, prefix="val/")
        metrics["val/accuracy"] = sum(correct) / max(len(correct), 1)
        metrics.update(summarize_conversations(conversations, prefix="val/"))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The prompt order's position and the rollout engine's sampling position (the engines that have one)."""
        return {"sampler": self.sampler.state_dict(),
                "rollout": self.rollout.state_dict() if hasattr(self.rollout, "state_dict") else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if state.get("rollout") and hasattr(self.rollout, "load_state_dict"):
            self.rollout.load_state_dict(state["rollout"])

    def close(self) -> None:
        self.rollout.close()

    # -- the steps of a batch ---------------------------------------------------------------------
    def _sync_weights(self) -> None:
        assert self._weights is not None, "publish the policy before generating"
        sync_weights(self.rollout, self._weights, self.dist.device)

    def _generate(self, prompts: list[PromptItem], params: SamplingParams) -> Batch:
        batch = self.generation(prompts, params)
        batch["policy_version"] = [self.version] * len(batch)
        return batch

    def _greedy_baselines(self, prompts: list[PromptItem], params: SamplingParams) -> torch.Tensor:
        """ReMax: the reward of one greedy response per prompt, the baseline of its sampled responses. (B,)"""
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=params.max_new_tokens,
                                stop_token_ids=params.stop_token_ids, ignore_eos=params.ignore_eos, logprobs=False)
        baseline_scores, _, _ = score(self.generation(prompts, greedy), self.reward)
        return baseline_scores.repeat_interleave(params.n)

    def _refill_with_signal(self, batch: Batch, scores: torch.Tensor, prompts: list[PromptItem],
                            params: SamplingParams, max_batches: int) -> tuple[Batch, torch.Tensor]:
        """DAPO dynamic sampling: drop groups whose responses all scored the same, and generate again for the
        same prompts to refill. Every rank keeps the same number of whole groups, so that ranks run the same
        number of mini-batches; a batch without any informative group on some rank is kept as it was."""
        kept, kept_scores = drop_groups_without_signal(batch, scores)
        pieces, piece_scores = [kept], [kept_scores]
        for round_index in range(1, max_batches):
            if all_reduce_min(sum(len(piece) for piece in pieces)) >= len(batch):
                break
            with self.timer.phase("generate"):
                extra = self._generate(prompts, params)
            # A regenerated group is a new group: its own mean and std, not pooled with the first attempt.
            extra["group_index"] = [g + round_index * self.cfg.data.train_batch_size for g in extra["group_index"]]
            with self.timer.phase("reward"):
                extra_scores, _, _ = score(extra, self.reward)
            extra, extra_scores = drop_groups_without_signal(extra, extra_scores)
            pieces.append(extra)
            piece_scores.append(extra_scores)
        num_groups = int(all_reduce_min(min(sum(len(piece) for piece in pieces), len(batch)) // params.n))
        if num_groups == 0:
            return batch, scores
        merged = Batch.concat([pad_prompt(piece, max(p.prompt_width for p in pieces)) for piece in pieces])
        keep = num_groups * params.n
        return merged.slice(0, keep), torch.cat(piece_scores)[:keep]

    # -- prompts and sampling options -------------------------------------------------------------
    def _local_prompts(self, prompt_indices: list[int]) -> list[PromptItem]:
        """This rank's contiguous share of the step's prompts; `group` is the position in the global batch."""
        per_rank = len(prompt_indices) // self.dist.world_size
        mine = range(self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank)
        return [self._prompt_item(self.train_data, position, prompt_indices[position]) for position in mine]

    @staticmethod
    def _prompt_item(data: PromptDataset, group: int, index: int) -> PromptItem:
        record = data[index]
        return PromptItem(group, record.prompt_ids, record.prompt_text, record.data_source, record.ground_truth,
                          record.extra_info, record.messages)

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
        return self.return_logprobs or algorithm.reuse_rollout_logprobs or algorithm.rollout_is_cap is not None


def drop_groups_without_signal(batch: Batch, scores: torch.Tensor) -> tuple[Batch, torch.Tensor]:
    """DAPO dynamic sampling: keep only groups whose responses did not all score the same."""
    keep = keep_groups_with_signal(scores, batch["group_index"])
    indices = torch.nonzero(keep).flatten()
    return batch.select(indices), scores[indices]


def pad_prompt(batch: Batch, width: int) -> Batch:
    """Left-pad a batch's prompt part to `width` so batches from different generate calls concatenate."""
    extra = width - batch.prompt_width
    if extra == 0 or len(batch) == 0:
        return batch
    padded = Batch(dict(batch.tensors), dict(batch.meta))
    for name in ("input_ids", "attention_mask", "position_ids"):
        tensor = batch[name]
        padded.tensors[name] = torch.cat([tensor.new_zeros((len(batch), extra)), tensor], dim=1)
    return padded
