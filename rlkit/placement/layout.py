"""Which rank does what: the arithmetic of a placement, free of process groups so that it runs (and is tested) on
the CPU.

Ranks are torchrun's, 0 .. W-1. The step's prompts are cut into *shards*, contiguous and equal; a shard is what
one rollout engine generates in one call with one sampling stream.

- **colocated**: every rank trains. A rollout engine of tensor-parallel size k spans k consecutive ranks (an
  engine group); the group generates one shard (the same prompts on every rank of it) and each of its ranks
  trains its own *part* of the shard's rows. k = 1: one shard per rank, as before tensor parallelism.
- **split**: ranks 0 .. T-1 train, ranks T .. W-1 roll out (trainer 0 is rank 0, which logs and checkpoints).
  The rollout ranks form E = R / k engine groups; there is one shard per trainer, and engine e serves the T / E
  consecutive shards starting at e * T / E. A shard's responses go to its trainer from the first rank of its
  engine group.

How an engine spans its group is its registry entry's `Backend.tensor_parallel`: 'every_rank' (vLLM's
external_launcher: every rank of the group runs the engine on the same prompts and gets the same outputs, and
every rank loads the weights into its own part) or 'first_rank' (SGLang: the first rank starts one engine whose
workers use the group's GPUs; it alone generates and takes the weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rlkit.errors import ConfigError

if TYPE_CHECKING:
    from rlkit.config.schema import RunConfig

TensorParallel = Literal["every_rank", "first_rank"]


@dataclass(frozen=True)
class Layout:
    """The roles of the W ranks of one job.

    world_size: W, every process torchrun started.
    num_rollout_ranks: R, the last ranks, which only roll out (split); 0 when colocated.
    tensor_parallel_size: k, ranks per rollout engine group.
    tensor_parallel: how an engine spans its group (see the module docstring).
    """

    world_size: int
    num_rollout_ranks: int = 0
    tensor_parallel_size: int = 1
    tensor_parallel: TensorParallel = "every_rank"

    # -- roles ------------------------------------------------------------------------------------
    @property
    def split(self) -> bool:
        return self.num_rollout_ranks > 0

    @property
    def num_trainers(self) -> int:
        return self.world_size - self.num_rollout_ranks

    @property
    def trainer_ranks(self) -> range:
        return range(self.num_trainers)

    @property
    def rollout_ranks(self) -> range:
        """The ranks that only roll out (split; empty when colocated)."""
        return range(self.num_trainers, self.world_size)

    def is_trainer(self, rank: int) -> bool:
        return rank < self.num_trainers

    # -- engine groups ------------------------------------------------------------------------------
    @property
    def engine_groups(self) -> list[tuple[int, ...]]:
        """The ranks of each rollout engine, k consecutive ranks each (one rank each at k = 1).

        At world size 1 the one rank's engine spans its k GPUs by itself (SGLang in a single process)."""
        ranks = self.rollout_ranks if self.split else range(self.world_size)
        size = 1 if self.world_size == 1 else self.tensor_parallel_size
        return [tuple(ranks[start:start + size]) for start in range(0, len(ranks), size)]

    def engine_of(self, rank: int) -> int:
        """The engine group `rank` belongs to (ValueError for a trainer of a split job)."""
        for index, group in enumerate(self.engine_groups):
            if rank in group:
                return index
        raise ValueError(f"rank {rank} runs no rollout engine")

    def runs_engine(self, rank: int) -> bool:
        """`rank` runs (its part of) a rollout engine: generates and takes the weights into it."""
        if self.split and self.is_trainer(rank):
            return False
        return self.tensor_parallel == "every_rank" or self.engine_groups[self.engine_of(rank)][0] == rank

    def leader_of(self, rank: int) -> int:
        """The first rank of `rank`'s engine group: the one that reports its outputs."""
        return self.engine_groups[self.engine_of(rank)][0]

    # -- shards -------------------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        """How many parts the step's prompts are cut into: one per engine group (colocated), per trainer (split)."""
        return self.num_trainers if self.split else len(self.engine_groups)

    def shards_of_engine(self, engine: int) -> range:
        """The shards engine group `engine` generates."""
        if not self.split:
            return range(engine, engine + 1)
        per_engine = self.num_trainers // len(self.engine_groups)
        return range(engine * per_engine, (engine + 1) * per_engine)

    def engine_of_shard(self, shard: int) -> int:
        return shard if not self.split else shard // (self.num_trainers // len(self.engine_groups))

    def sender_of_shard(self, shard: int) -> int:
        """split: the rank that sends shard `shard`'s responses to its trainer (the first of its engine group)."""
        return self.engine_groups[self.engine_of_shard(shard)][0]

    @property
    def weight_receivers(self) -> list[int]:
        """split: the rollout ranks that take every published version of the weights."""
        return [rank for rank in self.rollout_ranks if self.runs_engine(rank)]

    # -- what a training rank trains ---------------------------------------------------------------
    def training_part(self, rank: int) -> tuple[int, int, int]:
        """(shard, part, num_parts) of a training rank: it trains part `part` of `num_parts` equal, contiguous
        parts of shard `shard`'s rows (colocated: its position in its engine group; split: all of its shard)."""
        if self.split:
            return rank, 0, 1
        group = self.engine_groups[self.engine_of(rank)]
        return self.engine_of(rank), group.index(rank), len(group)


