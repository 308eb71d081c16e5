import logging
import math
import threading

import numpy as np
import pytest

from rlkit.errors import RewardError
from rlkit.rewards.base import (
    FunctionRewardManager,
    RewardManager,
    RewardOutput,
    RewardSample,
    split_result,
)
from rlkit.rewards.guard import GuardedRewardManager

SAMPLES = [RewardSample(index, "src", "p", response, "gt") for index, response in enumerate(["ok", "bad", "ok"])]


def guarded(fn, **options):
    return GuardedRewardManager(FunctionRewardManager(fn, "my_reward"), "my_reward", **options)


def test_split_result_accepts_numbers_and_score_dicts():
    assert split_result(1) == (1.0, {})
    assert split_result(np.float32(0.5)) == (0.5, {})
    assert split_result({"score": 0.5, "acc": True, "pred": "72", "len": 3}) == (0.5, {"acc": 1.0, "len": 3.0})


@pytest.mark.parametrize(
    "value, message",
    [
        (math.nan, "returned nan as its score; scores must be finite"),
        (math.inf, "returned inf as its score"),
        ("1.0", "returned str as its score"),
        (True, "returned bool as its score"),
        (None, "returned NoneType as its score"),
        ({"acc": 1.0}, "returned a dict without 'score'"),
        ({"score": 1.0, "acc": math.nan}, "returned nan as its extra 'acc'"),
    ],
)
def test_bad_results_name_sample_source_and_plugin(value, message):
    manager = guarded(lambda ds, response, gt, info: value if response == "bad" else 1.0)
    with pytest.raises(RewardError) as error:
        manager(SAMPLES)
    assert str(error.value).startswith("reward 'my_reward' failed on sample 1 (data_source 'src'): ")
    assert message in str(error.value)
    assert "reward.on_error=zero" in str(error.value)


def test_an_exception_names_its_type():
    def explode(ds, response, gt, info):
        raise KeyError("boom")

    with pytest.raises(RewardError, match=r"failed on sample 0 \(data_source 'src'\): KeyError: 'boom'"):
        guarded(explode)(SAMPLES)


def test_on_error_zero_scores_failures_zero_and_warns(caplog):
    manager = guarded(lambda ds, response, gt, info: math.nan if response == "bad" else 0.5, on_error="zero")
    with caplog.at_level(logging.WARNING, logger="rlkit.rewards.guard"):
        output = manager(SAMPLES)
    assert output.scores == [0.5, 0.0, 0.5]
    assert output.num_failures == 1
    assert "1 of 3 samples scored 0" in caplog.text and "sample 1" in caplog.text


def test_timeout_stops_a_hanging_call():
    release = threading.Event()

    def hang(ds, response, gt, info):
        if response == "bad":
            release.wait(10)
        return 1.0

    try:
        with pytest.raises(RewardError, match=r"sample 1 .*RewardTimeout: took longer than reward.timeout_s=0.05 s"):
            guarded(hang, timeout_s=0.05)(SAMPLES)
        output = guarded(hang, timeout_s=0.05, on_error="zero")(SAMPLES)
        assert output.scores == [1.0, 0.0, 1.0] and output.num_failures == 1
    finally:
        release.set()


class CountingManager(RewardManager):
    """A batch manager returning `self.kwargs['scores']` whatever the batch."""

    def __call__(self, samples):
        return RewardOutput(list(self.kwargs["scores"]), {"n": [1.0] * len(self.kwargs["scores"])})


def test_batch_manager_with_the_wrong_count():
    manager = GuardedRewardManager(CountingManager(scores=[1.0, 1.0]), "counting")
    with pytest.raises(
        RewardError,
        match=r"reward 'counting' failed on the batch of samples 0..2 \(data_source src\): "
        r"ValueError: returned 2 scores for 3 samples",
    ):
        manager(SAMPLES)
    zeroed = GuardedRewardManager(CountingManager(scores=[1.0, 1.0]), "counting", on_error="zero")(SAMPLES)
    assert zeroed.scores == [0.0, 0.0, 0.0] and zeroed.num_failures == 3


def test_batch_manager_with_a_nan_score_fails_only_that_sample():
    manager = GuardedRewardManager(CountingManager(scores=[1.0, math.nan, 0.5]), "counting", on_error="zero")
    output = manager(SAMPLES)
    assert output.scores == [1.0, 0.0, 0.5] and output.num_failures == 1
    assert output.extras == {"n": [1.0, 1.0, 1.0]}
    with pytest.raises(RewardError, match=r"failed on sample 1 \(data_source 'src'\)"):
        GuardedRewardManager(CountingManager(scores=[1.0, math.nan, 0.5]), "counting")(SAMPLES)


def test_batch_manager_returning_the_wrong_type():
    class Wrong(RewardManager):
        def __call__(self, samples):
            return [1.0] * len(samples)

    with pytest.raises(RewardError, match="returned list, not a RewardOutput"):
        GuardedRewardManager(Wrong(), "wrong")(SAMPLES)


def test_raise_stops_at_the_first_failure_and_keeps_the_cause():
    calls = []

    def record(ds, response, gt, info):
        calls.append(response)
        return 1 / 0 if response == "bad" else 1.0

    with pytest.raises(RewardError) as error:
        guarded(record)(SAMPLES)
    assert calls == ["ok", "bad"]  # the third sample is never scored
    assert isinstance(error.value.__cause__, ZeroDivisionError)
