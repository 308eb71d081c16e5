"""rlkit.trainer.speed and rlkit.trainer.memory_plan: what each `auto` resolves to, and why, on made-up machines and
models; the token budget and whether the rollout sleeps, by hand; the header lines and how the engines receive the
values."""

import pytest

from rlkit.config import RunConfig, build_config
from rlkit.config.auto import AUTO, Choice
from rlkit.distributed import DistInfo
from rlkit.engines.memory import ModelFacts
from rlkit.trainer.memory_plan import MemoryFacts, expect_rollout_sleep, resolve_memory, settle_memory
from rlkit.trainer.speed import (
    BUDGET,
    CHECKPOINTING,
    COMPILE,
    FROM_UPDATE,
    PACKING,
    ROLLOUT_LOGPROBS,
    ROLLOUT_SLEEP,
    SHARING,
    MachineFacts,
    SpeedPlan,
    parse_header_line,
    resolve_static,
)

GiB = 2**30
H200 = 140 * GiB
GPU = MachineFacts(on_cuda=True, world_size=1, gpu_total_bytes=H200, flash_varlen=True)
CPU = MachineFacts(on_cuda=False)
# SmolLM2-135M and the built-in tiny model (the numbers of their configs).
SMOL = ModelFacts(134_515_008, 134_515_008, hidden_size=576, num_layers=30, intermediate_size=1536, num_heads=9,
                  num_kv_heads=3, head_dim=64, vocab_size=49152)
TINY = ModelFacts(115_264, 115_264, hidden_size=64, num_layers=2, intermediate_size=128, num_heads=4, num_kv_heads=2,
                  head_dim=16, vocab_size=320)
QWEN_7B = ModelFacts(7_615_616_512, 7_615_616_512, hidden_size=3584, num_layers=28, intermediate_size=18944,
                     num_heads=28, num_kv_heads=4, head_dim=128, vocab_size=152064)
ON_POLICY = "algorithm.mini_batch_size=16"  # = data.train_batch_size: one optimizer step per batch
DEEPSPEED = "engine.name=deepspeed"
UNITS = "engine.fsdp2.units"


def plan(*overrides: str, machine: MachineFacts = GPU, model: ModelFacts = SMOL, critic=None) -> SpeedPlan:
    return resolve_static(build_config(RunConfig, None, list(overrides)), machine, model, critic=critic)


