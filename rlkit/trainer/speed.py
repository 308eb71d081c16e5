"""The speed options of a run, resolved at its start: every `auto` becomes a value with a one-line reason.

    resolve_static   before any engine is built, from the machine, the model's config and the run's config:
                     packing, torch.compile, the rollout's log-probs, old log-probs from the update, and the
                     engine block's own options (the ZeRO stage, rlkit.engines.deepspeed.options)
    the rest     once the engines are built, from the free GPU memory (rlkit.trainer.memory_plan): whether the
                     rollout engine sleeps while the trainer works, the token budget of a micro-batch, activation
                     checkpointing; until then they are the plan's `pending` keys

On CPU every `auto` is the fixed default from before `auto` existed, so CPU runs and the test suite run what they
ran. A value the config gives is used as given ("set"). Nothing is written into the config: components receive
their sections with the values filled in (`SpeedPlan.engine_section`, ...), copies, and rank 0 prints one line
per option in the run header (`header_lines`), which `rlkit bench` reads back (`parse_header_line`). The rules
and the arithmetic are in docs/speed_defaults.md.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import torch

from rlkit.config.auto import AUTO, SHARE_IF_FEWER, Choice, Facts
from rlkit.config.base import Section
from rlkit.config.engines import EngineConfig
from rlkit.distributed import DistInfo
from rlkit.engines.building import compute_dtype
from rlkit.engines.memory import ModelFacts
from rlkit.engines.varlen_attention import flash_aligns_keys_at_end, flash_varlen_available
from rlkit.errors import ConfigError

log = logging.getLogger(__name__)
CPU = "CPU, the fixed default"
MIN_COMPILE_PARAMETERS = 50_000_000  # below this, kernel launches dominate and compiling does not pay
PACKING, SHARING, COMPILE = "engine.pack_sequences", "engine.share_prompts", "engine.torch_compile"
BUDGET, CHECKPOINTING = "engine.max_tokens_per_micro_batch", "engine.gradient_checkpointing"
ROLLOUT_LOGPROBS, FROM_UPDATE = "rollout.return_logprobs", "algorithm.old_logprobs_from_update"
ROLLOUT_SLEEP = "rollout.sleep"
HEADER_ORDER = (PACKING, SHARING, COMPILE, BUDGET, CHECKPOINTING, ROLLOUT_SLEEP, ROLLOUT_LOGPROBS, FROM_UPDATE)


@dataclass(frozen=True)
class MachineFacts:
    """Where the run trains. gpu_total_bytes: one GPU's memory (0 on CPU); flash_varlen: torch has the kernel
    packed sequences run on; flash_keys_at_end: that kernel, run here, serves shared prompts (checked on the GPU
    at the start of a run that asks for them, rlkit.engines.varlen_attention.flash_aligns_keys_at_end)."""

    on_cuda: bool
    world_size: int = 1
    gpu_total_bytes: int = 0
    flash_varlen: bool = False
    flash_keys_at_end: bool = True

    @staticmethod
    def here(dist: DistInfo, *, check_shared_prompts: bool = False) -> MachineFacts:
        on_cuda = dist.device.startswith("cuda")
        total = torch.cuda.get_device_properties(dist.device).total_memory if on_cuda else 0
        flash = flash_varlen_available()
        checked = check_shared_prompts and on_cuda and flash
        keys_at_end = not checked or flash_aligns_keys_at_end(dist.device)
        return MachineFacts(on_cuda, dist.world_size, total, flash, keys_at_end)


@dataclass(frozen=True)
class SpeedPlan:
    """Every speed option of a run: {dotted key: Choice}. `pending`: the keys rlkit.trainer.memory_plan has yet to fill
    (their engines are built with the fixed defaults until then). `model` and `trained` are the facts of the
    policy and of every model that trains, which memory_plan reads; `notes`, warnings it had."""

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
    machine = MachineFacts.here(dist, check_shared_prompts=cfg.engine.share_prompts is not False)
    return resolve_static(cfg, machine, model, critic=critic)


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
    packing = choose_packing(engine, machine, model)
    choices = {PACKING: packing, SHARING: choose_prompt_sharing(engine, packing, machine),
               COMPILE: choose_compile(engine, machine, model)}
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


def choose_prompt_sharing(engine: EngineConfig, packing: Choice, machine: MachineFacts) -> Choice:
    shares = engine.share_prompts in (True, SHARE_IF_FEWER)
    shown = "true" if engine.share_prompts is True else engine.share_prompts  # as written on the command line
    if shares and not packing.value:
        raise ConfigError(f"engine.share_prompts={shown} needs packing, which is off here "
                          f"({packing.reason or 'set'}); set engine.share_prompts to auto or false")
    misaligned = machine.on_cuda and machine.flash_varlen and not machine.flash_keys_at_end
    if shares and packing.value and misaligned:
        raise ConfigError(f"engine.share_prompts={shown}: torch {torch.__version__}'s flash varlen kernel does not "
                          "let a query sequence shorter than its keys see them all (checked at the start); set "
                          "engine.share_prompts to auto or false")
    if engine.share_prompts != AUTO:
        return Choice.given(engine.share_prompts)
    if not machine.on_cuda:
        return Choice(False, CPU)
    if not packing.value:
        return Choice(False, "engine.pack_sequences is off: prompts are shared within a packed row")
    if misaligned:
        return Choice(False, f"torch {torch.__version__}'s flash varlen kernel does not let a query sequence "
                             "shorter than its keys see them all (checked at the start)")
    # Measured on an H200 (docs/benchmarks.md, tenth and fourteenth sessions): sharing was faster where it saved a
    # micro-batch, and slower at the same count.
    return Choice(SHARE_IF_FEWER, "each batch shares its prompts where that takes fewer micro-batches than whole "
                                  "rows: measured faster there on a GPU, slower at the same count")


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
    """None: decided from the free memory once the engines are built (rlkit.trainer.memory_plan)."""
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
