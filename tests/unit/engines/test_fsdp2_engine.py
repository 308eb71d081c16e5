"""FSDP2Engine at world size 1, in the pytest process (the engine starts a 1-rank group by itself)."""

import copy
import math

import pytest
import torch
from fsdp2_cases import (
    LORA,
    MICRO_BATCH,
    build_engine,
    critic_step,
    make_batch,
    max_difference,
    policy_loss,
    policy_step,
    weights,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlkit.engines.base import DistInfo, ModelOutput, TrainEngine
from rlkit.errors import CheckpointError, ConfigError

P = 5  # fsdp2_cases.PROMPT_WIDTH


@pytest.fixture(scope="module")
def plain_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.fixture
def batch(plain_model):
    return make_batch(plain_model.config.vocab_size)


def hf_logprobs(model, batch, temperature=1.0):
    """Log-probs and entropy of the response tokens from the full logits of an unsharded model."""
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
    logp = torch.log_softmax(logits[:, P - 1 : -1].float() / temperature, dim=-1)
    logprobs = logp.gather(-1, batch["input_ids"][:, P:, None]).squeeze(-1)
    return logprobs, -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("chunk_size, temperature", [(3, 1.0), (1000, 1.0), (4, 0.7)])
def test_logprobs_match_full_logits_of_the_hf_model(tiny_model_dir, plain_model, batch, chunk_size, temperature):
    engine = build_engine(tiny_model_dir)
    engine.scorer.chunk_size, engine.scorer.temperature = chunk_size, temperature
    assert isinstance(engine, TrainEngine)
    output = engine.compute_logprobs(batch, micro_batch_size=3, with_entropy=True)
    expected_logprobs, expected_entropy = hf_logprobs(plain_model, batch, temperature)
    assert output.logprobs.shape == (8, 6) and output.logprobs.dtype == torch.float32
    assert output.logprobs.device.type == "cpu" and output.values is None
    torch.testing.assert_close(output.logprobs, expected_logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(output.entropy, expected_entropy, rtol=0, atol=1e-5)


def test_reference_equals_actor_at_init(tiny_model_dir, batch):
    actor, ref = build_engine(tiny_model_dir), build_engine(tiny_model_dir, role="ref", offload_ref=True)
    assert ref.optimizer is None
    actor_logprobs = actor.compute_logprobs(batch, micro_batch_size=MICRO_BATCH).logprobs
    assert torch.equal(ref.compute_logprobs(batch, micro_batch_size=3).logprobs, actor_logprobs)


def test_full_weights_are_the_hf_state_dict(tiny_model_dir, plain_model):
    engine = build_engine(tiny_model_dir)
    assert max_difference(weights(engine), dict(plain_model.state_dict())) == 0.0


def test_critic_values_and_value_loss_steps(tiny_model_dir, batch):
    critic = build_engine(tiny_model_dir, role="critic")
    values = critic.compute_values(batch, micro_batch_size=3)
    assert values.shape == (8, 6) and values.dtype == torch.float32 and values.device.type == "cpu"
    names = [name for name, _ in critic.full_weights()]
    assert "score.weight" in names and "lm_head.weight" not in names

    batch["returns"] = torch.full_like(values, 0.5)  # an easy target: the values start near 0
    losses = [critic_step(critic, batch, DistInfo())["vf_loss"] for _ in range(4)]
    assert losses[3] < losses[0] / 2
    assert not torch.equal(critic.compute_values(batch, micro_batch_size=3), values)


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
    assert all(param.grad is None for param in engine.scorer.parameters())
    assert policy_step(engine, batch, DistInfo())["skipped"] == 0.0


def test_save_load_resumes_bit_for_bit(tiny_model_dir, batch, tmp_path):
    engine = build_engine(tiny_model_dir)
    for _ in range(2):
        policy_step(engine, batch, DistInfo())
    engine.save(tmp_path / "checkpoint")
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "model.safetensors", "optimizer.pt", "scheduler.json"
    ]
    resumed = build_engine(tiny_model_dir)
    resumed.load(tmp_path / "checkpoint")
    assert max_difference(weights(resumed), weights(engine)) == 0.0
    first, second = policy_step(engine, batch, DistInfo()), policy_step(resumed, batch, DistInfo())
    assert first == second  # loss, grad norm and lr
    assert max_difference(weights(resumed), weights(engine)) == 0.0


def test_load_of_an_incomplete_checkpoint_names_the_file(tiny_model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        engine = build_engine(tiny_model_dir)
        (tmp_path / "model.safetensors").write_bytes(b"")
        engine.load(tmp_path)


def test_export_loads_with_from_pretrained_and_generates(tiny_model_dir, batch, tmp_path):
    engine = build_engine(tiny_model_dir)
    policy_step(engine, batch, DistInfo())
    engine.export_hf(tmp_path / "export")
    assert (tmp_path / "export" / "generation_config.json").is_file()
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert max_difference(weights(engine), dict(exported.state_dict())) == 0.0

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tokenizer("repeat the letter a 3 times", return_tensors="pt")
    generated = exported.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_gradient_checkpointing_gives_the_same_step(tiny_model_dir, batch):
    plain, checkpointed = build_engine(tiny_model_dir), build_engine(tiny_model_dir, gradient_checkpointing=True)
    assert policy_step(plain, batch, DistInfo())["loss"] == pytest.approx(
        policy_step(checkpointed, batch, DistInfo())["loss"], abs=1e-6
    )
    assert max_difference(weights(plain), weights(checkpointed)) < 1e-6


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
    engine = build_engine(tiny_model_dir, lora=LORA)
    trainable = {name for name, param in engine.scorer.named_parameters() if param.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    before = {name: param.full_tensor().clone() for name, param in engine.scorer.named_parameters()}
    policy_step(engine, batch, DistInfo())
    for name, param in engine.scorer.named_parameters():
        changed = not torch.equal(param.full_tensor(), before[name])
        assert changed == (name in trainable), name


def test_lora_base_model_logprobs_are_the_base_models(tiny_model_dir, plain_model, batch):
    engine = build_engine(tiny_model_dir, lora=LORA)
    policy_step(engine, batch, DistInfo())  # the adapters are no longer zero
    base = engine.compute_logprobs(batch, micro_batch_size=4, base_model=True, with_entropy=True)
    expected_logprobs, expected_entropy = hf_logprobs(plain_model, batch)
    torch.testing.assert_close(base.logprobs, expected_logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(base.entropy, expected_entropy, rtol=0, atol=1e-5)
    adapted = engine.compute_logprobs(batch, micro_batch_size=4).logprobs
    assert (adapted - base.logprobs).abs().max() > 1e-4


def test_lora_full_weights_equal_peft_merge_and_unload(tiny_model_dir, batch):
    from peft import LoraConfig, get_peft_model

    engine = build_engine(tiny_model_dir, lora=LORA)
    policy_step(engine, batch, DistInfo())
    adapters = {
        name.removeprefix("model."): param.full_tensor()
        for name, param in engine.scorer.named_parameters()
        if "lora_" in name
    }
    copy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=LORA.rank, lora_alpha=LORA.alpha, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert not copy.load_state_dict(adapters, strict=False).unexpected_keys
    merged = dict(copy.merge_and_unload().state_dict())
    assert max_difference(weights(engine), merged) == 0.0


def test_base_model_without_lora_is_an_error(tiny_model_dir, batch):
    with pytest.raises(ConfigError, match="LoRA"):
        build_engine(tiny_model_dir).compute_logprobs(batch, micro_batch_size=4, base_model=True)


def test_lora_save_load_keeps_only_the_adapters_and_resumes_exactly(tiny_model_dir, batch, tmp_path):
    from safetensors.torch import load_file

    engine = build_engine(tiny_model_dir, lora=LORA, gradient_checkpointing=True)
    policy_step(engine, batch, DistInfo())
    engine.save(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert saved and all(".lora_A." in name or ".lora_B." in name for name in saved)
    resumed = build_engine(tiny_model_dir, lora=LORA, gradient_checkpointing=True)
    resumed.load(tmp_path)
    assert policy_step(engine, batch, DistInfo()) == policy_step(resumed, batch, DistInfo())
    assert max_difference(weights(resumed), weights(engine)) == 0.0


def test_lora_critic_trains_adapters_and_the_value_head(tiny_model_dir, batch):
    critic = build_engine(tiny_model_dir, role="critic", lora=LORA)
    trainable = {name for name, param in critic.scorer.named_parameters() if param.requires_grad}
    assert {"model.base_model.model.score.weight", "model.base_model.model.score.bias"} <= trainable
    before = weights(critic)
    assert critic_step(critic, batch, DistInfo())["skipped"] == 0.0
    after = weights(critic)
    assert list(after) == list(before) and "score.weight" in after
    assert not torch.equal(after["score.weight"], before["score.weight"])


def test_gradients_are_clipped_to_grad_clip_before_the_step(tiny_model_dir, batch):
    engine = build_engine(tiny_model_dir)  # grad_clip=1.0
    norms_at_step = []

    def record_norm(optimizer, args, kwargs):
        grads = [param.grad for param in engine.scorer.parameters() if param.grad is not None]
        norms_at_step.append(engine._global_grad_norm(grads))

    engine.optimizer.register_step_pre_hook(record_norm)
    assert policy_step(engine, batch, DistInfo())["grad_norm"] > 1.0
    assert norms_at_step == [pytest.approx(1.0, rel=1e-5)]


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
