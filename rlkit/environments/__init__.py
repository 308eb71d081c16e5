"""Environments: what the model talks to between its turns (tools, simulated users, games).

An environment is a plugin, like a reward: a class with `reset(sample)` and `step(model_text)` (the
`Environment` protocol), named by `environment.name`. Built-ins: `single_turn` (one response per prompt, the
default) and `tools` (runs the tool calls in the model's text). `ChatRenderer` turns the environment's chat
messages into the tokens appended after each model turn. See docs/environments.md.
"""

from rlkit.environments.base import Environment, Sample, Step
from rlkit.environments.loading import EnvironmentFactory, environment_factory, needs_chat_prompts
from rlkit.environments.rendering import ChatRenderer
from rlkit.environments.single_turn import SingleTurnEnvironment
from rlkit.environments.tool_env import ToolEnvironment

__all__ = [
    "ChatRenderer",
    "Environment",
    "EnvironmentFactory",
    "Sample",
    "SingleTurnEnvironment",
    "Step",
    "ToolEnvironment",
    "environment_factory",
    "needs_chat_prompts",
]
