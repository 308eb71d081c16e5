"""rlkit.evaluation.metrics and evaluate() against hand-computed values, on a fake rollout engine."""

import math

import pytest

from rlkit.config.schema import RewardConfig
from rlkit.data.prompts import PromptRecord
from rlkit.evaluation.metrics import pass_at_k, pass_k_values, summarize, wilson_interval
from rlkit.evaluation.runner import evaluate
from rlkit.rewards.base import correctness
from rlkit.rewards.loading import build_reward_manager
from rlkit.rollout.base import Completion, SamplingParams


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k(5, 2, 4) == 1.0 and pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    # the product form agrees with the binomials where both are exact
    for n, c, k in [(20, 3, 5), (200, 17, 10), (8, 1, 8)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_wilson_interval_by_hand():
    # 5 of 10, z = 1.96: center (0.5 + 0.19207) / 1.38415 = 0.5, half 1.41603 * sqrt(0.025 + 0.009604) = 0.26341
    low, high = wilson_interval(0.5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # 0 of 20: center = half = 0.096037 / 1.19207 = 0.08056, so (0, 0.1611); never below 0 or above 1
    assert wilson_interval(0.0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert wilson_interval(1.0, 20) == pytest.approx((1 - 0.1611, 1.0), abs=1e-4)


def test_pass_k_values():
    assert pass_k_values(1) == [1] and pass_k_values(5) == [1, 2, 4, 5] and pass_k_values(8) == [1, 2, 4, 8]


def test_summary_by_hand():
    # 2 prompts x 4 samples: prompt 0 has 2 correct, prompt 1 none
    correct = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    scores = [1.0, 0.1, 0.1, 1.0, 0.0, 0.0, 0.1, 0.0]
    lengths = [10, 20, 30, 40, 50, 60, 70, 80]
    truncated = [False] * 6 + [True, True]
    summary = summarize(scores, correct, lengths, truncated, num_samples=4)
    assert summary.num_prompts == 2 and summary.accuracy == pytest.approx(0.25)
    assert summary.accuracy_ci95 == pytest.approx(wilson_interval(0.25, 2))  # n = prompts, not responses
    assert summary.reward_mean == pytest.approx(2.3 / 8)
    # pass@2: prompt 0 is 1 - C(2,2)/C(4,2) = 5/6, prompt 1 is 0; pass@4: 1 and 0
    assert summary.pass_at_k == pytest.approx({1: 0.25, 2: 5 / 12, 4: 0.5})
    assert summary.response_length_mean == pytest.approx(45.0) and summary.truncation_rate == pytest.approx(0.25)
    assert summarize([0.5], [0.0], [3], [False], num_samples=1).pass_at_k == {}
    with pytest.raises(ValueError, match="whole groups of 4"):
        summarize(scores[:6], correct[:6], lengths[:6], truncated[:6], num_samples=4)


def test_correct_means_acc_or_a_full_score():
    assert correctness([1.0, 0.5, 1.0], None) == [1.0, 0.0, 1.0]
    assert correctness([0.2, 1.0, 0.0], [1.0, 0.0, math.nan]) == [1.0, 0.0, 0.0]


class CannedRollout:
    """Answers the prompt with token ids [i] with the responses CANNED[i] (n of them), in calls it records."""

    def __init__(self, canned: dict[int, list[str]]):
        self.canned = canned
        self.calls: list[int] = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        return [Completion(list(prompt), list(range(len(text.split()))), None,
                           "length" if text.endswith("...") else "stop", text)
                for prompt in prompts for text in self.canned[prompt[0]][: params.n]]


def test_evaluate_a_fake_rollout_with_the_gsm8k_reward():
    canned = {
        0: ["so #### 18", "#### 17", "it is 18..."],      # strict: right, wrong, no '####' (truncated)
        1: ["#### 3", "#### 3", "#### 3"],                  # all right
        2: ["#### 1,200", "no idea", "#### $1,200.00"],     # separators and $ are removed
    }
    truths = {0: "18", 1: "3", 2: "1200"}
    records = [PromptRecord([i], f"q{i}", "openai/gsm8k", truths[i], {}, i) for i in range(3)]
    reward = build_reward_manager(RewardConfig(name="gsm8k"))
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, logprobs=False)
    rollout = CannedRollout(canned)
    report = evaluate(rollout, records, reward, params, batch_size=2)
    assert rollout.calls == [2, 1]
    assert [r.correct for r in report.responses] == [1, 0, 0, 1, 1, 1, 1, 0, 1]
    assert [(r.prompt_index, r.sample_index) for r in report.responses][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    summary = report.summary
    assert summary.accuracy == pytest.approx(6 / 9) and summary.reward_mean == pytest.approx(6 / 9)
    # pass@2 per prompt: c=1 -> 1 - C(2,2)/C(3,2) = 2/3; c=3 -> 1; c=2 -> 1
    assert summary.pass_at_k == pytest.approx({1: 6 / 9, 2: (2 / 3 + 1 + 1) / 3, 3: 1.0})
    assert summary.accuracy_ci95 == pytest.approx(wilson_interval(6 / 9, 3))
    assert summary.truncation_rate == pytest.approx(1 / 9)
    assert summary.response_length_mean == pytest.approx(sum(len(t.split()) for v in canned.values() for t in v) / 9)
    # the batch size changes the calls, not the results
    again = evaluate(CannedRollout(canned), records, reward, params)
    assert again.summary == report.summary and again.responses == report.responses
