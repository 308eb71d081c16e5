"""Shared fixtures for the reliability tests: one finished two-step run for the session and a way to run the
real CLI in this process (single-threaded torch and `tiny_model` come from tests/conftest.py)."""

import functools
import hashlib
import shutil
from pathlib import Path

import pytest

from helpers import small_run


@pytest.fixture(scope="session", name="small_run")
def small_run_for_tiny_model(tiny_model):
    """small_run(output_dir, *extra) -> overrides for a 2-step run on 8 prompts x 4 samples (seconds)."""
    return functools.partial(small_run, tiny_model)


@pytest.fixture(scope="session")
def train():
    """train(overrides) -> the last step's metrics of an RLTrainer run in this process."""
    from rlkit.config import RunConfig, build_config
    from rlkit.distributed import DistInfo
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
