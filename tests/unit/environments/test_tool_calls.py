"""Reading tool calls from the model's text, and describing tools: by the chat template when it renders them,
else by the fallback system message."""

from __future__ import annotations

import pytest

from rlkit.config.environment import EnvironmentConfig
from rlkit.environments import Sample, environment_factory
from rlkit.environments.tool_calls import ParsedCall, hermes_calls, parse_tool_calls, template_renders_tools

USER = [{"role": "user", "content": "what is 6 * 7?"}]


def sample(messages=USER) -> Sample:
    return Sample(messages, "", "test", "42", {})


@pytest.mark.parametrize("text, calls", [
    ("no tool here", []),
    ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>',
     [ParsedCall("calculator", {"expression": "6*7"})]),
    ('a <tool_call>{"name": "a", "arguments": {}}</tool_call> b <tool_call>{"name": "b", "parameters": {"x": 1}}'
     "</tool_call>", [ParsedCall("a", {}), ParsedCall("b", {"x": 1})]),
    ('<tool_call>{"name": "a", "arguments": "{\\"x\\": 2}"}</tool_call>', [ParsedCall("a", {"x": 2})]),
    ('<tool_call>{"name": "a", "arguments": {"x": 3}}', [ParsedCall("a", {"x": 3})]),  # the turn ended inside it
])
def test_hermes_calls(text, calls):
    assert hermes_calls(text) == calls


@pytest.mark.parametrize("text, problem", [
    ("<tool_call>{name: calculator}</tool_call>", "not valid JSON"),
    ('<tool_call>["calculator"]</tool_call>', 'a tool call is a JSON object {"name"'),
    ('<tool_call>{"name": "a", "arguments": "x=1"}</tool_call>', "arguments are not a JSON object"),
])
def test_a_malformed_call_is_a_failed_call(text, problem):
    (call,) = hermes_calls(text)
    assert problem in call.problem


def test_a_response_template_reads_calls_in_the_templates_format():
    class TemplateTokenizer:
        response_template = {"stand-in": True}

        def parse_response(self, text, prefix=None, tools=None):
            assert prefix == "" and tools == [{"name": "t"}]
            return {"role": "assistant", "tool_calls": [
                {"type": "function", "function": {"name": "calculator", "arguments": {"expression": text}}}]}

    assert parse_tool_calls("1+1", TemplateTokenizer(), [{"name": "t"}]) == [
        ParsedCall("calculator", {"expression": "1+1"})]


def test_which_templates_render_tools(tokenizer, tool_tokenizer):
    assert not template_renders_tools(tokenizer)  # the tiny model's ChatML ignores `tools`
    assert template_renders_tools(tool_tokenizer)


def test_without_template_support_the_tools_go_in_a_system_message(tokenizer):
    environment = environment_factory(EnvironmentConfig(name="tools", tools=["calculator"]), tokenizer)()
    messages = environment.reset(sample())
    assert environment.tools == [] and messages[1:] == USER
    assert messages[0]["role"] == "system" and '"name": "calculator"' in messages[0]["content"]
    assert "between <tool_call> and </tool_call>" in messages[0]["content"]
    # a system message of the prompt's own keeps its text first
    own = environment.reset(sample([{"role": "system", "content": "Be brief."}, *USER]))
    assert own[0]["content"].startswith("Be brief.\n\nYou can call tools.") and len(own) == 2


def test_with_template_support_the_template_describes_them(tool_tokenizer):
    environment = environment_factory(EnvironmentConfig(name="tools", tools=["calculator"]), tool_tokenizer)()
    assert environment.reset(sample()) == USER
    assert [schema["function"]["name"] for schema in environment.tools] == ["calculator"]


def test_a_turn_without_a_call_ends_the_conversation_and_calls_are_answered(tokenizer):
    environment = environment_factory(EnvironmentConfig(name="tools", tools=["calculator"],
                                                        kwargs={"max_calls_per_turn": 2}), tokenizer)()
    environment.reset(sample())
    assert environment.step("The answer is 42.").done
    step = environment.step('<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>'
                            "<tool_call>{oops}</tool_call>"
                            '<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}</tool_call>')
    assert not step.done and [call.error for call in step.tool_calls] == [False, True, True]
    results = [message["content"] for message in step.observation]
    assert results[0] == "42" and results[1].startswith("Error: the tool call is not valid JSON")
    assert results[2] == "Error: at most 2 tool calls per turn; this one was not run"
    assert all(message["role"] == "tool" for message in step.observation)
