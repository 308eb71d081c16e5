"""Training-engine sections (`engine:`, discriminated by `name`) and the optimizer section."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from rlkit.config.base import Section, check_registered


Precision = Literal["auto", "fp32", "bf16"]


class EngineCommon(Section):
    precision: Annotated[
        Precision, Field(description="Compute precision: 'auto' is bf16 on GPU and fp32 on CPU.")
    ] = "auto"
    gradient_checkpointing: Annotated[bool, Field(description="Recompute activations in backward.")] = False
    torch_compile: Annotated[
        bool,
        Field(description="torch.compile every decoder layer's forward and the per-chunk log-prob/entropy "
              "arithmetic, fusing their elementwise work. The first passes pay for compiling (once per engine, "
              "and once more when sequence lengths change, after which shapes are dynamic)."),
    ] = False
    logprob_chunk_size: Annotated[
        int,
        Field(ge=1, description="Tokens per chunk when computing log-probs and entropy, so that fp32 logits of the "
              "whole batch times the vocabulary never exist at once."),
    ] = 2048
    remove_padding: Annotated[
        bool,
        Field(description="Trim each micro-batch to the columns its rows use (leading prompt padding, trailing "
              "response padding) before the forward; outputs are padded back to the batch's width. Same numbers "
              "up to float rounding; rows stay padded to the micro-batch's widths (pack_sequences removes all "
              "padding)."),
    ] = False
    pack_sequences: Annotated[
        bool,
        Field(description="Run every forward (log-probs, values, training) on one row holding the real tokens of "
              "the micro-batch's sequences back to back, with a variable-length causal attention that never "
              "crosses sequences (PyTorch's flash varlen kernel on CUDA in bf16/fp16, an exact per-sequence loop "
              "elsewhere); outputs come back as (B, T). No padding is computed; same numbers up to float "
              "rounding. Replaces remove_padding."),
    ] = False
    max_tokens_per_micro_batch: Annotated[
        int | None,
        Field(ge=1, description="Form micro-batches by a token budget instead of "
              "algorithm.micro_batch_size_per_device: rows x padded width (the trimmed width with remove_padding; "
              "the number of real tokens with pack_sequences) stays within it. Sequences are grouped by length; "
              "every rank runs the same number of micro-batches; a sequence over the budget runs alone."),
    ] = None

    @model_validator(mode="after")
    def _packing_replaces_trimming(self) -> EngineCommon:
        if self.pack_sequences and self.remove_padding:
            raise ValueError(
                "engine.pack_sequences and engine.remove_padding are both true: packing already removes all "
                "padding; set engine.remove_padding=false"
            )
        return self


class FSDP2Config(EngineCommon):
    name: Annotated[Literal["fsdp2"], Field(description="Selects this training engine (--engine fsdp2).")] = "fsdp2"
    reshard_after_forward: Annotated[bool, Field(description="Free gathered weights after forward (ZeRO-3 like).")] = True
    cpu_offload: Annotated[bool, Field(description="Keep parameters, gradients and optimizer state on CPU.")] = False
    offload_ref: Annotated[bool, Field(description="Keep the reference model on CPU between its passes.")] = False


class DeepSpeedConfig(EngineCommon):
    name: Annotated[Literal["deepspeed"], Field(description="Selects this training engine (--engine deepspeed).")] = "deepspeed"
    zero_stage: Annotated[Literal[1, 2, 3], Field(description="ZeRO stage.")] = 3
    offload_optimizer: Annotated[bool, Field(description="Optimizer state on CPU (ZeRO-Offload).")] = False
    offload_param: Annotated[bool, Field(description="Parameters on CPU (ZeRO-3 only).")] = False
    optimizer_impl: Annotated[
        Literal["torch", "deepspeed"],
        Field(description="'torch': torch AdamW (nothing compiles); 'deepspeed': FusedAdam on GPU, CPUAdam on CPU."),
    ] = "torch"
    offload_ref: Annotated[bool, Field(description="Reference model parameters on CPU (ZeRO-3 inference).")] = False


class PluginEngineConfig(EngineCommon):
    """A training engine from a plugin: its options are validated by the plugin."""

    name: Annotated[str, Field(description="Registered engine name or 'module:attr' reference.")]
    options: Annotated[dict[str, Any], Field(description="Options passed to the plugin engine.")] = {}

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return check_registered("TRAIN_ENGINES", name)


def _engine_tag(value: Any) -> str:
    name = value.get("name", "fsdp2") if isinstance(value, dict) else getattr(value, "name", "fsdp2")
    return name if name in ("fsdp2", "deepspeed") else "plugin"


EngineConfig = Annotated[
    Union[
        Annotated[FSDP2Config, Tag("fsdp2")],
        Annotated[DeepSpeedConfig, Tag("deepspeed")],
        Annotated[PluginEngineConfig, Tag("plugin")],
    ],
    Discriminator(_engine_tag),
]


class OptimConfig(Section):
    lr: Annotated[float, Field(gt=0, description="Peak learning rate.")] = 1e-6
    weight_decay: Annotated[float, Field(ge=0, description="AdamW weight decay.")] = 0.01
    betas: Annotated[tuple[float, float], Field(description="AdamW betas.")] = (0.9, 0.999)
    eps: Annotated[float, Field(gt=0, description="AdamW epsilon.")] = 1e-8
    warmup_steps: Annotated[int, Field(ge=0, description="Linear warm-up steps (optimizer steps).")] = 0
    warmup_ratio: Annotated[
        float | None, Field(ge=0, le=1, description="Warm-up as a fraction of all steps; overrides warmup_steps.")
    ] = None
    scheduler: Annotated[Literal["constant", "cosine"], Field(description="Decay after warm-up.")] = "constant"
    min_lr_ratio: Annotated[float, Field(ge=0, le=1, description="Cosine decays to lr * min_lr_ratio.")] = 0.0
    grad_clip: Annotated[float | None, Field(gt=0, description="Clip the global gradient norm; null: no clipping.")] = (
        1.0
    )
