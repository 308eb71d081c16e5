"""The placement section (`placement:`): which ranks train and which roll out, and how far the rollout may run
ahead of training.

A section of its own rather than part of `rollout` or `trainer`: it decides what every rank of the job does
(train, roll out, or both), which neither of those sections describes alone. See docs/placement.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from rlkit.config.base import Section


class PlacementConfig(Section):
    mode: Annotated[
        Literal["colocated", "split"],
        Field(description="'colocated': every rank trains and rolls out, taking turns on its GPU (a rollout "
              "engine with tensor_parallel_size k spans k consecutive ranks); 'split': the last "
              "placement.rollout_ranks ranks only roll out and the others only train, the trainers sending "
              "weights after every update."),
    ] = "colocated"
    rollout_ranks: Annotated[
        int,
        Field(ge=1, description="split: how many ranks (the last ones) run rollout engines; a multiple of the "
              "rollout engine's tensor_parallel_size, and at most one engine per training rank."),
    ] = 1
    staleness: Annotated[
        int,
        Field(ge=0, description="split: how many policy versions the rollout may run ahead: batch t is generated "
              "with the weights of step t-1-k while earlier batches train (0: synchronous, the colocated run's "
              "numbers)."),
    ] = 0
    on_stale: Annotated[
        Literal["drop", "reweight"],
        Field(description="split: a response older than `staleness` versions when it reaches the update: 'drop' "
              "its group, or 'reweight' (keep it; algorithm.rollout_is_cap, which must be set, weights every "
              "response by its truncated importance ratio)."),
    ] = "drop"
    weight_bucket_mb: Annotated[
        float,
        Field(gt=0, description="split: the weights go to the rollout ranks in broadcasts of at most this many MB "
              "(memory staged on both sides at once)."),
    ] = 512.0
    timeout_s: Annotated[
        float,
        Field(gt=0, description="split: how long a rank waits for the other side (experience, weights, shutdown) "
              "before it stops the run with an error."),
    ] = 1800.0

    @model_validator(mode="after")
    def _staleness_needs_split(self) -> PlacementConfig:
        if self.staleness and self.mode != "split":
            raise ValueError(
                f"placement.staleness={self.staleness} needs placement.mode=split (colocated rollout and training "
                "take turns on the same GPUs, so the rollout cannot run ahead); set placement.mode=split or "
                "placement.staleness=0"
            )
        return self
