"""Fixtures of the engine tests: the tiny model, the plain Hugging Face model and a batch, the micro-batching
measurements that test_micro_batching.py and test_packing.py share, and the shared cases under scripts/ on the
import path (their asserts rewritten by pytest, as in a test file)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
pytest.register_assert_rewrite("engine_cases", "engine_checks", "micro_batching_cases")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from rlkit.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="module")
def plain_model(tiny_model_dir):
    """The tiny model as transformers loads it, unsharded."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.fixture
def batch(plain_model):
    from engine_cases import make_batch

    return make_batch(plain_model.config.vocab_size)


@pytest.fixture(scope="session")
def fixed(tiny_model_dir):
    """Each engine's measurements with fixed micro-batches (micro_batching_cases.measure_world1), run once on
    first use; `of(engine, with_lora)` (engine_cases.LORA adapters)."""
    from engine_cases import LORA
    from micro_batching_cases import measure_world1

    measured: dict[tuple[str, bool], dict] = {}

    def of(engine: str, with_lora: bool = False) -> dict:
        if engine == "deepspeed":
            pytest.importorskip("deepspeed")
        if (engine, with_lora) not in measured:
            measured[engine, with_lora] = measure_world1(engine, tiny_model_dir, lora=LORA if with_lora else None)
        return measured[engine, with_lora]

    return of


@pytest.fixture(scope="session")
def world2(tiny_model_dir, tmp_path_factory) -> dict:
    """FSDP2 at world size 2 with micro_batching_cases.SWITCHES, .PACKED_SWITCHES and PACKED_SWITCHES sharing prompts
    where that saves a micro-batch: one torchrun launch."""
    import rlkit

    out_dir = tmp_path_factory.mktemp("micro-batching-world2")
    repo_root = str(Path(rlkit.__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(SCRIPTS / "micro_batching_cases.py")]
    run = subprocess.run([*command, tiny_model_dir, str(out_dir)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"torchrun failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    return torch.load(out_dir / "results.pt", weights_only=False)
