"""The FSDP2 engine's own options: the `engine.fsdp2` block (the shared ones are rlkit.config.engines)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from rlkit.config.auto import AUTO, Choice, Facts
from rlkit.config.base import Section

# One unit for the whole model while what it holds at once beyond a unit per layer takes at most this share of the
# GPU: the gathered compute-dtype weights (2 bytes a parameter) and, at the end of the backward, the whole model's
# gradients in the compute dtype and in fp32 for the reduction (2 + 4), for every model that trains. It comes out of
# the 10% of the GPU a run keeps back (rlkit.trainer.memory_plan), which on one GPU holds no NCCL buffers.
WHOLE_MODEL_BYTES_PER_PARAMETER = 8
WHOLE_MODEL_MAX_GPU_SHARE = 0.05


class FSDP2Options(Section):
    FIXED_DEFAULTS: ClassVar[dict[str, Any]] = {"units": "layers"}

    units: Annotated[
        Literal["auto", "layers", "model"],
        Field(description="What fully_shard wraps as one unit: 'layers' each decoder layer (its weights gathered and "
              "its gradients reduced one layer at a time), 'model' the whole model (one gather and one reduction a "
              "pass: fewer hooks, more memory held at once). 'auto': 'model' on one GPU while its gathered weights "
              "and gradients take at most 5% of the GPU; 'layers' otherwise and on CPU."),
    ] = "auto"
    reshard_after_forward: Annotated[
        bool, Field(description="Free gathered weights after forward (ZeRO-3 like).")
    ] = True
    cpu_offload: Annotated[bool, Field(description="Keep parameters, gradients and optimizer state on CPU.")] = False
    offload_ref: Annotated[bool, Field(description="Keep the reference model on CPU between its passes.")] = False

    def choose_auto(self, facts: Facts) -> dict[str, Choice]:
        """`units: auto` (see its description). On one GPU there is nothing to overlap a layer's gather with: the
        per-layer hooks only add host work (measured on an H200, docs/benchmarks.md, eleventh session)."""
        if self.units != AUTO:
            return {"units": Choice.given(self.units)}
        if not facts.on_cuda:
            return {"units": Choice("layers", "CPU, the fixed default")}
        if facts.world_size > 1:
            return {"units": Choice("layers", f"{facts.world_size} GPUs: a layer's weights are gathered while the "
                                              "previous layer computes")}
        if self.cpu_offload:
            return {"units": Choice("layers", "cpu_offload: the weights come from the CPU a layer at a time")}
        held = WHOLE_MODEL_BYTES_PER_PARAMETER * facts.model_parameters * facts.num_trained_models
        budget = WHOLE_MODEL_MAX_GPU_SHARE * facts.gpu_total_bytes
        sizes = f"the whole model's gathered weights and gradients {held / 2**30:.1f} GiB, 5% of the GPU is " \
                f"{budget / 2**30:.1f} GiB"
        if held <= budget:
            return {"units": Choice("model", f"one GPU, {sizes}: one unit, no per-layer hooks")}
        return {"units": Choice("layers", f"one GPU, {sizes}: a unit per layer holds less at once")}
