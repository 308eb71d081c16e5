"""RewardConfig -> one RewardManager that routes every sample to the reward of its data_source.

Which reward scores a sample: ``reward.per_data_source[data_source]`` if listed, else ``reward.name``;
``name: auto`` picks the built-in for the data_source (rlkit.rewards.builtin.DEFAULT_REWARDS). Names
resolve through ``REWARDS.get``: registered names, entry points, ``module:attr``, ``file.py:attr``.

``reward.kwargs`` go to every reward that accepts them (by signature), so one config can hold the
options of several rewards; a kwarg that no reward the config can select accepts is an error.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rlkit.config.schema import RewardConfig
from rlkit.errors import PluginError
from rlkit.registry import REWARDS
from rlkit.rewards.base import (
    FunctionRewardManager,
    RewardManager,
    RewardOutput,
    RewardSample,
)
from rlkit.rewards.builtin import DEFAULT_REWARDS, default_reward_name
from rlkit.rewards.guard import GuardedRewardManager

AUTO = "auto"
FUNCTION_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")


def build_reward_manager(cfg: RewardConfig) -> RewardManager:
    """The manager that scores samples of every data_source as ``cfg`` says, guarded per reward."""
    names = set(cfg.per_data_source.values())
    names |= set(DEFAULT_REWARDS.values()) if cfg.name == AUTO else {cfg.name}
    components = {name: REWARDS.get(name) for name in sorted(names)}

    accepted = {name: accepted_kwargs(component, cfg.kwargs) for name, component in components.items()}
    unknown = set(cfg.kwargs) - set().union(*accepted.values())
    if unknown:
        raise PluginError(
            f"reward.kwargs {', '.join(sorted(unknown))} are accepted by no reward in use "
            f"({', '.join(f'{name}: {describe_params(c)}' for name, c in components.items())}); "
            "remove them or fix their spelling"
        )
    managers = {
        name: GuardedRewardManager(
            make_manager(name, component, {key: cfg.kwargs[key] for key in accepted[name]}),
            name,
            timeout_s=cfg.timeout_s,
            on_error=cfg.on_error,
        )
        for name, component in components.items()
    }

    def route(data_source: str) -> str:
        if data_source in cfg.per_data_source:
            return cfg.per_data_source[data_source]
        return default_reward_name(data_source) if cfg.name == AUTO else cfg.name

    return RoutedRewardManager(route, managers)


class RoutedRewardManager(RewardManager):
    """Sends each sample to its data_source's manager and puts the scores back in sample order."""

    def __init__(self, route: Callable[[str], str], managers: dict[str, RewardManager]):
        super().__init__()
        self.route = route
        self.managers = managers

    def __call__(self, samples: list[RewardSample]) -> RewardOutput:
        positions_by_reward: dict[str, list[int]] = defaultdict(list)
        for position, sample in enumerate(samples):
            positions_by_reward[self.route(sample.data_source)].append(position)

        scores = [0.0] * len(samples)
        extras: dict[str, list[float]] = {}
        num_failures = 0
        for name, positions in positions_by_reward.items():
            output = self.managers[name]([samples[position] for position in positions])
            for j, position in enumerate(positions):
                scores[position] = output.scores[j]
            for extra, values in output.extras.items():
                column = extras.setdefault(extra, [math.nan] * len(samples))  # NaN: this reward has no such extra
                for j, position in enumerate(positions):
                    column[position] = values[j]
            num_failures += output.num_failures
        return RewardOutput(scores, dict(sorted(extras.items())), num_failures)


def make_manager(name: str, component: Any, kwargs: dict[str, Any]) -> RewardManager:
    """A RewardManager subclass is instantiated with kwargs; a function is wrapped with them bound."""
    if isinstance(component, type) and issubclass(component, RewardManager):
        try:
            return component(**kwargs)
        except Exception as error:
            raise PluginError(f"reward manager '{name}' failed to start: {type(error).__name__}: {error}") from error
    if isinstance(component, RewardManager):
        return component
    if callable(component):
        try:
            inspect.signature(component).bind("data_source", "solution_str", "ground_truth", {}, **kwargs)
        except TypeError:
            raise PluginError(
                f"reward '{name}' has parameters {describe_params(component)}; a reward function must accept "
                f"({', '.join(FUNCTION_ARGS)}) and keyword options"
            ) from None
        except ValueError:
            pass  # no signature to check (a builtin); the first call will tell
        return FunctionRewardManager(component, name, kwargs)
    raise PluginError(
        f"reward '{name}' is a {type(component).__name__}; it must be a function "
        "fn(data_source, solution_str, ground_truth, extra_info) or a RewardManager subclass"
    )


def accepted_kwargs(component: Any, kwargs: dict[str, Any]) -> set[str]:
    """The names in ``kwargs`` that ``component`` (function or manager class) takes as keywords."""
    try:
        parameters = inspect.signature(component).parameters.values()
    except (TypeError, ValueError):
        return set(kwargs)  # no signature to read: let it see every option
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return set(kwargs)
    keywords = [
        parameter
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    if not isinstance(component, type):
        # A function's first four parameters receive the sample, whatever their names.
        positional = [p for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY][: len(FUNCTION_ARGS)]
        keywords = [parameter for parameter in keywords if parameter not in positional]
    return set(kwargs) & {parameter.name for parameter in keywords}


def describe_params(component: Any) -> str:
    try:
        return f"({', '.join(inspect.signature(component).parameters)})"
    except (TypeError, ValueError):
        return "(unknown parameters)"
