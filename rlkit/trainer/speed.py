"""The speed options of a run, resolved at its start: every `auto` becomes a value with a one-line reason.

    resolve_static   before any engine is built, from the machine, the model's config and the run's config:
                     packing, torch.compile, the rollout's log-probs, old log-probs from the update, and the
                     engine block's own options (the ZeRO stage, rlkit.engines.deepspeed.options)
    resolve_memory   once the engines are built, from the free GPU memory: whether the rollout engine sleeps
                     while the trainer works (measured with it awake: it stays awake when the trainer's
                     micro-batches fit beside it), then the token budget of a micro-batch and activation
                     checkpointing (rlkit.engines.memory estimates what a token takes)

On CPU every `auto` is the fixed default from before `auto` existed, so CPU runs and the test suite run what they
ran. A value the config gives is used as given ("set"). Nothing is written into the config: components receive
their sections with the values filled in (`SpeedPlan.engine_section`, ...), copies, and rank 0 prints one line
per option in the run header (`header_lines`), which `rlkit bench` reads back (`parse_header_line`). The rules
and the arithmetic are in docs/speed_defaults.md.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import torch

from rlkit.config.auto import AUTO, Choice, Facts
from rlkit.config.base import Section
from rlkit.config.engines import EngineConfig
from rlkit.distributed import DistInfo, all_reduce_min
from rlkit.engines.building import compute_dtype
from rlkit.engines.memory import (
    ModelFacts,
    activation_bytes_per_token,
    logits_bytes,
    pending_state_bytes,
)
from rlkit.engines.varlen_attention import flash_varlen_available

log = logging.getLogger(__name__)
GiB, MiB = 2**30, 2**20
CPU = "CPU, the fixed default"
MIN_COMPILE_PARAMETERS = 50_000_000  # below this, kernel launches dominate and compiling does not pay
RESERVE_SHARE, MIN_RESERVE_BYTES = 0.10, 2 * GiB  # kept back: NCCL buffers, DeepSpeed's buckets, the allocator's slack
HEADROOM = 1.2  # the caching allocator's fragmentation over micro-batches of changing shapes
BUDGET_STEP = 256  # budgets are rounded down to a multiple of this
# A rollout engine stays awake when micro-batches of this many tokens fit beside it (or the whole mini-batch, if
# smaller): from there on, more micro-batches a step cost a few launches each, less than sleeping and waking the
# engine every step (0.27 s a step for vLLM on SmolLM2-135M, docs/benchmarks.md).
AWAKE_MIN_TOKENS = 32768
PACKING, COMPILE = "engine.pack_sequences", "engine.torch_compile"
BUDGET, CHECKPOINTING = "engine.max_tokens_per_micro_batch", "engine.gradient_checkpointing"
ROLLOUT_LOGPROBS, FROM_UPDATE = "rollout.return_logprobs", "algorithm.old_logprobs_from_update"
ROLLOUT_SLEEP = "rollout.sleep"
HEADER_ORDER = (PACKING, COMPILE, BUDGET, CHECKPOINTING, ROLLOUT_SLEEP, ROLLOUT_LOGPROBS, FROM_UPDATE)


@dataclass(frozen=True)
class MachineFacts:
    """Where the run trains. gpu_total_bytes: one GPU's memory (0 on CPU); flash_varlen: torch has the kernel
    packed sequences run on."""

    on_cuda: bool
    world_size: int = 1
    gpu_total_bytes: int = 0
    flash_varlen: bool = False

    @staticmethod
    def here(dist: DistInfo) -> MachineFacts:
        on_cuda = dist.device.startswith("cuda")
        total = torch.cuda.get_device_properties(dist.device).total_memory if on_cuda else 0
        return MachineFacts(on_cuda, dist.world_size, total, flash_varlen_available())


@dataclass(frozen=True)
class SpeedPlan:
    """Every speed option of a run: {dotted key: Choice}. `pending`: the keys resolve_memory has yet to fill
    (their engines are built with the fixed defaults until then). `model` and `trained` are the facts of the
    policy and of every model that trains, which resolve_memory reads; `notes`, warnings it had."""

    choices: dict[str, Choice]
    pending: tuple[str, ...] = ()
    model: ModelFacts | None = None
    trained: tuple[ModelFacts, ...] = ()
    notes: tuple[str, ...] = ()

    def value(self, key: str) -> Any:
        return self.choices[key].value

    def engine_section(self, engine: EngineConfig) -> EngineConfig:
        """The engine section the engines are built with: its `auto` options resolved (pending ones fixed)."""
        return engine.resolve_auto(**{key.removeprefix("engine."): choice.value
                                      for key, choice in self.choices.items()
                                      if key.startswith("engine.") and key.count(".") == 1})

    def engine_options(self, engine: EngineConfig) -> Any:
        """The selected engine's own options block with its `auto` options resolved (None: it takes none)."""
        options = engine.options
        if not isinstance(options, Section):
            return options
        prefix = f"engine.{engine.name}."
        return options.resolve_auto(**{key.removeprefix(prefix): choice.value
                                       for key, choice in self.choices.items() if key.startswith(prefix)})

    def header_lines(self) -> list[str]:
        """One line per option, `speed: KEY=VALUE (set)` or `speed: KEY=VALUE (auto: REASON)`."""
        order = {key: index for index, key in enumerate(HEADER_ORDER)}
        keys = sorted(self.choices, key=lambda key: order.get(key, len(order)))
        return [f"speed: {key}={json.dumps(self.choices[key].value)} "
                f"({'set' if self.choices[key].forced else 'auto: ' + self.choices[key].reason})" for key in keys]


