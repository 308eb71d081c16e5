"""A non-finite loss skips the update with a warning and a count (`trainer.on_nonfinite=skip`) or stops the
run naming the step (`stop`); running out of GPU memory names the phase and the knobs that lower it."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

import rlkit.trainer.rl as rl
from rlkit.engines.fsdp2.engine import FSDP2Engine
from rlkit.rollout.hf import HFRollout


def poison(monkeypatch, name: str, from_call: int) -> None:
    """Make the loss built by rl.<name> NaN from its `from_call`-th mini-batch on (one call per mini-batch)."""
    make_loss = getattr(rl, name)
    calls = [0]

    def poisoned(*args, **kwargs):
        loss_fn = make_loss(*args, **kwargs)
        calls[0] += 1
        if calls[0] < from_call:
            return loss_fn

        def nan_loss(output, micro):
            loss, metrics = loss_fn(output, micro)
            return loss * torch.nan, metrics

        return nan_loss

    monkeypatch.setattr(rl, name, poisoned)


def records(output_dir):
    return {r["step"]: r for r in map(json.loads, (output_dir / "metrics.jsonl").read_text().splitlines())}


def test_skip_leaves_the_weights_counts_and_warns(small_run, train, tmp_path, monkeypatch, caplog):
    poison(monkeypatch, "actor_loss_fn", from_call=3)  # step 2's two mini-batches (2 per step)
    with caplog.at_level(logging.WARNING):
        train(small_run(tmp_path, "trainer.save_freq=1", "trainer.val_before_train=false"))
    metrics = records(tmp_path)
    assert metrics[1]["update/skipped"] == 0.0 and metrics[2]["update/skipped"] == 2.0
    assert metrics[2]["grad_norm"] is None  # NaN, written as null
    after = [load_file(tmp_path / f"checkpoints/step_0000000{step}/actor/model.safetensors") for step in (1, 2)]
    assert all(torch.equal(after[0][name], after[1][name]) for name in after[0])
    assert "step 2: the actor's loss or gradient norm is not finite" in caplog.text
    assert "trainer.on_nonfinite=skip; counted in update/skipped" in caplog.text


def test_skip_counts_critic_updates(small_run, train, tmp_path, monkeypatch):
    poison(monkeypatch, "critic_loss_fn", from_call=1)
    last = train(small_run(tmp_path, "algorithm.adv_estimator=gae", "trainer.total_steps=1",
                           "trainer.val_before_train=false"))
    assert last["critic/update_skipped"] == 2.0 and last["update/skipped"] == 0.0


def test_stop_ends_the_run_naming_the_step(small_run, invoke, tmp_path, monkeypatch):
    poison(monkeypatch, "actor_loss_fn", from_call=1)
    overrides = small_run(tmp_path / "run", "trainer.on_nonfinite=stop", "trainer.val_before_train=false")
    result = invoke("train", *overrides)
    assert result.exit_code == 2, result.output
    assert "error: step 1: the actor's loss or gradient norm is not finite" in result.output
    assert "trainer.on_nonfinite=stop ends the run" in result.output and "Traceback" not in result.output


def out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 1.00 GiB free.")


@pytest.mark.parametrize(
    "target, extra, expected",
    [
        ((FSDP2Engine, "forward_backward"), ["trainer.val_before_train=false"],
         ["in the update (forward and backward) at step 1", "algorithm.micro_batch_size_per_device (now 8)",
          "set engine.gradient_checkpointing=true", "set engine.fsdp2.cpu_offload=true"]),
        ((FSDP2Engine, "compute_logprobs"), ["trainer.val_before_train=false"],
         ["in log-prob and value computation at step 1", "algorithm.micro_batch_size_per_device (now 8)",
          "engine.logprob_chunk_size (now 2048)"]),
        ((HFRollout, "generate"), ["trainer.val_before_train=false", "rollout.hf.batch_size=4"],
         ["in rollout (generation) at step 1", "lower rollout.hf.batch_size (now 4)",
          "rollout.max_new_tokens (now 8)"]),
        ((HFRollout, "generate"), [],
         ["in validation (generation) at step 0", "set rollout.hf.batch_size (now unset: Prompts per generate call"]),
    ],
    ids=["update", "logprobs", "rollout", "validation"],
)
def test_out_of_memory_names_the_phase_and_the_knobs(small_run, invoke, tmp_path, monkeypatch, target, extra,
                                                     expected):
    monkeypatch.setattr(*target, out_of_memory)
    result = invoke("train", *small_run(tmp_path / "run", *extra))
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ran out of GPU memory") and "Tried to allocate 2.00 GiB" in message
    for knob in expected:
        assert knob in message, message
    assert "Traceback" not in result.output
