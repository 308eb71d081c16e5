import pytest

from rlkit.rewards.shaping import format_score, length_score


def test_format_matches_the_pattern_anywhere():
    assert format_score("gsm8k", "so #### 1,200", "1200") == 1.0
    assert format_score("gsm8k", "so 1200", "1200") == 0.0
    assert format_score("x", "<answer>3</answer>", "3", pattern=r"<answer>.*</answer>") == 1.0


def test_length_falls_linearly_around_the_target():
    assert length_score("x", "a" * 10, None, target_length=10) == 1.0
    assert length_score("x", "a" * 5, None, target_length=10) == 0.5  # 1 - 5/10
    assert length_score("x", "a" * 13, None, target_length=10) == pytest.approx(0.7)  # 1 - 3/10
    assert length_score("x", "a" * 25, None, target_length=10) == 0.0  # 1 - 15/10 < 0
    assert length_score("x", "", None, target_length=10) == 0.0
    with pytest.raises(ValueError, match="target_length"):
        length_score("x", "a", None, target_length=0)