_HEADER_LINE = re.compile(r"speed: (?P<key>[\w.]+)=(?P<value>\S+) \((?P<how>set|auto)(?:: (?P<reason>.*))?\)\s*$")


def parse_header_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """(key, {"value", "source", "reason"}) of a header line (anywhere in a log line), or None."""
    found = _HEADER_LINE.search(line)
    if found is None:
        return None
    return found["key"], {"value": json.loads(found["value"]), "source": found["how"], "reason": found["reason"]}


# -- a run's plan ----------------------------------------------------------------------------------------
def plan_speed(cfg: Any, dist: DistInfo, *, model_path: str, critic_path: str | None = None) -> SpeedPlan:
    """resolve_static on this machine and the model folders (read on the meta device: no weights load)."""
    model = ModelFacts.of(model_path, trust_remote_code=cfg.model.trust_remote_code, lora=cfg.model.lora)
    critic = None if critic_path is None else ModelFacts.of(
        critic_path, trust_remote_code=cfg.model.trust_remote_code, lora=cfg.model.lora)
    return resolve_static(cfg, MachineFacts.here(dist), model, critic=critic)


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
        if rollout is not None and plan.choices.get(ROLLOUT_SLEEP, Choice(True, "")).value:
            rollout.sleep()
        plan = resolve(plan, rollout_awake=False)
    for engine in engines:
        engine.apply_memory_plan(max_tokens_per_micro_batch=plan.value(BUDGET),
                                 gradient_checkpointing=plan.value(CHECKPOINTING))
    return plan


def log_header(plan: SpeedPlan, dist: DistInfo) -> None:
    """The plan's lines (and warnings) on rank 0, at INFO."""
    if not dist.is_main:
        return
    for line in plan.header_lines():
        log.info("%s", line)
    for note in plan.notes:
        log.warning("%s", note)


# -- before the engines ---------------------------------------------------------------------------------
def resolve_static(cfg: Any, machine: MachineFacts, model: ModelFacts, *, critic: ModelFacts | None = None
                   ) -> SpeedPlan:
    """The plan before any engine is built. `cfg` is a RunConfig, or an SFTConfig (no rollout, no old log-probs);
    `critic` is the critic's model when the run trains one."""
    engine = cfg.engine
    choices = {PACKING: choose_packing(engine, machine, model), COMPILE: choose_compile(engine, machine, model)}
    pending = []
    for key in (BUDGET, CHECKPOINTING):
        value = getattr(engine, key.removeprefix("engine."))
        if value != AUTO:
            choices[key] = Choice.given(value)
        elif not machine.on_cuda:
            choices[key] = Choice(EngineConfig.FIXED_DEFAULTS[key.removeprefix("engine.")], CPU)
        else:
            pending.append(key)
    if getattr(cfg, "rollout", None) is not None:
        choices[ROLLOUT_LOGPROBS] = choose_rollout_logprobs(cfg, machine)
        choices[FROM_UPDATE] = choose_old_logprobs_from_update(cfg, machine)
        sleep = choose_rollout_sleep(cfg, machine)
        if sleep is None:
            pending.append(ROLLOUT_SLEEP)
        else:
            choices[ROLLOUT_SLEEP] = sleep
    trained = [model] if critic is None else [model, critic]
    facts = Facts(on_cuda=machine.on_cuda, world_size=machine.world_size, gpu_total_bytes=machine.gpu_total_bytes,
                  model_parameters=model.num_parameters, num_trained_models=len(trained),
                  trainable_parameters=sum(each.trainable_parameters for each in trained))
    if isinstance(engine.options, Section):
        for option, choice in engine.options.choose_auto(facts).items():
            choices[f"engine.{engine.name}.{option}"] = choice
    return SpeedPlan(choices, tuple(pending), model, tuple(trained))


def choose_packing(engine: EngineConfig, machine: MachineFacts, model: ModelFacts) -> Choice:
    if engine.pack_sequences != AUTO:
        return Choice.given(engine.pack_sequences)
    if not machine.on_cuda:
        return Choice(False, CPU)
    if engine.remove_padding:
        return Choice(False, "engine.remove_padding=true trims the padding instead")
    if compute_dtype(engine, "cuda") not in (torch.bfloat16, torch.float16):
        return Choice(False, "fp32 compute: the flash varlen kernel takes bf16 or fp16")
    if not machine.flash_varlen:
        return Choice(False, f"torch {torch.__version__} has no flash varlen kernel; torch 2.10 and newer have it")
    if model.packing_blocker is not None:
        return Choice(False, f"the model cannot be packed: {model.packing_blocker}")
    return Choice(True, "CUDA, bf16, flash varlen kernel: no padding is computed")


