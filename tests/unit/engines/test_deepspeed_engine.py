"""DeepSpeedEngine on CPU: world size 1 in the pytest process (the engine starts a 1-rank group by itself),
world size 2 from the DeepSpeed tests' one torchrun launch (scripts/deepspeed_world2.py), and one
`rlkit train --engine deepspeed` run in process.

The batches, losses, optimizer and the checks both engines must pass are shared with the FSDP2 tests
(scripts/engine_cases.py, scripts/engine_checks.py); scripts/deepspeed_cases.py stops DeepSpeed from compiling
its CPU shared-memory comm op, which gloo makes unnecessary here.
"""

import json
import math

import pytest

pytest.importorskip("deepspeed")  # an optional extra: pip install 'rlkit[deepspeed]'

import torch
from deepspeed_cases import build_ds_engine
from deepspeed_world2 import world2_results
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
    check_world2_critic,
    check_world2_lora,
    check_world2_policy_step,
)
from fsdp2_cases import build_engine as build_fsdp2_engine

from pydantic import ValidationError

from rlkit.config import RunConfig, build_config
from rlkit.config.schema import OptimConfig
from rlkit.distributed import DistInfo
from rlkit.engines.deepspeed import state
from rlkit.engines.deepspeed.ds_config import build_ds_config
from rlkit.engines.deepspeed.options import DeepSpeedOptions
from rlkit.errors import CheckpointError, ConfigError

STAGES = [1, 2, 3]
TOLERANCE = 1e-5  # world size 2 against 1, fp32: reductions run in another order over two shards


def full_parameters(engine) -> dict[str, torch.Tensor]:
    """Every parameter of the scorer, gathered (ZeRO-3) and copied, in the scorer's names."""
    return {name: state.materialize(param).clone() for name, param in engine.scorer.named_parameters()}


# -- the DeepSpeed config -------------------------------------------------------------------------------
def ds_config(optim=OptimConfig(), role="actor", world_size=1, dtype=torch.float32, on_cuda=False, **config):
    return build_ds_config(DeepSpeedOptions(**config), role=role, optim=optim, world_size=world_size,
                           compute_dtype=dtype, on_cuda=on_cuda)


def test_reduction_overlaps_the_backward_only_where_there_is_communication():
    def overlap(**kwargs):
        return ds_config(**kwargs)["zero_optimization"]["overlap_comm"]

    assert overlap(on_cuda=True, world_size=2, zero_stage=2) and overlap(on_cuda=True, world_size=2, zero_stage=3)
    assert not overlap(on_cuda=True, world_size=1, zero_stage=2)  # one rank: nothing to overlap
    assert not overlap(on_cuda=True, world_size=2, zero_stage=1)  # needs partitioned gradients
    assert not overlap(on_cuda=False, world_size=2, zero_stage=2)  # needs CUDA side streams


def test_config_leaves_accumulation_to_rlkit_and_sets_clipping_explicitly():
    config = ds_config(OptimConfig(grad_clip=0.5), world_size=4, zero_stage=2)
    # every engine.step() is the boundary; DeepSpeed never divides the loss by accumulation steps
    assert config["managed_gradient_accumulation"] is False
    assert config["gradient_accumulation_steps"] == 1
    assert config["train_batch_size"] == config["train_micro_batch_size_per_gpu"] * 4
    assert config["gradient_clipping"] == 0.5
    assert ds_config(OptimConfig(grad_clip=None))["gradient_clipping"] == 0.0  # not DeepSpeed's default 1.0
    assert config["zero_optimization"]["stage"] == 2 and "optimizer" not in config and "scheduler" not in config
    assert config["zero_allow_untested_optimizer"] is True and config["zero_force_ds_cpu_optimizer"] is False
    assert config["bf16"] == {"enabled": False}


