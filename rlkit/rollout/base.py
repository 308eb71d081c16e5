"""The rollout-engine interface: generate responses, take new weights, sleep and wake, close.

Also the small rules the engines apply alike: `check_prompts` (no empty prompt), `stop_token_ids` (what
ends a response), `call_seed` and `RANK_SEED_STRIDE` (how calls' and ranks' seeds are spread) and `dtype_name`
(the weights' dtype).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Protocol, Sequence, runtime_checkable

from torch import Tensor

from rlkit.errors import ConfigError

RANK_SEED_STRIDE = 1_000_003  # ranks sample different streams; a prime keeps them apart from call counters


def call_seed(seed: int, call_index: int, stream: int) -> int:
    """The seed of generate call `call_index` of sampling stream `stream` (a rank, or a share of the prompts)."""
    return seed + call_index + stream * RANK_SEED_STRIDE


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
    # This call's sampling seed, chosen by the caller (a split placement seeds each trainer's share of the prompts
    # as the colocated rank with that share would: `call_seed`); None: the engine's own per-call stream.
    seed: int | None = None


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

    def close(self) -> None:
        """Shut the engine down and free its memory (and processes); it cannot generate afterwards. The trainer
        calls it when the run ends or fails."""
        ...


def check_prompts(prompts: Sequence[Sequence[int]]) -> None:
    """ValueError naming the first empty prompt: every prompt needs at least one token."""
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {index} is empty; every prompt needs at least one token")


def unique_ids(ids: Iterable[int | None]) -> list[int]:
    """Ids in first-seen order, without None and repeats."""
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def stop_token_ids(params: SamplingParams, eos_token_ids: Sequence[int]) -> list[int]:
    """The ids that end a response: the EOS ids, then params.stop_token_ids; none at all with ignore_eos."""
    return [] if params.ignore_eos else unique_ids([*eos_token_ids, *params.stop_token_ids])


def dtype_name(dtype: Any, supported: Collection[str], engine: str) -> str:
    """A torch dtype, a dtype name or None (-> bfloat16, as the HF rollout uses on GPU) as a dtype name.

    ConfigError naming `engine` when the name is not one of `supported`.
    """
    if dtype is None:
        return "bfloat16"
    name = str(dtype).removeprefix("torch.")
    if name not in supported:
        raise ConfigError(f"{engine} rollout dtype {dtype!r} is not supported; use one of {', '.join(supported)}")
    return name
