"""Fixtures shared by the test directories. Plain helpers are in tests/helpers.py."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """Every test runs with one torch thread, and so do the torchrun processes the tests start (they inherit
    OMP_NUM_THREADS). Several tests compare runs bit for bit across batch shapes or engines, which
    multi-threaded CPU kernels do not guarantee (with two threads five of them failed); and two threads on
    two cores made tiny-model timings swing 100x (measured on a 2-core machine). Set, not defaulted: the
    README's test command must pass whatever the user's environment says.
    """
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The path of the tiny model, built once a session."""
    from rlkit.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(tmp_path_factory.mktemp("tiny")))
