"""Built-in tasks, generated in code (no files, no downloads): `data.train_files: [builtin:letters]`.

A task is a function returning examples as plain dicts with ``prompt`` (text, rendered later with the
tokenizer's chat template when it has one), ``ground_truth`` and ``data_source`` (which picks the
reward under `reward.name: auto`). Generation is seeded, so every run sees the same prompts.

``letters``: "repeat the letter X" for X in a..e; the `letters` reward scores the first 8 non-space
characters of the response. It is learnable by a tiny model in a few dozen steps, which makes it the
embedded default run and a smoke test of the whole loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from rlkit.errors import DataError

BUILTIN_PREFIX = "builtin:"
LETTERS = "abcde"


def letters_examples(per_letter: int, seed: int) -> list[dict[str, Any]]:
    """``per_letter`` prompts for each of a..e, in a seeded shuffled order."""
    letters = [letter for letter in LETTERS for _ in range(per_letter)]
    random.Random(seed).shuffle(letters)
    return [
        {"prompt": f"repeat the letter {letter}", "ground_truth": letter, "data_source": "letters"}
        for letter in letters
    ]


BUILTIN_TASKS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "letters": lambda: letters_examples(per_letter=40, seed=0),  # 200 prompts
    "letters-val": lambda: letters_examples(per_letter=4, seed=1),  # 20 prompts, another order
}


def is_builtin(name: str) -> bool:
    return name.startswith(BUILTIN_PREFIX)


def builtin_examples(name: str) -> list[dict[str, Any]]:
    """The examples of ``builtin:<task>``."""
    task = name.removeprefix(BUILTIN_PREFIX)
    if task not in BUILTIN_TASKS:
        known = ", ".join(BUILTIN_PREFIX + known_task for known_task in BUILTIN_TASKS)
        raise DataError(f"unknown built-in task '{name}'; built-in tasks are: {known}")
    return BUILTIN_TASKS[task]()
