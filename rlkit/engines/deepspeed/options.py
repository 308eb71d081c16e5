"""The DeepSpeed engine's own options: the `engine.deepspeed` block (the shared ones are rlkit.config.engines).

Imports without DeepSpeed, so that a recipe carrying this block validates where DeepSpeed is not installed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from rlkit.config.base import Section


class DeepSpeedOptions(Section):
    zero_stage: Annotated[Literal[1, 2, 3], Field(description="ZeRO stage.")] = 3
    offload_optimizer: Annotated[bool, Field(description="Optimizer state on CPU (ZeRO-Offload).")] = False
    offload_param: Annotated[bool, Field(description="Parameters on CPU (ZeRO-3 only).")] = False
    optimizer_impl: Annotated[
        Literal["torch", "deepspeed"],
        Field(description="'torch': torch AdamW (nothing compiles); 'deepspeed': FusedAdam on GPU, CPUAdam on CPU."),
    ] = "torch"
    offload_ref: Annotated[bool, Field(description="Reference model parameters on CPU (ZeRO-3 inference).")] = False

    @model_validator(mode="after")
    def _parameters_offload_only_when_partitioned(self) -> DeepSpeedOptions:
        if self.offload_param and self.zero_stage != 3:
            raise ValueError(
                f"offload_param=true needs zero_stage=3 (it is {self.zero_stage}): only ZeRO-3 partitions "
                "parameters; set engine.deepspeed.zero_stage=3 or engine.deepspeed.offload_param=false"
            )
        return self