def choose_compile(engine: EngineConfig, machine: MachineFacts, model: ModelFacts) -> Choice:
    if engine.torch_compile != AUTO:
        return Choice.given(engine.torch_compile)
    if not machine.on_cuda:
        return Choice(False, CPU)
    size = f"{model.num_parameters / 1e6:.1f}M parameters"
    if model.num_parameters < MIN_COMPILE_PARAMETERS:
        return Choice(False, f"{size}: too small for compiling to pay (under 50M)")
    return Choice(True, f"{size}; the first steps compile, about half a minute per engine and again when lengths "
                        "change")


def choose_rollout_logprobs(cfg: Any, machine: MachineFacts) -> Choice:
    algorithm = cfg.algorithm
    if cfg.rollout.return_logprobs != AUTO:
        return Choice.given(cfg.rollout.return_logprobs)
    if not machine.on_cuda:
        return Choice(True, CPU)
    if algorithm.reuse_rollout_logprobs:
        return Choice(True, "algorithm.reuse_rollout_logprobs reads them")
    if algorithm.rollout_is_cap is not None:
        return Choice(True, "algorithm.rollout_is_cap reads them")
    return Choice(False, "nothing reads them, the trainer computes its own; rollout/logprob_abs_diff is not "
                         "reported: set rollout.return_logprobs=true for it")


def choose_rollout_sleep(cfg: Any, machine: MachineFacts) -> Choice | None:
    """None: decided from the free memory once the engines are built (resolve_memory)."""
    if cfg.rollout.sleep != AUTO:
        return Choice.given(cfg.rollout.sleep)
    if not machine.on_cuda:
        return Choice(True, CPU)
    if cfg.placement.mode == "split":
        return Choice(False, "placement.mode=split: the rollout engines have GPUs of their own")
    if getattr(cfg.rollout.options, "keeps_memory", False):
        return Choice(False, f"rollout.{cfg.rollout.name}'s own options keep its memory")
    return None


def choose_old_logprobs_from_update(cfg: Any, machine: MachineFacts) -> Choice:
    """The config validator's conditions (RunConfig._old_logprobs_from_update_needs_nothing_before_it)."""
    algorithm, batch = cfg.algorithm, cfg.data.train_batch_size
    if algorithm.old_logprobs_from_update != AUTO:
        return Choice.given(algorithm.old_logprobs_from_update)
    if not machine.on_cuda:
        return Choice(False, CPU)
    later = "need the policy from before the update"
    if algorithm.ppo_epochs > 1:
        return Choice(False, f"algorithm.ppo_epochs={algorithm.ppo_epochs}: the later epochs {later}")
    if algorithm.mini_batch_size != batch:
        return Choice(False, f"algorithm.mini_batch_size={algorithm.mini_batch_size} < data.train_batch_size="
                             f"{batch}: the later mini-batches {later}")
    if algorithm.reuse_rollout_logprobs:
        return Choice(False, "algorithm.reuse_rollout_logprobs replaces the old log-prob pass instead")
    if algorithm.use_kl_in_reward:
        return Choice(False, "algorithm.use_kl_in_reward needs the old log-probs before the update")
    if algorithm.rollout_is_cap is not None:
        return Choice(False, "algorithm.rollout_is_cap compares the old log-probs with the rollout's")
    return Choice(True, "on-policy, one optimizer step per batch: the update's own log-probs are the old ones, "
                        "one forward pass less")


# -- after the engines ----------------------------------------------------------------------------------
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
    rollout_awake: `memory` was measured with the rollout engine awake, and whether it sleeps is pending. It
    stays awake when the trainer loses little by it: without checkpointing, the budget (when auto) reaches
    AWAKE_MIN_TOKENS or the whole mini-batch, or the budget that is set fits. Else the plan comes back with the
    rollout to sleep and the budget and checkpointing still pending, for a second measurement once it sleeps.
    """
    assert rollout_awake or ROLLOUT_SLEEP not in plan.pending, "whether the rollout sleeps is decided awake first"
    engine = cfg.engine
    dtype_bytes = compute_dtype(engine, "cuda").itemsize
    packed = plan.value(PACKING)
    room = MemoryRoom(memory.free_bytes, max(int(RESERVE_SHARE * memory.total_bytes), MIN_RESERVE_BYTES),
                      pending_state_bytes(trained, world_size), logits_bytes(engine.logprob_chunk_size,
                                                                             model.vocab_size), rollout_awake)

    def per_token(checkpointing: bool) -> float:
        return HEADROOM * activation_bytes_per_token(model, dtype_bytes, checkpointing=checkpointing, packed=packed,
                                                     longest=longest)

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
    if rollout_awake:
        assert ROLLOUT_SLEEP in plan.pending, "measure with the rollout awake only to decide whether it sleeps"
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
