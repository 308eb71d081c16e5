import threading

import pytest

from rlkit.rewards.math import compute_score, wrap_ground_truth


def test_ground_truth_is_boxed_unless_already_latex():
    assert wrap_ground_truth("\\frac{1}{2}") == "\\boxed{\\frac{1}{2}}"
    assert wrap_ground_truth(" 72 ") == "\\boxed{72}"
    assert wrap_ground_truth("$x^2$") == "$x^2$"
    assert wrap_ground_truth("\\boxed{3}") == "\\boxed{3}"


@pytest.mark.parametrize(
    "response, truth, expected",
    [
        ("so the answer is \\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("so the answer is $\\frac{2}{4}$", "\\frac{1}{2}", 1.0),
        ("The answer is 72.", "72", 1.0),
        ("The answer is \\boxed{71}", "72", 0.0),
        ("no answer", "72", 0.0),
        ("\\boxed{x^2 + 2x + 1}", "(x+1)^2", 1.0),
    ],
)
def test_equivalence(response, truth, expected):
    assert compute_score("math", response, truth, {}) == expected


def test_works_off_the_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append(compute_score("math", "\\boxed{2}", "2", {})))
    worker.start()
    worker.join()
    assert results == [1.0]


def test_unparsable_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="cannot parse the ground truth"):
        compute_score("math", "\\boxed{2}", "", {})
