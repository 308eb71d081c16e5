"""What an environment is: `reset(sample)` gives the conversation's start, `step(model_text)` answers a model turn.

One environment instance serves one conversation. rlkit calls `reset` once, then `step` after every model turn
with the turn's text, until the step says `done`, rollout.max_turns is reached or the token budget
(rollout.max_total_tokens) is spent. The environment speaks in chat messages (`{"role": "tool", "content": ...}`,
a user's reply, ...); rlkit renders them with the tokenizer's chat template and appends their tokens to the
sequence, where they are not trained on: only the model's own tokens are. See docs/environments.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rlkit.trajectory import Message, ToolCall


@dataclass(frozen=True)
class Sample:
    """One prompt of the dataset, as `reset` sees it.

    messages: the prompt as chat messages (data.system_prompt included), None for a raw-text prompt
        (data.prompt_format=raw).
    prompt_text: the prompt as rendered for the model without an environment.
    """

    messages: list[Message] | None
    prompt_text: str
    data_source: str
    ground_truth: Any
    extra_info: dict[str, Any]


@dataclass
class Step:
    """The environment's answer to a model turn.

    observation: messages to append before the model's next turn ([] for none).
    reward: this turn's reward (the built-in reward `environment` sums them; any reward can read them in the
        trajectory).
    done: the conversation is over (the model's turn was its final answer).
    info: anything to keep in the trajectory (Turn.info).
    tool_calls: the tool calls this turn ran (metrics: tool calls and errors per sample).
    """

    observation: list[Message] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCall] = field(default_factory=list)


@runtime_checkable
class Environment(Protocol):
    """What the model talks to. Optional attributes rlkit reads:

    tools: list of JSON schemas the chat template renders into the prompt (`apply_chat_template(tools=...)`),
        read after `reset`.
    needs_chat_prompts: True when `reset` needs the prompt's messages (no raw-text prompts).
    """

    def reset(self, sample: Sample) -> list[Message] | None:
        """The conversation's start as chat messages (rendered with the chat template and `tools`), or None to
        start from the dataset's prompt exactly as tokenized."""
        ...

    def step(self, model_text: str) -> Step:
        """Answer one model turn (`model_text` is its text, special tokens left out)."""
        ...
