"""The synchronous experience source: every rank rolls out its share of the prompts on its own rollout engine,
which shares the device with training and sleeps while the trainer works.

One `next_batch`: the next prompts of the seeded order (this rank's shard: a contiguous share), the published
weights pushed into the woken rollout engine, `rollout.n` responses per prompt, their rewards, then what the
algorithm asks for: a greedy response per prompt whose reward is the baseline (ReMax), and DAPO's dynamic
sampling, which replaces groups whose responses all scored the same with groups of the next prompts of the order
(rlkit.experience.shards). The engine sleeps again before the batch is returned. Every method is a collective:
ranks call them together.

A rollout engine of tensor-parallel size k spans k consecutive ranks (rlkit.placement.layout): the group's
ranks share one shard (the same prompts and, with vLLM, the same outputs on each), and each trains its own part
of the shard's rows. An engine that runs from the group's first rank (SGLang) is None on the others, which get
the outputs from it (rlkit.experience.tensor_parallel.LeaderGeneration) and skip its sleep and wake.

An engine the run keeps awake (`rollout.sleep`, resolved by rlkit.trainer.speed: the trainer fits beside it)
never sleeps: the weights are pushed into it as it is.
"""

from __future__ import annotations

from typing import Any

from rlkit.config.schema import RunConfig
from rlkit.data import PromptDataset
from rlkit.data.sampler import EpochSampler
from rlkit.distributed import DistInfo, all_gather_objects, all_reduce_min, all_reduce_sum
from rlkit.experience.base import Experience, WeightsFn
from rlkit.experience.generation import Generation, PromptItem, sync_weights
from rlkit.experience.shards import StepBuilder, merge_answers, prompt_item, validation_shard
from rlkit.experience.statistics import summarize, summarize_conversations, summarize_gathered
from rlkit.placement.layout import Layout, shard_positions
from rlkit.rewards.base import RewardManager
from rlkit.rollout.base import RolloutEngine
from rlkit.timing import PhaseTimer


class ColocatedExperience:
    """ExperienceSource on the training ranks: publish is taken up at the rollout engine's next wake.

    Args:
        cfg: the run (rollout sampling options, data batch sizes, algorithm switches, the seed).
        rollout: this rank's rollout engine (woken, fed weights and put to sleep here; closed by `close`); None on
            a rank whose engine group's engine runs from its first rank.
        generation: prompts -> responses on `rollout` (MultiTurnGeneration; SingleTurnGeneration).
        reward: scores the responses.
        train_data, val_data: the prompts (val_data None: no validation).
        dist: this rank.
        timer: receives the phases weight_sync, generate, reward and baseline.
        layout: the job's ranks and engine groups; default one engine per rank.
        return_logprobs: the run's rollout.return_logprobs, resolved (rlkit.trainer.speed); None: the config's,
            `auto` at its fixed default. The rollout returns log-probs when it is on or the algorithm reads them.
        sleeps: the run's rollout.sleep, resolved: the engine sleeps while the trainer works.
    """

    def __init__(self, cfg: RunConfig, *, rollout: RolloutEngine | None, generation: Generation,
                 reward: RewardManager, train_data: PromptDataset, val_data: PromptDataset | None, dist: DistInfo,
                 timer: PhaseTimer, layout: Layout | None = None, return_logprobs: bool | None = None,
                 sleeps: bool = True):
        self.cfg = cfg
        self.rollout = rollout
        self.sleeps = sleeps
        self.train_data = train_data
        self.val_data = val_data
        self.dist = dist
        self.timer = timer
        layout = layout or Layout(dist.world_size)
        self.shard, part, num_parts = layout.training_part(dist.rank)
        self.num_shards = layout.num_shards
        self.builder = StepBuilder(cfg, generation, reward, timer, min_over_peers=all_reduce_min,
                                   part=(part, num_parts), return_logprobs=return_logprobs)
        self.sampler = EpochSampler(len(train_data), cfg.data.train_batch_size, seed=cfg.trainer.seed,
                                    shuffle=cfg.data.shuffle)
        self.version: int | None = None
        self._weights: WeightsFn | None = None
        self._prompt_batches = iter(self.sampler)
        self._refills = 0  # batches of prompts dynamic sampling took for this step's refill rounds

    # -- ExperienceSource -------------------------------------------------------------------------
    def publish(self, weights: WeightsFn, version: int) -> None:
        """Remembered, not pushed: the rollout engine sleeps until the next generation, and an engine that drops
        its weights while asleep (vLLM sleep level 2) needs them after every wake anyway."""
        self._weights, self.version = weights, version

    def next_batch(self) -> Experience:
        prompts = self._shard_prompts(next(self._prompt_batches))
        with self.timer.phase("weight_sync"):
            self._sync_weights()
        self._refills = 0
        [piece] = self.builder.build([(self.shard, prompts)], self.version, next_shards=self._next_shards)
        metrics = dict(piece.metrics)
        gathered = all_gather_objects((piece.generated, piece.conversations))
        metrics.update(summarize_gathered([generated for generated, _ in gathered]))
        metrics.update(summarize_conversations(sum((conversations for _, conversations in gathered), [])))
        if self.cfg.algorithm.dynamic_sampling is not None:
            metrics["dynamic_sampling/kept_samples"] = all_reduce_sum(len(piece.batch))
            metrics["dynamic_sampling/generate_rounds"] = float(1 + self._refills)
        self._sleep()
        return Experience(piece.batch, piece.scores, metrics)

    def validate(self) -> dict[str, float]:
        """Engine group g answers validation prompts g, g + G, ... (G groups) in generate calls of
        data.val_batch_size prompts; the group's first rank reports them."""
        self._sync_weights()
        answers = self.builder.validate([(self.shard, validation_shard(self.val_data, self.shard, self.num_shards))])
        self._sleep()
        scores, lengths, reasons, correct, conversations = merge_answers(
            all_gather_objects(answers.get(self.shard, ([],) * 5)))
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
        if self.rollout is not None:
            self.rollout.close()

    # -- helpers ----------------------------------------------------------------------------------
    def _sync_weights(self) -> None:
        assert self._weights is not None, "publish the policy before generating"
        sync_weights(self.rollout, self._weights, self.dist.device, release_cache=self.sleeps)

    def _sleep(self) -> None:
        if self.rollout is not None and self.sleeps:
            self.rollout.sleep()

    def _next_shards(self) -> list[tuple[int, list[PromptItem]]]:
        """The next batch of the prompt order, this rank's shard of it (dynamic sampling's refill rounds)."""
        self._refills += 1
        return [(self.shard, self._shard_prompts(next(self._prompt_batches)))]

    def _shard_prompts(self, prompt_indices: list[int]) -> list[PromptItem]:
        """This rank's shard of the step's prompts; `group` is the position in the global batch."""
        positions = shard_positions(len(prompt_indices), self.num_shards, self.shard)
        return [prompt_item(self.train_data, position, prompt_indices[position]) for position in positions]
