"""Weight streams in buckets: what the rollout engines load in place (rlkit.rollout) and what a split job
broadcasts from the trainers to the rollout ranks (rlkit.placement) move bucket by bucket, so that neither holds
a whole model's worth of extra tensors at once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import Tensor


def bucket_weights(weights: Iterable[tuple[str, Tensor]], max_bytes: int, *,
                   one_dtype: bool = False) -> Iterator[list[tuple[str, Tensor]]]:
    """Group a stream of (name, tensor) into lists of at most `max_bytes` of tensor data, in order.

    A tensor larger than `max_bytes` travels alone. With `one_dtype` a bucket also holds one dtype only (a
    broadcast flattens a bucket into one buffer). The stream is consumed lazily: at most one bucket (plus the
    tensor that opens the next one) is held at a time.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    bucket: list[tuple[str, Tensor]] = []
    size = 0
    for name, tensor in weights:
        num_bytes = tensor.numel() * tensor.element_size()
        if bucket and (size + num_bytes > max_bytes or (one_dtype and tensor.dtype != bucket[0][1].dtype)):
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += num_bytes
    if bucket:
        yield bucket
