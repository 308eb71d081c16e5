"""The DeepSpeed engine's own options: the `engine.deepspeed` block (the shared ones are rlkit.config.engines).

Imports without DeepSpeed, so that a recipe carrying this block validates where DeepSpeed is not installed.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from rlkit.config.auto import AUTO, Choice, Facts
from rlkit.config.base import Section

# ZeRO-2 on several GPUs while its state takes at most this share of one GPU; the rest is for activations, the
# reference and the rollout engine, whose memory comes back at every wake while the training state stays.
ZERO2_MAX_GPU_SHARE = 0.25


class DeepSpeedOptions(Section):
    FIXED_DEFAULTS: ClassVar[dict[str, Any]] = {"zero_stage": 3}

    zero_stage: Annotated[
        Literal["auto", 1, 2, 3],
        Field(description="ZeRO stage: 1 partitions the optimizer state over the ranks, 2 also the gradients, 3 also "
              "the weights. 'auto': 2 on one GPU (the same memory as 3 there, without its gathering hooks) and on "
              "several GPUs while ZeRO-2's state takes at most a quarter of one GPU; 3 otherwise, with "
              "offload_param, and on CPU."),
    ] = "auto"
    offload_optimizer: Annotated[bool, Field(description="Optimizer state on CPU (ZeRO-Offload).")] = False
    offload_param: Annotated[bool, Field(description="Parameters on CPU (ZeRO-3 only).")] = False
    optimizer_impl: Annotated[
        Literal["torch", "deepspeed"],
        Field(description="'torch': torch AdamW (nothing compiles); 'deepspeed': FusedAdam on GPU, CPUAdam on CPU."),
    ] = "torch"
    offload_ref: Annotated[bool, Field(description="Reference model parameters on CPU (ZeRO-3 inference).")] = False

    @model_validator(mode="after")
    def _parameters_offload_only_when_partitioned(self) -> DeepSpeedOptions:
        if self.offload_param and self.zero_stage not in (3, AUTO):  # 'auto' resolves to 3 with it
            raise ValueError(
                f"offload_param=true needs zero_stage=3 (it is {self.zero_stage}): only ZeRO-3 partitions "
                "parameters; set engine.deepspeed.zero_stage=3 or engine.deepspeed.offload_param=false"
            )
        return self

    def choose_auto(self, facts: Facts) -> dict[str, Choice]:
        """`zero_stage: auto` (see its description). On one rank every stage holds every element of the weights,
        gradients and optimizer state; ZeRO-3 then only adds the gathers of its hooks. On W ranks ZeRO-2 keeps
        each trained model's bf16 weights whole on every rank (2 bytes a parameter) and partitions the fp32 master
        weights, gradients and AdamW moments (16 bytes a trainable parameter, / W), which ZeRO-3 partitions
        together with the weights."""
        if self.zero_stage != AUTO:
            return {"zero_stage": Choice.given(self.zero_stage)}
        if self.offload_param:
            return {"zero_stage": Choice(3, "offload_param: only ZeRO-3 partitions and offloads the weights")}
        if not facts.on_cuda:
            return {"zero_stage": Choice(3, "CPU, the fixed default")}
        if facts.world_size == 1:
            return {"zero_stage": Choice(2, "one GPU: the same memory as ZeRO-3 there, without its gathering hooks")}
        state = (2 * facts.model_parameters * facts.num_trained_models
                 + 16 * facts.trainable_parameters / facts.world_size)
        budget = ZERO2_MAX_GPU_SHARE * facts.gpu_total_bytes
        sizes = f"ZeRO-2's state {state / 2**30:.1f} GiB a GPU, a quarter of one is {budget / 2**30:.1f} GiB"
        if state <= budget:
            return {"zero_stage": Choice(2, f"{facts.world_size} GPUs, {sizes}: no weight gathering")}
        return {"zero_stage": Choice(3, f"{facts.world_size} GPUs, {sizes}: ZeRO-3 partitions the weights too")}
