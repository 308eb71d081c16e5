"""One response being built turn by turn: its tokens after the prompt, which of them the model sampled, their
log-probs, and the same conversation as text (the Trajectory rewards read).

Every token is kept exactly as it came: the model's turns as the rollout engine sampled them, the environment's
messages as the chat template rendered them (rlkit.environments.ChatRenderer). Nothing is re-tokenized, so the
trained sequence is the one the model saw turn after turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlkit.environments import Environment
from rlkit.rollout.base import Completion
from rlkit.trajectory import EndReason, Message, Trajectory, Turn


@dataclass
class Conversation:
    """A conversation of one sample. `budget` bounds the tokens after the prompt (model and environment alike).

    Every tokens list runs over the response part: `response_ids` the tokens, `model_mask` 1 where the model
    sampled the token (trained on) and 0 where the environment's messages were rendered, `logprobs` the
    sampling log-probs (0.0 on environment tokens; None once a turn came without them).
    """

    environment: Environment
    prompt_text: str
    prompt_ids: list[int]
    budget: int
    trajectory: Trajectory
    response_ids: list[int] = field(default_factory=list)
    model_mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = field(default_factory=list)
    finish_reason: str = "stop"
    ended: bool = False

    @property
    def ids(self) -> list[int]:
        """The whole sequence so far: what the model's next turn continues."""
        return self.prompt_ids + self.response_ids

    @property
    def room(self) -> int:
        return self.budget - len(self.response_ids)

    @property
    def num_turns(self) -> int:
        return len(self.trajectory.turns)

    def add_model_turn(self, completion: Completion, decode) -> None:
        """Append a turn the model sampled, cut to the budget (a cut turn ends the conversation: 'length').
        `decode(ids)` gives the text of a cut turn."""
        keep = completion.response_ids[: self.room]
        cut = len(keep) < len(completion.response_ids)
        self.response_ids += keep
        self.model_mask += [1] * len(keep)
        if self.logprobs is not None and completion.logprobs is not None:
            self.logprobs += completion.logprobs[: len(keep)]
        else:
            self.logprobs = None
        text = decode(keep) if cut else completion.text
        self.trajectory.turns.append(Turn(text=text, num_tokens=len(keep)))
        self.finish_reason = "length" if cut else completion.finish_reason
        if cut or not keep:
            self.end("budget" if cut else "done")

    def add_environment_turn(self, messages: list[Message], ids: list[int]) -> None:
        """Append the environment's messages (rendered as `ids`, not trained on) after the last model turn."""
        self.trajectory.turns[-1].observation = list(messages)
        self.response_ids += ids
        self.model_mask += [0] * len(ids)
        if self.logprobs is not None:
            self.logprobs += [0.0] * len(ids)

    def end(self, reason: EndReason) -> None:
        self.ended = True
        self.trajectory.ended_by = reason

    def as_completion(self) -> Completion:
        """The whole conversation after the prompt as one completion (text: the final turn's)."""
        return Completion(prompt_ids=self.prompt_ids, response_ids=self.response_ids, logprobs=self.logprobs,
                          finish_reason=self.finish_reason, text=self.trajectory.final_text)
