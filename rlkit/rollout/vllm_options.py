"""The vLLM rollout's own options: the `rollout.vllm` block (the shared ones are rlkit.config.rollouts).

Imports without vLLM, so that a recipe carrying this block validates where vLLM is not installed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from rlkit.config.base import Section


class VLLMOptions(Section):
    tensor_parallel_size: Annotated[int, Field(ge=1, description="GPUs per vLLM engine.")] = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1, description="Fraction of GPU memory vLLM may use.")] = (
        0.5
    )
    enforce_eager: Annotated[bool, Field(description="Disable CUDA graphs (faster start, slower decode).")] = False
    enable_prefix_caching: Annotated[bool, Field(description="Reuse KV cache across shared prompt prefixes.")] = True
    max_model_len: Annotated[int | None, Field(ge=1, description="Context length; default: the model's.")] = None
    sleep_level: Annotated[
        Literal[0, 1, 2],
        Field(description="How deep the engine sleeps while training, when it does (rollout.sleep): 1 frees the KV "
              "cache and moves the weights to CPU; 2 frees the weights too. 0: built without sleep mode, never "
              "sleeps."),
    ] = 1
    seed: Annotated[int | None, Field(description="vLLM sampling seed; default: trainer.seed + rank.")] = None

    @property
    def keeps_memory(self) -> bool:
        """Built without sleep mode: the engine cannot free its memory while the trainer works."""
        return self.sleep_level == 0
