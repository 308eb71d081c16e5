"""A conversation between the model and an environment, as rewards and metrics read it.

A rollout with an environment (rlkit.environments) goes: the prompt, then turns of model text, each answered by
the environment (tool results, a user's reply) until it says `done`, the turns run out or the token budget
does. The tokens the model trained on live in the Batch; this is the same conversation as text and chat
messages, one `Trajectory` per response (the batch's meta list `trajectory`). A reward function that takes a
`trajectory` keyword receives it (docs/rewards.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# A chat message as Hugging Face chat templates take it: {"role": ..., "content": ..., "name"?: ...}.
Message = dict[str, Any]

# Why a conversation ended: the environment said done, rollout.max_turns was reached, or the token budget
# over all turns (rollout.max_total_tokens) had no room for the next model turn.
EndReason = Literal["done", "max_turns", "budget"]


@dataclass
class ToolCall:
    """One tool call of the model and what it got back (`result` is the text the model reads)."""

    name: str
    arguments: dict[str, Any]
    result: str
    error: bool = False  # the call could not be parsed, named no known tool, raised, timed out, ...


@dataclass
class Turn:
    """One model turn and the environment's answer to it."""

    text: str  # the model's text (special tokens left out)
    num_tokens: int  # the model's tokens this turn (all of them trained on)
    observation: list[Message] = field(default_factory=list)  # the environment's messages after it ([] at the end)
    reward: float = 0.0  # the environment's reward for this turn
    tool_calls: list[ToolCall] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trajectory:
    """The whole conversation of one response.

    prompt: the chat messages the conversation started from (None when the prompt was raw text).
    turns: the model's turns in order (at least one).
    ended_by: why it ended (see EndReason).
    """

    prompt: list[Message] | None
    turns: list[Turn] = field(default_factory=list)
    ended_by: EndReason = "done"

    @property
    def final_text(self) -> str:
        """The model's last turn: where a final answer is."""
        return self.turns[-1].text if self.turns else ""

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for turn in self.turns for call in turn.tool_calls]

    @property
    def num_tool_errors(self) -> int:
        return sum(call.error for call in self.tool_calls)

    @property
    def environment_reward(self) -> float:
        """The environment's rewards summed over the turns."""
        return float(sum(turn.reward for turn in self.turns))

    def messages(self) -> list[Message]:
        """The conversation as chat messages: the prompt, then each model turn (as an assistant message) and
        the environment's messages after it."""
        messages = list(self.prompt or [])
        for turn in self.turns:
            messages.append({"role": "assistant", "content": turn.text})
            messages.extend(turn.observation)
        return messages
