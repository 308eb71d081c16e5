"""The rules every rollout engine shares: no empty prompt, and which ids end a response."""

import pytest

from rlkit.rollout.base import SamplingParams, check_prompts, stop_token_ids, unique_ids


def test_check_prompts_names_the_first_empty_prompt():
    check_prompts([[1], [2, 3]])
    check_prompts([])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        check_prompts([[1], [], []])


def test_unique_ids_keep_first_seen_order_and_drop_none():
    assert unique_ids([2, None, 1, 2, 5, 1]) == [2, 1, 5]


def test_stop_token_ids_are_eos_then_stop_ids_and_none_with_ignore_eos():
    assert stop_token_ids(SamplingParams(stop_token_ids=(7, 1)), [1, 2]) == [1, 2, 7]
    assert stop_token_ids(SamplingParams(stop_token_ids=(7,), ignore_eos=True), [1, 2]) == []
