"""A tool plugin: a typed function with a Google-style docstring (docs/environments.md).

The model sees the name, the description and the arguments (their types and descriptions); keyword-only
arguments after `*` are options set in the config (`environment.tool_options`), which the model never sees.

    rlkit train environment.name=tools "environment.tools=[calculator,examples/tools/word_tools.py:count_letter]" \
        rollout.max_turns=3 rollout.max_total_tokens=64 trainer.total_steps=2
"""

from __future__ import annotations


def count_letter(word: str, letter: str, *, case_sensitive: bool = False) -> int:
    """Count how many times a letter occurs in a word.

    Args:
        word: The word to look in.
        letter: The letter to count (one character).
    """
    if len(letter) != 1:
        raise ValueError(f"letter must be one character, not {letter!r}")  # the model reads this as the result
    if not case_sensitive:
        word, letter = word.lower(), letter.lower()
    return word.count(letter)
