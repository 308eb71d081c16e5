"""What a rollout rank of a split job does: generate and score the trainers' batches, up to
placement.staleness versions ahead of training, until the trainers say stop.

    start -> loop: generate batch t if the weights held are new enough (version >= t-1-k), else read the next
                   message: weights (take them; validate first if asked), validate, or stop

Rewards are computed here, beside the responses: scoring (a reward model, code execution, a slow plugin)
overlaps training instead of adding to the trainers' step, and only the scores cross to the trainers.

The engine group's first rank sends each shard to its trainer; the group's other ranks (vLLM's external
launcher) generate alongside and keep nothing. A rank whose engine runs from its group's first rank (SGLang)
has nothing to do and waits for stop. The engine never sleeps: it has its GPU to itself.
See rlkit.experience.split for the messages.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from rlkit.batch import Batch
from rlkit.config.schema import RunConfig
from rlkit.data import PromptDataset
from rlkit.data.sampler import EpochSampler
from rlkit.distributed import all_reduce_min
from rlkit.errors import RlkitError
from rlkit.experience.generation import Generation, PromptItem
from rlkit.experience.shards import ShardSeeds, StepBuilder, prompt_item, validation_shard
from rlkit.experience.split import CONTROL, ROLLOUT_PHASES, TO_TRAINER
from rlkit.heap import frozen_heap
from rlkit.placement import Placement
from rlkit.placement.layout import shard_positions
from rlkit.rewards.base import RewardManager
from rlkit.rollout.base import RolloutEngine
from rlkit.timing import PhaseTimer

log = logging.getLogger(__name__)
_ERROR_DELIVERY = timedelta(seconds=60)  # how long a failing rank waits for the trainers to take its error


class RolloutWorker:
    """The loop of one rollout rank.

    Args:
        cfg: the run (placement.staleness, sampling options, the algorithm's switches, the seed).
        placement: this process's place (layout, channel, weight broadcast, generation group).
        rollout: this rank's engine (None where the engine group's runs from its first rank).
        generation: prompts -> responses on `rollout`.
        reward: scores the responses.
        train_data, val_data: the prompts, as the trainers read them.
        timer: the rollout's own phases, sent to the trainers with each batch.
        seeds: the per-shard sampling seeds `generation`'s engine draws from (a SeededRollout over `rollout`).
        return_logprobs: rollout.return_logprobs as the trainers resolved it (rlkit.trainer.speed).
    """

    def __init__(self, cfg: RunConfig, placement: Placement, *, rollout: RolloutEngine | None,
                 generation: Generation, reward: RewardManager, train_data: PromptDataset,
                 val_data: PromptDataset | None, timer: PhaseTimer, seeds: ShardSeeds,
                 return_logprobs: bool | None = None):
        self.cfg = cfg
        self.placement = placement
        self.layout = layout = placement.layout
        self.channel = placement.channel
        self.rollout = rollout
        self.reward = reward
        self.train_data = train_data
        self.val_data = val_data
        self.timer = timer
        rank = placement.rank
        self.active = layout.runs_engine(rank)
        self.sends = self.active and layout.leader_of(rank) == rank
        self.shards = list(layout.shards_of_engine(layout.engine_of(rank)))
        self.seeds = seeds
        group = placement.generation_group
        self.builder = StepBuilder(cfg, generation, reward, timer, seeds=self.seeds,
                                   min_over_peers=lambda value: all_reduce_min(value, group=group),
                                   part=(0, 1) if self.sends else None, return_logprobs=return_logprobs)
        self.version: int | None = None

    def run(self) -> None:
        """Serve until the trainers stop; a failure is reported to them before it is raised here.

        Preemption signals (trainer.preempt_signals) are the trainers' to act on: they finish their step, save and
        then send stop (rlkit.trainer.preemption). A rollout rank that died of the signal would fail the step they
        are finishing, so it ignores them from here to the end of the process, its shutdown included (torchrun
        signals the ranks left once the trainers have exited)."""
        _ignore_signals(self.cfg.trainer.preempt_signals)
        try:
            with frozen_heap():  # what setup built, out of the collector's way while serving
                self._serve()
        except BaseException as error:
            self._report(error)
            raise
        finally:
            self.reward.close()  # its worker process must not outlive the run
            if self.rollout is not None:
                self.rollout.close()

    # -- the loop -------------------------------------------------------------------------------------
    def _serve(self) -> None:
        start = self._control()
        if start["kind"] == "stop" or not self.active:
            while start["kind"] != "stop":
                start = self._control()
            return
        sampler = EpochSampler(len(self.train_data), self.cfg.data.train_batch_size, seed=self.cfg.trainer.seed,
                               shuffle=self.cfg.data.shuffle)
        sampler.load_state_dict(start["sampler"])
        batches = iter(sampler)
        self.seeds.calls = dict(enumerate(start["calls"]))
        step, first_version, staleness = start["step"] + 1, start["version"], self.cfg.placement.staleness
        while True:
            if step <= start["total_steps"] and self.version is not None \
                    and self.version >= max(first_version, step - 1 - staleness):
                self._generate(step, next(batches), batches)
                step += 1
                continue
            message = self._control()
            if message["kind"] == "stop":
                log.info("rollout rank %d: the trainers stopped; %d batches generated", self.placement.rank,
                         step - 1 - start["step"])
                return
            if message["kind"] == "weights":
                self._take_weights(message["version"])
            if message["kind"] == "validate" or message.get("validate"):
                self._validate()

    def _control(self) -> dict[str, Any]:
        return self.channel.recv(0, CONTROL, what="message", peer="trainer rank 0")

    def _take_weights(self, version: int) -> None:
        self.channel.send({"kind": "ready"}, 0, TO_TRAINER)
        with self.timer.phase("weight_load"):
            weights = self.placement.weights.receive(self.channel, root=0)
            if self.rollout is not None:
                self.rollout.wake_up()  # a no-op unless the engine started asleep
                self.rollout.update_weights(weights)
            for _ in weights:  # whatever the engine left of the stream: the broadcasts must all run
                pass
        self.version = version

    def _generate(self, step: int, indices: list[int], batches: Iterator[list[int]]) -> None:
        """Batch `step`: each of this engine's shards generated, scored and sent to its trainer. Dynamic sampling
        draws its refill rounds' prompts from `batches`, the prompt order; each trainer learns which, to keep its
        own copy of the order in step."""
        num_shards = self.layout.num_shards
        refills: list[list[int]] = []

        def shards_of(indices: list[int]) -> list[tuple[int, list[PromptItem]]]:
            return [(shard, [prompt_item(self.train_data, p, indices[p])
                             for p in shard_positions(len(indices), num_shards, shard)]) for shard in self.shards]

        def next_shards() -> list[tuple[int, list[PromptItem]]]:
            refills.append(next(batches))
            return shards_of(refills[-1])

        pieces = self.builder.build(shards_of(indices), self.version, next_shards=next_shards)
        times = {phase: seconds for phase, seconds in self.timer.seconds.items() if phase in ROLLOUT_PHASES}
        self.timer.reset()
        for piece in pieces:
            positions = shard_positions(len(indices), num_shards, piece.shard)
            # Own storage for every tensor: a view (dynamic sampling's slice) would pickle all of its base.
            batch = Batch({name: tensor.clone() for name, tensor in piece.batch.tensors.items()}, piece.batch.meta)
            self.channel.send({
                "kind": "batch", "step": step, "prompt_indices": [indices[p] for p in positions],
                "refill_prompt_indices": [[refill[p] for p in positions] for refill in refills],
                "batch": batch, "scores": piece.scores.clone(), "metrics": piece.metrics, "generated": piece.generated,
                "conversations": piece.conversations,
                "calls": self.seeds.calls.get(piece.shard, 0), "times": times,
            }, piece.shard, TO_TRAINER)

    def _validate(self) -> None:
        shards = [(shard, validation_shard(self.val_data, shard, self.layout.num_shards)) for shard in self.shards]
        for shard, answers in self.builder.validate(shards).items():
            self.channel.send({"kind": "answers", "answers": answers, "calls": self.seeds.calls.get(shard, 0)},
                              shard, TO_TRAINER)

    def _report(self, error: BaseException) -> None:
        """Tell every trainer why this rank stops (they raise it), and wait a little for them to take it."""
        if self.channel is None or isinstance(error, KeyboardInterrupt):
            return
        message = {"kind": "error", "rank": self.placement.rank, "user_error": isinstance(error, RlkitError),
                   "message": f"{type(error).__name__}: {error}"}
        for trainer in self.layout.trainer_ranks:
            self.channel.send(message, trainer, TO_TRAINER)
        self.channel.wait_sent(min(_ERROR_DELIVERY, self.placement.timeout))


def _ignore_signals(names: list[str]) -> None:
    """Ignore the named signals (from the main thread, where Python handles them)."""
    if threading.current_thread() is threading.main_thread():
        for name in names:
            signal.signal(signal.Signals[name], signal.SIG_IGN)
