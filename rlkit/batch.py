"""The one batch type that flows between rollout, reward, engines and algorithms.

Shape legend: B sequences, P prompt width (left-padded), T response width (right-padded), L = P + T.

Tensors a batch carries (all on the same device, first dimension B):
    input_ids        (B, L) long   prompt (left-padded) then response (right-padded)
    attention_mask   (B, L) long   1 on real tokens
    position_ids     (B, L) long   0.. over real tokens (padding positions repeat their neighbour)
    response_mask    (B, T) float  1.0 on response tokens that take part in the loss
    rollout_logprobs (B, T) float  log-probs the rollout engine sampled with (when it returns them)
    old_logprobs, ref_logprobs, values, token_level_scores, token_level_rewards,
    advantages, returns          (B, T) float, added as the step goes
Per-sample Python values live in `meta` (lists of length B): group_index, data_source, ground_truth,
extra_info, prompt_text, response_text, finish_reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor


@dataclass
class Batch:
    tensors: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {name: len(value) for name, value in (*self.tensors.items(), *self.meta.items())}
        assert len(set(sizes.values())) <= 1, f"batch fields disagree on size: {sizes}"

    # -- access -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        for value in (*self.tensors.values(), *self.meta.values()):
            return len(value)
        return 0

    def __getitem__(self, key: str) -> Any:
        return self.tensors[key] if key in self.tensors else self.meta[key]

    def __setitem__(self, key: str, value: Any) -> None:
        assert len(self) == 0 or len(value) == len(self), f"{key} has {len(value)} rows, batch has {len(self)}"
        if isinstance(value, Tensor):
            self.tensors[key] = value
        else:
            self.meta[key] = list(value)

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.meta

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    @property
    def response_width(self) -> int:
        return self.tensors["response_mask"].shape[1]

    @property
    def prompt_width(self) -> int:
        return self.tensors["input_ids"].shape[1] - self.response_width

    # -- reshaping --------------------------------------------------------------------------------
    def select(self, indices: Sequence[int] | Tensor) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        positions = index.tolist()
        return Batch(
            {name: value[index.to(value.device)] for name, value in self.tensors.items()},
            {name: [value[i] for i in positions] for name, value in self.meta.items()},
        )

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(
            {name: value[start:stop] for name, value in self.tensors.items()},
            {name: value[start:stop] for name, value in self.meta.items()},
        )

    def split(self, size: int) -> Iterator[Batch]:
        """Consecutive pieces of `size` rows (the last may be shorter)."""
        for start in range(0, len(self), size):
            yield self.slice(start, start + size)

    def shard(self, rank: int, world_size: int) -> Batch:
        """This rank's contiguous share; the batch size must divide evenly."""
        assert len(self) % world_size == 0, f"batch of {len(self)} does not split over {world_size} ranks"
        per_rank = len(self) // world_size
        return self.slice(rank * per_rank, (rank + 1) * per_rank)

    def to(self, device: torch.device | str) -> Batch:
        return Batch({name: to_device(value, device) for name, value in self.tensors.items()}, dict(self.meta))

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        batches = [batch for batch in batches if len(batch)]
        if not batches:
            return Batch()
        first = batches[0]
        return Batch(
            {name: torch.cat([batch.tensors[name] for batch in batches]) for name in first.tensors},
            {name: [item for batch in batches for item in batch.meta[name]] for name in first.meta},
        )


def to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """`tensor` on `device`. A CPU tensor bound for a GPU goes through pinned memory and does not make the host
    wait: a plain `.to("cuda")` synchronizes the stream after the copy, so inside a micro-batch loop the host would
    wait for every kernel queued so far before it could queue the next. Torch's host allocator keeps the pinned
    copy until the transfer is done. Made contiguous first, since torch would copy a strided tensor to pageable
    memory before the transfer."""
    if torch.device(device).type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.contiguous().pin_memory().to(device, non_blocking=True)