# key, overrides, machine, model, the value, a piece of the reason ("set": given by the config)
RULES = [
    (PACKING, [], CPU, SMOL, False, "CPU, the fixed default"),
    (PACKING, [], GPU, SMOL, True, "flash varlen kernel: no padding is computed"),
    (PACKING, ["engine.remove_padding=true"], GPU, SMOL, False, "engine.remove_padding=true trims"),
    (PACKING, ["engine.precision=fp32"], GPU, SMOL, False, "fp32 compute: the flash varlen kernel takes bf16"),
    (PACKING, [], MachineFacts(True, 1, H200, flash_varlen=False), SMOL, False, "no flash varlen kernel"),
    (PACKING, [], GPU, ModelFacts(**{**SMOL.__dict__, "packing_blocker": "it uses sliding-window attention"}),
     False, "the model cannot be packed: it uses sliding-window attention"),
    (PACKING, ["engine.pack_sequences=false"], GPU, SMOL, False, "set"),
    (SHARING, [], CPU, SMOL, False, "CPU, the fixed default"),
    (SHARING, ["engine.pack_sequences=true"], CPU, SMOL, False, "CPU, the fixed default"),
    (SHARING, [], GPU, SMOL, "if_fewer_micro_batches", "where that takes fewer micro-batches than whole rows"),
    (SHARING, ["engine.share_prompts=if_fewer_micro_batches"], GPU, SMOL, "if_fewer_micro_batches", "set"),
    (SHARING, ["engine.precision=fp32"], GPU, SMOL, False, "engine.pack_sequences is off"),
    (SHARING, ["engine.share_prompts=false"], GPU, SMOL, False, "set"),
    (SHARING, ["engine.share_prompts=true", "engine.pack_sequences=true"], CPU, SMOL, True, "set"),
    (COMPILE, [], CPU, SMOL, False, "CPU, the fixed default"),
    (COMPILE, [], GPU, SMOL, True, "134.5M parameters; the first steps compile"),
    (COMPILE, [], GPU, TINY, False, "0.1M parameters: too small for compiling to pay"),
    (COMPILE, ["engine.torch_compile=true"], CPU, TINY, True, "set"),
    # ZeRO-3 compiles too, on torch's own F.linear (rlkit.engines.deepspeed.ds_config)
    (COMPILE, [DEEPSPEED, "engine.deepspeed.zero_stage=3"], GPU, SMOL, True, "134.5M parameters"),
    (BUDGET, [], CPU, SMOL, None, "CPU, the fixed default"),
    (BUDGET, ["engine.max_tokens_per_micro_batch=16384"], GPU, SMOL, 16384, "set"),
    (BUDGET, ["engine.max_tokens_per_micro_batch=null"], GPU, SMOL, None, "set"),
    (CHECKPOINTING, [], CPU, SMOL, False, "CPU, the fixed default"),
    (CHECKPOINTING, ["engine.gradient_checkpointing=true"], GPU, SMOL, True, "set"),
    (ROLLOUT_LOGPROBS, [], CPU, SMOL, True, "CPU, the fixed default"),
    (ROLLOUT_LOGPROBS, [], GPU, SMOL, False, "rollout/logprob_abs_diff is not reported"),
    (ROLLOUT_LOGPROBS, [ON_POLICY, "algorithm.reuse_rollout_logprobs=true"], GPU, SMOL, True,
     "algorithm.reuse_rollout_logprobs reads them"),
    (ROLLOUT_LOGPROBS, ["algorithm.rollout_is_cap=2.0"], GPU, SMOL, True, "algorithm.rollout_is_cap reads them"),
    (ROLLOUT_LOGPROBS, ["rollout.return_logprobs=true"], GPU, SMOL, True, "set"),
    (ROLLOUT_SLEEP, [], CPU, SMOL, True, "CPU, the fixed default"),
    (ROLLOUT_SLEEP, ["rollout.sleep=false"], GPU, SMOL, False, "set"),
    (ROLLOUT_SLEEP, ["placement.mode=split"], GPU, SMOL, False, "the rollout engines have GPUs of their own"),
    (ROLLOUT_SLEEP, ["rollout.name=vllm", "rollout.vllm.sleep_level=0"], GPU, SMOL, False,
     "rollout.vllm's own options keep its memory"),
    (ROLLOUT_SLEEP, ["rollout.name=sglang", "rollout.sglang.release_memory=false"], GPU, SMOL, False,
     "rollout.sglang's own options keep its memory"),
    (FROM_UPDATE, [ON_POLICY], CPU, SMOL, False, "CPU, the fixed default"),
    (FROM_UPDATE, [ON_POLICY], GPU, SMOL, True, "on-policy, one optimizer step per batch"),
    (FROM_UPDATE, [], GPU, SMOL, False, "algorithm.mini_batch_size=8 < data.train_batch_size=16: the later "
                                        "mini-batches need the policy from before the update"),
    (FROM_UPDATE, [ON_POLICY, "algorithm.ppo_epochs=2"], GPU, SMOL, False, "algorithm.ppo_epochs=2: the later epochs"),
    (FROM_UPDATE, [ON_POLICY, "algorithm.reuse_rollout_logprobs=true"], GPU, SMOL, False,
     "reuse_rollout_logprobs replaces the old log-prob pass"),
    (FROM_UPDATE, [ON_POLICY, "algorithm.use_kl_in_reward=true"], GPU, SMOL, False,
     "use_kl_in_reward needs the old log-probs before the update"),
    (FROM_UPDATE, [ON_POLICY, "algorithm.rollout_is_cap=2.0"], GPU, SMOL, False, "rollout_is_cap compares"),
    (FROM_UPDATE, [ON_POLICY, "algorithm.old_logprobs_from_update=false"], GPU, SMOL, False, "set"),
    ("engine.deepspeed.zero_stage", [DEEPSPEED], CPU, SMOL, 3, "CPU, the fixed default"),
    ("engine.deepspeed.zero_stage", [DEEPSPEED], GPU, SMOL, 2, "one GPU: the same memory as ZeRO-3 there"),
    # 8 GPUs, SmolLM2: 2 x 134.5M + 16 x 134.5M / 8 bytes = 0.5 GiB a GPU, under a quarter of 140 GiB.
    ("engine.deepspeed.zero_stage", [DEEPSPEED], MachineFacts(True, 8, H200, True), SMOL, 2,
     "8 GPUs, ZeRO-2's state 0.5 GiB a GPU, a quarter of one is 35.0 GiB: no weight gathering"),
    # 2 GPUs, 7B: 2 x 7.62G + 16 x 7.62G / 2 bytes = 70.9 GiB a GPU, over 35 GiB.
    ("engine.deepspeed.zero_stage", [DEEPSPEED], MachineFacts(True, 2, H200, True), QWEN_7B, 3,
     "2 GPUs, ZeRO-2's state 70.9 GiB a GPU, a quarter of one is 35.0 GiB: ZeRO-3 partitions the weights too"),
    ("engine.deepspeed.zero_stage", [DEEPSPEED, "engine.deepspeed.offload_param=true"], GPU, SMOL, 3,
     "offload_param: only ZeRO-3"),
    ("engine.deepspeed.zero_stage", [DEEPSPEED, "engine.deepspeed.zero_stage=1"], GPU, SMOL, 1, "set"),
    (UNITS, [], CPU, SMOL, "layers", "CPU, the fixed default"),
    # one GPU, SmolLM2: 8 x 134.5M bytes = 1.0 GiB, under 5% of 140 GiB
    (UNITS, [], GPU, SMOL, "model", "one GPU, the whole model's gathered weights and gradients 1.0 GiB, 5% of the "
                                    "GPU is 7.0 GiB: one unit, no per-layer hooks"),
    (UNITS, [], MachineFacts(True, 2, H200, True), SMOL, "layers", "2 GPUs: a layer's weights are gathered while"),
    # one GPU, 7B: 8 x 7.62G bytes = 56.7 GiB, over 7 GiB
    (UNITS, [], GPU, QWEN_7B, "layers", "gradients 56.7 GiB, 5% of the GPU is 7.0 GiB: a unit per layer holds less"),
    (UNITS, ["engine.fsdp2.cpu_offload=true"], GPU, SMOL, "layers", "cpu_offload: the weights come from the CPU"),
    (UNITS, ["engine.fsdp2.units=layers"], GPU, SMOL, "layers", "set"),
]


