"""The speed options a run resolves once its engines are built, from the free GPU memory (the others are
rlkit.trainer.speed's): whether the colocated rollout engine sleeps while the trainer works, the token budget of
a micro-batch, and activation checkpointing. rlkit.engines.memory estimates what a token takes;
docs/speed_defaults.md has the rules and the arithmetic.

    expect_rollout_sleep  before the rollout engine is built, where it tells what memory it will leave free:
                     whether it sleeps, from that (so that an engine which never sleeps starts without the means)
    settle_memory    in a run's setup: measures with the rollout engine awake, decides whether it sleeps, puts it
                     to sleep and measures again if so, and hands the budget to the training engines
    resolve_memory   the arithmetic from one measurement, a pure function
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from rlkit.config.auto import Choice
from rlkit.distributed import DistInfo, all_reduce_min
from rlkit.engines.building import compute_dtype
from rlkit.engines.memory import ModelFacts, activation_bytes_per_token, logits_bytes, pending_state_bytes
from rlkit.trainer.speed import BUDGET, CHECKPOINTING, COMPILE, PACKING, ROLLOUT_SLEEP, SpeedPlan

GiB, MiB = 2**30, 2**20
RESERVE_SHARE, MIN_RESERVE_BYTES = 0.10, 2 * GiB  # kept back: NCCL buffers, DeepSpeed's buckets, the allocator's slack
HEADROOM = 1.2  # the caching allocator's fragmentation over micro-batches of changing shapes
BUDGET_STEP = 256  # budgets are rounded down to a multiple of this
# A rollout engine stays awake when micro-batches of this many tokens fit beside it (or the whole mini-batch, if
# smaller): from there on, more micro-batches a step cost a few launches each, less than sleeping and waking the
# engine every step (0.27 s a step for vLLM on SmolLM2-135M, docs/benchmarks.md).
AWAKE_MIN_TOKENS = 32768


def expect_rollout_sleep(plan: SpeedPlan, cfg: Any, *, free_after_start: Callable[[int], int] | None,
                         dist: DistInfo, longest: int, batch_sequences: int) -> SpeedPlan:
    """Whether the rollout engine sleeps, decided before it is built, from the memory it will leave free
    (`free_after_start(free bytes now)`, None where the engine cannot tell): settled only when it stays awake, so
    that it starts without what sleeping needs (SGLang's memory saver slows its generation). Where it would sleep
    the decision stays pending, for settle_memory to take from a measurement. A collective, like settle_memory."""
    if ROLLOUT_SLEEP not in plan.pending or free_after_start is None:
        return plan
    assert plan.model is not None, "a pending plan comes from plan_speed"
    now = measure_free_memory(dist)
    expected = MemoryFacts(free_after_start(now.free_bytes), now.total_bytes)
    decided = resolve_memory(plan, cfg, model=plan.model, trained=list(plan.trained), memory=expected,
                             world_size=dist.world_size, longest=longest, batch_sequences=batch_sequences,
                             rollout_awake=True)
    sleep = decided.choices[ROLLOUT_SLEEP]
    if sleep.value:
        return plan
    awake = Choice(False, f"expected before it started, {sleep.reason}")
    return replace(plan, choices={**plan.choices, ROLLOUT_SLEEP: awake},
                   pending=tuple(key for key in plan.pending if key != ROLLOUT_SLEEP))


def settle_memory(plan: SpeedPlan, cfg: Any, *, engines: list[Any], rollout: Any, dist: DistInfo, longest: int,
                  batch_sequences: int) -> SpeedPlan:
    """The plan's pending keys, once every engine is built. Whether the rollout engine (None in SFT, and on a rank
    whose engine runs from another) sleeps while the trainer works is decided first, from the free memory with
    it awake; if it sleeps, it is put to sleep and the memory measured again. Each training engine then takes
    the budget and checkpointing (TrainEngine.apply_memory_plan). A plan with nothing pending comes back as it
    is. A collective: every rank measures as often as the others, and all decide alike (the least free memory)."""
    if not plan.pending:
        return plan
    assert plan.model is not None, "a pending plan comes from plan_speed"

    def resolve(plan: SpeedPlan, *, rollout_awake: bool) -> SpeedPlan:
        return resolve_memory(plan, cfg, model=plan.model, trained=list(plan.trained),
                              memory=measure_free_memory(dist), world_size=dist.world_size, longest=longest,
                              batch_sequences=batch_sequences, rollout_awake=rollout_awake)

    if ROLLOUT_SLEEP in plan.pending:
        plan = resolve(plan, rollout_awake=True)
    if plan.pending:
        sleeps = plan.choices.get(ROLLOUT_SLEEP, Choice(True, "")).value
        if rollout is not None and sleeps:
            rollout.sleep()
        plan = resolve(plan, rollout_awake=not sleeps)
    for engine in engines:
        engine.apply_memory_plan(max_tokens_per_micro_batch=plan.value(BUDGET),
                                 gradient_checkpointing=plan.value(CHECKPOINTING))
    return plan


@dataclass(frozen=True)
class MemoryFacts:
    """GPU memory once the engines are built (with the rollout engine awake or asleep): free (the least over
    ranks) and total, of one GPU."""

    free_bytes: int
    total_bytes: int


def measure_free_memory(dist: DistInfo) -> MemoryFacts:
    """What the allocator can still get on this rank's GPU (the least over ranks): cached blocks go back first."""
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(torch.device(dist.device))
    return MemoryFacts(int(all_reduce_min(free, device=dist.device)), total)