def test_config_of_bf16_offload_and_the_reference():
    bf16 = ds_config(dtype=torch.bfloat16, zero_stage=3, offload_optimizer=True, offload_param=True)
    assert bf16["bf16"] == {"enabled": True} and bf16["data_types"] == {"grad_accum_dtype": "fp32"}
    assert bf16["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert bf16["zero_optimization"]["offload_param"]["device"] == "cpu"
    ref = ds_config(None, role="ref", zero_stage=1, offload_ref=True)
    assert ref["zero_optimization"] == {"stage": 3, "offload_param": {"device": "cpu", "pin_memory": False},
                                        "memory_efficient_linear": False}
    assert "gradient_clipping" not in ref and "managed_gradient_accumulation" not in ref
    # partitioned over several ranks; on one rank there is nothing to partition: a plain engine, no hooks
    assert ds_config(None, role="ref", world_size=2)["zero_optimization"] == {"stage": 3,
                                                                              "memory_efficient_linear": False}
    assert ds_config(None, role="ref", world_size=1)["zero_optimization"] == {"stage": 0,
                                                                              "memory_efficient_linear": False}


def test_zero3_on_one_rank_keeps_every_parameter_gathered():
    persistent = {"stage3_param_persistence_threshold", "stage3_model_persistence_threshold"}
    one_rank = ds_config(zero_stage=3)["zero_optimization"]
    assert one_rank["stage3_param_persistence_threshold"] >= 2**62 and persistent <= set(one_rank)
    assert not persistent & set(ds_config(zero_stage=3, world_size=2)["zero_optimization"])  # DeepSpeed's defaults
    assert not persistent & set(ds_config(zero_stage=2)["zero_optimization"])
    # offloaded parameters stay on CPU: persistence would keep them on the GPU
    assert not persistent & set(ds_config(zero_stage=3, offload_param=True)["zero_optimization"])


def test_offload_param_needs_zero3():
    with pytest.raises(ValidationError, match="engine.deepspeed.zero_stage=3"):
        DeepSpeedOptions(zero_stage=2, offload_param=True)
    with pytest.raises(ConfigError, match="engine.deepspeed: offload_param=true needs zero_stage=3"):
        build_config(RunConfig, None, ["engine.name=deepspeed", "engine.deepspeed.zero_stage=2",
                                       "engine.deepspeed.offload_param=true"])


# -- forward passes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage, chunk_size, temperature", [(1, 3, 1.0), (3, 1000, 1.0), (3, 4, 0.7)])
def test_logprobs_match_full_logits_of_the_hf_model(tiny_model_dir, plain_model, batch, stage, chunk_size,
                                                     temperature):
    engine = build_ds_engine(tiny_model_dir, stage)
    assert engine.zero_stage == stage
    check_logprobs_match_full_logits(engine, plain_model, batch, chunk_size, temperature)


@pytest.mark.parametrize("offload_ref", [False, True])
def test_reference_is_an_inference_engine_equal_to_the_actor(tiny_model_dir, batch, offload_ref):
    actor = build_ds_engine(tiny_model_dir, 1)
    ref = build_ds_engine(tiny_model_dir, 1, role="ref", offload_ref=offload_ref)
    # on one rank a plain engine; offloaded to CPU, a partitioned ZeRO-3 one (as at any world size > 1)
    assert ref.optimizer is None and ref.zero_stage == (3 if offload_ref else 0)
    assert all(hasattr(param, "ds_id") == offload_ref for param in ref.scorer.parameters())
    actor_logprobs = actor.compute_logprobs(batch, micro_batch_size=MICRO_BATCH).logprobs
    assert torch.equal(ref.compute_logprobs(batch, micro_batch_size=3).logprobs, actor_logprobs)


def test_zero3_gathers_per_decoder_layer(tiny_model_dir):
    from deepspeed.utils import z3_leaf_module

    from rlkit.engines.building import decoder_layers

    engine = build_ds_engine(tiny_model_dir, 3)
    layers = decoder_layers(engine.scorer)
    assert layers and all(z3_leaf_module(layer) for layer in layers)
    # hooked modules: the layers and what lies outside them (embedding, final norm, head, wrappers), not inside
    inside = {id(module) for layer in layers for module in layer.modules() if module is not layer}
    assert not any(id(module) in inside for module in engine.scorer.modules() if module._forward_pre_hooks)
    assert not any(z3_leaf_module(layer) for layer in decoder_layers(build_ds_engine(tiny_model_dir, 2).scorer))
    # with LoRA the first layer's input needs no gradient, and a leaf's gradient hook would fire too early
    lora = build_ds_engine(tiny_model_dir, 3, lora=LORA)
    assert not any(z3_leaf_module(layer) for layer in decoder_layers(lora.scorer))


def test_zero3_leaves_torch_linear_to_the_other_models_of_the_process(tiny_model_dir):
    # DeepSpeed's memory-efficient linear would replace F.linear for every model in the process (a colocated
    # in-process vLLM engine's too) for good; rlkit's ZeRO-3 runs on the plain one (the tests above and below
    # check its log-probs and steps against the Hugging Face model and FSDP2)
    linear = torch.nn.functional.linear
    actor = build_ds_engine(tiny_model_dir, 3)
    ref = build_ds_engine(tiny_model_dir, 3, role="ref", offload_ref=True)
    assert actor.zero_stage == ref.zero_stage == 3 and torch.nn.functional.linear is linear


@pytest.mark.parametrize("stage", STAGES)
def test_full_weights_are_the_hf_state_dict(tiny_model_dir, plain_model, stage):
    engine = build_ds_engine(tiny_model_dir, stage)
    assert max_difference(weights(engine), dict(plain_model.state_dict())) == 0.0


def test_critic_values_and_value_loss_steps(tiny_model_dir, batch):
    check_critic_values_and_value_loss_steps(build_ds_engine(tiny_model_dir, 3, role="critic"), batch)


# -- accumulation and steps ----------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_gradients_add_up_over_micro_batches_and_calls(tiny_model_dir, batch, stage):
    """One pass over the whole batch and four micro-batches in two forward_backward calls make one update."""
    whole, pieces = build_ds_engine(tiny_model_dir, stage), build_ds_engine(tiny_model_dir, stage)
    batch["old_logprobs"] = whole.compute_logprobs(batch, micro_batch_size=4).logprobs
    num_tokens = batch["response_mask"].sum().item()
    metrics = whole.forward_backward(batch, policy_loss(num_tokens), micro_batch_size=8)
    step = whole.optimizer_step()
    first = pieces.forward_backward(batch.slice(0, 4), policy_loss(num_tokens), micro_batch_size=MICRO_BATCH)
    second = pieces.forward_backward(batch.slice(4, 8), policy_loss(num_tokens), micro_batch_size=MICRO_BATCH)
    pieces_step = pieces.optimizer_step()
    # the shares of the global loss add up to the loss of the whole batch, and so do their gradients
    assert first["loss"] + second["loss"] == pytest.approx(metrics["loss"], abs=1e-6)
    assert set(step) == {"grad_norm", "lr", "skipped"} and step["skipped"] == 0.0
    assert step["lr"] == pytest.approx(1e-2) and step["grad_norm"] > 1.0  # so clipping at 1.0 acted
    assert pieces_step["grad_norm"] == pytest.approx(step["grad_norm"], abs=1e-6)
    # Adam's first update is about lr * sign(gradient): where a gradient is tiny, rounding differences of the
    # summation order show up at ~1e-5 in the weights (FSDP2 measures the same 1.3e-5)
    assert max_difference(weights(pieces), weights(whole)) < 1e-4


@pytest.mark.parametrize("stage", STAGES)
def test_non_finite_gradient_skips_the_step(tiny_model_dir, batch, stage):
    engine = build_ds_engine(tiny_model_dir, stage)
    check_non_finite_gradient_skips_the_step(engine, batch)
    assert policy_step(engine, batch, DistInfo())["skipped"] == 0.0  # the NaN gradients are gone


# -- checkpoints and export -----------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_save_load_resumes_bit_for_bit(tiny_model_dir, batch, tmp_path, stage):
    check_save_load_resumes_bit_for_bit(
        build_ds_engine(tiny_model_dir, stage), lambda: build_ds_engine(tiny_model_dir, stage), batch,
        tmp_path / "checkpoint",
    )
    optimizer_state = torch.load(tmp_path / "checkpoint" / "optimizer.pt", weights_only=True)  # nothing unpickles
    assert {float(entry["step"]) for entry in optimizer_state["state"].values()} == {2.0}


def test_checkpoints_move_between_stages_and_engines(tiny_model_dir, batch, tmp_path):
    """The files are the FSDP2 engine's: FSDP2 -> ZeRO-3 -> ZeRO-1 -> FSDP2 round-trips every tensor."""
    fsdp2 = build_fsdp2_engine(tiny_model_dir)
    policy_step(fsdp2, batch, DistInfo())
    fsdp2.save(tmp_path / "fsdp2")
    zero3 = build_ds_engine(tiny_model_dir, 3)
    zero3.load(tmp_path / "fsdp2")
    zero3.save(tmp_path / "zero3")
    zero1 = build_ds_engine(tiny_model_dir, 1)
    zero1.load(tmp_path / "zero3")
    zero1.save(tmp_path / "zero1")
    back = build_fsdp2_engine(tiny_model_dir)
    back.load(tmp_path / "zero1")
    assert max_difference(weights(back), weights(fsdp2)) == 0.0

    original, final = (torch.load(tmp_path / name / "optimizer.pt", weights_only=True) for name in ("fsdp2", "zero1"))
    assert list(final["state"]) == list(original["state"])
    for name, entry in original["state"].items():
        assert all(torch.equal(final["state"][name][key], entry[key]) for key in entry), name
    assert final["param_groups"][0]["lr"] == original["param_groups"][0]["lr"]
    assert json.loads((tmp_path / "zero1" / "scheduler.json").read_text()) == json.loads(
        (tmp_path / "fsdp2" / "scheduler.json").read_text())
    assert policy_step(back, batch, DistInfo()) == policy_step(fsdp2, batch, DistInfo())


def test_load_of_an_incomplete_or_foreign_checkpoint_is_an_error(tiny_model_dir, tmp_path):
    engine = build_ds_engine(tiny_model_dir, 3)
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        engine.load(tmp_path / "incomplete")
    build_ds_engine(tiny_model_dir, 3, role="critic").save(tmp_path / "critic")
    with pytest.raises(CheckpointError, match="does not fit this model"):
        engine.load(tmp_path / "critic")


def test_export_loads_with_from_pretrained_and_generates(tiny_model_dir, batch, tmp_path):
    check_export_loads_and_generates(build_ds_engine(tiny_model_dir, 3), tiny_model_dir, batch, tmp_path / "export")


# -- options --------------------------------------------------------------------------------------------
def test_gradient_checkpointing_gives_the_same_step(tiny_model_dir, batch):
    plain = build_ds_engine(tiny_model_dir, 3)
    checkpointed = build_ds_engine(tiny_model_dir, 3, gradient_checkpointing=True)
    check_gradient_checkpointing_gives_the_same_step(plain, checkpointed, batch)


def test_memory_plan_after_build_equals_building_with_it(tiny_model_dir, batch):
    built_with = build_ds_engine(tiny_model_dir, 3, gradient_checkpointing=True, max_tokens_per_micro_batch=40)
    check_memory_plan_after_build_equals_building_with_it(build_ds_engine(tiny_model_dir, 3), built_with, batch)


@pytest.mark.parametrize("stage", [1, 3])  # bf16 ZeRO-1 runs on DeepSpeed's BF16_Optimizer
def test_bf16_streams_fp32_master_weights_and_a_bf16_reference(tiny_model_dir, plain_model, batch, stage):
    actor = build_ds_engine(tiny_model_dir, stage, precision="bf16")
    ref = build_ds_engine(tiny_model_dir, stage, role="ref", precision="bf16")
    logprobs = actor.compute_logprobs(batch, micro_batch_size=4).logprobs
    assert torch.equal(ref.compute_logprobs(batch, micro_batch_size=4).logprobs, logprobs)
    assert (logprobs - hf_logprobs(plain_model, batch)[0]).abs().max() < 0.1
    # the fp32 master copy holds the checkpoint's values, not the bf16 module's rounded ones (DeepSpeed builds
    # it from the cast; the engine restores them), as FSDP2's fp32 parameters do
    exact = {name: tensor.float() for name, tensor in plain_model.state_dict().items()}
    assert {tensor.dtype for _, tensor in actor.full_weights()} == {torch.float32}
    assert max_difference(weights(actor), exact) == 0.0
    assert {tensor.dtype for _, tensor in ref.full_weights()} == {torch.bfloat16}
    fsdp2 = build_fsdp2_engine(tiny_model_dir, precision="bf16")
    ds_step, fsdp2_step = policy_step(actor, batch, DistInfo()), policy_step(fsdp2, batch, DistInfo())
    assert ds_step["loss"] == pytest.approx(fsdp2_step["loss"], abs=1e-6)  # 1.5e-3 apart from rounded masters
    assert max_difference(weights(actor), weights(fsdp2)) < 1e-6


def test_zero_offload_trains_like_the_plain_engine(tiny_model_dir, batch):
    offloaded = build_ds_engine(tiny_model_dir, 3, offload_optimizer=True, offload_param=True)
    plain = build_ds_engine(tiny_model_dir, 3)
    assert policy_step(offloaded, batch, DistInfo()) == pytest.approx(policy_step(plain, batch, DistInfo()))
    assert max_difference(weights(offloaded), weights(plain)) < 1e-6


def test_offload_and_onload_are_no_ops_on_cpu(tiny_model_dir, batch):
    engine = build_ds_engine(tiny_model_dir, 2)
    before = weights(engine)
    engine.offload()
    engine.onload()
    assert max_difference(weights(engine), before) == 0.0
    assert policy_step(engine, batch, DistInfo())["skipped"] == 0.0


# -- LoRA -----------------------------------------------------------------------------------------------
def test_lora_trains_only_the_adapters(tiny_model_dir, batch):
    check_lora_trains_only_the_adapters(build_ds_engine(tiny_model_dir, 3, lora=LORA), batch, full_parameters)


def test_lora_base_model_logprobs_are_the_base_models(tiny_model_dir, plain_model, batch):
    engine = build_ds_engine(tiny_model_dir, 3, lora=LORA)
    check_lora_base_model_logprobs_are_the_base_models(engine, plain_model, batch)


def test_lora_full_weights_equal_peft_merge_and_unload(tiny_model_dir, batch):
    engine = build_ds_engine(tiny_model_dir, 3, lora=LORA)
    policy_step(engine, batch, DistInfo())
    adapters = {name.removeprefix("model."): tensor for name, tensor in full_parameters(engine).items()
                if "lora_" in name}
    check_lora_full_weights_equal_peft_merge(engine, adapters, tiny_model_dir)


def test_base_model_without_lora_is_an_error(tiny_model_dir, batch):
    with pytest.raises(ConfigError, match="LoRA"):
        build_ds_engine(tiny_model_dir, 1).compute_logprobs(batch, micro_batch_size=4, base_model=True)


def test_lora_save_load_keeps_only_the_adapters_and_resumes_exactly(tiny_model_dir, batch, tmp_path):
    def build():
        return build_ds_engine(tiny_model_dir, 2, lora=LORA, gradient_checkpointing=True)

    check_lora_save_load_keeps_only_the_adapters(build(), build, batch, tmp_path)


def test_lora_critic_trains_adapters_and_the_value_head(tiny_model_dir, batch):
    critic = build_ds_engine(tiny_model_dir, 3, role="critic", lora=LORA)
    check_lora_critic_trains_adapters_and_the_value_head(critic, batch)


# -- world size 2 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world2(tiny_model_dir) -> dict:
    return world2_results(tiny_model_dir)["deepspeed"]


def test_world_2_zero3_gathers_steps_and_exports_like_world_1(world2, tiny_model_dir, plain_model, batch):
    assert max_difference(world2["init_weights"], dict(plain_model.state_dict())) == 0.0
    check_world2_policy_step(world2, build_ds_engine(tiny_model_dir, 3), batch, TOLERANCE)
    assert world2["export_difference"] == 0.0


def test_world_2_zero3_checkpoint_resumes_under_zero1_exactly(world2):
    assert world2["load_difference"] == 0.0
    original, resumed = world2["resumed_steps"]
    assert resumed["lr"] == original["lr"] and resumed["loss"] == pytest.approx(original["loss"], abs=1e-6)
    assert world2["resume_difference"] < TOLERANCE  # ZeRO-1 and ZeRO-3 reduce in different orders


def test_world_2_critic_matches_world_1(world2, tiny_model_dir, batch):
    check_world2_critic(world2, build_ds_engine(tiny_model_dir, 2, role="critic"), batch, TOLERANCE)


def test_world_2_lora_matches_world_1_and_peft_merge(world2, tiny_model_dir, batch):
    check_world2_lora(world2, build_ds_engine(tiny_model_dir, 3, lora=LORA), batch, TOLERANCE)


# -- the trainer end to end ------------------------------------------------------------------------------
def test_rlkit_train_runs_with_deepspeed_and_matches_fsdp2(tiny_model_dir, tmp_path):
    """`rlkit train --engine deepspeed` (ZeRO-3 actor, ZeRO-3 reference for the KL loss) in process. Its
    first step sees the same rollouts as FSDP2's, so their losses agree; later rollouts may sample apart."""
    from rlkit.config import RunConfig, build_config
    from rlkit.trainer.rl import RLTrainer

    def train(engine: str) -> list[dict]:
        output_dir = tmp_path / engine
        overrides = [
            f"model.path={tiny_model_dir}", f"trainer.output_dir={output_dir}", "trainer.total_steps=2",
            "trainer.progress_bar=false", "trainer.loggers=[jsonl]", "data.train_batch_size=8",
            "algorithm.mini_batch_size=4", "algorithm.micro_batch_size_per_device=8", "algorithm.use_kl_loss=true",
            "rollout.n=4", "rollout.max_new_tokens=8", "data.max_val_samples=5", "engine.precision=fp32",
        ]
        RLTrainer(build_config(RunConfig, None, overrides, {"engine.name": engine}), DistInfo()).fit()
        assert (output_dir / "checkpoints/step_00000002/actor/optimizer.pt").is_file()
        return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]

    deepspeed_run, fsdp2_run = train("deepspeed"), train("fsdp2")
    assert [record["step"] for record in deepspeed_run] == [0, 1, 2]
    assert all(math.isfinite(record["grad_norm"]) and math.isfinite(record["kl_loss"]) for record in deepspeed_run[1:])
    for key in ("pg_loss", "kl_loss", "grad_norm", "reward/mean"):
        assert deepspeed_run[1][key] == pytest.approx(fsdp2_run[1][key], abs=1e-4), key


def test_torch_compile_gives_the_same_logprobs_and_gradients(tiny_model_dir, batch):
    plain = build_ds_engine(tiny_model_dir, 3)
    compiled = build_ds_engine(tiny_model_dir, 3, torch_compile=True)
    check_torch_compile_gives_the_same_logprobs_and_loss(plain, compiled, batch)
    # the global gradient norm (ZeRO-3 holds gradients partitioned): equal up to the compiler's rounding
    assert compiled.optimizer_step()["grad_norm"] == pytest.approx(plain.optimizer_step()["grad_norm"], rel=1e-4)