@pytest.mark.parametrize("key, overrides, machine, model, value, reason", RULES,
                         ids=[f"{row[0].rpartition('.')[2]}-{index}" for index, row in enumerate(RULES)])
def test_each_rule_and_its_reason(key, overrides, machine, model, value, reason):
    choice = plan(*overrides, machine=machine, model=model).choices[key]
    assert choice.value == value
    if reason == "set":
        assert choice.forced
    else:
        assert not choice.forced and reason in choice.reason, choice.reason


def test_on_cpu_every_auto_is_the_fixed_default():
    # Exactly the values before `auto` existed, so CPU runs and the test suite run what they ran.
    cpu = plan(DEEPSPEED, machine=CPU, model=TINY)
    assert {key: choice.value for key, choice in cpu.choices.items()} == {
        PACKING: False, SHARING: False, COMPILE: False, BUDGET: None, CHECKPOINTING: False, ROLLOUT_LOGPROBS: True,
        ROLLOUT_SLEEP: True, FROM_UPDATE: False, "engine.deepspeed.zero_stage": 3}
    assert cpu.pending == ()
    assert plan(machine=CPU, model=TINY).choices[UNITS].value == "layers"


def test_on_a_gpu_the_budget_and_checkpointing_wait_for_the_memory():
    gpu = plan()
    assert gpu.pending == (BUDGET, CHECKPOINTING, ROLLOUT_SLEEP) and BUDGET not in gpu.choices
    # Until then the engines are built with the fixed defaults; the other options already resolved.
    section = gpu.engine_section(build_config(RunConfig, None, []).engine)
    assert (section.max_tokens_per_micro_batch, section.gradient_checkpointing) == (None, False)
    assert (section.pack_sequences, section.share_prompts, section.torch_compile) == \
        (True, "if_fewer_micro_batches", True)


def test_the_config_keeps_auto_and_engines_get_resolved_copies():
    cfg = build_config(RunConfig, None, [DEEPSPEED, "engine.torch_compile=false"])
    gpu = resolve_static(cfg, GPU, SMOL)
    section, options = gpu.engine_section(cfg.engine), gpu.engine_options(cfg.engine)
    assert (section.pack_sequences, section.torch_compile, options.zero_stage) == (True, False, 2)
    assert (cfg.engine.pack_sequences, cfg.engine.options.zero_stage) == (AUTO, AUTO)  # untouched
    # An engine built outside a run (tests, benchmarks) reads `auto` as the fixed default.
    assert cfg.engine.resolve_auto().pack_sequences is False and cfg.engine.options.resolve_auto().zero_stage == 3


