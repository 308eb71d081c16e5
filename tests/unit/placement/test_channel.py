"""Messages and weight broadcasts between the sides of a split job, with both "ranks" as threads of this process
over an in-memory store (gloo works the same between threads as between processes)."""

import threading
from datetime import timedelta

import pytest
import torch

from rlkit.buckets import bucket_weights
from rlkit.placement.channel import Channel, PlacementError, WeightBroadcast


def in_threads(*targets):
    """Run each target(rank) in its own thread; their results, or the first exception raised."""
    results, errors = [None] * len(targets), []

    def run(rank):
        try:
            results[rank] = targets[rank](rank)
        except BaseException as error:  # re-raised below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_buckets_keep_one_dtype_and_the_size_limit():
    weights = [("a", torch.zeros(4)), ("b", torch.zeros(4)), ("c", torch.zeros(8)),
               ("d", torch.zeros(2, dtype=torch.int64)), ("e", torch.zeros(1))]
    # 16 bytes per fp32 x 4: a and b fill 32 bytes; c (32 bytes) alone; d is another dtype; e after it.
    buckets = bucket_weights(weights, 32, one_dtype=True)
    assert [[name for name, _ in bucket] for bucket in buckets] == [["a", "b"], ["c"], ["d"], ["e"]]


def test_messages_arrive_in_order_without_the_sender_waiting():
    store = torch.distributed.HashStore()
    timeout = timedelta(seconds=20)

    def sender(rank):
        channel = Channel(store, rank, 2, timeout)
        for step in range(3):  # queued before the receiver asks for any
            channel.send({"step": step, "tensor": torch.arange(step + 1), "text": ["é"] * step}, 1, tag=2)
        assert channel.wait_sent()
        channel.close()

    def receiver(rank):
        channel = Channel(store, rank, 2, timeout)
        received = [channel.recv(0, tag=2, what="batch") for _ in range(3)]
        channel.close()
        return received

    _, received = in_threads(sender, receiver)
    assert [message["step"] for message in received] == [0, 1, 2]
    assert torch.equal(received[2]["tensor"], torch.arange(3)) and received[2]["text"] == ["é", "é"]


def test_a_receive_that_times_out_names_the_peer_and_the_setting():
    store = torch.distributed.HashStore()

    def silent(rank):
        channel = Channel(store, rank, 2, timedelta(seconds=20))
        channel.wait_sent()
        return channel

    def waiting(rank):
        channel = Channel(store, rank, 2, timedelta(seconds=1))
        with pytest.raises(PlacementError, match="no batch came from rollout rank 0 within placement.timeout_s=1 s"):
            channel.recv(0, tag=2, what="batch", peer="rollout rank 0")
        return channel

    for channel in in_threads(silent, waiting):
        channel.close()


def test_weights_arrive_bucket_by_bucket_equal_to_the_senders():
    store = torch.distributed.HashStore()
    timeout = timedelta(seconds=20)
    generator = torch.Generator().manual_seed(0)
    weights = {"embed": torch.randn(10, 4, generator=generator), "norm": torch.randn(4, generator=generator),
               "head": torch.randn(3, 4, generator=generator).to(torch.bfloat16),
               "steps": torch.tensor([7, 8], dtype=torch.int64)}

    def trainer(rank):
        channel = Channel(store, rank, 2, timeout)
        broadcast = WeightBroadcast(store, rank, 2, timeout, "cpu", bucket_bytes=64)
        sent = broadcast.send(iter(weights.items()), channel, receivers=[1])
        assert channel.wait_sent()
        broadcast.close()
        channel.close()
        return sent

    def rollout(rank):
        channel = Channel(store, rank, 2, timeout)
        broadcast = WeightBroadcast(store, rank, 2, timeout, "cpu", bucket_bytes=64)
        received = {name: tensor.clone() for name, tensor in broadcast.receive(channel, root=0)}
        broadcast.close()
        channel.close()
        return received

    sent, received = in_threads(trainer, rollout)
    assert list(received) == list(weights)
    assert all(torch.equal(received[name], weights[name]) and received[name].dtype == weights[name].dtype
               for name in weights)
    assert sent == sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
