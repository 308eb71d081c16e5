"""A step's experience, shard by shard, and the validation answers of a process's shards.

The step's prompts are cut into shards (rlkit.placement.layout): what one rollout engine generates in one call.
A colocated rank generates one shard (its own, or its engine group's); a rollout rank of a split job generates
the shards of the trainers its engine serves. `StepBuilder` is the same for both. Per shard: `rollout.n`
responses per prompt; the rows this process trains or sends (`part`: a colocated engine group generates its
shard on every rank and each rank keeps its own part); their scores. Then what the algorithm asks for: ReMax's
greedy baselines, and DAPO's dynamic sampling, which drops groups whose responses all scored the same and, as
DAPO does, generates for the next batch of prompts of the data order to refill the step (`next_shards`: the
caller's sampler, cut into the same shards). Every shard of the step runs the same refill rounds, decided by the
shard that is shortest anywhere (`min_over_peers` reduces over the other processes), so that every shard ends
with the same number of whole groups, the trainers run the same number of mini-batches, and every process draws
as many batches from its sampler.

Sampling seeds: by default each engine's own per-call stream. `ShardSeeds` instead seeds the engine's generate
call k for shard s with `call_seed(seed, k, s)`, which is the seed the HF engine of colocated rank s uses for its
k-th call: a split job's rollout ranks sample exactly what the colocated ranks would. It counts the engine's
calls (`SeededRollout`), not the Generation's: a multi-turn conversation makes one call per turn, each with a
seed of its own.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rlkit.algorithms.advantages import estimator_for
from rlkit.algorithms.sampling import keep_groups_with_signal
from rlkit.batch import Batch
from rlkit.config.schema import RunConfig
from rlkit.data import PromptDataset
from rlkit.experience.generation import Generation, PromptItem, score
from rlkit.experience.statistics import conversation_counts, response_stats
from rlkit.placement.layout import part_rows
from rlkit.rewards.base import RewardManager, correctness
from rlkit.rollout.base import Completion, RolloutEngine, SamplingParams, call_seed
from rlkit.timing import PhaseTimer

Shard = tuple[int, Sequence[PromptItem]]  # (shard index, its prompts)
# Per-shard validation answers: scores, response lengths, finish reasons, correct (0/1 per response), and each
# response's (turns, tool calls, failed tool calls) when it is a conversation (rlkit.experience.statistics).
Answers = tuple[list[float], list[int], list[str], list[float], list[tuple[int, int, int]]]


@dataclass
class ShardExperience:
    """One shard's scored responses (the rows this process keeps).

    metrics: this shard's reward metrics. generated: `response_stats` of the first generation, before baselines
    and dynamic sampling (what the step's reward and length statistics describe); conversations: its
    `conversation_counts`.
    """

    shard: int
    batch: Batch
    scores: torch.Tensor
    metrics: dict[str, float]
    generated: tuple[list[float], list[int], list[str]]
    conversations: list[tuple[int, int, int]]


class ShardSeeds:
    """Sampling seeds by shard and call: call k of shard s samples under call_seed(seed, k, s).

    `calls` counts each shard's generate calls (every call counts, greedy ones too, as an engine's counter does);
    `shard` is the shard the engine generates for now (StepBuilder sets it).
    """

    def __init__(self, seed: int, calls: dict[int, int] | None = None):
        self.seed = seed
        self.calls: dict[int, int] = dict(calls or {})
        self.shard = 0

    def next(self, params: SamplingParams) -> SamplingParams:
        index = self.calls.get(self.shard, 0)
        self.calls[self.shard] = index + 1
        return dataclasses.replace(params, seed=call_seed(self.seed, index, self.shard))


class SeededRollout:
    """A rollout engine whose generate calls are seeded by `seeds` (the shard being generated, its call count);
    everything else goes to `engine` as it is."""

    def __init__(self, engine: RolloutEngine, seeds: ShardSeeds):
        self.engine = engine
        self.seeds = seeds

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        return self.engine.generate(prompt_ids, self.seeds.next(params))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def prompt_item(data: PromptDataset, group: int, index: int) -> PromptItem:
    """Prompt `index` of `data` as the step's prompt at position `group`."""
    record = data[index]
    return PromptItem(group, record.prompt_ids, record.prompt_text, record.data_source, record.ground_truth,
                      record.extra_info, record.messages)