# -- the budget by hand -------------------------------------------------------------------------------------
# SmolLM2 in bf16, packed, eager (engine.torch_compile=false: compiled layers keep less, by hand in
# test_compiled_layers_take_less_a_token), on one 16 GiB GPU (so that the reserve is its 2 GiB floor: 10% would be
# 1.6 GiB); sequences of at most 1024 + 256 = 1280 tokens; a mini-batch of 256 sequences on this rank.
# Per token without checkpointing 816,916 bytes, with it 92,952 (tests/unit/engines/test_memory.py), x 1.2 headroom:
# 980,299.2 and 111,542.4. Still to come: gradients and moments 12 x 134,515,008 + gathered bf16 weights
# 2 x 134,515,008 = 1,883,210,112 bytes; one 2048-token chunk of 49152 logits: 26 x 2048 x 49152 = 2,617,245,696.
SMALL_GPU = 16 * GiB
EAGER = "engine.torch_compile=false"


def budget(free: int, *overrides: str, batch_sequences: int = 256, awake: bool = False, total: int = SMALL_GPU
           ) -> SpeedPlan:
    """resolve_memory at `free` bytes; `awake`: measured with the rollout awake, whether it sleeps pending (else
    the rollout is set to sleep, and the memory is what is free once it slept)."""
    cfg = build_config(RunConfig, None, [EAGER, *overrides] + ([] if awake else ["rollout.sleep=true"]))
    static = resolve_static(cfg, MachineFacts(True, 1, total, True), SMOL)
    return resolve_memory(static, cfg, model=SMOL, trained=[SMOL], memory=MemoryFacts(free, total),
                          world_size=1, longest=1280, batch_sequences=batch_sequences, rollout_awake=awake)


def test_the_budget_from_free_memory_by_hand():
    # 12 GiB free = 12,884,901,888 - 2 GiB (2,147,483,648) - 1,883,210,112 - 2,617,245,696 = 6,236,962,432 usable:
    # 6,236,962,432 / 980,299.2 = 6362.3 tokens, 6144 after rounding down to a multiple of 256. One sequence of
    # 1280 tokens fits without checkpointing.
    resolved = budget(12 * GiB)
    assert resolved.value(BUDGET) == 6144 and resolved.value(CHECKPOINTING) is False
    assert "6362 tokens fit without it, one sequence of the longest length needs 1280" in \
        resolved.choices[CHECKPOINTING].reason
    assert resolved.choices[BUDGET].reason == (
        "12.0 GiB free once the rollout engine slept, less 2.0 kept back, 1.8 for gradients and optimizer state "
        "to come and 2.4 for a chunk's logits: 5.8 GiB at 0.93 MiB a token")
    assert resolved.pending == ()


def test_compiled_layers_take_less_a_token():
    # Issue 17's workload on an H200 (140 GiB here), compiled as auto does: 68 GiB free beside the awake rollout
    # engine, 73,014,444,032 - 14 GiB kept back - 1,883,210,112 - 2,617,245,696 = 53,481,602,688 usable. A token
    # takes 578,836 bytes with compiled layers (test_memory.py), x 1.2 = 694,603.2: 76,996.3 tokens, 76,800 in
    # multiples of 256, where eager layers' 980,299.2 a token give 54,556.
    cfg = build_config(RunConfig, None, [])
    static = resolve_static(cfg, GPU, SMOL)
    assert static.value(COMPILE) is True
    resolved = resolve_memory(static, cfg, model=SMOL, trained=[SMOL], memory=MemoryFacts(68 * GiB, H200),
                              world_size=1, longest=1280, batch_sequences=256, rollout_awake=True)
    assert resolved.value(BUDGET) == 76800 and resolved.value(ROLLOUT_SLEEP) is False
    assert resolved.choices[BUDGET].reason.endswith("49.8 GiB at 0.66 MiB a token")
    eager = build_config(RunConfig, None, [EAGER])
    assert resolve_memory(resolve_static(eager, GPU, SMOL), eager, model=SMOL, trained=[SMOL],
                          memory=MemoryFacts(68 * GiB, H200), world_size=1, longest=1280, batch_sequences=256,
                          rollout_awake=True).value(BUDGET) == 54528


