"""The rollout-engine section (`rollout:`): the sampling options every rollout engine reads, `name` (the engine
used), and one block per engine for its own options (`rollout.vllm.gpu_memory_utilization`), typed by the
engine's registry entry (rlkit.config.backends)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from rlkit.config.auto import AUTO, AutoSwitch
from rlkit.config.backends import BackendSection


class RolloutConfig(BackendSection):
    registry_name: ClassVar[str] = "ROLLOUT_ENGINES"
    section_key: ClassVar[str] = "rollout"
    FIXED_DEFAULTS: ClassVar[dict[str, Any]] = {"return_logprobs": True, "sleep": True}

    name: Annotated[
        str,
        Field(description="The rollout engine: a registered name (`rlkit list` shows them) or "
              "'module:attr'. Its own options are read from the block of that name (rollout.<name>.OPTION)."),
    ] = "hf"
    n: Annotated[int, Field(ge=1, description="Responses sampled per prompt.")] = 8
    temperature: Annotated[float, Field(ge=0, description="Sampling temperature; 0 is greedy.")] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1, description="Nucleus sampling mass.")] = 1.0
    top_k: Annotated[int, Field(ge=-1, description="Keep the k most likely tokens; -1 or 0 keeps all.")] = -1
    max_new_tokens: Annotated[int, Field(ge=1, description="Longest response in tokens.")] = 16
    stop_token_ids: Annotated[
        list[int], Field(description="Extra token ids that end a response (EOS always does).")
    ] = []
    ignore_eos: Annotated[bool, Field(description="Keep generating past EOS (benchmarks: fixed lengths).")] = False
    return_logprobs: Annotated[
        AutoSwitch,
        Field(description="Return the rollout's per-token log-probs: what algorithm.reuse_rollout_logprobs and "
              "algorithm.rollout_is_cap read, and the rollout/logprob_abs_diff metric. vLLM generates about 2x "
              "slower with them. 'auto': on when reuse_rollout_logprobs or rollout_is_cap reads them, else off on a "
              "GPU (then rollout/logprob_abs_diff is not reported: set true for it); on on CPU."),
    ] = AUTO
    sleep: Annotated[
        AutoSwitch,
        Field(description="Free the rollout engine's GPU memory while the trainer works, colocated on the same GPUs "
              "(vLLM's sleep at rollout.vllm.sleep_level, SGLang's memory release); waking costs time every step. "
              "'auto': on a GPU, stay awake when the trainer's micro-batches fit beside the awake engine, else "
              "sleep; on CPU, sleep. false also starts SGLang without its memory saver, which costs it speed."),
    ] = AUTO
    val_temperature: Annotated[float, Field(ge=0, description="Temperature for validation; 0 is greedy.")] = 0.0
    val_n: Annotated[int, Field(ge=1, description="Responses per validation prompt.")] = 1
    max_turns: Annotated[
        int,
        Field(ge=1, description="Model turns per conversation at most: the environment (environment.name) answers "
              "each turn until it is done. 1: one response per prompt."),
    ] = 1
    max_total_tokens: Annotated[
        int | None,
        Field(ge=1, description="Token budget of a whole conversation after the prompt, the model's turns and the "
              "environment's messages together (the trained response's width); each turn also stops at "
              "max_new_tokens. null: max_new_tokens x max_turns."),
    ] = None

    @property
    def response_budget(self) -> int:
        """The longest response part of a trained sequence: one response, or a whole conversation."""
        return self.max_total_tokens or self.max_new_tokens * self.max_turns
