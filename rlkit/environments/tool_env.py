"""The tool environment: the model calls tools in its text, the environment runs them and answers with their results.

reset: the prompt's messages, with the tools described by the chat template (or, for a template without tool
support, by a system message in the fallback format: rlkit.environments.tool_calls). step: the calls in the
model's turn run one after another (`max_calls_per_turn` at most), each answered by a `tool` message with its
result or its error; a turn without a call is the final answer and ends the conversation. A failing call never
stops the run (rlkit.tools.ToolBox). The reward comes from the reward config (reward.name), which sees the final
turn's text and, through `trajectory`, every call and result.
"""

from __future__ import annotations

from typing import Any

from rlkit.environments.base import Sample, Step
from rlkit.environments.tool_calls import parse_tool_calls, template_renders_tools, tool_instructions, with_instructions
from rlkit.errors import ConfigError
from rlkit.tools import ToolBox
from rlkit.trajectory import Message, ToolCall


class ToolEnvironment:
    """Runs the tool calls of each model turn.

    Args:
        tools: the environment's tools (environment.tools, built by rlkit).
        tokenizer: the run's tokenizer (its chat template describes the tools and may parse the calls).
        max_calls_per_turn: calls beyond this many in one turn are answered with an error, not run.
    """

    needs_chat_prompts = True

    def __init__(self, tools: ToolBox, tokenizer: Any, max_calls_per_turn: int = 8):
        if not len(tools):
            raise ConfigError("environment 'tools' has no tools; list them in environment.tools (calculator, python, "
                              "or your own)")
        if max_calls_per_turn < 1:
            raise ConfigError(f"environment.kwargs.max_calls_per_turn={max_calls_per_turn}; it must be at least 1")
        self.toolbox = tools
        self.tokenizer = tokenizer
        self.max_calls_per_turn = max_calls_per_turn
        self.tools: list[dict[str, Any]] = []  # what the chat template renders: set by reset

    def reset(self, sample: Sample) -> list[Message]:
        if sample.messages is None:
            raise ConfigError("environment 'tools' needs chat prompts, but this prompt is raw text; set "
                              "data.prompt_format=chat (the tokenizer needs a chat template)")
        if template_renders_tools(self.tokenizer):
            self.tools = self.toolbox.schemas
            return list(sample.messages)
        self.tools = []
        return with_instructions(sample.messages, tool_instructions(self.toolbox.schemas))

    def step(self, model_text: str) -> Step:
        parsed = parse_tool_calls(model_text, self.tokenizer, self.toolbox.schemas)
        if not parsed:
            return Step(done=True)
        calls: list[ToolCall] = []
        for index, call in enumerate(parsed):
            if index >= self.max_calls_per_turn:
                calls.append(ToolCall(call.name, {}, f"Error: at most {self.max_calls_per_turn} tool calls per turn; "
                                      "this one was not run", error=True))
            elif call.problem is not None:
                calls.append(ToolCall(call.name, {}, f"Error: {call.problem}", error=True))
            else:
                calls.append(self.toolbox.call(call.name, call.arguments))
        observation = [{"role": "tool", "name": call.name, "content": call.result} for call in calls]
        return Step(observation=observation, tool_calls=calls)
