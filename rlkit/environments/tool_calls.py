"""How tools are described to the model and how its tool calls are read back.

Describing: when the chat template renders tools (`apply_chat_template(messages, tools=schemas)` differs from
the same call without them: Qwen2.5, Qwen3, Llama 3.1, Hermes, SmolLM3, ...), the template does it. A template
without tool support gets the fallback: a system message that lists the tools' JSON schemas and asks for
calls in the Hermes/Qwen format,

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "48 / 2"}}
    </tool_call>

Reading: when the tokenizer has a `response_template` (transformers' declarative response parsing), its
`parse_response` reads the calls in the template's own format; otherwise calls are read in the Hermes/Qwen
format above, which is also what the Qwen, Hermes and SmolLM3 templates ask for. A block whose JSON does not
parse is a call that failed (the model reads why), not a crash.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

from rlkit.trajectory import Message

_HERMES_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_PROBE = [{"role": "user", "content": "rlkit probe"}]
_PROBE_TOOL = {"type": "function", "function": {"name": "rlkit_probe", "description": "probe",
                                                 "parameters": {"type": "object", "properties": {}}}}
_renders_tools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ParsedCall:
    """A tool call read from the model's text; `problem` says why it cannot run (name and arguments unusable)."""

    name: str
    arguments: Any
    problem: str | None = None


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template describes tools given as `tools=` (cached per tokenizer)."""
    try:
        return _renders_tools[tokenizer]
    except (KeyError, TypeError):
        pass
    try:
        plain = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
        with_tools = tokenizer.apply_chat_template(_PROBE, tools=[_PROBE_TOOL], tokenize=False,
                                                   add_generation_prompt=True)
        renders = plain != with_tools
    except Exception:  # a template that cannot take tools at all
        renders = False
    try:
        _renders_tools[tokenizer] = renders
    except TypeError:  # not weakly referenceable: no cache
        pass
    return renders


def tool_instructions(schemas: Sequence[dict[str, Any]]) -> str:
    """The fallback system text: the tools' schemas and the call format (for templates without tool support)."""
    listed = "\n".join(json.dumps(schema) for schema in schemas)
    return (
        "You can call tools. Each tool is described by a JSON schema on one line:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call a tool, write a JSON object with its name and arguments between <tool_call> and </tool_call>:\n"
        '<tool_call>\n{"name": "tool_name", "arguments": {"argument": "value"}}\n</tool_call>\n'
        "The result comes back in the next message. When you have the final answer, reply without a tool call."
    )


def with_instructions(messages: Sequence[Message], instructions: str) -> list[Message]:
    """`messages` with `instructions` added to the system message (one is put first when there is none)."""
    messages = [dict(message) for message in messages]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{instructions}"
        return messages
    return [{"role": "system", "content": instructions}, *messages]


def parse_tool_calls(text: str, tokenizer: Any = None, tools: Sequence[dict[str, Any]] = ()) -> list[ParsedCall]:
    """The tool calls in a model turn's text: by the tokenizer's response_template when it has one, else in the
    Hermes/Qwen `<tool_call>{json}</tool_call>` format. [] when the turn calls no tool."""
    if getattr(tokenizer, "response_template", None) is not None and hasattr(tokenizer, "parse_response"):
        return _template_calls(text, tokenizer, tools)
    return hermes_calls(text)


def hermes_calls(text: str) -> list[ParsedCall]:
    """Calls written as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (an unclosed last block counts:
    the turn ended inside it)."""
    calls = []
    for match in _HERMES_CALL.finditer(text):
        body = match.group(1).strip()
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as error:
            calls.append(ParsedCall("", {}, f"the tool call is not valid JSON ({error.msg}): {body[:200]}"))
            continue
        calls.append(_call_from(payload))
    return calls


def _call_from(payload: Any) -> ParsedCall:
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return ParsedCall("", {}, 'a tool call is a JSON object {"name": ..., "arguments": {...}}')
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return ParsedCall(payload["name"], {}, "the tool call's arguments are not a JSON object")
    return ParsedCall(payload["name"], arguments)


def _template_calls(text: str, tokenizer: Any, tools: Sequence[dict[str, Any]]) -> list[ParsedCall]:
    try:
        message = tokenizer.parse_response(text, prefix="", tools=list(tools) or None)
    except Exception as error:  # the parser rejects malformed output in its own ways
        return [ParsedCall("", {}, f"the tool call could not be read: {type(error).__name__}: {error}")]
    calls = []
    for call in (message or {}).get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, dict) else None
        calls.append(_call_from(function))
    return calls