def test_checkpointing_only_when_one_sequence_would_not_fit():
    # 7 GiB free: 868,253,312 usable, 885 tokens without checkpointing (< 1280), so it goes on:
    # 868,253,312 / 111,542.4 = 7784.1 tokens, 7680 after rounding.
    resolved = budget(7 * GiB)
    assert resolved.value(CHECKPOINTING) is True and resolved.value(BUDGET) == 7680
    assert "without it 885 tokens fit, one sequence of the longest length needs 1280" in \
        resolved.choices[CHECKPOINTING].reason
    assert resolved.choices[BUDGET].reason.endswith("a token, with checkpointing")


def test_the_budget_stops_at_the_mini_batch_and_starts_at_one_sequence():
    # 12 GiB holds 6362 tokens, more than 4 sequences of 1280: the budget is the mini-batch's 5120.
    capped = budget(12 * GiB, batch_sequences=4)
    assert capped.value(BUDGET) == 5120 and "capped at this rank's mini-batch, 4 x 1280" in \
        capped.choices[BUDGET].reason
    # 5 GiB: nothing is usable once the reserve, the state to come and the logits are counted. Checkpointing
    # goes on and the budget is one sequence, with a warning.
    starved = budget(5 * GiB)
    assert starved.value(CHECKPOINTING) is True and starved.value(BUDGET) == 1280
    assert "may run out of memory" in starved.notes[0]


def test_a_budget_or_a_sequence_count_that_is_set_decides_checkpointing():
    # 16384 tokens set: 6362 fit without checkpointing at 12 GiB, so it goes on; the budget stays as set.
    set_budget = budget(12 * GiB, "engine.max_tokens_per_micro_batch=16384")
    assert set_budget.value(BUDGET) == 16384 and set_budget.choices[BUDGET].forced
    assert set_budget.value(CHECKPOINTING) is True
    assert "the budget that is set needs 16384" in set_budget.choices[CHECKPOINTING].reason
    # No budget: micro-batches of 16 sequences of up to 1280 tokens need 20480.
    by_count = budget(12 * GiB, "engine.max_tokens_per_micro_batch=null")
    assert by_count.value(BUDGET) is None and by_count.value(CHECKPOINTING) is True
    assert "a micro-batch of 16 sequences of the longest length needs 20480" in \
        by_count.choices[CHECKPOINTING].reason
    # Both set: nothing is left to resolve.
    both = budget(12 * GiB, "engine.max_tokens_per_micro_batch=4096", "engine.gradient_checkpointing=false")
    assert both.choices[CHECKPOINTING] == Choice(False, "set", forced=True)


# -- whether the rollout engine sleeps ------------------------------------------------------------------------
# The same 16 GiB GPU, measured with the rollout engine awake: 12 GiB free holds 6362 tokens without checkpointing.
def test_the_rollout_stays_awake_when_the_whole_mini_batch_fits_beside_it():
    # 4 sequences of 1280 = 5120 tokens <= 6362: the budget is the whole mini-batch, nothing is lost by staying awake.
    awake = budget(12 * GiB, batch_sequences=4, awake=True)
    assert awake.pending == () and awake.value(ROLLOUT_SLEEP) is False
    assert awake.value(BUDGET) == 5120 and awake.value(CHECKPOINTING) is False
    assert awake.choices[ROLLOUT_SLEEP].reason == (
        "beside the awake engine 6362 tokens fit, the whole mini-batch, 4 x 1280 needs 5120: no sleeping and waking "
        "every step")
    assert "12.0 GiB free beside the awake rollout engine" in awake.choices[BUDGET].reason
    # A bigger mini-batch: micro-batches of AWAKE_MIN_TOKENS (32768) are enough. On a 140 GiB GPU with 60 GiB free
    # beside the engine: 64,424,509,440 - 14 GiB kept back - 1,883,210,112 - 2,617,245,696 = 44,891,668,096 usable,
    # / 980,299.2 = 45,793.8 tokens, 45,568 in multiples of 256: three micro-batches for 256 x 1280.
    busy = budget(60 * GiB, awake=True, total=140 * GiB)
    assert busy.value(ROLLOUT_SLEEP) is False and busy.value(BUDGET) == 45568 and busy.pending == ()
    assert busy.choices[ROLLOUT_SLEEP].reason.startswith(
        "beside the awake engine 45793 tokens fit, a micro-batch that keeps the GPU busy needs 32768")