@dataclass(frozen=True)
class MemoryRoom:
    """The arithmetic of the budget (bytes): what is free, less what is kept back, what the first update still
    allocates, and one log-prob chunk's logits; `usable` is left for activations."""

    free: int
    reserve: int
    pending: int
    logits: int
    rollout_awake: bool = False

    @property
    def usable(self) -> int:
        return max(0, self.free - self.reserve - self.pending - self.logits)

    def describe(self, per_token: float) -> str:
        when = "beside the awake rollout engine" if self.rollout_awake else "once the rollout engine slept"
        return (f"{self.free / GiB:.1f} GiB free {when}, less {self.reserve / GiB:.1f} "
                f"kept back, {self.pending / GiB:.1f} for gradients and optimizer state to come and "
                f"{self.logits / GiB:.1f} for a chunk's logits: {self.usable / GiB:.1f} GiB at "
                f"{per_token / MiB:.2f} MiB a token")


def resolve_memory(plan: SpeedPlan, cfg: Any, *, model: ModelFacts, trained: list[ModelFacts], memory: MemoryFacts,
                   world_size: int, longest: int, batch_sequences: int, rollout_awake: bool = False) -> SpeedPlan:
    """The plan's pending keys (whether the rollout engine sleeps, the budget, checkpointing) from the free memory.

    model: the policy, whose activations the estimate counts (a critic's take less: no logits); trained: every
    model that trains (their gradients and optimizer state are still to come). longest: the longest sequence in
    tokens; batch_sequences: the most sequences one engine call gets (this rank's mini-batch).
    rollout_awake: `memory` was measured (or is expected) with the rollout engine awake; whether it sleeps is
    decided from it when pending. It stays awake when the trainer loses little by it: without checkpointing, the
    budget (when auto) reaches AWAKE_MIN_TOKENS or the whole mini-batch, or the budget that is set fits. Else the
    plan comes back with the rollout to sleep and the budget and checkpointing still pending, for a second
    measurement once it sleeps.
    """
    assert rollout_awake or ROLLOUT_SLEEP not in plan.pending, "whether the rollout sleeps is decided awake first"
    engine = cfg.engine
    dtype_bytes = compute_dtype(engine, "cuda").itemsize
    packed, compiled = plan.value(PACKING), bool(plan.value(COMPILE))
    room = MemoryRoom(memory.free_bytes, max(int(RESERVE_SHARE * memory.total_bytes), MIN_RESERVE_BYTES),
                      pending_state_bytes(trained, world_size), logits_bytes(engine.logprob_chunk_size,
                                                                             model.vocab_size), rollout_awake)

    def per_token(checkpointing: bool) -> float:
        return HEADROOM * activation_bytes_per_token(model, dtype_bytes, checkpointing=checkpointing, packed=packed,
                                                     longest=longest, compiled=compiled)

    choices = dict(plan.choices)
    notes: list[str] = []
    if CHECKPOINTING in plan.pending:
        needed, what = _tokens_needed(choices.get(BUDGET), cfg, longest)
        fitting = math.floor(room.usable / per_token(False))
        if fitting >= needed:
            choices[CHECKPOINTING] = Choice(False, f"{fitting} tokens fit without it, {what} needs {needed}")
        else:
            choices[CHECKPOINTING] = Choice(True, f"without it {fitting} tokens fit, {what} needs {needed}")
    if BUDGET in plan.pending:
        checkpointing = bool(choices[CHECKPOINTING].value)
        cost = per_token(checkpointing)
        tokens = math.floor(room.usable / cost)
        tokens = tokens // BUDGET_STEP * BUDGET_STEP if tokens >= BUDGET_STEP else tokens
        reason = room.describe(cost) + (", with checkpointing" if checkpointing else "")
        batch_tokens = batch_sequences * longest
        if tokens > batch_tokens:
            tokens, reason = batch_tokens, f"{reason}; capped at this rank's mini-batch, {batch_sequences} x {longest}"
        elif tokens < longest:
            note = (f"engine.max_tokens_per_micro_batch: the estimate fits {tokens} tokens, less than one sequence of "
                    f"{longest}; the run may run out of memory (set a smaller rollout memory share, or a budget)")
            tokens, reason = longest, f"{reason}; raised to one sequence of {longest}: may not fit"
            notes.append(note)
        choices[BUDGET] = Choice(tokens, reason)
    if ROLLOUT_SLEEP in plan.pending:
        if BUDGET in plan.pending and batch_sequences * longest <= max(AWAKE_MIN_TOKENS, longest):
            needed, what = batch_sequences * longest, f"the whole mini-batch, {batch_sequences} x {longest}"
        elif BUDGET in plan.pending:
            needed, what = max(AWAKE_MIN_TOKENS, longest), "a micro-batch that keeps the GPU busy"
        else:
            needed, what = _tokens_needed(choices[BUDGET], cfg, longest)
        # Without checkpointing unless it is set: fitting `needed` that way also resolved checkpointing off above.
        checkpointing = CHECKPOINTING not in plan.pending and bool(choices[CHECKPOINTING].value)
        fitting = math.floor(room.usable / per_token(checkpointing))
        fit = f"beside the awake engine {fitting} tokens fit{' with checkpointing' if checkpointing else ''}"
        if fitting < needed:
            sleep = Choice(True, f"{fit}, {what} needs {needed}")
            return replace(plan, choices={**plan.choices, ROLLOUT_SLEEP: sleep},
                           pending=tuple(key for key in plan.pending if key != ROLLOUT_SLEEP))
        choices[ROLLOUT_SLEEP] = Choice(False, f"{fit}, {what} needs {needed}: no sleeping and waking every step")
    return replace(plan, choices=choices, pending=(), notes=tuple(notes))


def _tokens_needed(budget: Choice | None, cfg: Any, longest: int) -> tuple[int, str]:
    """The tokens one micro-batch must be able to hold, and what they are: the budget that is set, micro-batches
    of micro_batch_size_per_device sequences, or (the budget being auto) one sequence of the longest length."""
    if budget is None:
        return longest, "one sequence of the longest length"
    if budget.value is None:
        section = getattr(cfg, "algorithm", None) or cfg.data  # RL: algorithm's; SFT: data's
        size = section.micro_batch_size_per_device
        return size * longest, f"a micro-batch of {size} sequences of the longest length"
    return budget.value, "the budget that is set"
