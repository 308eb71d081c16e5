"""FSDP2Engine at world size 1, in the pytest process (the engine starts a 1-rank group by itself)."""

import copy

import pytest
import torch
from engine_cases import LORA, MICRO_BATCH, hf_logprobs, max_difference, policy_loss, policy_step, weights
from engine_checks import (
    check_critic_values_and_value_loss_steps,
    check_export_loads_and_generates,
    check_gradient_checkpointing_gives_the_same_step,
    check_logprobs_match_full_logits,
    check_lora_base_model_logprobs_are_the_base_models,
    check_lora_critic_trains_adapters_and_the_value_head,
    check_lora_full_weights_equal_peft_merge,
    check_lora_save_load_keeps_only_the_adapters,
    check_lora_trains_only_the_adapters,
    check_memory_plan_after_build_equals_building_with_it,
    check_non_finite_gradient_skips_the_step,
    check_save_load_resumes_bit_for_bit,
    check_torch_compile_gives_the_same_logprobs_and_loss,
)
from fsdp2_cases import build_engine
from transformers import AutoModelForCausalLM

from rlkit.distributed import DistInfo
from rlkit.errors import CheckpointError, ConfigError


def full_parameters(engine) -> dict[str, torch.Tensor]:
    """Every parameter of the scorer, gathered and copied, in the scorer's names."""
    return {name: param.full_tensor().clone() for name, param in engine.scorer.named_parameters()}


@pytest.mark.parametrize("chunk_size, temperature", [(3, 1.0), (1000, 1.0), (4, 0.7)])
def test_logprobs_match_full_logits_of_the_hf_model(tiny_model_dir, plain_model, batch, chunk_size, temperature):
    check_logprobs_match_full_logits(build_engine(tiny_model_dir), plain_model, batch, chunk_size, temperature)


def test_reference_equals_actor_at_init(tiny_model_dir, batch):
    actor, ref = build_engine(tiny_model_dir), build_engine(tiny_model_dir, role="ref", offload_ref=True)
    assert ref.optimizer is None
    actor_logprobs = actor.compute_logprobs(batch, micro_batch_size=MICRO_BATCH).logprobs
    assert torch.equal(ref.compute_logprobs(batch, micro_batch_size=3).logprobs, actor_logprobs)


def test_full_weights_are_the_hf_state_dict(tiny_model_dir, plain_model):
    engine = build_engine(tiny_model_dir)
    assert max_difference(weights(engine), dict(plain_model.state_dict())) == 0.0


def test_full_weights_on_one_rank_are_copies_without_a_gather(tiny_model_dir, plain_model, monkeypatch):
    from torch.distributed.tensor import DTensor

    engine = build_engine(tiny_model_dir)
    # one rank holds every tensor whole: full_tensor's all-gather machinery (~0.15 ms of host time a tensor) is
    # skipped; each tensor is still a copy of its own, which a consumer may keep or change
    monkeypatch.setattr(DTensor, "full_tensor", lambda self, **kwargs: pytest.fail("full_tensor on one rank"))
    streamed = dict(engine.full_weights())
    assert max_difference(streamed, dict(plain_model.state_dict())) == 0.0
    for tensor in streamed.values():
        tensor.add_(1.0)
    assert max_difference(weights(engine), dict(plain_model.state_dict())) == 0.0


def test_critic_values_and_value_loss_steps(tiny_model_dir, batch):
    check_critic_values_and_value_loss_steps(build_engine(tiny_model_dir, role="critic"), batch)


def test_forward_backward_sums_metrics_and_step_reports(tiny_model_dir, batch):
    engine = build_engine(tiny_model_dir)
    batch["old_logprobs"] = engine.compute_logprobs(batch, micro_batch_size=4).logprobs
    num_tokens = batch["response_mask"].sum().item()
    metrics = engine.forward_backward(batch, policy_loss(num_tokens), micro_batch_size=MICRO_BATCH)
    # four micro-batch shares of the global loss add up to the loss of one pass over the whole batch
    whole = engine.forward_backward(batch, policy_loss(num_tokens), micro_batch_size=8)
    assert metrics["loss"] == pytest.approx(whole["loss"], abs=1e-6)
    step = engine.optimizer_step()
    assert set(step) == {"grad_norm", "lr", "skipped"} and step["skipped"] == 0.0
    assert step["lr"] == pytest.approx(1e-2) and step["grad_norm"] > 0


def test_non_finite_gradient_skips_the_step(tiny_model_dir, batch):
    engine = build_engine(tiny_model_dir)
    check_non_finite_gradient_skips_the_step(engine, batch)
    assert all(param.grad is None for param in engine.scorer.parameters())
    assert policy_step(engine, batch, DistInfo())["skipped"] == 0.0