def shard_positions(num_prompts: int, num_shards: int, shard: int) -> range:
    """Positions (in the step's prompt list) of shard `shard`: contiguous, equal shares."""
    per_shard = num_prompts // num_shards
    return range(shard * per_shard, (shard + 1) * per_shard)


def part_rows(num_rows: int, part: int, num_parts: int) -> range:
    """Rows of part `part` of `num_parts` contiguous, equal parts (whole prompts when rows are prompt-major and
    the prompts divide evenly)."""
    per_part = num_rows // num_parts
    return range(part * per_part, (part + 1) * per_part)


def layout_for(cfg: RunConfig, world_size: int) -> Layout:
    """The job's layout from cfg.placement and the rollout engine's tensor_parallel_size; ConfigError naming the
    setting when the world cannot be laid out that way."""
    from rlkit.registry import ROLLOUT_ENGINES

    placement = cfg.placement
    name = cfg.rollout.name
    tp = getattr(cfg.rollout.options, "tensor_parallel_size", 1)
    spans = ROLLOUT_ENGINES.backend(name).tensor_parallel
    key = f"rollout.{name}.tensor_parallel_size"
    if tp > 1 and spans is None:
        raise ConfigError(f"{key}={tp}: the {name} rollout cannot span several ranks (its registry entry declares "
                          "no tensor_parallel mode); set it to 1")
    if placement.mode == "colocated":
        if world_size > 1 and world_size % tp:
            raise ConfigError(f"{key}={tp} does not divide the {world_size} ranks; launch a multiple of {tp} "
                              f"processes or choose a tensor_parallel_size that divides {world_size}")
        return Layout(world_size, 0, tp, spans or "every_rank")

    rollout_ranks = placement.rollout_ranks
    if world_size < 2:
        raise ConfigError("placement.mode=split needs at least two processes (one trains, one rolls out): launch "
                          "with torchrun --nproc_per_node=2 or more, or set placement.mode=colocated")
    if rollout_ranks >= world_size:
        raise ConfigError(f"placement.rollout_ranks={rollout_ranks} leaves no training rank among {world_size} "
                          f"processes; lower it below {world_size} or launch more processes")
    if rollout_ranks % tp:
        raise ConfigError(f"placement.rollout_ranks={rollout_ranks} is not a multiple of {key}={tp}: each rollout "
                          f"engine spans {tp} ranks")
    num_trainers, num_engines = world_size - rollout_ranks, rollout_ranks // tp
    if num_trainers % num_engines:
        raise ConfigError(
            f"placement.rollout_ranks={rollout_ranks} makes {num_engines} rollout engines for {num_trainers} training "
            f"ranks; each engine serves whole training ranks, so the {num_trainers} training ranks must be a "
            f"multiple of the {num_engines} engines (rollout_ranks / {key})"
        )
    # The trainers' own rule (rlkit.trainer.components.check_against_world), checked here too so that the rollout
    # ranks stop with the same one line instead of waiting for trainers that have stopped.
    for key, value in (("data.train_batch_size", cfg.data.train_batch_size),
                       ("algorithm.mini_batch_size", cfg.algorithm.mini_batch_size)):
        if value % num_trainers:
            raise ConfigError(f"{key}={value} does not split over the {num_trainers} training ranks of "
                              f"placement.mode=split; make it a multiple of {num_trainers}")
    return Layout(world_size, rollout_ranks, tp, spans or "every_rank")
