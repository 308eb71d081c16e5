"""Rewards that read the whole conversation: a function naming a `trajectory` parameter gets it, verl's
four-argument functions (and those with **kwargs) are called as before, and the `environment` reward sums the
environment's own rewards."""

from __future__ import annotations

import pytest

from rlkit.config import RewardConfig
from rlkit.errors import RewardError
from rlkit.rewards import RewardSample, build_reward_manager
from rlkit.trajectory import ToolCall, Trajectory, Turn

CONVERSATION = Trajectory(
    prompt=[{"role": "user", "content": "what is 6 * 7?"}],
    turns=[Turn('<tool_call>{"name": "calculator"}</tool_call>', 12, [{"role": "tool", "content": "42"}], 0.5,
                [ToolCall("calculator", {"expression": "6*7"}, "42")]),
           Turn("It is 42.", 5, reward=1.0)],
)

REWARDS = '''
def used_the_tool(data_source, solution_str, ground_truth, extra_info, trajectory=None):
    """1 when the final answer is right and a tool call returned it."""
    called = any(call.result == ground_truth for call in trajectory.tool_calls)
    return float(called and ground_truth in solution_str)


def verl_style(data_source, solution_str, ground_truth, extra_info):
    return float(ground_truth in solution_str)


def forwards_kwargs(data_source, solution_str, ground_truth, extra_info, **kwargs):
    assert "trajectory" not in kwargs, "only a named trajectory parameter receives it"
    return 0.25
'''


def sample(trajectory=CONVERSATION) -> RewardSample:
    return RewardSample(0, "test", "what is 6 * 7?", "It is 42.", "42", {}, trajectory)


@pytest.mark.parametrize("name, score", [("used_the_tool", 1.0), ("verl_style", 1.0), ("forwards_kwargs", 0.25)])
def test_functions_get_the_trajectory_when_they_name_it(tmp_path, name, score):
    (tmp_path / "rewards.py").write_text(REWARDS)
    manager = build_reward_manager(RewardConfig(name=f"{tmp_path}/rewards.py:{name}"))
    assert manager([sample()]).scores == [score]


def test_the_environment_reward_sums_the_environments_rewards():
    assert CONVERSATION.environment_reward == 1.5
    assert build_reward_manager(RewardConfig(name="environment"))([sample()]).scores == [1.5]
    with pytest.raises(RewardError, match="needs the conversation's trajectory"):
        build_reward_manager(RewardConfig(name="environment"))([sample(trajectory=None)])


def test_a_trajectory_reads_as_chat_messages():
    assert CONVERSATION.messages() == [
        {"role": "user", "content": "what is 6 * 7?"},
        {"role": "assistant", "content": '<tool_call>{"name": "calculator"}</tool_call>'},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
    ]
    assert CONVERSATION.final_text == "It is 42." and CONVERSATION.num_tool_errors == 0
