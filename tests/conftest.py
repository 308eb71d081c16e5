"""Fixtures shared by the test directories. Plain helpers are in tests/helpers.py."""

import os

import pytest
import torch


@pytest.fixture(scope="session")
def single_thread():
    """One torch thread: two threads on two cores make tiny-model timings swing 100x (shared/NOTES.md).

    Not autouse here: the directories of end-to-end runs (integration, reliability) turn it on for their tests.
    """
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The path of the tiny model, built once a session."""
    from rlkit.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(tmp_path_factory.mktemp("tiny")))
