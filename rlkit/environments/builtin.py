"""Registers the built-in environments in ENVIRONMENTS; the registry imports this module on its first lookup."""

from __future__ import annotations

from rlkit.environments.single_turn import SingleTurnEnvironment
from rlkit.environments.tool_env import ToolEnvironment
from rlkit.registry import ENVIRONMENTS

ENVIRONMENTS.register("single_turn", SingleTurnEnvironment)
ENVIRONMENTS.register("tools", ToolEnvironment)
