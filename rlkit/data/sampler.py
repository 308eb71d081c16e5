"""Seeded, resumable batch order over a dataset, epoch after epoch.

Epoch ``e`` visits the items in ``torch.randperm(num_items)`` drawn from a generator seeded with
``seed + e`` (or in order when not shuffling), so the order depends only on (seed, epoch) and a
checkpoint needs just ``{epoch, position}`` to resume exactly. Iteration never ends: the trainer
stops by step count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from rlkit.errors import DataError


class EpochSampler:
    """Yields lists of ``batch_size`` item indices; ``position`` counts batches taken in this epoch."""

    def __init__(self, num_items: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_items < (batch_size if drop_last else 1):
            raise DataError(
                f"the dataset has {num_items} prompts, fewer than one batch of {batch_size}; "
                "lower the batch size (data.train_batch_size) or add prompts"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self._cached_order: tuple[int, list[int]] = (-1, [])

    @property
    def steps_per_epoch(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_size
        return math.ceil(self.num_items / self.batch_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """The item order of one epoch."""
        if self._cached_order[0] != epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed + epoch)
                order = torch.randperm(self.num_items, generator=generator).tolist()
            else:
                order = list(range(self.num_items))
            self._cached_order = (epoch, order)
        return self._cached_order[1]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            start = self.position * self.batch_size
            batch = self.epoch_order(self.epoch)[start : start + self.batch_size]
            # Advance before yielding: a state_dict() taken after receiving a batch resumes after it.
            self.position += 1
            if self.position == self.steps_per_epoch:
                self.epoch, self.position = self.epoch + 1, 0
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not 0 <= state["position"] < self.steps_per_epoch:
            raise DataError(
                f"sampler state position {state['position']} is outside an epoch of {self.steps_per_epoch} "
                "batches; the checkpoint was made with another dataset or batch size"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
