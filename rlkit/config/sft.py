"""The typed configuration of a supervised fine-tuning run (`rlkit sft`).

It shares the model, engine, optimizer and trainer sections with the RL run (rlkit.config.schema), so a
model, an engine setup or a trainer setting reads the same in both (the optimizer and trainer sections with
SFT's own defaults); only the data section is SFT's own.
`kind: sft` tells `rlkit validate` and `rlkit config show` that a file is an SFT recipe. The defaults are
the embedded default run: the tiny model learns the built-in letters task from demonstrations on the CPU.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from rlkit.config.base import LocalPath
from rlkit.config.schema import (
    EngineConfig,
    FileList,
    ModelConfig,
    OptimConfig,
    Section,
    TrainerConfig,
)


class SFTDataConfig(Section):
    train_files: Annotated[
        FileList,
        Field(description="Demonstration files (.jsonl, .json, .parquet), or 'builtin:<task>' for the "
              "demonstrations of a built-in task (letters, letters-val); one file may be given as a string."),
    ] = ["builtin:letters"]
    val_files: Annotated[
        FileList,
        Field(description="Validation files (a list, or one as a string); their loss is logged as val/loss. Empty "
              "or null for none."),
    ] = ["builtin:letters-val"]
    format: Annotated[
        Literal["auto", "prompt_response", "messages"],
        Field(description="'prompt_response': a prompt (text or messages) and a response (text or assistant "
              "messages), only the response is trained on; 'messages': one conversation, every assistant turn "
              "is trained on; 'auto' picks messages for a file whose first row has messages_key but no "
              "prompt_key."),
    ] = "auto"
    prompt_key: Annotated[
        str,
        Field(description="Key of the prompt; a dotted path reaches into nested records (extra_info.question)."),
    ] = "prompt"
    response_key: Annotated[
        str,
        Field(description="Key of the response; a dotted path reaches into nested records (verl's GSM8K "
              "parquet: extra_info.answer)."),
    ] = "response"
    messages_key: Annotated[
        str, Field(description="Key of the conversation (a list of {role, content}) in the messages format.")
    ] = "messages"
    prompt_format: Annotated[
        Literal["auto", "chat", "raw"],
        Field(description="'chat' renders through the tokenizer's chat template (the response becomes the "
              "assistant turn, its end-of-turn token trained on); 'raw' concatenates the texts and appends "
              "EOS to the response; 'auto' chats when the tokenizer has a template."),
    ] = "auto"
    system_prompt: Annotated[
        str | None, Field(description="System message put before every chat conversation without one.")
    ] = None
    max_length: Annotated[int, Field(ge=2, description="Longest sample (prompt plus response) in tokens.")] = 512
    truncation: Annotated[
        Literal["error", "left", "right"],
        Field(description="An overlong sample: 'error' stops with the file and row; 'left' drops tokens from the "
              "start (the prompt side); 'right' drops them from the end (the response side). Samples left "
              "without response tokens are dropped with a warning."),
    ] = "error"
    shuffle: Annotated[bool, Field(description="Shuffle the training samples each epoch (seeded by trainer.seed).")] = (
        True
    )
    train_batch_size: Annotated[
        int, Field(ge=1, description="Samples per optimizer step over all ranks (the global batch).")
    ] = 16
    micro_batch_size_per_device: Annotated[
        int,
        Field(ge=1, description="Samples per forward/backward on one device; gradients accumulate over the "
              "global batch (memory knob, no effect on the maths)."),
    ] = 8
    max_train_samples: Annotated[int | None, Field(ge=1, description="Use only the first N training samples.")] = None
    max_val_samples: Annotated[int | None, Field(ge=1, description="Use only the first N validation samples.")] = None


class SFTOptimConfig(OptimConfig):
    """`rlkit train`'s optimizer section with SFT's default learning rate (the one the tiny built-in run needs)."""

    lr: Annotated[
        float, Field(gt=0, description="Peak learning rate (a 0.5B model: about 1e-5 for all weights, 1e-4 for LoRA).")
    ] = 1e-2


class SFTTrainerConfig(TrainerConfig):
    """`rlkit train`'s trainer section with SFT's defaults: steps of the built-in run, its own output folder."""

    total_steps: Annotated[
        int | None,
        Field(ge=1, description="Optimizer steps, each over data.train_batch_size samples (the default unless "
              "total_epochs is set); null: total_epochs (or one epoch) of the training data."),
    ] = 60
    output_dir: Annotated[LocalPath, Field(description="Checkpoints, metrics.jsonl, TensorBoard events.")] = (
        "outputs/sft"
    )


class SFTConfig(Section):
    """A supervised fine-tuning run: `rlkit sft`."""

    kind: Annotated[
        Literal["sft"], Field(description="Marks the file as an SFT recipe (for `rlkit validate` and `config show`).")
    ] = "sft"
    model: ModelConfig = ModelConfig()
    data: SFTDataConfig = SFTDataConfig()
    engine: EngineConfig = EngineConfig()
    optim: Annotated[SFTOptimConfig, Field(description="Optimizer and learning-rate schedule.")] = SFTOptimConfig()
    trainer: Annotated[
        SFTTrainerConfig,
        Field(description="Steps, checkpoints, validation and logging; one step is one optimizer step over "
              "data.train_batch_size samples, and validation computes val/loss."),
    ] = SFTTrainerConfig()

    @model_validator(mode="after")
    def _micro_batch_fits(self) -> SFTConfig:
        data = self.data
        if data.micro_batch_size_per_device > data.train_batch_size:
            raise ValueError(
                f"data.micro_batch_size_per_device={data.micro_batch_size_per_device} is larger than "
                f"data.train_batch_size={data.train_batch_size} (the global batch); lower it"
            )
        return self
