"""The environment section (`environment:`): what the model talks to between its turns, and the tools it may call.

An environment answers each model turn (tool results, a user's reply) until it says done; `rollout.max_turns` and
`rollout.max_total_tokens` bound the conversation. The default, `single_turn`, ends after the first response:
one response per prompt, as a run without environments. See docs/environments.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from rlkit.config.base import Section, check_registered


class EnvironmentConfig(Section):
    name: Annotated[
        str,
        Field(description="The environment: single_turn (one response per prompt), tools (runs the tool calls in the "
              "model's text and answers with their results), a registered name (`rlkit list`), 'module:Class' or "
              "'file.py:Class'. One instance per conversation."),
    ] = "single_turn"
    kwargs: Annotated[
        dict[str, Any], Field(description="Keyword arguments of the environment's constructor.")
    ] = {}
    tools: Annotated[
        list[str],
        Field(description="Tools the environment offers the model: calculator, python, a registered name, "
              "'module:function' or 'file.py:function' (a typed function with a docstring)."),
    ] = []
    tool_options: Annotated[
        dict[str, dict[str, Any]],
        Field(description="Options of each tool, by its name in `tools`: the tool function's keyword-only "
              "arguments, hidden from the model (python: timeout_s, memory_mb)."),
    ] = {}
    tool_timeout_s: Annotated[
        float, Field(gt=0, description="A tool call running longer is abandoned; the model reads an error.")
    ] = 30.0
    max_tool_output_chars: Annotated[
        int, Field(ge=1, description="Tool results and error messages are cut to this many characters.")
    ] = 2000
    num_workers: Annotated[
        int, Field(ge=1, description="Conversations whose environments step at the same time (threads).")
    ] = 8

    @field_validator("name")
    @classmethod
    def _known_environment(cls, name: str) -> str:
        return check_registered("ENVIRONMENTS", name)

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, names: list[str]) -> list[str]:
        for name in names:
            check_registered("TOOLS", name)
        if len(set(names)) != len(names):
            raise ValueError(f"environment.tools lists a tool twice: {names}")
        return names
