"""SFT at world size 2 under torchrun (one launch per engine: scripts/sft_runs.py), compared with world size 1
in process, on FSDP2 and DeepSpeed ZeRO-2 (skipped without the deepspeed package).

The global batch (8) and the loss normalisation (global token count) are the same at both world sizes, so
losses, gradient norms and validation losses agree to fp32 rounding; only the sharding differs.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from sft_runs import LORA, checkpoint_weights, compared, read_metrics, run, sft_config

from rlkit.cli.generate import generate_command
from rlkit.distributed import DistInfo

SCRIPT = Path(__file__).parent / "scripts" / "sft_runs.py"


@pytest.fixture(scope="module", params=["fsdp2", "deepspeed"])
def world2(request, tiny_model_dir, tmp_path_factory):
    """Output directories of the world-size-2 runs (full, lora, straight, resumed) of one engine."""
    if request.param == "deepspeed":
        pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp(f"world2-{request.param}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3]), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
               tiny_model_dir, str(out), request.param]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return request.param, out


def assert_same_run(world2_metrics, world1_metrics):
    """Step by step: the same keys, values within fp32 rounding (Adam amplifies it a little per step)."""
    assert [m.keys() for m in world2_metrics] == [m.keys() for m in world1_metrics]
    for two, one in zip(world2_metrics, world1_metrics, strict=True):
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (two["step"], key)


@pytest.mark.parametrize("name, overrides", [("full", ()), ("lora", LORA)])
def test_sft_matches_world_size_1(world2, tiny_model_dir, tmp_path, name, overrides):
    engine, out = world2
    run(sft_config(tiny_model_dir, tmp_path, *overrides, engine=engine), DistInfo())
    # 5 validation samples: rank 1 scores a masked filler so both ranks make the same engine calls
    assert_same_run(compared(read_metrics(out / name)), compared(read_metrics(tmp_path)))
    one, two = checkpoint_weights(tmp_path, 3), checkpoint_weights(out / name, 3)
    assert one.keys() == two.keys()
    assert max((one[key] - two[key]).abs().max().item() for key in one) < 1e-4
    # `rlkit generate` rebuilds the checkpoint's engine (this one's) to read it
    result = CliRunner().invoke(generate_command, [str(tmp_path), "--prompt", "repeat the letter a",
                                                   "--max-new-tokens", "3"], catch_exceptions=False)
    assert result.exit_code == 0 and "=== prompt 0" in result.output, result.output


def test_resume_at_world_size_2_reproduces_the_uninterrupted_run(world2):
    _, out = world2
    assert compared(read_metrics(out / "resumed")) == compared(read_metrics(out / "straight"))
    straight, resumed = checkpoint_weights(out / "straight", 4), checkpoint_weights(out / "resumed", 4)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
