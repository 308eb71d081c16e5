"""The experience source of a split job's trainers: the rollout ranks generate, the trainers receive.

The two sides follow one schedule, so that a run is reproducible whatever the timing. The rollout ranks
(rlkit.experience.rollout_worker) generate batch t as soon as they hold weights of version t-1-k or newer
(k = placement.staleness) and never take newer weights than they need; so batch t is generated with exactly
version max(t-1-k, the version a resumed run starts from). With k = 0 that is the synchronous schedule, and
sampling seeds by shard (rlkit.experience.shards.ShardSeeds) make the responses those of a colocated run with as
many training ranks: the same losses and weights.

Messages (rlkit.placement.channel), trainer 0 to every rollout rank (CONTROL):
    start     the prompt order's position, each shard's generate-call count, the run's length, the first step
    weights   version v follows as a bucketed broadcast (the receivers answer `ready` first); `validate`: answer
              the validation prompts with it before generating on
    validate  answer the validation prompts with the weights already held
    stop      the trainers are done (or failed): close and exit
rollout to trainer (TO_TRAINER), in order per sender: `batch` (one shard of step t with its prompts' dataset
indices, scores, reward metrics and the rollout's phase times), `answers` (one shard's validation answers),
`ready`, and `error` (the rollout rank failed: the trainers stop with its message).

Weights are published lazily, as in the colocated source: `publish` only records them, and the next
`next_batch` or `validate` sends them (with the validate flag when it is validation that needs them). The
broadcast waits for the rollout ranks to ask for the version anyway, so nothing is lost by it, and the rollout
ranks learn whether to validate before they generate on.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any, Iterator

import torch

from rlkit.batch import Batch
from rlkit.config.schema import RunConfig
from rlkit.data import PromptDataset
from rlkit.data.sampler import EpochSampler
from rlkit.distributed import DistInfo, all_gather_objects, all_reduce_min, all_reduce_sum
from rlkit.errors import RlkitError
from rlkit.experience.base import Experience, WeightsFn
from rlkit.experience.shards import merge_answers
from rlkit.experience.staleness import drop_stale, response_ages
from rlkit.experience.statistics import summarize, summarize_conversations, summarize_gathered
from rlkit.placement import Placement, PlacementError
from rlkit.placement.layout import shard_positions
from rlkit.timing import PhaseTimer

log = logging.getLogger(__name__)

CONTROL = 1  # channel tag: trainer 0 -> rollout ranks
TO_TRAINER = 2  # channel tag: rollout ranks -> trainers
ROLLOUT_PHASES = ("generate", "reward", "baseline", "weight_load")  # the rollout's times a batch message carries
_BROKEN_OFF_WAIT = timedelta(seconds=60)


class SplitExperience:
    """ExperienceSource on the training ranks of a split job.

    Args:
        cfg: the run (placement.staleness and on_stale, data sizes, the seed).
        placement: this process's place (layout, channel, weight broadcast).
        train_data: the training prompts (the trainers keep the prompt order to check and checkpoint it).
        total_steps: the run's length, which the rollout ranks learn from the start message.
        dist: this trainer in the trainers' world; its rank is its shard.
        timer: receives the phases weight_sync (sending weights) and experience_wait (waiting for a batch).
    """

    def __init__(self, cfg: RunConfig, placement: Placement, *, train_data: PromptDataset, total_steps: int,
                 dist: DistInfo, timer: PhaseTimer):
        self.cfg = cfg
        self.placement = placement
        self.layout = placement.layout
        self.channel = placement.channel
        self.dist = dist
        self.timer = timer
        self.total_steps = total_steps
        self.sampler = EpochSampler(len(train_data), cfg.data.train_batch_size, seed=cfg.trainer.seed,
                                    shuffle=cfg.data.shuffle)
        self._batches = iter(self.sampler)
        self.step = 0  # batches consumed
        self.calls: list[int] = [0] * self.layout.num_shards  # each shard's generate calls, as consumed
        self.version: int | None = None  # the last version sent to the rollout ranks
        self._pending: tuple[WeightsFn, int] | None = None
        self._started = False
        self._inbox: dict[int, list[dict[str, Any]]] = {}  # messages received ahead of their turn, by sender
        self._consistent = True  # no exchange with the rollout ranks broke off half-way
        self._failed: set[int] = set()  # rollout ranks that reported a failure (and stopped)

    # -- ExperienceSource -------------------------------------------------------------------------
    def publish(self, weights: WeightsFn, version: int) -> None:
        """Recorded; sent by the next next_batch or validate (see the module docstring)."""
        self._pending = (weights, version)

    def next_batch(self) -> Experience:
        with self._exchange():
            return self._next_batch()

    def _next_batch(self) -> Experience:
        self._send_weights(validate=False)
        self.step += 1
        indices = next(self._batches)
        sender = self.layout.sender_of_shard(self.dist.rank)
        with self.timer.phase("experience_wait"):
            message = self._take("batch", sender)
        positions = shard_positions(len(indices), self.layout.num_shards, self.dist.rank)
        expected = [indices[p] for p in positions]
        if message["step"] != self.step or message["prompt_indices"] != expected:
            raise PlacementError(
                f"rollout rank {sender} sent step {message['step']} with prompts {message['prompt_indices']}, but "
                f"this trainer expects step {self.step} with prompts {expected}: the two sides disagree on the "
                "prompt order (were they started with different configs?)"
            )
        for refill in message["refill_prompt_indices"]:  # dynamic sampling's rounds took the next batches
            refill_indices = next(self._batches)
            if refill != [refill_indices[p] for p in positions]:
                raise PlacementError(
                    f"rollout rank {sender} refilled step {self.step} with prompts {refill}, but this trainer's "
                    "prompt order has others there: the two sides disagree on the prompt order"
                )
        batch, scores = message["batch"], message["scores"]
        ages = response_ages(batch["policy_version"], self.version)
        dropped = 0
        if self.cfg.placement.on_stale == "drop":
            batch, scores, dropped = drop_stale(batch, scores, self.version, self.cfg.placement.staleness)
        gathered = all_gather_objects({"generated": message["generated"], "conversations": message["conversations"],
                                       "calls": message["calls"], "times": message["times"], "ages": ages,
                                       "dropped": dropped})
        self.calls = [part["calls"] for part in gathered]
        metrics = dict(message["metrics"])
        metrics.update(summarize_gathered([part["generated"] for part in gathered]))
        metrics.update(summarize_conversations(sum((part["conversations"] for part in gathered), [])))
        for phase in ROLLOUT_PHASES:  # the slowest engine's; they overlap the trainer's own phases when k > 0
            seconds = [part["times"][phase] for part in gathered if phase in part["times"]]
            if seconds:
                metrics[f"time/{phase}"] = max(seconds)
        all_ages = [age for part in gathered for age in part["ages"]]
        metrics["staleness/mean"] = sum(all_ages) / max(len(all_ages), 1)
        metrics["staleness/max"] = float(max(all_ages, default=0))
        num_dropped = sum(part["dropped"] for part in gathered)
        if num_dropped:
            batch, scores = self._equalize(batch, scores)
            metrics["staleness/dropped"] = float(num_dropped)
        if self.cfg.algorithm.dynamic_sampling is not None:
            metrics["dynamic_sampling/kept_samples"] = all_reduce_sum(len(batch))
            metrics["dynamic_sampling/generate_rounds"] = float(1 + len(message["refill_prompt_indices"]))
        return Experience(batch, scores, metrics)

    def validate(self) -> dict[str, float]:
        """The rollout ranks answer each shard's validation prompts as the colocated ranks would (shard s:
        prompts s, s + T, ...); each trainer receives its shard's answers."""
        with self._exchange():
            self._send_weights(validate=True)
            message = self._take("answers", self.layout.sender_of_shard(self.dist.rank))
        gathered = all_gather_objects((message["answers"], message["calls"]))
        self.calls = [part[1] for part in gathered]
        scores, lengths, reasons, correct, conversations = merge_answers([part[0] for part in gathered])
        metrics = summarize(scores, lengths, reasons, prefix="val/")
        metrics["val/accuracy"] = sum(correct) / max(len(correct), 1)
        metrics.update(summarize_conversations(conversations, prefix="val/"))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The position of the consumed prompts and each shard's generate calls as of them: a resumed run
        regenerates whatever was in flight, from there."""
        return {"sampler": self.sampler.state_dict(), "generate_calls": list(self.calls)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if "generate_calls" in state:
            self.calls = [int(count) for count in state["generate_calls"]]
        else:  # a colocated checkpoint: its rank 0's count for every shard
            self.calls = [int(state.get("rollout", {}).get("num_generate_calls", 0))] * self.layout.num_shards
        self.step = int(state.get("step", 0))

    def close(self) -> None:
        """Trainer 0 tells every rollout rank to stop and waits until each has taken the message: one in the middle
        of a generate call finishes it first (placement.timeout_s at most). When an exchange with the rollout
        ranks broke off half-way (they may wait for a broadcast that will not come), it waits a minute at most:
        once this process is gone they stop with an error naming it."""
        if self.dist.rank != 0 or self.channel is None:
            return
        for rank in self.layout.rollout_ranks:
            if rank not in self._failed:
                self.channel.send({"kind": "stop"}, rank, CONTROL)
        wait = self.placement.timeout if self._consistent else min(self.placement.timeout, _BROKEN_OFF_WAIT)
        if not self.channel.wait_sent(wait):
            log.warning("a rollout rank did not take the stop message within %g s", wait.total_seconds())

    @contextlib.contextmanager
    def _exchange(self) -> Iterator[None]:
        """An exchange with the rollout ranks: if it raises, they may be left half-way through it."""
        self._consistent = False
        yield
        self._consistent = True

    # -- sending weights --------------------------------------------------------------------------------
    def _send_weights(self, *, validate: bool) -> None:
        """Start the rollout ranks (once), then send the published weights if they are new, else only a
        validation request when one is due."""
        is_root = self.dist.rank == 0
        if not self._started:
            self._started = True
            if is_root:
                start = {"kind": "start", "sampler": self.sampler.state_dict(), "calls": list(self.calls),
                         "total_steps": self.total_steps, "step": self.step, "version": self._pending_version()}
                for rank in self.layout.rollout_ranks:
                    self.channel.send(start, rank, CONTROL)
        receivers = self.layout.weight_receivers
        if self._pending is None:
            if validate and is_root:
                for rank in receivers:
                    self.channel.send({"kind": "validate"}, rank, CONTROL)
            return
        weights, version = self._pending
        self._pending = None
        with self.timer.phase("weight_sync"):
            if is_root:
                for rank in receivers:
                    self.channel.send({"kind": "weights", "version": version, "validate": validate}, rank, CONTROL)
                for rank in receivers:  # no broadcast before every receiver is there (or has failed)
                    self._take("ready", rank)
                self.placement.weights.send(weights(), self.channel, receivers)
            else:
                for _ in weights():  # producing the full weights is a collective of the trainers
                    pass
        self.version = version

    def _pending_version(self) -> int:
        return self._pending[1] if self._pending is not None else (self.version or 0)

    # -- receiving ------------------------------------------------------------------------------------
    def _take(self, kind: str, sender: int) -> dict[str, Any]:
        """The next message of `kind` from rollout rank `sender`; those of other kinds that come first wait in
        the inbox. An `error` message stops this trainer with the rollout rank's message."""
        inbox = self._inbox.setdefault(sender, [])
        for index, message in enumerate(inbox):
            if message["kind"] == kind:
                return inbox.pop(index)
        while True:
            message = self.channel.recv(sender, TO_TRAINER, what=f"'{kind}' message", peer=f"rollout rank {sender}")
            if message["kind"] == "error":
                self._failed.add(message["rank"])
                error = RlkitError if message["user_error"] else PlacementError
                raise error(f"rollout rank {message['rank']} failed: {message['message']}")
            if message["kind"] == kind:
                return message
            inbox.append(message)

    def _equalize(self, batch: Batch, scores: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """After stale groups were dropped: every trainer keeps as many whole groups as the one with fewest."""
        num_groups = int(all_reduce_min(len(batch) // self.cfg.rollout.n))
        if num_groups == 0:
            raise PlacementError(f"every response of step {self.step} on some trainer was older than "
                                 f"placement.staleness={self.cfg.placement.staleness} versions")
        keep = num_groups * self.cfg.rollout.n
        return batch.slice(0, keep), scores[:keep]
