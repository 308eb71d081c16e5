"""The training-engine section (`engine:`) and the optimizer section.

`engine` holds the options every training engine reads, `name` (the engine used), and one block per engine
for its own options (`engine.deepspeed.zero_stage`), typed by the engine's registry entry
(rlkit.config.backends).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from rlkit.config.auto import AUTO, SHARE_IF_FEWER, AutoSharing, AutoSwitch, AutoTokens
from rlkit.config.backends import BackendSection
from rlkit.config.base import Section

Precision = Literal["auto", "fp32", "bf16"]


class EngineConfig(BackendSection):
    registry_name: ClassVar[str] = "TRAIN_ENGINES"
    section_key: ClassVar[str] = "engine"
    FIXED_DEFAULTS: ClassVar[dict[str, Any]] = {
        "gradient_checkpointing": False, "torch_compile": False, "pack_sequences": False,
        "max_tokens_per_micro_batch": None, "share_prompts": False,
    }

    name: Annotated[
        str,
        Field(description="The training engine: a registered name (`rlkit list` shows them) or "
              "'module:attr'. Its own options are read from the block of that name (engine.<name>.OPTION)."),
    ] = "fsdp2"
    precision: Annotated[
        Precision, Field(description="Compute precision: 'auto' is bf16 on GPU and fp32 on CPU.")
    ] = "auto"
    gradient_checkpointing: Annotated[
        AutoSwitch,
        Field(description="Recompute each decoder layer's activations in backward instead of keeping them. 'auto': "
              "on only when the token budget without it would not hold one sequence of the longest length (GPU; "
              "off on CPU)."),
    ] = AUTO
    torch_compile: Annotated[
        AutoSwitch,
        Field(description="torch.compile every decoder layer's forward and the per-chunk log-prob/entropy "
              "arithmetic, fusing their elementwise work. The first passes pay for compiling (once per engine, "
              "and once more when sequence lengths change, after which shapes are dynamic). 'auto': on on a GPU "
              "for models of 50M parameters or more; off on CPU and for smaller models."),
    ] = AUTO
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
        AutoSwitch,
        Field(description="Run every forward (log-probs, values, training) on one row holding the real tokens of "
              "the micro-batch's sequences back to back, with a variable-length causal attention that never "
              "crosses sequences (PyTorch's flash varlen kernel on CUDA in bf16/fp16, an exact per-sequence loop "
              "elsewhere); outputs come back as (B, T). No padding is computed; same numbers up to float "
              "rounding. Replaces remove_padding. 'auto': on where the flash kernel runs (CUDA, bf16/fp16, "
              "torch >= 2.10) and the model's attention can take it, unless remove_padding is on; off on CPU."),
    ] = AUTO
    share_prompts: Annotated[
        AutoSharing,
        Field(description="With pack_sequences: the rows of a micro-batch that share a prompt (a group's samples) "
              "keep it once in the packed row, and each response attends to that one copy, so the model runs "
              "each prompt once instead of once per sample: fewer tokens and less activation memory, same numbers "
              "up to float rounding; the token budget counts a shared prompt once a micro-batch. "
              "'if_fewer_micro_batches': share in a batch only where that takes fewer micro-batches than whole "
              "rows (needs a token budget; on an H200 sharing was faster where it saved a micro-batch, slower at "
              "the same count: docs/benchmarks.md). 'auto': 'if_fewer_micro_batches' on a GPU with packing, "
              "false on CPU. true and 'if_fewer_micro_batches' need pack_sequences and, on a GPU, a flash kernel "
              "that passes a check at the start."),
    ] = AUTO
    max_tokens_per_micro_batch: Annotated[
        AutoTokens,
        Field(description="Form micro-batches by a token budget instead of a count of sequences: rows x padded "
              "width (the trimmed width with remove_padding; the number of real tokens with pack_sequences) "
              "stays within it. Sequences are grouped by length; every rank runs the same number of "
              "micro-batches; a sequence over the budget runs alone. null: micro-batches of "
              "algorithm.micro_batch_size_per_device sequences (data.micro_batch_size_per_device in SFT). "
              "'auto': on a GPU, the tokens whose activations fit in the memory left once the engines are "
              "built and the rollout engine sleeps (docs/speed_defaults.md); null on CPU."),
    ] = AUTO

    @model_validator(mode="after")
    def _packing_replaces_trimming(self) -> EngineConfig:
        if self.pack_sequences is True and self.remove_padding:
            raise ValueError(
                "engine.pack_sequences and engine.remove_padding are both true: packing already removes all "
                "padding; set engine.remove_padding=false"
            )
        if self.share_prompts in (True, SHARE_IF_FEWER) and self.pack_sequences is False:
            raise ValueError(f"engine.share_prompts={_shown(self.share_prompts)} needs engine.pack_sequences (true or "
                             "auto): prompts are shared within a packed row")
        return self


def _shown(value: Any) -> str:
    """An option's value as a user writes it on the command line."""
    return str(value).lower() if isinstance(value, bool) else str(value)


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
