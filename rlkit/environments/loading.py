"""EnvironmentConfig -> a function that makes one environment per conversation.

The environment named by `environment.name` (rlkit.registry.ENVIRONMENTS: a registered name, an entry point of
the `rlkit.environments` group, 'module:Class' or 'file.py:Class') is called with `environment.kwargs`, plus
`tools` (the ToolBox of environment.tools) and `tokenizer` when its constructor takes them. Everything is
checked here, before any model loads: the name, the tools' schemas and options, and that the constructor
accepts the arguments.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from rlkit.config.environment import EnvironmentConfig
from rlkit.environments.base import Environment
from rlkit.errors import ConfigError, PluginError
from rlkit.registry import ENVIRONMENTS
from rlkit.tools import load_toolbox

EnvironmentFactory = Callable[[], Environment]


def environment_factory(cfg: EnvironmentConfig, tokenizer: Any) -> EnvironmentFactory:
    """A function returning a fresh environment for each conversation; PluginError/ConfigError on a bad config."""
    component = ENVIRONMENTS.get(cfg.name)
    if not callable(component):
        raise PluginError(f"environment '{cfg.name}' is a {type(component).__name__}; it must be a class (or a "
                          "function) returning an object with reset(sample) and step(model_text)")
    provided: dict[str, Any] = {"tokenizer": tokenizer}
    takes_tools = accepts(component, "tools")
    if cfg.tools or cfg.tool_options:
        if not takes_tools:
            raise ConfigError(f"environment.tools lists {', '.join(cfg.tools) or 'no tools'}, but environment "
                              f"'{cfg.name}' takes no tools; use environment.name=tools, or remove them")
    if takes_tools:
        provided["tools"] = load_toolbox(cfg.tools, cfg.tool_options, timeout_s=cfg.tool_timeout_s,
                                         max_output_chars=cfg.max_tool_output_chars)
    arguments = {**{key: value for key, value in provided.items() if accepts(component, key)}, **cfg.kwargs}
    clash = sorted(set(cfg.kwargs) & set(provided))
    if clash:
        raise ConfigError(f"environment.kwargs sets {', '.join(clash)}, which rlkit provides; remove it")
    try:
        inspect.signature(component).bind(**arguments)
    except TypeError as error:
        raise ConfigError(f"environment '{cfg.name}' cannot be made from environment.kwargs {cfg.kwargs}: {error}; "
                          "fix environment.kwargs") from None
    except ValueError:
        pass  # no signature to check (a builtin); the first call tells
    factory = functools.partial(component, **arguments)
    check_protocol(factory, cfg.name)
    return factory


def accepts(component: Callable[..., Any], name: str) -> bool:
    """Whether `component` takes a keyword argument `name` (by name or through **kwargs)."""
    try:
        parameters = inspect.signature(component).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY or p.kind is p.VAR_KEYWORD
               for p in parameters)


def check_protocol(factory: EnvironmentFactory, name: str) -> None:
    """Make one environment and check that it has reset and step (an error here names the plugin)."""
    try:
        environment = factory()
    except (ConfigError, PluginError):
        raise
    except Exception as error:
        raise PluginError(f"environment '{name}' failed to start: {type(error).__name__}: {error}") from error
    if not isinstance(environment, Environment):
        raise PluginError(f"environment '{name}' made a {type(environment).__name__}, which lacks "
                          "reset(sample) and step(model_text)")


def needs_chat_prompts(factory: EnvironmentFactory) -> bool:
    """Whether the environments of `factory` need prompts as chat messages (their `needs_chat_prompts`)."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    return bool(getattr(target, "needs_chat_prompts", False))
