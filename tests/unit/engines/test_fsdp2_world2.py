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
from engine_cases import LORA, max_difference
from engine_checks import check_world2_critic, check_world2_lora, check_world2_policy_step
from fsdp2_cases import build_engine
from transformers import AutoModelForCausalLM

import rlkit

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


def test_full_weights_at_world_2_are_the_hf_state_dict(world2, tiny_model_dir):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert max_difference(world2["init_weights"], dict(plain.state_dict())) == 0.0


def test_policy_step_matches_world_1(world2, tiny_model_dir, batch):
    check_world2_policy_step(world2, build_engine(tiny_model_dir), batch, TOLERANCE)


def test_the_whole_model_as_one_unit_at_world_2_matches_world_1(world2, tiny_model_dir, batch):
    as_one_unit = {"policy_step": world2["model_unit_step"], "policy_weights": world2["model_unit_weights"]}
    check_world2_policy_step(as_one_unit, build_engine(tiny_model_dir), batch, TOLERANCE)


def test_save_load_and_export_at_world_2_are_exact(world2):
    assert world2["resume_difference"] == 0.0
    assert world2["export_difference"] == 0.0


def test_critic_matches_world_1(world2, tiny_model_dir, batch):
    check_world2_critic(world2, build_engine(tiny_model_dir, role="critic"), batch, TOLERANCE)


def test_lora_at_world_2_matches_world_1_and_peft_merge(world2, tiny_model_dir, batch):
    check_world2_lora(world2, build_engine(tiny_model_dir, lora=LORA), batch, TOLERANCE)
    # and the exported merged model equals the merged full weights too
    assert world2["lora_export_difference"] == 0.0

