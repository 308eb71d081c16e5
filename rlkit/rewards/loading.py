"""RewardConfig -> one RewardManager that routes every sample to the reward of its data_source.

:func:`resolve_rewards` and :func:`check_data_sources` are the checks `rlkit validate` and the trainer make
before any model loads: every reward name resolves, the options fit, and every data_source has a reward.

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
from rlkit.registry import REWARDS, is_reference
from rlkit.rewards.base import (
    FunctionRewardManager,
    RewardManager,
    RewardOutput,
    RewardSample,
)
from rlkit.rewards.builtin import DEFAULT_REWARDS, default_reward_name
from rlkit.rewards.guard import GuardedRewardManager
from rlkit.rewards.worker import RewardWorker, WorkerRewardFunction

AUTO = "auto"
FUNCTION_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")


def build_reward_manager(cfg: RewardConfig) -> RewardManager:
    """The manager that scores samples of every data_source as ``cfg`` says, guarded per reward.

    Reward functions known by a name another process can resolve (built-ins, entry points, references) run in
    one RewardWorker process, where a call past ``cfg.timeout_s`` can be stopped (rlkit.rewards.worker).
    """
    components = resolve_rewards(cfg)
    worker = RewardWorker()
    managers = {
        name: GuardedRewardManager(
            make_manager(name, component, _kwargs_for(component, cfg.kwargs), worker=worker),
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


def resolve_rewards(cfg: RewardConfig) -> dict[str, Any]:
    """Every reward the config can select, by name, checked against reward.kwargs and the reward signature: a
    misspelt name, a missing plugin file or an option no reward takes fails here, before any model loads.
    Reward manager classes are not instantiated."""
    names = {name: f"reward.per_data_source.{source}" for source, name in cfg.per_data_source.items()}
    if cfg.name == AUTO:
        names.update({name: "reward.name=auto" for name in DEFAULT_REWARDS.values()})
    else:
        names[cfg.name] = "reward.name"
    components = {}
    for name in sorted(names):
        try:
            components[name] = REWARDS.get(name)
        except PluginError as error:
            raise PluginError(f"{names[name]}: {error}") from None
    accepted = {name: accepted_kwargs(component, cfg.kwargs) for name, component in components.items()}
    unknown = set(cfg.kwargs) - set().union(*accepted.values())
    if unknown:
        raise PluginError(
            f"reward.kwargs {', '.join(sorted(unknown))} are accepted by no reward in use "
            f"({', '.join(f'{name}: {describe_params(c)}' for name, c in components.items())}); "
            "remove them or fix their spelling"
        )
    for name, component in components.items():
        check_reward_function(name, component, _kwargs_for(component, cfg.kwargs))
    return components


def check_data_sources(cfg: RewardConfig, sources: dict[str, str]) -> None:
    """Every data_source in the data must have a reward. `sources` maps each to where it occurs (a config key,
    a file and row), named in the error."""
    if cfg.name != AUTO:
        return
    for source, where in sources.items():
        if source in cfg.per_data_source:
            continue
        try:
            default_reward_name(source)
        except PluginError as error:
            raise PluginError(
                f"{where} has data_source '{source}', which reward.name=auto cannot score: {error}"
            ) from None


def _kwargs_for(component: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: kwargs[key] for key in accepted_kwargs(component, kwargs)}


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


def make_manager(
    name: str, component: Any, kwargs: dict[str, Any], worker: RewardWorker | None = None
) -> RewardManager:
    """A RewardManager subclass is instantiated with kwargs; a function is wrapped with them bound, to run in
    `worker` when another process can find it by `name`."""
    if isinstance(component, type) and issubclass(component, RewardManager):
        try:
            return component(**kwargs)
        except Exception as error:
            raise PluginError(f"reward manager '{name}' failed to start: {type(error).__name__}: {error}") from error
    if isinstance(component, RewardManager):
        return component
    check_reward_function(name, component, kwargs)
    if worker is not None and _found_by_name_elsewhere(name):
        return WorkerRewardFunction(name, kwargs, worker)
    return FunctionRewardManager(component, name, kwargs)


def check_reward_function(name: str, component: Any, kwargs: dict[str, Any]) -> None:
    """A reward that is not a RewardManager must be a function taking the sample's four values and `kwargs`."""
    if isinstance(component, RewardManager) or (isinstance(component, type) and issubclass(component, RewardManager)):
        return
    if not callable(component):
        raise PluginError(
            f"reward '{name}' is a {type(component).__name__}; it must be a function "
            "fn(data_source, solution_str, ground_truth, extra_info) or a RewardManager subclass"
        )
    try:
        inspect.signature(component).bind("data_source", "solution_str", "ground_truth", {}, **kwargs)
    except TypeError:
        raise PluginError(
            f"reward '{name}' has parameters {describe_params(component)}; a reward function must accept "
            f"({', '.join(FUNCTION_ARGS)}) and keyword options"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin); the first call will tell


def _found_by_name_elsewhere(name: str) -> bool:
    """Whether a fresh process resolves `name` as this one does: a built-in, an entry point or a reference, not
    a name registered by code that ran in this process only."""
    if is_reference(name):
        return True
    entry = next((entry for entry in REWARDS.entries() if entry.name == name), None)
    return entry is not None and entry.source != "code"


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
