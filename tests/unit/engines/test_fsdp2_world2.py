"""FSDP2Engine at world size 2 (one torchrun launch of scripts/fsdp2_cases.py, gloo on CPU) against world size 1.

The same global batch, split over two ranks with the loss normalised by the global token count, must give
the same loss, gradient norm and updated weights as one process: the global-count contract.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fsdp2_cases import LORA, MICRO_BATCH, build_engine, critic_step, make_batch, max_difference, policy_step, weights
from transformers import AutoModelForCausalLM

import rlkit
from rlkit.engines.base import DistInfo

SCRIPT = Path(__file__).parent / "scripts" / "fsdp2_cases.py"
TOLERANCE = 1e-5  # fp32: reductions run in another order over two shards


@pytest.fixture(scope="module")
def world2(tiny_model_dir, tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("world2")
    repo_root = str(Path(rlkit.__file__).parents[1])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT)]
    run = subprocess.run(
        [*command, tiny_model_dir, str(out_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"torchrun failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    return torch.load(out_dir / "results.pt", weights_only=False)


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    return make_batch(AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size)


def test_full_weights_at_world_2_are_the_hf_state_dict(world2, tiny_model_dir):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert max_difference(world2["init_weights"], dict(plain.state_dict())) == 0.0


def test_policy_step_matches_world_1(world2, tiny_model_dir, batch):
    engine = build_engine(tiny_model_dir)
    step = policy_step(engine, batch, DistInfo())
    assert world2["policy_step"]["loss"] == pytest.approx(step["loss"], abs=TOLERANCE)
    assert world2["policy_step"]["grad_norm"] == pytest.approx(step["grad_norm"], abs=TOLERANCE)
    assert max_difference(world2["policy_weights"], weights(engine)) < TOLERANCE


def test_save_load_and_export_at_world_2_are_exact(world2):
    assert world2["resume_difference"] == 0.0
    assert world2["export_difference"] == 0.0


def test_critic_matches_world_1(world2, tiny_model_dir, batch):
    critic = build_engine(tiny_model_dir, role="critic")
    values = critic.compute_values(batch, micro_batch_size=MICRO_BATCH)
    torch.testing.assert_close(world2["values"], values, rtol=0, atol=TOLERANCE)
    step = critic_step(critic, batch, DistInfo())
    assert world2["critic_step"]["vf_loss"] == pytest.approx(step["vf_loss"], abs=TOLERANCE)
    assert max_difference(world2["critic_weights"], weights(critic)) < TOLERANCE


def test_lora_at_world_2_matches_world_1_and_peft_merge(world2, tiny_model_dir, batch):
    engine = build_engine(tiny_model_dir, lora=LORA)
    step = policy_step(engine, batch, DistInfo())
    assert world2["lora_step"]["loss"] == pytest.approx(step["loss"], abs=TOLERANCE)
    assert max_difference(world2["lora_weights"], weights(engine)) < TOLERANCE
    # merged full weights == peft merge_and_unload of the exported adapter == the exported merged model
    assert world2["lora_merge_difference"] == 0.0
    assert world2["lora_export_difference"] == 0.0
