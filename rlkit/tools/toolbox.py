"""Tools the model can call: a typed Python function with a docstring, described to the model by its JSON schema.

A tool is written the way transformers and TRL describe tools: type hints and a Google-style docstring, from
which `transformers.utils.get_json_schema` builds the schema a chat template renders. Its keyword-only
parameters are its *options*: left out of the schema (the model never sets them) and set from the config
(`environment.tool_options.<tool>`), such as the python tool's `timeout_s` and `memory_mb`.

A `ToolBox` runs calls and never lets a tool stop the run: a call that names no tool, has the wrong arguments,
raises, runs past `timeout_s` or returns megabytes gives the model an error message (or the result cut to
`max_output_chars`) as its result, and the call is counted as an error where it failed.
"""

from __future__ import annotations

import inspect
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rlkit.errors import PluginError
from rlkit.registry import TOOLS
from rlkit.trajectory import ToolCall


@dataclass(frozen=True)
class Tool:
    """A callable tool: its name (the function's), JSON schema and options (keyword-only arguments)."""

    name: str
    fn: Callable[..., Any]
    schema: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(fn: Callable[..., Any], options: dict[str, Any] | None = None, *, spec: str | None = None) -> Tool:
        """The Tool of a function; PluginError (naming `spec`, the name it was loaded by) when its schema cannot
        be built or an option is not one of its keyword-only parameters."""
        spec = spec or getattr(fn, "__name__", repr(fn))
        options = dict(options or {})
        keyword_only = option_names(fn)
        unknown = sorted(set(options) - set(keyword_only))
        if unknown:
            known = f"its options are {', '.join(keyword_only)}" if keyword_only else "it has no options"
            raise PluginError(f"tool '{spec}' has no option {', '.join(unknown)} ({known}); fix "
                              f"environment.tool_options.{spec}")
        return Tool(getattr(fn, "__name__", spec), fn, schema_of(fn, spec), options)

    def __call__(self, arguments: dict[str, Any]) -> Any:
        return self.fn(**arguments, **self.options)


def option_names(fn: Callable[..., Any]) -> list[str]:
    """The keyword-only parameters of `fn`: the tool's options, hidden from the model."""
    return [name for name, parameter in inspect.signature(fn).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY]


def schema_of(fn: Callable[..., Any], spec: str) -> dict[str, Any]:
    """The JSON schema of `fn`'s model-facing arguments (get_json_schema), its options left out."""
    from transformers.utils import get_json_schema

    signature = inspect.signature(fn)
    facing = [parameter for parameter in signature.parameters.values()
              if parameter.kind is not inspect.Parameter.KEYWORD_ONLY]
    hidden = set(signature.parameters) - {parameter.name for parameter in facing}

    # get_json_schema reads the signature, annotations and docstring: give it those of the facing arguments only.
    def facade(*args, **kwargs):  # pragma: no cover - never called
        raise NotImplementedError

    facade.__name__ = getattr(fn, "__name__", spec)
    facade.__doc__ = inspect.getdoc(fn)
    facade.__signature__ = signature.replace(parameters=facing)  # type: ignore[attr-defined]
    facade.__annotations__ = {key: value for key, value in getattr(fn, "__annotations__", {}).items()
                              if key not in hidden}
    facade.__wrapped__ = fn  # type: ignore[attr-defined]  # get_type_hints resolves names in fn's globals
    try:
        return get_json_schema(facade)
    except Exception as error:  # transformers' DocstringParsingException, TypeHintParsingException, ...
        raise PluginError(
            f"tool '{spec}' cannot be described to the model: {error}; a tool is a function with type hints and a "
            "Google-style docstring that describes every argument (docs/environments.md)"
        ) from None


def truncate(text: str, max_chars: int) -> str:
    """`text`, cut to `max_chars` characters with a note of how much was left out."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}\n... [truncated: {len(text) - max_chars} more characters]"


def as_text(result: Any) -> str:
    """A tool's return value as the text the model reads (JSON for dicts and lists)."""
    if isinstance(result, str):
        return result
    if isinstance(result, (dict, list)):
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            pass
    return str(result)


class ToolTimeout(TimeoutError):
    pass


def call_with_timeout(call: Callable[[], Any], timeout_s: float) -> Any:
    """`call()` in a daemon worker thread; ToolTimeout after `timeout_s`. Python cannot stop a thread: a tool
    that hangs keeps its thread (tools that can hang should bound themselves, as the python tool does)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, name="rlkit-tool", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ToolTimeout(f"the tool did not finish within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class ToolBox:
    """The tools of an environment, called by name with the model's arguments.

    Args:
        tools: the tools (names must differ).
        timeout_s: a call that takes longer is abandoned and answered with an error.
        max_output_chars: results (and error messages) are cut to this many characters.
    """

    def __init__(self, tools: Sequence[Tool], *, timeout_s: float = 30.0, max_output_chars: int = 2000):
        self.tools = {tool.name: tool for tool in tools}
        if len(self.tools) != len(tools):
            names = [tool.name for tool in tools]
            raise PluginError(f"two tools share a name: {sorted({n for n in names if names.count(n) > 1})}")
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars

    @property
    def schemas(self) -> list[dict[str, Any]]:
        """The JSON schemas of the tools, for the chat template (`apply_chat_template(tools=...)`)."""
        return [tool.schema for tool in self.tools.values()]

    def __len__(self) -> int:
        return len(self.tools)

    def call(self, name: str, arguments: Any) -> ToolCall:
        """Run one call; its result is the tool's output or an error message, never an exception."""
        if name not in self.tools:
            known = ", ".join(self.tools) or "none"
            return self._error(name, arguments, f"unknown tool '{name}'; the tools are: {known}")
        if not isinstance(arguments, dict):
            return self._error(name, {}, f"the arguments must be a JSON object, not {type(arguments).__name__}")
        tool = self.tools[name]
        hidden = sorted(set(arguments) & set(option_names(tool.fn)))
        if hidden:  # options are the config's to set, never the model's
            return self._error(name, arguments, f"wrong arguments for {name}: unexpected {', '.join(hidden)}")
        try:
            inspect.signature(tool.fn).bind(**arguments, **tool.options)
        except TypeError as error:
            return self._error(name, arguments, f"wrong arguments for {name}: {error}")
        try:
            result = call_with_timeout(lambda: as_text(tool(arguments)), self.timeout_s)
        except Exception as error:
            return self._error(name, arguments, f"{type(error).__name__}: {error}")
        return ToolCall(name, arguments, truncate(result, self.max_output_chars))

    def _error(self, name: str, arguments: Any, message: str) -> ToolCall:
        arguments = arguments if isinstance(arguments, dict) else {}
        return ToolCall(name, arguments, truncate(f"Error: {message}", self.max_output_chars), error=True)


def load_toolbox(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None, *,
                 timeout_s: float = 30.0, max_output_chars: int = 2000) -> ToolBox:
    """The ToolBox of tools given by registered name, 'module:attr' or 'file.py:attr' (rlkit.registry.TOOLS).

    `options` maps a name as given to that tool's options; an entry for a tool not in `names` is an error.
    """
    options = dict(options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise PluginError(f"environment.tool_options has {', '.join(stray)}, which environment.tools does not list; "
                          "add the tool or remove its options")
    tools = []
    for name in names:
        fn = TOOLS.get(name)
        if not callable(fn):
            raise PluginError(f"tool '{name}' is a {type(fn).__name__}; a tool is a function with type hints and a "
                              "docstring")
        tools.append(Tool.of(fn, options.get(name), spec=name))
    return ToolBox(tools, timeout_s=timeout_s, max_output_chars=max_output_chars)
