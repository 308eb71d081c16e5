"""Guards around a training run: non-finite updates follow `trainer.on_nonfinite`, and running out of GPU
memory names the settings that lower it. (A failed setup's clean-up is rlkit.trainer.output_dir's.)

* :func:`check_update`: engines skip an optimizer step whose gradient norm is not finite (a NaN or inf
  loss makes it so) and report ``skipped``; the run warns and goes on (``skip``) or stops (``stop``).
* :func:`explain_out_of_memory`: ``torch.OutOfMemoryError`` in a trainer phase becomes an RlkitError that
  names the phase, the step and the knobs to turn for it.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from rlkit.config.auto import AUTO
from rlkit.errors import RlkitError
from rlkit.trainer.speed import SpeedPlan

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


# -- non-finite updates ---------------------------------------------------------------------------------
def check_update(result: dict[str, float], *, role: str, step: int, policy: str) -> None:
    """React to an optimizer step the engine skipped as non-finite: warn (policy 'skip') or stop ('stop')."""
    if not result.get("skipped"):
        return
    message = (
        f"step {step}: the {role}'s loss or gradient norm is not finite (grad_norm={result.get('grad_norm')}), "
        "so this update was skipped"
    )
    if policy == "stop":
        raise RlkitError(
            f"{message} and trainer.on_nonfinite=stop ends the run. Lower optim.lr or check the rewards and data, "
            "then continue from the last checkpoint (trainer.resume=auto); or set trainer.on_nonfinite=skip"
        )
    log.warning("%s (trainer.on_nonfinite=skip; counted in update/skipped)", message)


# -- out of memory --------------------------------------------------------------------------------------
# The trainer or experience-source method a failure happened in -> (what to call it, which knobs lower its
# memory).
_PHASE_MODULES = ("rlkit.trainer.rl", "rlkit.experience.colocated")
_PHASES = {
    "_sync_weights": ("the weight sync to the rollout engine", ("rollout", "offload")),
    "next_batch": ("rollout (generation)", ("rollout", "offload")),
    "_greedy_baselines": ("rollout (greedy baselines)", ("rollout", "offload")),
    "_refill_with_signal": ("rollout (dynamic sampling)", ("rollout", "offload")),
    "validate": ("validation (generation)", ("rollout", "offload")),
    "_prepare": ("log-prob and value computation", ("micro", "chunk", "offload")),
    "_update": ("the update (forward and backward)", ("micro", "checkpointing", "offload")),
}


def explain_out_of_memory(method: F) -> F:
    """Decorate a trainer method so that torch.OutOfMemoryError becomes an RlkitError naming the phase and
    the settings that lower its memory. The trainer (`self`) gives the config and the step."""

    @functools.wraps(method)
    def guarded(trainer: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(trainer, *args, **kwargs)
        except torch.OutOfMemoryError as error:
            speed = getattr(trainer, "speed", None)  # None when setup has not resolved it yet
            raise RlkitError(out_of_memory_message(error, trainer.cfg, trainer.step, speed)) from error

    return guarded  # type: ignore[return-value]


def out_of_memory_message(error: BaseException, cfg: Any, step: int, speed: SpeedPlan | None = None) -> str:
    """`speed`: the run's resolved speed options, whose budget and checkpointing the advice names (None: the
    config's, an `auto` counting as its fixed default)."""
    phase, kinds = _phase_of(error)
    knobs = [knob for kind in kinds for knob in _knobs(kind, cfg, speed)]
    first_line = (str(error).strip().splitlines() or ["out of memory"])[0]
    return (
        f"ran out of GPU memory in {phase} at step {step} ({first_line}); to use less memory, try: "
        + "; ".join(knobs)
    )


def _phase_of(error: BaseException) -> tuple[str, tuple[str, ...]]:
    """The innermost trainer phase on the traceback."""
    found = ("training", ("rollout", "micro", "checkpointing", "offload"))
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if frame.f_globals.get("__name__") in _PHASE_MODULES and frame.f_code.co_name in _PHASES:
            found = _PHASES[frame.f_code.co_name]
    return found


def _knobs(kind: str, cfg: Any, speed: SpeedPlan | None) -> list[str]:
    rollout, engine, algorithm = cfg.rollout, cfg.engine, cfg.algorithm
    resolved = engine.resolve_auto() if speed is None else speed.engine_section(engine)
    if kind == "rollout":
        return [*_backend_knobs(rollout), f"lower rollout.max_new_tokens (now {rollout.max_new_tokens})"]
    if kind == "micro":
        if resolved.max_tokens_per_micro_batch is not None:
            how = ", chosen by auto" if engine.max_tokens_per_micro_batch == AUTO else ""
            return [f"set a lower engine.max_tokens_per_micro_batch (now {resolved.max_tokens_per_micro_batch}{how})"]
        return [f"lower algorithm.micro_batch_size_per_device (now {algorithm.micro_batch_size_per_device})"]
    if kind == "chunk":
        return [f"lower engine.logprob_chunk_size (now {engine.logprob_chunk_size})"]
    if kind == "checkpointing":
        return [] if resolved.gradient_checkpointing else ["set engine.gradient_checkpointing=true"]
    if kind == "offload":
        return _backend_knobs(engine)
    raise ValueError(f"unknown knob kind {kind!r}")


def _backend_knobs(section: Any) -> list[str]:
    """The memory knobs the selected backend's registry entry names, as advice on its block's current values."""
    where = f"{section.section_key}.{section.name}"
    knobs = section.registry().backend(section.name).memory_knobs
    if not knobs:
        return [f"lower the {section.name} {section.registry().kind}'s memory settings ({where}.*)"]
    advice = []
    for knob in knobs:
        value = getattr(section.options, knob)
        if isinstance(value, bool):
            if not value:
                advice.append(f"set {where}.{knob}=true")
        elif value is None:
            meaning = type(section.options).model_fields[knob].description or ""
            advice.append(f"set {where}.{knob} (now unset: {meaning.rstrip('.')})")
        else:
            advice.append(f"lower {where}.{knob} (now {value})")
    return advice
