"""Rollout-engine sections (`rollout:`, discriminated by `name`): shared sampling fields, then each engine's own."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator

from rlkit.config.base import Section, check_registered


class RolloutCommon(Section):
    n: Annotated[int, Field(ge=1, description="Responses sampled per prompt.")] = 8
    temperature: Annotated[float, Field(ge=0, description="Sampling temperature; 0 is greedy.")] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1, description="Nucleus sampling mass.")] = 1.0
    top_k: Annotated[int, Field(ge=-1, description="Keep the k most likely tokens; -1 or 0 keeps all.")] = -1
    max_new_tokens: Annotated[int, Field(ge=1, description="Longest response in tokens.")] = 16
    stop_token_ids: Annotated[list[int], Field(description="Extra token ids that end a response (EOS always does).")] = []
    ignore_eos: Annotated[bool, Field(description="Keep generating past EOS (benchmarks: fixed lengths).")] = False
    return_logprobs: Annotated[
        bool,
        Field(description="Return the rollout's per-token log-probs (the rollout/logprob_abs_diff metric, "
              "reuse_rollout_logprobs, rollout_is_cap). vLLM generates about 2x slower with them: turn off for "
              "speed when none of those is used."),
    ] = True
    val_temperature: Annotated[float, Field(ge=0, description="Temperature for validation; 0 is greedy.")] = 0.0
    val_n: Annotated[int, Field(ge=1, description="Responses per validation prompt.")] = 1


class HFRolloutConfig(RolloutCommon):
    name: Annotated[Literal["hf"], Field(description="Selects this rollout engine (--rollout hf).")] = "hf"
    batch_size: Annotated[
        int | None, Field(ge=1, description="Prompts per generate call (memory knob); default: all at once.")
    ] = None


class VLLMRolloutConfig(RolloutCommon):
    name: Annotated[Literal["vllm"], Field(description="Selects this rollout engine (--rollout vllm).")] = "vllm"
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


class SGLangRolloutConfig(RolloutCommon):
    name: Annotated[Literal["sglang"], Field(description="Selects this rollout engine (--rollout sglang).")] = "sglang"
    tensor_parallel_size: Annotated[int, Field(ge=1, description="GPUs per SGLang engine.")] = 1
    mem_fraction_static: Annotated[float, Field(gt=0, le=1, description="Fraction of GPU memory for weights+KV.")] = 0.5
    attention_backend: Annotated[str, Field(description="SGLang attention backend.")] = "triton"
    sampling_backend: Annotated[str, Field(description="SGLang sampling backend.")] = "pytorch"
    disable_cuda_graph: Annotated[bool, Field(description="Disable CUDA graphs.")] = False
    release_memory: Annotated[bool, Field(description="Release weights and KV cache while training.")] = True


class PluginRolloutConfig(RolloutCommon):
    name: Annotated[str, Field(description="Registered rollout name or 'module:attr' reference.")]
    options: Annotated[dict[str, Any], Field(description="Options passed to the plugin rollout engine.")] = {}

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return check_registered("ROLLOUT_ENGINES", name)


def _rollout_tag(value: Any) -> str:
    name = value.get("name", "hf") if isinstance(value, dict) else getattr(value, "name", "hf")
    return name if name in ("hf", "vllm", "sglang") else "plugin"


RolloutConfig = Annotated[
    Union[
        Annotated[HFRolloutConfig, Tag("hf")],
        Annotated[VLLMRolloutConfig, Tag("vllm")],
        Annotated[SGLangRolloutConfig, Tag("sglang")],
        Annotated[PluginRolloutConfig, Tag("plugin")],
    ],
    Discriminator(_rollout_tag),
]
