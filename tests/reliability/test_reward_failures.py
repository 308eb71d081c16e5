"""Failing rewards through the trainer: a reward that raises, returns NaN/inf/text/None, returns the wrong
number of scores or hangs stops the run with a RewardError naming the sample and the plugin
(`reward.on_error=raise`), or scores 0 with a warning and a `reward/failures` count (`on_error=zero`)."""

import logging

import pytest

from rlkit.errors import RewardError

# Three of every four calls fail, each in another way; the fourth scores 1.
FLAKY = '''
import math

CALLS = [0]


def reward(data_source, solution_str, ground_truth, extra_info):
    CALLS[0] += 1
    kind = CALLS[0] % 4
    if kind == 1:
        raise KeyError("no such answer")
    if kind == 2:
        return math.nan
    if kind == 3:
        return "high"
    return 1.0
'''

BAD_RESULTS = {
    "raises": ("raise ValueError('cannot parse')", "ValueError: cannot parse"),
    "nan": ("return float('nan')", "returned nan as its score; scores must be finite"),
    "inf": ("return float('-inf')", "returned -inf as its score"),
    "text": ("return 'high'", "returned str as its score"),
    "none": ("return None", "returned NoneType as its score"),
    "dict-without-score": ("return {'acc': 1.0}", "returned a dict without 'score'"),
    "hangs": ("import time; time.sleep(3); return 1.0", "took longer than reward.timeout_s=0.5 s"),
}

WRONG_COUNT = '''
from rlkit.rewards.base import RewardManager, RewardOutput


class Scorer(RewardManager):
    def __call__(self, samples):
        return RewardOutput([1.0] * (len(samples) - 1))
'''


def one_step(small_run, output_dir, *extra):
    return small_run(output_dir, "trainer.total_steps=1", "trainer.val_before_train=false", *extra)


def test_on_error_zero_scores_failures_0_counts_them_and_warns(small_run, train, tmp_path, caplog):
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FLAKY)
    with caplog.at_level(logging.WARNING):
        last = train(small_run(tmp_path / "run", f"reward.name={plugin}:reward", "reward.on_error=zero"))
    # 32 responses a step: 24 failures, 8 scores of 1 -> mean 8/32.
    assert last["reward/failures"] == 24.0
    assert last["reward/mean"] == pytest.approx(8 / 32)
    warnings = [r.getMessage() for r in caplog.records if "scored 0 after a failure" in r.getMessage()]
    assert any(w.startswith("24 of 32 samples scored 0 after a failure; first: reward") for w in warnings)
    assert f"'{plugin}:reward' failed on sample 0 (data_source 'letters'): KeyError" in warnings[0]


@pytest.mark.parametrize("body, expected", BAD_RESULTS.values(), ids=BAD_RESULTS.keys())
def test_on_error_raise_names_the_sample_and_the_plugin(small_run, train, tmp_path, body, expected):
    plugin = tmp_path / "bad.py"
    plugin.write_text(f"def reward(data_source, solution_str, ground_truth, extra_info):\n    {body}\n")
    with pytest.raises(RewardError) as error:
        train(one_step(small_run, tmp_path / "run", f"reward.name={plugin}:reward", "reward.timeout_s=0.5"))
    message = str(error.value)
    assert message.startswith(f"reward '{plugin}:reward' failed on sample 0 (data_source 'letters'): "), message
    assert expected in message and "reward.on_error=zero" in message


def test_a_batch_manager_with_the_wrong_count_names_the_batch(small_run, train, tmp_path):
    plugin = tmp_path / "scorer.py"
    plugin.write_text(WRONG_COUNT)
    with pytest.raises(RewardError, match=r"failed on the batch of samples 0\.\.31 \(data_source letters\): "
                                          r"ValueError: returned 31 scores for 32 samples"):
        train(one_step(small_run, tmp_path / "run", f"reward.name={plugin}:Scorer"))
