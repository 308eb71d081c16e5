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
        Field(description="0: stay awake; 1: free the KV cache while training; 2: free weights too."),
    ] = 1
    seed: Annotated[int | None, Field(description="vLLM sampling seed; default: trainer.seed + rank.")] = None
