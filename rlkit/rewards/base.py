"""What a reward is: per-sample functions (verl's signature) and batch-level managers.

A reward *function* scores one response, with verl's signature so verl reward files work unchanged::

    def compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict

A dict holds ``"score"`` plus numeric extras (``{"score": 1.0, "acc": 1.0}``) that are logged as metrics.
A function that also takes a ``trajectory`` keyword argument receives the whole conversation of a multi-turn
rollout (an :class:`rlkit.trajectory.Trajectory`: turns, tool calls and their results); ``solution_str`` is the
final turn's text. A :class:`RewardManager` scores a whole batch at once (a reward model batching its forward passes,
say); :class:`FunctionRewardManager` adapts a function to that interface.
"""

from __future__ import annotations

import abc
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlkit.trajectory import Trajectory


@dataclass
class RewardSample:
    """One response to score. ``index`` is its row in the trainer's batch (named in errors); ``response`` is the
    model's text (its final turn, in a conversation with an environment), ``trajectory`` the whole conversation
    (None outside a rollout)."""

    index: int
    data_source: str
    prompt: str
    response: str
    ground_truth: Any
    extra_info: dict[str, Any] = field(default_factory=dict)
    trajectory: Trajectory | None = None


@dataclass
class RewardOutput:
    """Scores of a batch in sample order; ``extras[name][i]`` is sample i's extra (NaN where absent)."""

    scores: list[float]
    extras: dict[str, list[float]] = field(default_factory=dict)
    num_failures: int = 0

    @staticmethod
    def from_results(results: list[tuple[float, dict[str, float]]], num_failures: int = 0) -> RewardOutput:
        """Collect per-sample (score, extras); an extra some samples lack is NaN for them."""
        names = sorted({name for _, extras in results for name in extras})
        return RewardOutput(
            scores=[score for score, _ in results],
            extras={name: [extras.get(name, math.nan) for _, extras in results] for name in names},
            num_failures=num_failures,
        )


class RewardManager(abc.ABC):
    """Scores a batch of samples. Options come as keyword arguments (reward.kwargs), kept in ``self.kwargs``."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    @abc.abstractmethod
    def __call__(self, samples: list[RewardSample]) -> RewardOutput:
        """One score per sample, in order."""


def correctness(scores: list[float], acc: list[float] | None) -> list[float]:
    """1.0 for each correct response, else 0.0: correct when its reward reports ``acc`` = 1, or, where it reports
    none (NaN or no ``acc`` extra at all), when it scores at least 1.0. Validation accuracy (`rlkit train`) and
    `rlkit eval` both count this way."""
    acc = acc or [math.nan] * len(scores)
    return [float(value) if not math.isnan(value) else float(score >= 1.0)
            for score, value in zip(scores, acc, strict=True)]


def split_result(result: Any) -> tuple[float, dict[str, float]]:
    """A reward function's return value -> (score, numeric extras); TypeError/ValueError say what is wrong.

    Extras that are not numbers (verl rewards often return the parsed answer as text) are dropped:
    they cannot be averaged into metrics. Boolean extras count as 0.0/1.0.
    """
    if not isinstance(result, dict):
        return finite_score(result, "score"), {}
    if "score" not in result:
        raise TypeError(f"returned a dict without 'score' (keys: {', '.join(map(str, result))})")
    extras = {
        str(name): float(value) if isinstance(value, bool) else finite_score(value, f"extra '{name}'")
        for name, value in result.items()
        if name != "score" and isinstance(value, (bool, numbers.Real))
    }
    return finite_score(result["score"], "score"), extras


def finite_score(value: Any, what: str) -> float:
    """``value`` as a float; a non-number or a NaN/inf is an error naming ``what``."""
    # numbers.Real admits numpy scalars; bool is refused: True as a score is almost always a bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"returned {type(value).__name__} as its {what}; return a float or a dict with 'score'")
    if not math.isfinite(value):
        raise ValueError(f"returned {value} as its {what}; scores must be finite")
    return float(value)


class FunctionRewardManager(RewardManager):
    """Applies ``fn(data_source, solution_str, ground_truth, extra_info, **kwargs)`` to each sample, with
    ``trajectory=sample.trajectory`` when ``fn`` names a ``trajectory`` parameter."""

    def __init__(self, fn: Callable[..., Any], name: str, kwargs: dict[str, Any] | None = None):
        self.fn = fn
        self.name = name
        self.kwargs = dict(kwargs or {})
        self.takes_trajectory = takes_trajectory(fn)

    def call_one(self, sample: RewardSample) -> Any:
        """The function's raw return value for one sample."""
        extra = {"trajectory": sample.trajectory} if self.takes_trajectory else {}
        return self.fn(sample.data_source, sample.response, sample.ground_truth, sample.extra_info, **self.kwargs,
                       **extra)

    def __call__(self, samples: list[RewardSample]) -> RewardOutput:
        return RewardOutput.from_results([split_result(self.call_one(sample)) for sample in samples])


def takes_trajectory(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has a parameter named ``trajectory`` that can be passed by keyword (``**kwargs`` does not
    count: verl reward functions that forward their kwargs must not get one they do not expect)."""
    try:
        parameter = inspect.signature(fn).parameters.get("trajectory")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                        inspect.Parameter.KEYWORD_ONLY)


def samples_from_batch(batch: Any) -> list[RewardSample]:
    """RewardSamples of a :class:`rlkit.batch.Batch` from its meta lists (prompt_text, response_text,
    data_source, ground_truth, extra_info, and trajectory when it has one); ``index`` is the row in the batch."""
    trajectories = batch.get("trajectory") or [None] * len(batch["data_source"])
    return [
        RewardSample(index, data_source, prompt, response, ground_truth, extra_info or {}, trajectory)
        for index, (data_source, prompt, response, ground_truth, extra_info, trajectory) in enumerate(
            zip(
                batch["data_source"],
                batch["prompt_text"],
                batch["response_text"],
                batch["ground_truth"],
                batch["extra_info"],
                trajectories,
                strict=True,
            )
        )
    ]
