"""A third-party reward installed as a distribution with an `rlkit.rewards` entry point."""

import sys

import pytest

from helpers import write_reward_distribution
from rlkit.config.schema import RewardConfig
from rlkit.registry import REWARDS
from rlkit.rewards import RewardSample, build_reward_manager


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    source = (
        "def score(data_source, solution_str, ground_truth, extra_info, weight=1.0):\n"
        "    return weight * float(solution_str.strip() == ground_truth)\n"
    )
    write_reward_distribution(tmp_path, "myrewards", source, {"my_reward": "myrewards:score"})
    monkeypatch.syspath_prepend(str(tmp_path))
    REWARDS.reload_entry_points()
    yield
    # Before monkeypatch restores sys.path: drop the name so later lookups cannot see it.
    REWARDS.unregister("my_reward")
    sys.modules.pop("myrewards", None)


def test_entry_point_reward_is_found_and_scores(installed_plugin):
    assert REWARDS.get("my_reward").__module__ == "myrewards"
    entry = {entry.name: entry for entry in REWARDS.entries()}["my_reward"]
    assert entry.source == "entry point (myrewards)"
    assert entry.target == "myrewards:score"

    manager = build_reward_manager(RewardConfig(name="my_reward", kwargs={"weight": 2.0}))
    samples = [RewardSample(0, "any", "p", " 42 ", "42"), RewardSample(1, "any", "p", "41", "42")]
    assert manager(samples).scores == [2.0, 0.0]


def test_plugin_is_gone_afterwards():
    assert "my_reward" not in REWARDS
