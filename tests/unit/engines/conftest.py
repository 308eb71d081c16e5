"""Fixtures of the engine tests: the tiny model, the plain Hugging Face model and a batch, and the shared cases
under scripts/ on the import path (their asserts rewritten by pytest, as in a test file)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
pytest.register_assert_rewrite("engine_cases", "engine_checks")


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
