"""What crosses between the two sides of a split job: messages (any picklable object, point to point) and the
policy's weights (bucketed broadcasts from trainer 0).

The two sides run their own process groups (the trainers shard their model over theirs; vLLM builds its groups
over the rollout ranks'), so the groups between them are made directly from torch's backends over a prefixed
store, outside torch's default group: `Channel` over every rank of the job (gloo, CPU tensors), and
`WeightBroadcast` over trainer 0 and the rollout ranks that take weights (NCCL on GPU, gloo on CPU).

Messages are sent without blocking (gloo's send completes only once the receiver has posted the matching
receive): a rollout rank hands a finished batch over and goes on generating the next. Every wait has the
placement's timeout, and a peer that died shows up as a `PlacementError` naming it rather than as a hang.

Why point-to-point messages for the experience rather than all_gather_object: each trainer receives only its own
shard (an all-gather sends every shard to every rank), and a send needs no matching call from the other ranks,
whereas a collective would make the rollout ranks stop generating to meet the trainers. A message is one pickle:
the batch's tensors travel as their raw storage bytes, the per-sample metadata (text, ground truth) as pickled
lists; a step of 256 responses of 1,024 tokens is ~10 MB.
"""

from __future__ import annotations

import logging
import pickle
from datetime import timedelta
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from rlkit.buckets import bucket_weights

log = logging.getLogger(__name__)


class PlacementError(RuntimeError):
    """The other side of a split job failed, went away, or did not answer within placement.timeout_s."""


def _describe(error: Exception, peer: str, what: str, timeout: timedelta) -> str:
    text = str(error)
    if "Timed out" in text or "timed out" in text:
        return (f"no {what} came from {peer} within placement.timeout_s={timeout.total_seconds():g} s; see that "
                "rank's log, or raise placement.timeout_s if it was still working")
    return f"{peer} went away while this rank waited for {what} ({text.splitlines()[0][:200]}); see that rank's log"


class Channel:
    """Point-to-point messages between the ranks of one job over gloo.

    Args:
        store: a store every rank of the job shares (a prefix keeps this group's keys apart).
        rank, world_size: this process among all of the job's.
        timeout: how long a receive (or a wait for a send to be taken) may take.
    """

    def __init__(self, store: dist.Store, rank: int, world_size: int, timeout: timedelta):
        self.rank = rank
        self.timeout = timeout
        self._group = _backend_group("gloo", dist.PrefixStore("rlkit/channel", store), rank, world_size, timeout)
        self._pending: list[tuple[Any, list[Tensor]]] = []  # (work, buffers kept alive until sent)

    def send(self, obj: Any, dst: int, tag: int) -> None:
        """Queue `obj` for rank `dst` without waiting for it to be received."""
        payload = torch.frombuffer(bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), dtype=torch.uint8)
        size = torch.tensor([payload.numel()], dtype=torch.int64)
        self._pending = [(work, buffers) for work, buffers in self._pending if not work.is_completed()]
        for tensor in (size, payload):
            self._pending.append((self._group.send([tensor], dst, tag), [tensor]))

    def recv(self, src: int, tag: int, *, what: str, peer: str | None = None) -> Any:
        """The next object rank `src` sent with `tag`. PlacementError when `src` dies or takes too long."""
        peer = peer or f"rank {src}"
        try:
            size = torch.zeros(1, dtype=torch.int64)
            self._group.recv([size], src, tag).wait(self.timeout)
            payload = torch.empty(int(size), dtype=torch.uint8)
            self._group.recv([payload], src, tag).wait(self.timeout)
        except RuntimeError as error:
            raise PlacementError(_describe(error, peer, what, self.timeout)) from error
        return pickle.loads(payload.numpy().tobytes())

    def wait_sent(self, timeout: timedelta | None = None) -> bool:
        """Wait until every queued message has been received; False when one was not within `timeout`."""
        try:
            for work, _ in self._pending:
                work.wait(timeout or self.timeout)
        except RuntimeError:
            return False
        self._pending = []
        return True

    def close(self) -> None:
        """Drop what is still queued (a peer that will never receive it) and leave the group."""
        self._pending = []
        _leave(self._group)


