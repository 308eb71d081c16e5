"""Shared fixtures for end-to-end runs: one tiny model for the whole session, single-threaded torch."""

import os
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


def small_run(tiny_model: str, output_dir: Path, *extra: str) -> list[str]:
    """Overrides for a 2-step run on 8 prompts x 4 samples: seconds, not minutes."""
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
