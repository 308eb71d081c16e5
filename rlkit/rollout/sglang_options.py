"""The SGLang rollout's own options: the `rollout.sglang` block (the shared ones are rlkit.config.rollouts).

Imports without SGLang, so that a recipe carrying this block validates where SGLang is not installed.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rlkit.config.base import Section


class SGLangOptions(Section):
    tensor_parallel_size: Annotated[int, Field(ge=1, description="GPUs per SGLang engine.")] = 1
    mem_fraction_static: Annotated[float, Field(gt=0, le=1, description="Fraction of GPU memory for weights+KV.")] = 0.5
    attention_backend: Annotated[str, Field(description="SGLang attention backend.")] = "triton"
    sampling_backend: Annotated[str, Field(description="SGLang sampling backend.")] = "pytorch"
    disable_cuda_graph: Annotated[bool, Field(description="Disable CUDA graphs.")] = False
    release_memory: Annotated[
        bool,
        Field(description="Start with SGLang's memory saver, so that the weights and KV cache can be released while "
              "training (rollout.sleep); an engine that will not sleep (rollout.sleep false, or auto decided so "
              "before it starts) starts without it."),
    ] = True

    def free_after_start(self, free_bytes: int) -> int:
        """The GPU memory an engine leaves free when it starts with `free_bytes` free: SGLang sizes its KV cache to
        leave 1 - mem_fraction_static of what was free at its start (older versions leave that share of the
        whole GPU, which is more)."""
        return int(free_bytes * (1 - self.mem_fraction_static))

    @property
    def keeps_memory(self) -> bool:
        """Built without the memory saver: the engine cannot release its memory while the trainer works."""
        return not self.release_memory
