"""Shared fixtures for the reliability tests: one tiny model and one finished two-step run for the session,
single-threaded torch, and a way to run the real CLI in this process."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    # Two threads on two cores make tiny-model timings swing 100x (shared/NOTES.md).
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from rlkit.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def small_run(tiny_model):
    """small_run(output_dir, *extra) -> overrides for a 2-step run on 8 prompts x 4 samples (seconds)."""

    def overrides(output_dir: Path, *extra: str) -> list[str]:
        return [
            f"model.path={tiny_model}",
            f"trainer.output_dir={output_dir}",
            "trainer.total_steps=2",
            "trainer.progress_bar=false",
            "trainer.loggers=[jsonl]",
            "data.train_batch_size=8",
            "algorithm.mini_batch_size=4",
            "algorithm.micro_batch_size_per_device=8",
            "rollout.n=4",
            "rollout.max_new_tokens=8",
            "data.max_val_samples=5",
            *extra,
        ]

    return overrides


@pytest.fixture(scope="session")
def train():
    """train(overrides) -> the last step's metrics of an RLTrainer run in this process."""
    from rlkit.config import RunConfig, build_config
    from rlkit.engines.base import DistInfo
    from rlkit.trainer.rl import RLTrainer

    def run(overrides: list[str]) -> dict:
        return RLTrainer(build_config(RunConfig, None, overrides), DistInfo()).fit()

    return run


@pytest.fixture(scope="session")
def finished_run(small_run, train, tmp_path_factory) -> Path:
    """A finished 2-step run with checkpoints after steps 1 and 2. Copy it (run_copy) before changing it."""
    output_dir = tmp_path_factory.mktemp("finished") / "run"
    train(small_run(output_dir, "trainer.save_freq=1", "trainer.keep_last=2"))
    return output_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.fixture(scope="session")
def invoke():
    """invoke(*args) -> click's Result of `rlkit ARGS` run in this process (stderr is in result.output)."""
    from click.testing import CliRunner

    from rlkit.cli.main import cli

    def run(*args: str):
        return CliRunner().invoke(cli, [str(arg) for arg in args])

    return run


def snapshot(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `directory` (empty when it does not exist)."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")
def dir_snapshot():
    return snapshot
