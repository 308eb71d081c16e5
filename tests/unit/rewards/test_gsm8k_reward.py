import pytest

from rlkit.rewards.gsm8k import compute_score, extract_answer


def score(response, truth="72", **kwargs):
    return compute_score("openai/gsm8k", response, truth, {}, **kwargs)


def test_strict_needs_the_hash_marker():
    assert score("48 + 24 = 72\n#### 72") == 1.0
    assert score("48 + 24 = 72") == 0.0  # no '#### N'
    assert score("#### 71") == 0.0
    assert score("#### 71", format_score=0.1) == 0.1  # found a number, wrong
    assert score("72", format_score=0.1) == 0.0  # found none


def test_flexible_takes_the_last_number():
    assert score("48 + 24 = 72.", method="flexible") == 1.0
    assert score("72 or maybe 71", method="flexible") == 0.0
    assert score("no numbers here", method="flexible", format_score=0.1) == 0.0


def test_commas_dollars_and_numeric_comparison():
    assert score("#### $1,200", truth="1200") == 1.0
    assert score("#### 1200.00", truth="1,200") == 1.0
    assert score("#### -3", truth="-3") == 1.0
    assert score("#### 3", truth="-3") == 0.0
    assert score("first #### 5 then #### 72") == 1.0  # the last marker counts


def test_ground_truth_may_be_a_full_solution():
    assert score("#### 72", truth="48+24=72\n#### 72") == 1.0
    assert score("#### 72", truth=72) == 1.0
    with pytest.raises(ValueError, match="ground truth 'seventy' is not a number"):
        score("#### 72", truth="seventy")


def test_extract_answer():
    assert extract_answer("so #### 1,200 apples") == "1,200"
    assert extract_answer("1 and 2.5, done", method="flexible") == "2.5"
    assert extract_answer("nothing") is None
    with pytest.raises(ValueError, match="'strict' or 'flexible'"):
        extract_answer("#### 1", method="loose")