def test_the_rollout_sleeps_when_the_trainer_would_lose_by_it():
    # 256 sequences of 1280: 6362 tokens fit beside it, under 32768: the rollout sleeps and the budget waits for
    # the memory once it slept.
    asleep = budget(12 * GiB, awake=True)
    assert asleep.value(ROLLOUT_SLEEP) is True and asleep.pending == (BUDGET, CHECKPOINTING)
    assert asleep.choices[ROLLOUT_SLEEP].reason == ("beside the awake engine 6362 tokens fit, a micro-batch that "
                                                   "keeps the GPU busy needs 32768")
    # 7 GiB: 885 tokens fit without checkpointing, not 4 sequences of 1280: it sleeps rather than checkpoint.
    tight = budget(7 * GiB, batch_sequences=4, awake=True)
    assert tight.value(ROLLOUT_SLEEP) is True and tight.choices[ROLLOUT_SLEEP].reason == (
        "beside the awake engine 885 tokens fit, the whole mini-batch, 4 x 1280 needs 5120")
    # With checkpointing set, 7784 tokens fit with it: the mini-batch does, and it stays awake.
    forced = budget(7 * GiB, "engine.gradient_checkpointing=true", batch_sequences=4, awake=True)
    assert forced.value(ROLLOUT_SLEEP) is False and forced.value(BUDGET) == 5120
    assert forced.choices[ROLLOUT_SLEEP].reason.startswith("beside the awake engine 7784 tokens fit with checkpointing")
    # A budget that is set decides: 4096 tokens fit beside it at 12 GiB, 16384 do not.
    assert budget(12 * GiB, "engine.max_tokens_per_micro_batch=4096", awake=True).value(ROLLOUT_SLEEP) is False
    assert budget(12 * GiB, "engine.max_tokens_per_micro_batch=16384", awake=True).value(ROLLOUT_SLEEP) is True


class FakeRollout:
    def __init__(self, memory: list[int], slept_free: int):
        self.memory, self.slept_free, self.asleep = memory, slept_free, False

    def sleep(self):
        self.asleep = True
        self.memory[0] = self.slept_free


class FakeEngine:
    def apply_memory_plan(self, **values):
        self.values = values


@pytest.mark.parametrize("batch_sequences, sleeps, measured", [(4, False, 1), (256, True, 2)])
def test_settle_memory_sleeps_the_rollout_only_when_it_decides_to(monkeypatch, batch_sequences, sleeps, measured):
    free, readings = [12 * GiB], []

    def measure(dist):
        readings.append(free[0])
        return MemoryFacts(free[0], SMALL_GPU)

    monkeypatch.setattr("rlkit.trainer.memory_plan.measure_free_memory", measure)
    cfg = build_config(RunConfig, None, [EAGER])
    static = resolve_static(cfg, MachineFacts(True, 1, SMALL_GPU, True), SMOL)
    rollout, engine = FakeRollout(free, slept_free=14 * GiB), FakeEngine()
    settled = settle_memory(static, cfg, engines=[engine], rollout=rollout, dist=DistInfo(), longest=1280,
                            batch_sequences=batch_sequences)
    assert rollout.asleep is sleeps and settled.value(ROLLOUT_SLEEP) is sleeps and settled.pending == ()
    assert readings == [12 * GiB, 14 * GiB][:measured]  # asleep: the budget from what is free once it slept
    assert engine.values == {"max_tokens_per_micro_batch": settled.value(BUDGET), "gradient_checkpointing": False}
    if sleeps:  # 14 GiB: 8,384,446,080 usable / 980,299.2 = 8552.9 tokens, 8448 in multiples of 256
        assert settled.value(BUDGET) == 8448 and "once the rollout engine slept" in settled.choices[BUDGET].reason


