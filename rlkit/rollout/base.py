"""The rollout-engine interface: generate responses, take new weights, sleep and wake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence, runtime_checkable

from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0: off
    max_new_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: bool = True  # per-token log-probs of the sampled tokens (vLLM generates ~2x slower with them)


@dataclass
class Completion:
    """One sampled response. `logprobs[i]` is the log-prob of response_ids[i] under the sampling policy."""

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str  # "stop" (EOS or a stop token) or "length"
    text: str = ""
    extra: dict = field(default_factory=dict)


@runtime_checkable
class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[Completion]:
        """params.n completions per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]."""
        ...

    def update_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        """Load full weights given in Hugging Face names, in place (no disk, no re-initialisation)."""
        ...

    def sleep(self) -> None:
        """Free memory for training (KV cache, and weights where the engine supports it)."""
        ...

    def wake_up(self) -> None:
        """Take the memory back before generating."""
        ...
