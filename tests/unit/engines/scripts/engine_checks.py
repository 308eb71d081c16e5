"""Checks that every training engine must pass, shared by test_fsdp2_engine.py and test_deepspeed_engine.py.

Each takes engines the test built (FSDP2 or DeepSpeed at some ZeRO stage), so one body states the
contract for both; a test adds its engine's own assertions around the call. conftest.py has pytest
rewrite the asserts here as in a test file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import pytest
import torch
from engine_cases import (
    LORA,
    MICRO_BATCH,
    critic_step,
    hf_logprobs,
    max_difference,
    policy_loss,
    policy_step,
    weights,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlkit.batch import Batch
from rlkit.distributed import DistInfo
from rlkit.engines.base import ModelOutput, TrainEngine

CHECKPOINT_FILES = ["model.safetensors", "optimizer.pt", "scheduler.json"]


def check_logprobs_match_full_logits(engine, plain_model, batch: Batch, chunk_size: int, temperature: float) -> None:
    engine.scorer.chunk_size, engine.scorer.temperature = chunk_size, temperature
    assert isinstance(engine, TrainEngine)
    output = engine.compute_logprobs(batch, micro_batch_size=3, with_entropy=True)
    expected_logprobs, expected_entropy = hf_logprobs(plain_model, batch, temperature)
    assert output.logprobs.shape == (8, 6) and output.logprobs.dtype == torch.float32
    assert output.logprobs.device.type == "cpu" and output.values is None
    torch.testing.assert_close(output.logprobs, expected_logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.entropy, expected_entropy, rtol=0, atol=1e-5)


def check_critic_values_and_value_loss_steps(critic, batch: Batch) -> None:
    values = critic.compute_values(batch, micro_batch_size=3)
    assert values.shape == (8, 6) and values.dtype == torch.float32 and values.device.type == "cpu"
    names = [name for name, _ in critic.full_weights()]
    assert "score.weight" in names and "lm_head.weight" not in names

    batch["returns"] = torch.full_like(values, 0.5)  # an easy target: the values start near 0
    losses = [critic_step(critic, batch, DistInfo())["vf_loss"] for _ in range(4)]
    assert losses[3] < losses[0] / 2
    assert not torch.equal(critic.compute_values(batch, micro_batch_size=3), values)


def check_non_finite_gradient_skips_the_step(engine, batch: Batch) -> None:
    """A NaN loss: the step is skipped, nothing moves, the schedule does not advance."""
    before = weights(engine)
    batch["old_logprobs"] = engine.compute_logprobs(batch, micro_batch_size=4).logprobs

    def nan_loss(output: ModelOutput, micro):
        loss, metrics = policy_loss(10.0)(output, micro)
        return loss * float("nan"), metrics

    engine.forward_backward(batch, nan_loss, micro_batch_size=4)
    result = engine.optimizer_step()
    assert result["skipped"] == 1.0 and math.isnan(result["grad_norm"])
    assert max_difference(weights(engine), before) == 0.0
    assert engine.scheduler.last_epoch == 0  # the schedule did not advance


def check_save_load_resumes_bit_for_bit(engine, build: Callable, batch: Batch, directory: Path) -> None:
    """Two steps, save into `directory`, load into `build()`: the same weights and the same next step."""
    for _ in range(2):
        policy_step(engine, batch, DistInfo())
    engine.save(directory)
    assert sorted(p.name for p in directory.iterdir()) == CHECKPOINT_FILES
    resumed = build()
    resumed.load(directory)
    assert max_difference(weights(resumed), weights(engine)) == 0.0
    first, second = policy_step(engine, batch, DistInfo()), policy_step(resumed, batch, DistInfo())
    assert first == second  # loss, grad norm and lr
    assert max_difference(weights(resumed), weights(engine)) == 0.0


def check_export_loads_and_generates(engine, model_dir: str, batch: Batch, directory: Path) -> None:
    policy_step(engine, batch, DistInfo())
    engine.export_hf(directory)
    assert (directory / "generation_config.json").is_file()
    exported = AutoModelForCausalLM.from_pretrained(directory)
    assert max_difference(weights(engine), dict(exported.state_dict())) == 0.0

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer("repeat the letter a 3 times", return_tensors="pt")
    generated = exported.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def check_gradient_checkpointing_gives_the_same_step(plain, checkpointed, batch: Batch) -> None:
    assert policy_step(plain, batch, DistInfo())["loss"] == pytest.approx(
        policy_step(checkpointed, batch, DistInfo())["loss"], abs=1e-6
    )
    assert max_difference(weights(plain), weights(checkpointed)) < 1e-6


def check_torch_compile_gives_the_same_logprobs_and_loss(plain, compiled, batch: Batch) -> None:
    """engine.torch_compile: log-probs and entropy to 1e-5, then one forward_backward on each engine with the
    same loss (gradients are left for the caller to compare: each engine holds them its own way)."""
    from torch._dynamo.utils import counters

    expected = plain.compute_logprobs(batch, micro_batch_size=MICRO_BATCH, with_entropy=True)
    # The decoder layers of every test share one code object: graphs an earlier test of the process compiled
    # would serve this one too, and nothing new would be compiled here.
    torch._dynamo.reset()
    graphs_before = counters["stats"]["unique_graphs"]
    output = compiled.compute_logprobs(batch, micro_batch_size=MICRO_BATCH, with_entropy=True)
    assert counters["stats"]["unique_graphs"] > graphs_before  # dynamo did compile (or recompile) something
    torch.testing.assert_close(output.logprobs, expected.logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.entropy, expected.entropy, rtol=0, atol=1e-5)
    batch["old_logprobs"] = expected.logprobs
    num_tokens = batch["response_mask"].sum().item()
    losses = [engine.forward_backward(batch, policy_loss(num_tokens), micro_batch_size=MICRO_BATCH)["loss"]
              for engine in (plain, compiled)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


# -- LoRA ---------------------------------------------------------------------------------------------
def check_lora_trains_only_the_adapters(engine, batch: Batch, full_parameters: Callable) -> None:
    """`full_parameters(engine)`: every parameter of the scorer, gathered and copied, in the scorer's names."""
    trainable = {name for name, param in engine.scorer.named_parameters() if param.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    before = full_parameters(engine)
    policy_step(engine, batch, DistInfo())
    for name, tensor in full_parameters(engine).items():
        assert (not torch.equal(tensor, before[name])) == (name in trainable), name


def check_lora_base_model_logprobs_are_the_base_models(engine, plain_model, batch: Batch) -> None:
    policy_step(engine, batch, DistInfo())  # the adapters are no longer zero
    base = engine.compute_logprobs(batch, micro_batch_size=4, base_model=True, with_entropy=True)
    expected_logprobs, expected_entropy = hf_logprobs(plain_model, batch)
    torch.testing.assert_close(base.logprobs, expected_logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(base.entropy, expected_entropy, rtol=0, atol=1e-5)
    adapted = engine.compute_logprobs(batch, micro_batch_size=4).logprobs
    assert (adapted - base.logprobs).abs().max() > 1e-4


def check_lora_full_weights_equal_peft_merge(engine, adapters: dict[str, torch.Tensor], model_dir: str) -> None:
    """`adapters`: the engine's full LoRA tensors in peft's names."""
    from peft import LoraConfig, get_peft_model

    copy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=LORA.rank, lora_alpha=LORA.alpha, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert not copy.load_state_dict(adapters, strict=False).unexpected_keys
    merged = dict(copy.merge_and_unload().state_dict())
    assert max_difference(weights(engine), merged) == 0.0


def check_lora_save_load_keeps_only_the_adapters(engine, build: Callable, batch: Batch, directory: Path) -> None:
    from safetensors.torch import load_file

    policy_step(engine, batch, DistInfo())
    engine.save(directory)
    saved = load_file(directory / "model.safetensors")
    assert saved and all(".lora_A." in name or ".lora_B." in name for name in saved)
    resumed = build()
    resumed.load(directory)
    assert policy_step(engine, batch, DistInfo()) == policy_step(resumed, batch, DistInfo())
    assert max_difference(weights(resumed), weights(engine)) == 0.0


def check_lora_critic_trains_adapters_and_the_value_head(critic, batch: Batch) -> None:
    trainable = {name for name, param in critic.scorer.named_parameters() if param.requires_grad}
    assert {"model.base_model.model.score.weight", "model.base_model.model.score.bias"} <= trainable
    before = weights(critic)
    assert critic_step(critic, batch, DistInfo())["skipped"] == 0.0
    after = weights(critic)
    assert list(after) == list(before) and "score.weight" in after
    assert not torch.equal(after["score.weight"], before["score.weight"])


# -- world size 2 against world size 1 ----------------------------------------------------------------
def check_world2_policy_step(world2: dict, engine, batch: Batch, tolerance: float) -> None:
    step = policy_step(engine, batch, DistInfo())
    assert world2["policy_step"]["loss"] == pytest.approx(step["loss"], abs=tolerance)
    assert world2["policy_step"]["grad_norm"] == pytest.approx(step["grad_norm"], abs=tolerance)
    assert max_difference(world2["policy_weights"], weights(engine)) < tolerance


def check_world2_critic(world2: dict, critic, batch: Batch, tolerance: float) -> None:
    values = critic.compute_values(batch, micro_batch_size=MICRO_BATCH)
    torch.testing.assert_close(world2["values"], values, rtol=0, atol=tolerance)
    step = critic_step(critic, batch, DistInfo())
    assert world2["critic_step"]["vf_loss"] == pytest.approx(step["vf_loss"], abs=tolerance)
    assert max_difference(world2["critic_weights"], weights(critic)) < tolerance


def check_world2_lora(world2: dict, engine, batch: Batch, tolerance: float) -> None:
    step = policy_step(engine, batch, DistInfo())
    assert world2["lora_step"]["loss"] == pytest.approx(step["loss"], abs=tolerance)
    assert max_difference(world2["lora_weights"], weights(engine)) < tolerance
    # merged full weights == peft merge_and_unload of the exported adapter
    assert world2["lora_merge_difference"] == 0.0


def check_memory_plan_after_build_equals_building_with_it(late, built_with, batch: Batch) -> None:
    """TrainEngine.apply_memory_plan: activation checkpointing and a token budget taken once the engine is built
    (as a run does when they are `auto`) give what an engine built with them gives, bit for bit."""
    from rlkit.engines.building import activation_checkpointing_is_on
    from rlkit.models.lora import hf_model_of

    late.apply_memory_plan(max_tokens_per_micro_batch=40, gradient_checkpointing=True)
    assert activation_checkpointing_is_on(hf_model_of(late.scorer.model)) and late.batching.max_tokens == 40
    for key in ("loss", "grad_norm"):
        assert policy_step(late, batch, DistInfo())[key] == policy_step(built_with, batch, DistInfo())[key]
    assert max_difference(weights(late), weights(built_with)) == 0.0
    late.apply_memory_plan(max_tokens_per_micro_batch=None, gradient_checkpointing=False)  # and off again
    assert not activation_checkpointing_is_on(hf_model_of(late.scorer.model)) and late.batching.max_tokens is None
