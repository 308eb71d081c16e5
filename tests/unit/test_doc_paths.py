"""The docs, recipes and GPU scripts name paths inside the repository only: a reader has the checkout, not the
machine it was written on. A path that starts with `../`, `/work/` or `shared/` points outside it; the one
exception is a Markdown link, which is relative to its own file (`[x](../README.md)` from docs/ stays inside)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import REPO

CHECKED = [
    REPO / "README.md",
    REPO / "benchmarks" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "configs").glob("*.yaml")),
    *sorted((REPO / "scripts").rglob("*.sh")),
]
# The start of a path: not inside a word or another path (`$(dirname "$0")/../..` is inside the repository).
_OUTSIDE = re.compile(r"(?<![\w./$-])(?:\.\./|/work/|shared/)[^\s`'\")\]]*")


def outside_paths(text: str, where: Path) -> list[str]:
    """`line: path` for each path in `text` (the contents of the file `where`) that leads out of REPO."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _OUTSIDE.finditer(line):
            path = match.group(0)
            is_link = line[:match.start()].endswith("](")
            if is_link and (where.parent / path).resolve().is_relative_to(REPO.resolve()):
                continue
            found.append(f"{number}: {path}")
    return found


def test_the_check_finds_paths_outside_and_passes_links_inside():
    text = ("rlkit data gsm8k --input ../shared/data/gsm8k\n"
            "see `/work/shared/gpu/README.md`, PIECE=45M shared/gpu/prepare_gpu_wheels.sh /work/main/.gpu\n"
            "[the README](../README.md), [elsewhere](../../notes.md), cd \"$(dirname \"$0\")/../..\"\n"
            "a shared-memory op, datasets/gsm8k, scripts/gpu/device_install.sh, /tmp/site_vllm\n")
    assert outside_paths(text, REPO / "docs" / "x.md") == [
        "1: ../shared/data/gsm8k", "2: /work/shared/gpu/README.md", "2: shared/gpu/prepare_gpu_wheels.sh",
        "2: /work/main/.gpu", "3: ../../notes.md"]


@pytest.mark.parametrize("path", CHECKED, ids=lambda path: str(path.relative_to(REPO)))
def test_paths_named_stay_inside_the_repository(path):
    found = outside_paths(path.read_text(), path)
    assert not found, f"{path.relative_to(REPO)} names paths outside the repository, at line {', line '.join(found)}"
