"""The single-turn environment: the model answers the dataset's prompt once and the conversation is over.

It is the default (environment.name=single_turn), and a run with it is exactly a run without environments: the
prompt is the dataset's tokens, one response per sample, no environment messages, no environment reward.
"""

from __future__ import annotations

from rlkit.environments.base import Sample, Step
from rlkit.trajectory import Message


class SingleTurnEnvironment:
    def reset(self, sample: Sample) -> list[Message] | None:
        return None  # the dataset's prompt, as tokenized

    def step(self, model_text: str) -> Step:
        return Step(done=True)
