"""DAPO dynamic sampling filter and the soft overlong penalty."""

import pytest
import torch

from rlkit.algorithms import keep_groups_with_signal, overlong_penalty


def test_groups_whose_scores_are_all_equal_are_dropped():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 3.0, 0.5])
    groups = ["a", "b", "a", "b", "c", "d", "c"]  # interleaved
    # a: 1, 1 equal -> drop; b: 0, 1 -> keep; c: 0.5, 0.5 -> drop; d: a group of one -> keep
    expected = torch.tensor([False, True, False, True, False, True, False])
    assert torch.equal(keep_groups_with_signal(scores, groups), expected)


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_overlong_penalty(factor):
    lengths = torch.tensor([10, 16, 17, 18, 20, 25])
    # max 20, buffer 4: free up to 16 tokens; then -(len - 16) / 4 * factor, at least -factor
    # 10, 16 -> 0; 17 -> -0.25; 18 -> -0.5; 20 -> -1; 25 -> -2.25 -> -1 (times factor)
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0]) * factor
    torch.testing.assert_close(overlong_penalty(lengths, 20, 4, factor), expected)


def test_overlong_penalty_refuses_a_bad_buffer():
    with pytest.raises(ValueError, match="buffer_length"):
        overlong_penalty(torch.tensor([1]), 20, 0, 1.0)