class StepBuilder:
    """Generates and scores a step's shards, and answers validation prompts, on this process's rollout engine.

    Args:
        cfg: the run (sampling options, the algorithm's switches).
        generation: prompts -> responses.
        reward: scores responses.
        timer: receives the phases generate, reward and baseline.
        min_over_peers: the smallest of a number over the other processes generating this step's shards.
        part: (part, num_parts): this process keeps part `part` of `num_parts` contiguous parts of every shard's
            rows; None: it keeps nothing (it runs its share of an engine whose first rank reports the outputs).
        seeds: the per-shard seeds `generation`'s engine (a SeededRollout) draws from, or None for the engine's
            own stream.
        return_logprobs: the run's rollout.return_logprobs, resolved (rlkit.trainer.speed); None: the config's,
            `auto` at its fixed default. The rollout returns log-probs when it is on or the algorithm reads them.
    """

    def __init__(self, cfg: RunConfig, generation: Generation, reward: RewardManager, timer: PhaseTimer, *,
                 min_over_peers: Callable[[float], float], part: tuple[int, int] | None = (0, 1),
                 seeds: ShardSeeds | None = None, return_logprobs: bool | None = None):
        self.cfg = cfg
        self.generation = generation
        self.reward = reward
        self.timer = timer
        self.min_over_peers = min_over_peers
        self.part = part
        self.seeds = seeds
        self.return_logprobs = (cfg.rollout.resolve_auto().return_logprobs if return_logprobs is None
                                else return_logprobs)
        self.needs_baselines = estimator_for(cfg.algorithm.adv_estimator).needs_baselines

    @property
    def reports(self) -> bool:
        """This process reports its shards' validation answers (the first part of each)."""
        return self.part is not None and self.part[0] == 0

    # -- a training step ----------------------------------------------------------------------------
    def build(self, shards: Sequence[Shard], version: int,
              next_shards: Callable[[], Sequence[Shard]] | None = None) -> list[ShardExperience]:
        """Each shard's kept rows, scored; `version` marks every response (batch["policy_version"]).

        next_shards: the next batch of prompts of the data order, cut into the same shards as `shards`; dynamic
        sampling draws one for each refill round. Required with algorithm.dynamic_sampling."""
        params = self.sampling_params(train=True)
        pieces = []
        for shard, prompts in shards:
            with self.timer.phase("generate"):
                batch = self._generate(shard, prompts, params, version)
            if batch is None:
                continue
            with self.timer.phase("reward"):
                scores, _, metrics = score(batch, self.reward)
            pieces.append(ShardExperience(shard, batch, scores, metrics, response_stats(batch, scores),
                                          conversation_counts(batch)))
        if self.needs_baselines:
            with self.timer.phase("baseline"):
                self._add_greedy_baselines(shards, pieces, params)
        dynamic = self.cfg.algorithm.dynamic_sampling
        if dynamic is not None:
            if next_shards is None:
                raise ValueError("dynamic sampling refills from the next prompts: pass next_shards")
            pieces = self._refill_with_signal(next_shards, pieces, params, version, dynamic.max_generate_batches)
        return pieces

    def _generate(self, shard: int, prompts: Sequence[PromptItem], params: SamplingParams,
                  version: int | None = None) -> Batch | None:
        """The shard's responses, cut to the rows this process keeps (None: it keeps none)."""
        if self.seeds is not None:
            self.seeds.shard = shard
        batch = self.generation(prompts, params)
        if self.part is None:
            return None
        part, num_parts = self.part
        if num_parts > 1:
            rows = part_rows(len(batch), part, num_parts)
            batch = batch.slice(rows.start, rows.stop)
        if version is not None:
            batch["policy_version"] = [version] * len(batch)
        return batch

    def _add_greedy_baselines(self, shards: Sequence[Shard], pieces: list[ShardExperience],
                              params: SamplingParams) -> None:
        """ReMax: the reward of one greedy response per prompt is the baseline of its sampled responses. (B,)"""
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=params.max_new_tokens,
                                stop_token_ids=params.stop_token_ids, ignore_eos=params.ignore_eos, logprobs=False)
        kept = {piece.shard: piece for piece in pieces}
        for shard, prompts in shards:
            batch = self._generate(shard, prompts, greedy)
            if batch is not None:
                baseline_scores, _, _ = score(batch, self.reward)
                kept[shard].batch["reward_baselines"] = baseline_scores.repeat_interleave(params.n)

    def _refill_with_signal(self, next_shards: Callable[[], Sequence[Shard]], pieces: list[ShardExperience],
                            params: SamplingParams, version: int, max_batches: int) -> list[ShardExperience]:
        """DAPO dynamic sampling: drop groups whose responses all scored the same and generate for the next
        batch of prompts (`next_shards`), round after round, until every shard anywhere has as many responses as
        it started with (or max_batches rounds ran); then every shard keeps the same number of whole groups. When
        some shard kept no informative group at all, every shard keeps its batch as it was."""
        kept = {piece.shard: [drop_groups_without_signal(piece.batch, piece.scores)] for piece in pieces}
        wanted = {piece.shard: len(piece.batch) for piece in pieces}

        def shortest(counted: Callable[[int], float]) -> float:  # over this process's shards, then everywhere
            return self.min_over_peers(min((counted(shard) for shard in kept), default=math.inf))

        def num_kept(shard: int) -> int:
            return sum(len(batch) for batch, _ in kept[shard])

        for round_index in range(1, max_batches):
            if shortest(lambda shard: num_kept(shard) - wanted[shard]) >= 0:
                break
            for shard, prompts in next_shards():
                with self.timer.phase("generate"):
                    extra = self._generate(shard, prompts, params, version)
                if extra is None:
                    continue
                # A regenerated group is a new group: its own mean and std, not pooled with the first attempt.
                extra["group_index"] = [g + round_index * self.cfg.data.train_batch_size for g in extra["group_index"]]
                with self.timer.phase("reward"):
                    extra_scores, _, _ = score(extra, self.reward)
                kept[shard].append(drop_groups_without_signal(extra, extra_scores))
        num_groups = shortest(lambda shard: min(num_kept(shard), wanted[shard]) // params.n)
        if not pieces or num_groups == 0:  # a process that keeps nothing has taken part in the decision only
            return pieces
        num_groups = int(num_groups)
        refilled = []
        for piece in pieces:
            batches = [batch for batch, _ in kept[piece.shard]]
            width = max(batch.prompt_width for batch in batches)
            merged = Batch.concat([pad_prompt(batch, width) for batch in batches])
            keep = num_groups * params.n
            scores = torch.cat([scores for _, scores in kept[piece.shard]])[:keep]
            refilled.append(dataclasses.replace(piece, batch=merged.slice(0, keep), scores=scores))
        return refilled

    # -- validation ---------------------------------------------------------------------------------
    def validate(self, shards: Sequence[Shard]) -> dict[int, Answers]:
        """Responses to each shard's validation prompts in generate calls of data.val_batch_size prompts, scored;
        {shard: answers} on a process that reports them, {} on the others (which still generate)."""
        params = self.sampling_params(train=False)
        answers: dict[int, Answers] = {}
        for shard, prompts in shards:
            batch_size = self.cfg.data.val_batch_size or len(prompts) or 1
            scores, lengths, reasons, correct, conversations = [], [], [], [], []
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start:start + batch_size]
                if self.seeds is not None:
                    self.seeds.shard = shard
                batch = self.generation(chunk, params)
                if not self.reports:
                    continue
                chunk_scores, extras, _ = score(batch, self.reward)
                scores += chunk_scores.tolist()
                lengths += batch["response_mask"].sum(dim=1).long().tolist()
                reasons += batch["finish_reason"]
                correct += correctness(chunk_scores.tolist(), extras.get("acc"))
                conversations += conversation_counts(batch)
            if self.reports:
                answers[shard] = (scores, lengths, reasons, correct, conversations)
        return answers

    # -- sampling options ---------------------------------------------------------------------------
    def sampling_params(self, *, train: bool) -> SamplingParams:
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


def validation_shard(data: PromptDataset, shard: int, num_shards: int) -> list[PromptItem]:
    """Shard `shard`'s validation prompts: every num_shards-th, from the shard's index on."""
    return [prompt_item(data, index, index) for index in range(shard, len(data), num_shards)]


def merge_answers(parts: Sequence[Answers | Any]) -> Answers:
    """Concatenate per-shard validation answers (in shard order)."""
    return tuple(sum((list(part[i]) for part in parts), []) for i in range(5))  # type: ignore[return-value]


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