def test_save_load_resumes_bit_for_bit(tiny_model_dir, batch, tmp_path):
    check_save_load_resumes_bit_for_bit(
        build_engine(tiny_model_dir), lambda: build_engine(tiny_model_dir), batch, tmp_path / "checkpoint"
    )


def test_load_of_an_incomplete_checkpoint_names_the_file(tiny_model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        engine = build_engine(tiny_model_dir)
        (tmp_path / "model.safetensors").write_bytes(b"")
        engine.load(tmp_path)


def test_export_loads_with_from_pretrained_and_generates(tiny_model_dir, batch, tmp_path):
    check_export_loads_and_generates(build_engine(tiny_model_dir), tiny_model_dir, batch, tmp_path / "export")


def test_gradient_checkpointing_gives_the_same_step(tiny_model_dir, batch):
    plain, checkpointed = build_engine(tiny_model_dir), build_engine(tiny_model_dir, gradient_checkpointing=True)
    check_gradient_checkpointing_gives_the_same_step(plain, checkpointed, batch)


def test_bf16_keeps_fp32_master_weights_and_a_bf16_reference(tiny_model_dir, plain_model, batch):
    actor = build_engine(tiny_model_dir, precision="bf16")
    ref = build_engine(tiny_model_dir, role="ref", precision="bf16")
    logprobs = actor.compute_logprobs(batch, micro_batch_size=4).logprobs
    assert torch.equal(ref.compute_logprobs(batch, micro_batch_size=4).logprobs, logprobs)
    assert (logprobs - hf_logprobs(plain_model, batch)[0]).abs().max() < 0.1
    assert {tensor.dtype for _, tensor in actor.full_weights()} == {torch.float32}
    assert {tensor.dtype for _, tensor in ref.full_weights()} == {torch.bfloat16}
    assert policy_step(actor, batch, DistInfo())["skipped"] == 0.0


# -- LoRA ---------------------------------------------------------------------------------------------
def test_lora_trains_only_the_adapters(tiny_model_dir, batch):
    check_lora_trains_only_the_adapters(build_engine(tiny_model_dir, lora=LORA), batch, full_parameters)


def test_lora_base_model_logprobs_are_the_base_models(tiny_model_dir, plain_model, batch):
    check_lora_base_model_logprobs_are_the_base_models(build_engine(tiny_model_dir, lora=LORA), plain_model, batch)


def test_lora_full_weights_equal_peft_merge_and_unload(tiny_model_dir, batch):
    engine = build_engine(tiny_model_dir, lora=LORA)
    policy_step(engine, batch, DistInfo())
    adapters = {
        name.removeprefix("model."): param.full_tensor()
        for name, param in engine.scorer.named_parameters()
        if "lora_" in name
    }
    check_lora_full_weights_equal_peft_merge(engine, adapters, tiny_model_dir)


def test_base_model_without_lora_is_an_error(tiny_model_dir, batch):
    with pytest.raises(ConfigError, match="LoRA"):
        build_engine(tiny_model_dir).compute_logprobs(batch, micro_batch_size=4, base_model=True)


def test_lora_save_load_keeps_only_the_adapters_and_resumes_exactly(tiny_model_dir, batch, tmp_path):
    def build():
        return build_engine(tiny_model_dir, lora=LORA, gradient_checkpointing=True)

    check_lora_save_load_keeps_only_the_adapters(build(), build, batch, tmp_path)


def test_lora_critic_trains_adapters_and_the_value_head(tiny_model_dir, batch):
    critic = build_engine(tiny_model_dir, role="critic", lora=LORA)
    check_lora_critic_trains_adapters_and_the_value_head(critic, batch)


def test_gradients_are_clipped_to_grad_clip_before_the_step(tiny_model_dir, batch):
    engine = build_engine(tiny_model_dir)  # grad_clip=1.0
    norms_at_step = []

    def record_norm(optimizer, args, kwargs):
        grads = [param.grad for param in engine.scorer.parameters() if param.grad is not None]
        norms_at_step.append(engine._global_grad_norm(grads))

    engine.optimizer.register_step_pre_hook(record_norm)
    assert policy_step(engine, batch, DistInfo())["grad_norm"] > 1.0
    assert norms_at_step == [pytest.approx(1.0, rel=1e-5)]


def test_the_optimizer_steps_all_dtensor_parameters_with_multi_tensor_kernels(tiny_model_dir, batch, monkeypatch):
    """torch's AdamW takes its per-parameter loop for DTensors unless foreach is asked for: a dozen kernels per
    parameter a step (272 parameters on SmolLM2-135M)."""
    import torch.optim.adam as adam

    def per_parameter(*args, **kwargs):
        raise AssertionError("AdamW took its per-parameter loop")

    monkeypatch.setattr(adam, "_single_tensor_adam", per_parameter)
    engine = build_engine(tiny_model_dir)
    assert policy_step(engine, batch, DistInfo())["skipped"] == 0.0


def test_tied_embeddings_stream_under_both_names_and_save_export_and_load(plain_model, batch, tmp_path):
    config = copy.deepcopy(plain_model.config)
    config.tie_word_embeddings = True
    tied = type(plain_model)(config)
    tied.load_state_dict(plain_model.state_dict(), strict=False)
    tied.tie_weights()
    tied.save_pretrained(tmp_path / "tied")
    assert tied.lm_head.weight is tied.model.embed_tokens.weight

    engine = build_engine(str(tmp_path / "tied"))
    assert max_difference(weights(engine), dict(tied.state_dict())) == 0.0  # lm_head.weight included
    policy_step(engine, batch, DistInfo())
    engine.save(tmp_path / "checkpoint")
    resumed = build_engine(str(tmp_path / "tied"))
    resumed.load(tmp_path / "checkpoint")
    assert max_difference(weights(resumed), weights(engine)) == 0.0
    engine.export_hf(tmp_path / "export")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert exported.lm_head.weight is exported.model.embed_tokens.weight
    assert max_difference(weights(engine), dict(exported.state_dict())) == 0.0


def test_entropy_grad_off_gives_the_same_step_when_the_loss_only_reports_entropy(tiny_model_dir, batch):
    batch["old_logprobs"] = build_engine(tiny_model_dir).compute_logprobs(batch, micro_batch_size=4).logprobs
    num_tokens = batch["response_mask"].sum().item()
    steps = {}
    for entropy_grad in (True, False):
        engine = build_engine(tiny_model_dir)
        engine.forward_backward(batch, policy_loss(num_tokens, entropy_coeff=0.0), micro_batch_size=MICRO_BATCH,
                                entropy_grad=entropy_grad)
        engine.optimizer_step()
        steps[entropy_grad] = full_parameters(engine)
    assert max_difference(steps[True], steps[False]) < 1e-6
    # with an entropy bonus the entropy needs its gradient: without it the step differs
    engine = build_engine(tiny_model_dir)
    engine.forward_backward(batch, policy_loss(num_tokens, entropy_coeff=0.5), micro_batch_size=MICRO_BATCH)
    engine.optimizer_step()
    assert max_difference(full_parameters(engine), steps[True]) > 1e-4


def test_memory_plan_after_build_equals_building_with_it(tiny_model_dir, batch):
    built_with = build_engine(tiny_model_dir, gradient_checkpointing=True, max_tokens_per_micro_batch=40)
    check_memory_plan_after_build_equals_building_with_it(build_engine(tiny_model_dir), built_with, batch)


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_torch_compile_gives_the_same_logprobs_and_step(tiny_model_dir, batch, gradient_checkpointing):
    plain = build_engine(tiny_model_dir, gradient_checkpointing=gradient_checkpointing)
    compiled = build_engine(tiny_model_dir, gradient_checkpointing=gradient_checkpointing, torch_compile=True)
    check_torch_compile_gives_the_same_logprobs_and_loss(plain, compiled, batch)
    # gradients, not weights after a step: AdamW's first step moves a weight by about lr whatever the
    # size of its gradient, so the rounding of a near-zero gradient would show at full size
    compiled_params = dict(compiled.scorer.named_parameters())
    for name, param in plain.scorer.named_parameters():
        torch.testing.assert_close(compiled_params[name].grad.full_tensor(), param.grad.full_tensor(),
                                   rtol=1e-4, atol=1e-6, msg=name)


def test_the_whole_model_as_one_unit_gives_the_same_passes_step_and_checkpoints(tiny_model_dir, batch, tmp_path):
    from torch.distributed.fsdp import FSDPModule

    from rlkit.engines.building import decoder_layers

    per_layer, whole = build_engine(tiny_model_dir, units="layers"), build_engine(tiny_model_dir, units="model")
    assert all(isinstance(layer, FSDPModule) for layer in decoder_layers(per_layer.scorer))
    assert not any(isinstance(layer, FSDPModule) for layer in decoder_layers(whole.scorer))
    assert isinstance(whole.scorer, FSDPModule)
    torch.testing.assert_close(whole.compute_logprobs(batch, micro_batch_size=MICRO_BATCH).logprobs,
                               per_layer.compute_logprobs(batch, micro_batch_size=MICRO_BATCH).logprobs,
                               rtol=0, atol=0)
    dist = DistInfo()
    assert policy_step(whole, batch, dist) == policy_step(per_layer, batch, dist)
    assert max_difference(weights(whole), weights(per_layer)) == 0.0
    # checkpoints carry the same DTensor state whatever the units: one written per layer resumes as one unit
    per_layer.save(tmp_path / "checkpoint")
    resumed = build_engine(tiny_model_dir, units="model")
    resumed.load(tmp_path / "checkpoint")
    assert policy_step(resumed, batch, dist) == policy_step(per_layer, batch, dist)
    assert max_difference(weights(resumed), weights(per_layer)) == 0.0
