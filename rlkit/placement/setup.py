"""Join this process to its place in the job: `init_placement`.

Colocated: torchrun's one world, as without a placement (`rlkit.distributed.init_distributed`), plus, for an
engine that spans its group from the first rank (SGLang), one process group per engine group.

Split: two worlds and a bridge. The trainers (ranks 0 .. T-1) form torch's default group among themselves, so
the training engines, the trainer's collectives and its checkpoints work as in a T-rank colocated job; the
rollout ranks form their own (vLLM's external_launcher builds its tensor-parallel groups over it). This process
sees its own world in RANK and WORLD_SIZE from then on (the job's stay in RLKIT_JOB_RANK and
RLKIT_JOB_WORLD_SIZE). Between the two: a `Channel` over all W ranks and a `WeightBroadcast` over trainer 0
and the rollout ranks that take weights. All of them rendezvous on torchrun's store under their own prefixes.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from rlkit.distributed import DistInfo, init_distributed, new_groups
from rlkit.errors import ConfigError
from rlkit.placement.channel import Channel, WeightBroadcast
from rlkit.placement.layout import Layout, layout_for

if TYPE_CHECKING:
    from rlkit.config.schema import RunConfig

_PLACEMENTS = itertools.count()  # split placements made in this process, in the same order on every rank
_JOB_RANK, _JOB_WORLD_SIZE = "RLKIT_JOB_RANK", "RLKIT_JOB_WORLD_SIZE"


@dataclass
class Placement:
    """This process's place in the job.

    layout: every rank's role. rank: this process among all of the job's.
    dist: this process in its world: the job's (colocated), the trainers' or the rollout ranks' (split).
    channel, weights: the bridge between the sides (split; `weights` only on trainer 0 and weight receivers).
    engine_group: colocated, an engine spanning its group from the first rank: the group's process group.
    generation_group: split, rollout side: the rollout ranks that generate (a group of their world).
    """

    layout: Layout
    rank: int
    dist: DistInfo
    timeout: timedelta
    channel: Channel | None = None
    weights: WeightBroadcast | None = None
    engine_group: Any = None
    generation_group: Any = None

    @property
    def is_trainer(self) -> bool:
        return self.layout.is_trainer(self.rank)

    def close(self) -> None:
        """Leave the bridge (split); the worlds go with rlkit.distributed.destroy."""
        for part in (self.weights, self.channel):
            if part is not None:
                part.close()
        self.weights = self.channel = None


def init_placement(cfg: RunConfig, device: str = "auto") -> Placement:
    """Lay the job out (ConfigError before any group forms when it cannot be) and join this process to it."""
    # A split placement rewrites RANK and WORLD_SIZE to its side's; the job's are kept beside them.
    world_size = int(os.environ.get(_JOB_WORLD_SIZE, os.environ.get("WORLD_SIZE", "1")))
    rank = int(os.environ.get(_JOB_RANK, os.environ.get("RANK", "0")))
    layout = layout_for(cfg, world_size)
    timeout = timedelta(seconds=cfg.placement.timeout_s)
    if not layout.split:
        return colocated_placement(cfg, init_distributed(device), layout)

    job_store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
    # Each placement of a process gets keys of its own: a second run in the same processes (a test script)
    # must not meet the first one's rendezvous keys.
    store = dist.PrefixStore(f"rlkit/placement{next(_PLACEMENTS)}", job_store)
    trainer = layout.is_trainer(rank)
    first = 0 if trainer else layout.num_trainers
    side_rank, side_size = rank - first, layout.num_trainers if trainer else layout.num_rollout_ranks
    # From here on this process's world is its side's: vLLM's external_launcher reads RANK and WORLD_SIZE.
    os.environ.update({_JOB_RANK: str(rank), _JOB_WORLD_SIZE: str(world_size), "RANK": str(side_rank),
                       "WORLD_SIZE": str(side_size)})
    side_store = dist.PrefixStore("rlkit/trainers" if trainer else "rlkit/rollouts", store)
    dist_info = init_distributed(device, store=side_store, rank=side_rank, world_size=side_size)
    channel = Channel(store, rank, world_size, timeout)
    members = [0, *layout.weight_receivers]
    weights = None
    if rank in members:
        bucket_bytes = int(cfg.placement.weight_bucket_mb * 2**20)
        weights = WeightBroadcast(store, members.index(rank), len(members), timeout, dist_info.device, bucket_bytes)
    generation_group = None
    if not trainer and side_size > 1:
        runners = [r - first for r in layout.rollout_ranks if layout.runs_engine(r)]
        generation_group = new_groups([runners], side_rank)
    return Placement(layout, rank, dist_info, timeout, channel, weights, generation_group=generation_group)


def colocated_placement(cfg: RunConfig, dist_info: DistInfo, layout: Layout | None = None) -> Placement:
    """The placement of a colocated job whose process group (if any) is up: with an engine that spans its group
    from the first rank, one process group per engine group (every rank takes part in making them)."""
    layout = layout or layout_for(cfg, dist_info.world_size)
    if layout.split:
        raise ConfigError("placement.mode=split is set up by `rlkit train` (rlkit.placement.init_placement), which "
                          "gives the trainers and the rollout ranks their own worlds; run it that way")
    engine_group = None
    if layout.tensor_parallel == "first_rank" and layout.tensor_parallel_size > 1 and dist_info.world_size > 1:
        engine_group = new_groups([list(group) for group in layout.engine_groups], dist_info.rank)
    return Placement(layout, dist_info.rank, dist_info, timedelta(seconds=cfg.placement.timeout_s),
                     engine_group=engine_group)
