"""End-to-end runs: single-threaded torch; `tiny_model` comes from tests/conftest.py."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _single_thread(single_thread):
    """Every test here runs single-threaded (see tests/conftest.py)."""
