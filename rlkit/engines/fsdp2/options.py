"""The FSDP2 engine's own options: the `engine.fsdp2` block (the shared ones are rlkit.config.engines)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rlkit.config.base import Section


class FSDP2Options(Section):
    reshard_after_forward: Annotated[
        bool, Field(description="Free gathered weights after forward (ZeRO-3 like).")
    ] = True
    cpu_offload: Annotated[bool, Field(description="Keep parameters, gradients and optimizer state on CPU.")] = False
    offload_ref: Annotated[bool, Field(description="Keep the reference model on CPU between its passes.")] = False
