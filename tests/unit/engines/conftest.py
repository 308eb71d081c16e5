"""Fixtures of the engine tests: the tiny model, and the shared cases under scripts/ on the import path."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "scripts"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from rlkit.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
