"""`auto`, the default of every speed option, and the vocabulary a run resolves it with.

A speed option (`engine.pack_sequences`, `engine.deepspeed.zero_stage`, ...) accepts a concrete value, which a
run uses as given, or `auto`, which the run resolves at its start from the machine and the model
(rlkit.trainer.speed) and prints with its reason. The config itself keeps `auto`: components receive their
section with the resolved values (`Section.resolve_auto`), a copy, as runtime arguments. Where no run resolves
an option, a component built on its own in a test or a benchmark, `auto` stands for the section's
`FIXED_DEFAULTS`: the fixed values from before `auto` existed, which is also what a CPU run resolves to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

AUTO = "auto"


def _one_error(expected: str) -> WrapValidator:
    """One error naming what the option takes, instead of one per member of the union."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("auto_option", f"expected {expected}") from None

    return WrapValidator(validate)


# A switch: true, false, or 'auto'.
AutoSwitch = Annotated[Union[Literal["auto"], bool], _one_error("true, false or 'auto'")]
# Shared prompts (engine.share_prompts): true, false, 'auto', or shared only in a batch where that takes fewer
# micro-batches than whole rows.
SHARE_IF_FEWER = "if_fewer_micro_batches"
AutoSharing = Annotated[Union[Literal["auto", "if_fewer_micro_batches"], bool],
                        _one_error("true, false, 'if_fewer_micro_batches' or 'auto'")]
# A token budget: a positive number, null (no budget), or 'auto'.
AutoTokens = Annotated[Union[Literal["auto"], Annotated[int, Field(ge=1)], None],
                       _one_error("a number of tokens (1 or more), null or 'auto'")]


@dataclass(frozen=True)
class Choice:
    """One resolved option: its value, whether the config set it or `auto` chose it, and why."""

    value: Any
    reason: str
    forced: bool = False  # the config gave a value (`set`) rather than `auto`

    @staticmethod
    def given(value: Any) -> Choice:
        return Choice(value, "set", forced=True)


@dataclass(frozen=True)
class Facts:
    """What a backend's own `auto` options are resolved from (Section.choose_auto), gathered at run start.

    gpu_total_bytes: one GPU's memory, 0 without CUDA. model_parameters: one model's (the policy's); the run
    trains `num_trained_models` of that size (the actor, and the critic), `trainable_parameters` of them in all
    (LoRA: the adapters').
    """

    on_cuda: bool
    world_size: int
    gpu_total_bytes: int
    model_parameters: int
    num_trained_models: int
    trainable_parameters: int
