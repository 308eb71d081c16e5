import pytest

from rlkit.rewards.letters import compute_score as letters_score


@pytest.mark.parametrize(
    "response, score, acc",
    [
        ("a a a a a a a a a a", 1.0, 1.0),  # first 8 non-space chars are all 'a'
        ("aaaaaaaab", 1.0, 1.0),  # the 'b' is the 9th: not looked at
        ("aaaab", 0.8, 0.0),  # 4 of 5
        ("aaaabbbb", 0.5, 0.0),  # 4 of 8
        ("b", 0.0, 0.0),
        ("A", 0.0, 0.0),  # case matters
        ("", 0.0, 0.0),
        ("   ", 0.0, 0.0),
    ],
)
def test_letters(response, score, acc):
    assert letters_score("letters", response, "a", {}) == {"score": score, "acc": acc}
