"""`rlkit train` end to end on the tiny model: every estimator, world sizes 1 and 2, exact resume, export."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO, small_run
from rlkit.config import RunConfig, build_config
from rlkit.distributed import DistInfo
from rlkit.trainer.rl import RLTrainer

ESTIMATORS = ["grpo", "drgrpo", "reinforce", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "rloo",
              "remax", "gae"]


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def train(overrides: list[str]) -> dict:
    cfg = build_config(RunConfig, None, overrides)
    return RLTrainer(cfg, DistInfo()).fit()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_each_estimator_trains(estimator, tiny_model, tmp_path):
    last = train(small_run(tiny_model, tmp_path, f"algorithm.adv_estimator={estimator}"))
    records = read_metrics(tmp_path)
    assert [record["step"] for record in records] == [0, 1, 2]  # validation before training, then two steps
    for key in ("reward/mean", "response_length/mean", "pg_loss", "pg_clipfrac", "ppo_kl", "entropy", "grad_norm",
                "lr", "time/generate", "time/update", "throughput/tokens_per_s", "val/reward/mean", "val/accuracy"):
        assert key in last and math.isfinite(last[key]), key
    if estimator == "gae":
        assert math.isfinite(last["vf_loss"]) and (tmp_path / "checkpoints/step_00000002/critic").is_dir()
    assert (tmp_path / "checkpoints/step_00000002/manifest.json").is_file()


def test_critic_warmup_trains_only_the_critic_first(tiny_model, tmp_path):
    # verl's trainer.critic_warmup=2 updates the actor from step 2 on: rlkit's critic.warmup_steps=1
    train(small_run(tiny_model, tmp_path, "algorithm.adv_estimator=gae", "trainer.critic_warmup=2"))
    first, second = (record for record in read_metrics(tmp_path) if record["step"] > 0)
    assert "critic/grad_norm" in first and "grad_norm" not in first and "pg_loss" not in first
    assert "critic/grad_norm" in second and math.isfinite(second["grad_norm"]) and "pg_loss" in second


def test_kl_loss_and_kl_in_reward(tiny_model, tmp_path):
    last = train(small_run(tiny_model, tmp_path / "loss", "algorithm.use_kl_loss=true"))
    assert math.isfinite(last["kl"]) and math.isfinite(last["kl_loss"])
    last = train(small_run(tiny_model, tmp_path / "reward", "algorithm.use_kl_in_reward=true",
                           "algorithm.kl_ctrl.type=adaptive"))
    assert math.isfinite(last["kl_in_reward"]) and last["kl_coef"] > 0


def test_dapo_options(tiny_model, tmp_path):
    last = train(small_run(tiny_model, tmp_path, "algorithm.clip_ratio_high=0.28",
                           "algorithm.dynamic_sampling.max_generate_batches=2",
                           "algorithm.overlong_penalty.buffer_length=4", "algorithm.policy_loss=gspo"))
    assert "dynamic_sampling/kept_samples" in last


@pytest.mark.parametrize("algorithm", [[], ["algorithm.dynamic_sampling.max_generate_batches=3"]],
                         ids=["grpo", "dynamic_sampling"])
def test_resume_continues_exactly(tiny_model, tmp_path, algorithm):
    # With dynamic sampling the refill rounds take later batches of the prompt order: the checkpoint's position
    # in it counts them, so the resumed run draws the prompts the uninterrupted one drew.
    common = ["trainer.test_freq=2", "trainer.save_freq=2", *algorithm]
    full, part = tmp_path / "full", tmp_path / "part"
    train(small_run(tiny_model, full, *common, "trainer.total_steps=4"))
    train(small_run(tiny_model, part, *common, "trainer.total_steps=2"))  # "crashes" after step 2's checkpoint
    train(small_run(tiny_model, part, *common, "trainer.total_steps=4"))  # trainer.resume=auto picks it up

    def comparable(output_dir):
        return [{k: v for k, v in record.items() if not k.startswith(("time/", "throughput/", "memory/"))}
                for record in read_metrics(output_dir)]

    assert comparable(full) == comparable(part)
    if algorithm:  # some step refilled, or the test would not show the prompt order resuming past a refill
        assert max(record.get("dynamic_sampling/generate_rounds", 0) for record in read_metrics(full)) > 1
    weights = [load_file(d / "checkpoints/step_00000004/actor/model.safetensors") for d in (full, part)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_export_loads_in_transformers_and_generates(tiny_model, tmp_path):
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlkit.cli.main import cli

    train(small_run(tiny_model, tmp_path / "run"))
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    trained = load_file(tmp_path / "run/checkpoints/step_00000002/actor/model.safetensors")
    exported = model.state_dict()
    assert all(torch.equal(trained[name], exported[name]) for name in trained)
    ids = tokenizer("repeat the letter a", return_tensors="pt").input_ids
    output = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > ids.shape[1]


def test_world_size_two_under_torchrun(tiny_model, tmp_path):
    script = REPO / "tests/integration/scripts/train_estimators.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(script), tiny_model,
               str(tmp_path), ",".join(["grpo", "drgrpo", "reinforce", "reinforce_plus_plus", "rloo", "gae"])]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for estimator in ("grpo", "drgrpo", "reinforce", "reinforce_plus_plus", "rloo", "gae"):
        records = read_metrics(tmp_path / estimator)
        assert records[-1]["step"] == 2 and math.isfinite(records[-1]["pg_loss"])


def test_the_loop_times_validation_and_saves_and_closes_the_rollout(tiny_model, tmp_path, monkeypatch):
    from rlkit.rollout.hf import HFRollout

    closed = []
    close = HFRollout.close
    monkeypatch.setattr(HFRollout, "close", lambda self: closed.append(self) or close(self))
    train(small_run(tiny_model, tmp_path, "trainer.total_steps=3", "trainer.save_freq=1", "trainer.test_freq=2"))
    records = {record["step"]: record for record in read_metrics(tmp_path)}
    # Validation runs at steps 2 and 3 (the last) inside the step; each save lands on the next step's line,
    # since a step's line is written before its checkpoint.
    assert [step for step, record in records.items() if "time/validate" in record] == [2, 3]
    assert [step for step, record in records.items() if "time/save" in record] == [2, 3]
    assert all(records[step]["time/save"] > 0 for step in (2, 3))
    assert len(closed) == 1 and closed[0].model is None
    state = json.loads((tmp_path / "checkpoints/step_00000003/trainer_state.json").read_text())
    assert state["kind"] == "rl" and state["step"] == 3 and state["world_size"] == 1
    assert set(state) >= {"sampler", "kl_ctrl", "rollout"}
    assert (tmp_path / "checkpoints/step_00000003/rng/rank_0.pt").is_file()


def test_an_sft_checkpoint_is_not_resumed_and_the_engines_started_are_closed(tiny_model, tmp_path, monkeypatch):
    from rlkit.errors import CheckpointError, ConfigError
    from rlkit.rollout.hf import HFRollout
    from rlkit.trainer.checkpoint import write_manifest

    closed = []
    monkeypatch.setattr(HFRollout, "close", lambda self: closed.append(self))

    checkpoint = tmp_path / "checkpoints" / "step_00000005"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"kind": "sft", "step": 5, "sampler": {}}))
    write_manifest(checkpoint, 5)
    with pytest.raises(CheckpointError, match="step_00000005 is not an RL checkpoint"):
        train(small_run(tiny_model, tmp_path))
    assert closed == []  # refused before any engine was built (rlkit.trainer.resume_checks)

    # A refusal that comes only once the setup has built the rollout engine: a run whose length comes from
    # the data (trainer.total_steps null) ends before the checkpoint's step.
    checkpoint = tmp_path / "epochs" / "checkpoints" / "step_00100000"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"kind": "rl", "step": 100000, "sampler": {}}))
    write_manifest(checkpoint, 100000)
    with pytest.raises(ConfigError, match=r"^trainer.total_epochs=1 makes this run 25 steps \(25 an epoch\), "
                                          r"below step 100000 of .*step_00100000, "
                                          r".*set trainer.total_epochs=4001 or more"):
        train(small_run(tiny_model, tmp_path / "epochs", "trainer.total_steps=null", "trainer.total_epochs=1"))
    assert len(closed) == 1  # the setup had built the rollout engine when the checkpoint was refused