def test_an_engine_that_tells_its_memory_is_kept_awake_before_it_starts(monkeypatch):
    # The training engines built, 136 GiB free on a 140 GiB GPU; an engine that leaves half of it free (SGLang at
    # mem_fraction_static 0.5): 68 GiB beside it, 73,014,444,032 - 14 GiB kept back - 1,883,210,112 - 2,617,245,696
    # = 53,481,602,688 usable / 980,299.2 = 54,556.4 tokens (> 32768): it will not sleep, so it starts without the
    # means to. The budget still waits for a measurement with the engine running.
    readings = []

    def measure(dist):
        readings.append("free")
        return MemoryFacts(136 * GiB, H200)

    monkeypatch.setattr("rlkit.trainer.memory_plan.measure_free_memory", measure)
    cfg = build_config(RunConfig, None, [EAGER])
    static = resolve_static(cfg, GPU, SMOL)
    shape = dict(dist=DistInfo(), longest=1280, batch_sequences=256)
    expected = expect_rollout_sleep(static, cfg, free_after_start=lambda free: free // 2, **shape)
    assert expected.value(ROLLOUT_SLEEP) is False and expected.pending == (BUDGET, CHECKPOINTING)
    assert expected.choices[ROLLOUT_SLEEP].reason.startswith(
        "expected before it started, beside the awake engine 54556 tokens fit, a micro-batch that keeps the GPU busy "
        "needs 32768")
    # Where it would sleep (a tenth left free: 13.6 GiB, nothing usable), the measurement decides; an engine that
    # cannot tell its memory is not asked, and nothing is measured.
    assert expect_rollout_sleep(static, cfg, free_after_start=lambda free: free // 10, **shape) is static
    assert expect_rollout_sleep(static, cfg, free_after_start=None, **shape) is static and readings == ["free"] * 2
    # Settled awake: the budget comes from one measurement beside the running engine, which is never put to sleep.
    rollout, engine = FakeRollout([60 * GiB], slept_free=H200), FakeEngine()
    monkeypatch.setattr("rlkit.trainer.memory_plan.measure_free_memory", lambda dist: MemoryFacts(60 * GiB, H200))
    settled = settle_memory(expected, cfg, engines=[engine], rollout=rollout, **shape)
    assert rollout.asleep is False and settled.pending == () and settled.value(BUDGET) == 45568
    assert "60.0 GiB free beside the awake rollout engine" in settled.choices[BUDGET].reason


def test_the_rollout_engine_starts_with_the_sleep_decided_for_it(monkeypatch):
    from types import SimpleNamespace

    from rlkit.trainer import components

    started = []
    monkeypatch.setattr(components.ROLLOUT_ENGINES, "get",
                        lambda name: lambda config, options, *args, **kwargs: started.append(config.sleep))
    cfg = build_config(RunConfig, None, [])
    inputs = SimpleNamespace(model_path="model", tokenizer=None)
    placement = SimpleNamespace(layout=SimpleNamespace(runs_engine=lambda rank: True), rank=0, dist=DistInfo())
    components.build_rollout(cfg, inputs, placement, sleep=Choice(False, "it fits"))
    components.build_rollout(cfg, inputs, placement)  # still pending: the config's value
    assert started == [False, AUTO] and cfg.rollout.sleep == AUTO


def test_sglang_leaves_its_share_of_the_free_memory():
    from rlkit.rollout.sglang_options import SGLangOptions

    assert SGLangOptions(mem_fraction_static=0.75).free_after_start(100 * GiB) == 25 * GiB


# -- the header ---------------------------------------------------------------------------------------------
def test_header_lines_in_order_and_read_back():
    lines = budget(12 * GiB, DEEPSPEED, "rollout.return_logprobs=true").header_lines()
    assert [line.split("=")[0] for line in lines] == [
        f"speed: {key}" for key in (PACKING, SHARING, COMPILE, BUDGET, CHECKPOINTING, ROLLOUT_SLEEP,
                                    ROLLOUT_LOGPROBS, FROM_UPDATE, "engine.deepspeed.zero_stage")]
    assert lines[3].startswith("speed: engine.max_tokens_per_micro_batch=6144 (auto: 12.0 GiB free")
    assert lines[5] == "speed: rollout.sleep=true (set)"
    lines = lines[:5] + lines[6:]
    assert lines[5] == "speed: rollout.return_logprobs=true (set)"
    logged = f"INFO rlkit.trainer.speed: {lines[3]}"
    assert parse_header_line(logged) == (BUDGET, {"value": 6144, "source": "auto",
                                                  "reason": lines[3].split("(auto: ", 1)[1][:-1]})
    assert parse_header_line(lines[5]) == (ROLLOUT_LOGPROBS, {"value": True, "source": "set", "reason": None})
    assert parse_header_line("step 1 | reward 0.5") is None
