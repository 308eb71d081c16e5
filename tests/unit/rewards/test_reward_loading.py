import math

import pytest

from rlkit.config.schema import RewardConfig
from rlkit.errors import PluginError, RewardError
from rlkit.registry import REWARDS
from rlkit.rewards import (
    RewardManager,
    RewardOutput,
    RewardSample,
    build_reward_manager,
    samples_from_batch,
)
from rlkit.rewards.builtin import default_reward_name


def sample(index, data_source, response, truth):
    return RewardSample(index, data_source, "prompt", response, truth, {})


def test_builtins_are_registered():
    assert {"gsm8k", "math", "format", "length", "letters"} <= set(REWARDS.names())
    entry = {entry.name: entry for entry in REWARDS.entries()}["gsm8k"]
    assert entry.source == "built-in" and entry.target == "rlkit.rewards.gsm8k:compute_score"


@pytest.mark.parametrize(
    "data_source, reward",
    [
        ("openai/gsm8k", "gsm8k"),
        ("gsm8k", "gsm8k"),
        ("lighteval/MATH", "math"),
        ("DigitalLearningGmbH/MATH-lighteval", "math"),
        ("math", "math"),
        ("my_math_set", "math"),
        ("letters", "letters"),
    ],
)
def test_default_reward_by_data_source(data_source, reward):
    assert default_reward_name(data_source) == reward


def test_unknown_data_source_says_what_to_set():
    with pytest.raises(
        PluginError,
        match=r"no built-in reward for data_source 'trivia'.*set reward.name, or "
        r"reward.per_data_source",
    ):
        build_reward_manager(RewardConfig())([sample(0, "trivia", "x", "y")])


def test_auto_routes_each_sample_and_keeps_the_order():
    samples = [
        sample(0, "letters", "aaaab", "a"),  # letters: 4 of 5 -> 0.8, acc 0
        sample(1, "openai/gsm8k", "#### 72", "72"),  # gsm8k strict: right -> 1.0
        sample(2, "letters", "aaaa", "a"),  # 1.0, acc 1
        sample(3, "openai/gsm8k", "72", "72"),  # strict: no marker -> 0.0
    ]
    output = build_reward_manager(RewardConfig())(samples)
    assert output.scores == [0.8, 1.0, 1.0, 0.0]
    assert list(output.extras) == ["acc"]
    acc = output.extras["acc"]
    assert acc[0] == 0.0 and acc[2] == 1.0 and math.isnan(acc[1]) and math.isnan(acc[3])  # gsm8k has no acc
    assert output.num_failures == 0


def test_kwargs_go_to_the_rewards_that_accept_them():
    cfg = RewardConfig(kwargs={"method": "flexible", "format_score": 0.1})
    output = build_reward_manager(cfg)(
        [sample(0, "gsm8k", "it is 72", "72"), sample(1, "gsm8k", "it is 7", "72"), sample(2, "letters", "a", "a")]
    )
    assert output.scores == [1.0, 0.1, 1.0]  # letters takes neither option and still works


def test_unknown_kwargs_are_named():
    with pytest.raises(PluginError, match=r"reward.kwargs methd are accepted by no reward in use.*gsm8k: \("):
        build_reward_manager(RewardConfig(kwargs={"methd": "flexible"}))


def test_name_and_per_data_source():
    cfg = RewardConfig(name="format", per_data_source={"letters": "letters"}, kwargs={"pattern": r"^\d+$"})
    output = build_reward_manager(cfg)(
        [sample(0, "anything", "42", None), sample(1, "letters", "bb", "b"), sample(2, "other", "4 2", None)]
    )
    assert output.scores == [1.0, 1.0, 0.0]


def test_module_and_file_references(tmp_path):
    by_module = build_reward_manager(RewardConfig(name="rlkit.rewards.letters:compute_score"))
    assert by_module([sample(0, "whatever", "aa", "a")]).scores == [1.0]

    plugin = tmp_path / "my_reward.py"
    plugin.write_text(
        "def score(data_source, response, truth, extra_info, bonus=0.0):\n"
        "    return {'score': float(response == truth) + bonus, 'length': len(response)}\n"
    )
    manager = build_reward_manager(RewardConfig(name=f"{plugin}:score", kwargs={"bonus": 0.5}))
    output = manager([sample(0, "x", "yes", "yes"), sample(1, "x", "no", "yes")])
    assert output.scores == [1.5, 0.5]
    assert output.extras == {"length": [3.0, 2.0]}


class ConstantManager(RewardManager):
    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value = value

    def __call__(self, samples):
        return RewardOutput([self.value] * len(samples))


def test_manager_class_is_instantiated_with_kwargs():
    REWARDS.register("constant_for_test", ConstantManager)
    try:
        manager = build_reward_manager(RewardConfig(name="constant_for_test", kwargs={"value": 0.25}))
        assert manager([sample(0, "a", "", None), sample(1, "b", "", None)]).scores == [0.25, 0.25]
        with pytest.raises(PluginError, match="reward.kwargs scale are accepted by no reward"):
            build_reward_manager(RewardConfig(name="constant_for_test", kwargs={"scale": 2}))
    finally:
        REWARDS.unregister("constant_for_test")


def test_components_that_are_not_rewards():
    REWARDS.register("not_a_reward", 3)
    REWARDS.register("two_args", lambda response, truth: 1.0)
    try:
        with pytest.raises(PluginError, match="reward 'not_a_reward' is a int; it must be a function"):
            build_reward_manager(RewardConfig(name="not_a_reward"))
        with pytest.raises(PluginError, match=r"reward 'two_args' has parameters \(response, truth\)"):
            build_reward_manager(RewardConfig(name="two_args"))
    finally:
        REWARDS.unregister("not_a_reward")
        REWARDS.unregister("two_args")


def test_guard_options_reach_every_reward():
    cfg = RewardConfig(name="gsm8k", on_error="zero", timeout_s=5)
    output = build_reward_manager(cfg)([sample(0, "x", "#### 1", "one"), sample(1, "x", "#### 1", "1")])
    assert output.scores == [0.0, 1.0] and output.num_failures == 1
    with pytest.raises(RewardError, match=r"reward 'gsm8k' failed on sample 0 \(data_source 'x'\)"):
        build_reward_manager(RewardConfig(name="gsm8k"))([sample(0, "x", "#### 1", "one")])


def test_samples_from_batch_meta():
    from rlkit.batch import Batch

    batch = Batch(
        meta={
            "data_source": ["letters", "gsm8k"],
            "prompt_text": ["p0", "p1"],
            "response_text": ["r0", "r1"],
            "ground_truth": ["a", "1"],
            "extra_info": [None, {"k": 1}],
        }
    )
    assert samples_from_batch(batch) == [
        RewardSample(0, "letters", "p0", "r0", "a", {}),
        RewardSample(1, "gsm8k", "p1", "r1", "1", {"k": 1}),
    ]