class WeightBroadcast:
    """Trainer 0's weights to the rollout ranks that take them, in broadcasts of at most `bucket_bytes`.

    Each bucket holds consecutive tensors of one dtype, flattened into one buffer: its names and shapes go first
    to every receiver as a message on the channel, then the buffer in one broadcast (NCCL between GPUs: the
    trainer's GPU tensors are never copied to the CPU). Receivers rebuild (name, tensor) views of the buffer.

    Args:
        store: the job's shared store; rank, world_size: this process in the group (trainer 0 is rank 0).
        device: where buffers live: 'cuda:i' (NCCL) or 'cpu' (gloo).
    """

    TAG = 7  # the channel tag of the bucket descriptions

    def __init__(self, store: dist.Store, rank: int, world_size: int, timeout: timedelta, device: str,
                 bucket_bytes: int):
        self.device = torch.device(device)
        self.timeout = timeout
        self.bucket_bytes = bucket_bytes
        kind = "nccl" if self.device.type == "cuda" else "gloo"
        self._group = _backend_group(kind, dist.PrefixStore("rlkit/weights", store), rank, world_size, timeout)

    def send(self, weights: Iterable[tuple[str, Tensor]], channel: Channel, receivers: list[int]) -> int:
        """Broadcast `weights` (trainer 0, the root); returns the bytes sent. `receivers`: their job ranks."""
        sent = 0
        for bucket in bucket_weights(weights, self.bucket_bytes, one_dtype=True):
            flat = torch.cat([tensor.detach().reshape(-1).to(self.device) for _, tensor in bucket])
            description = {"names": [name for name, _ in bucket], "shapes": [tuple(t.shape) for _, t in bucket],
                           "dtype": str(flat.dtype).removeprefix("torch."), "numel": flat.numel()}
            for receiver in receivers:
                channel.send(description, receiver, self.TAG)
            self._broadcast(flat, "weights")
            sent += flat.numel() * flat.element_size()
        for receiver in receivers:
            channel.send(None, receiver, self.TAG)  # the end of this version
        return sent

    def receive(self, channel: Channel, root: int) -> Iterator[tuple[str, Tensor]]:
        """The weights trainer 0 (job rank `root`) broadcasts, bucket by bucket, as views of each bucket's buffer.

        Consume it to the end: the broadcasts are collectives that trainer 0 waits on."""
        while True:
            description = channel.recv(root, self.TAG, what="weights", peer="trainer rank 0")
            if description is None:
                return
            flat = torch.empty(description["numel"], dtype=getattr(torch, description["dtype"]), device=self.device)
            self._broadcast(flat, "weights")
            offset = 0
            for name, shape in zip(description["names"], description["shapes"]):
                numel = int(torch.Size(shape).numel())
                yield name, flat[offset:offset + numel].view(shape)
                offset += numel

    def close(self) -> None:
        _leave(self._group)

    def _broadcast(self, tensor: Tensor, what: str) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        try:
            self._group.broadcast([tensor], options).wait(self.timeout)
        except RuntimeError as error:
            raise PlacementError(_describe(error, "a rank of the weight broadcast", what, self.timeout)) from error


def _backend_group(kind: str, store: dist.Store, rank: int, world_size: int, timeout: timedelta) -> Any:
    """A gloo or NCCL group of its own (not torch's default group or a subgroup of it), as torch's
    init_process_group makes its backends; every member constructs it at the same time."""
    if kind == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        group = dist.ProcessGroupNCCL(store, rank, world_size, options)
    else:
        group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
    group._set_sequence_number_for_group()  # as torch does for the groups it makes
    return group


def _leave(group: Any) -> None:
    """Abort a group made outside torch's default group: its unfinished sends are dropped, not waited for
    (torch releases before 2.8 have no abort on gloo; the group then goes with the process)."""
    abort = getattr(group, "abort", None)
    if abort is not None:
        abort()
