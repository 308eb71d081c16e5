"""Where a process sits (`DistInfo`), process-group set-up and the few collectives the trainer needs.

World size 1 runs without torchrun and without a process group; under torchrun the backend is nccl on
GPU and gloo on CPU. Engines that need a group even at world size 1 (FSDP2, DeepSpeed) start a 1-rank
one with `ensure_process_group`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from rlkit.errors import ConfigError, RlkitError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits. Passed to engines; never written into a config."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # "cpu" or "cuda:<local_rank>"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _backend(use_cuda: bool) -> str:
    # gloo beside nccl: the trainer's small bookkeeping collectives (counts, metrics) run on CPU tensors.
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def init_distributed(device: str = "auto", *, store: dist.Store | None = None, rank: int | None = None,
                     world_size: int | None = None) -> DistInfo:
    """Join the torchrun process group when there is one. `device`: 'auto', 'cpu' or 'cuda'.

    `store`, `rank`, `world_size`: join a world of some of torchrun's processes instead of all of them (one side
    of a split placement, rlkit.placement), over `store`; the rank and size are this process's in that world.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device=cuda, but torch finds no CUDA GPU here (torch.cuda.is_available() is False); set "
            "trainer.device=auto or cpu, or run where a GPU and a CUDA build of torch are"
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend=_backend(use_cuda),
            timeout=timedelta(minutes=30),
            device_id=torch.device("cuda", local_rank) if use_cuda else None,
            **({} if store is None else {"store": store, "rank": rank, "world_size": world_size}),
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank,
                    device=f"cuda:{local_rank}" if use_cuda else "cpu")


def ensure_process_group(dist_info: DistInfo) -> None:
    """The process group an engine shards over: torchrun's when there is one, else (world size 1 without a
    launcher) a 1-rank group over an in-memory store, so one code path serves every world size."""
    if dist.is_initialized():
        assert dist.get_world_size() == dist_info.world_size, "DistInfo disagrees with the process group"
        return
    assert dist_info.world_size == 1, "world size > 1 needs the torchrun process group (init_distributed)"
    dist.init_process_group(_backend(dist_info.device.startswith("cuda")), store=dist.HashStore(), rank=0,
                            world_size=1)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def process_rank() -> int:
    """This process's rank in the job (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _all_reduce(value: float | torch.Tensor, op, device: str, group: dist.ProcessGroup | None = None) -> float:
    """One number reduced over ranks (of `group`) with `op` (the number itself at world size 1)."""
    if not is_distributed() or (group is not None and dist.get_world_size(group) == 1):
        return float(value)
    tensor = torch.as_tensor(value, dtype=torch.float64, device=device).clone()
    dist.all_reduce(tensor, op=op, group=group)
    return float(tensor)


def all_reduce_sum(value: float | torch.Tensor, device: str = "cpu") -> float:
    """Sum of a number over ranks."""
    return _all_reduce(value, dist.ReduceOp.SUM, device)


def all_reduce_min(value: float, device: str = "cpu", group: dist.ProcessGroup | None = None) -> float:
    """The smallest of a number over ranks (of `group`)."""
    return _all_reduce(value, dist.ReduceOp.MIN, device, group)


def all_reduce_max(value: float, device: str = "cpu") -> float:
    """The largest of a number over ranks."""
    return _all_reduce(value, dist.ReduceOp.MAX, device)


def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...]; [obj] at world size 1."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, src: int = 0, group: dist.ProcessGroup | None = None):
    """rank `src`'s obj on every rank (of `group`, a subgroup of the default one; `src` is a rank of the job)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, group=group)
    return holder[0]


def new_groups(rank_lists: list[list[int]], rank: int) -> dist.ProcessGroup | None:
    """One process group per list of ranks (every rank must call this, with the same lists); the group `rank` is
    in, None when it is in none or there is no process group."""
    if not is_distributed():
        return None
    mine = None
    for ranks in rank_lists:  # new_group is a collective of the whole default group, list by list
        group = dist.new_group(ranks)
        if rank in ranks:
            mine = group
    return mine


def raise_on_every_rank(check: Callable[[], None], *, is_main: bool) -> None:
    """Run `check` on rank 0 only (it touches shared files); an RlkitError it raises is raised on every rank."""
    error = None
    if is_main:
        try:
            check()
        except RlkitError as raised:
            if not is_distributed():
                raise
            error = raised
    error = broadcast_object(error)
    if error is not None:
        raise error


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        # Leave together: a rank that tears gloo down while a peer still talks to it can abort the peer.
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
