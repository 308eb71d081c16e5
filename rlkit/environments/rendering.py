"""Chat messages -> token ids with the tokenizer's chat template, for a conversation that grows turn by turn.

The model's own tokens are never re-tokenized: a conversation is the prompt's ids, then each turn's sampled ids
exactly, then the ids of what the template puts between that turn and the next one. That piece is found by
rendering a stand-in conversation that ends with an assistant message, with and without the environment's
messages (and the next assistant header, `add_generation_prompt`): the difference is what the template writes
after an assistant turn. The end of the assistant message itself (`<|im_end|>\\n` in ChatML) comes first,
except for the part the model already sampled: a turn that stopped at its end-of-turn token has it.
"""

from __future__ import annotations

from typing import Any, Sequence

from rlkit.errors import ConfigError
from rlkit.trajectory import Message

_SENTINEL = "rlkit-sentinel-assistant-text"
_STAND_IN: list[Message] = [{"role": "user", "content": "rlkit-sentinel-user-text"},
                            {"role": "assistant", "content": _SENTINEL}]


class ChatRenderer:
    """Renders a conversation's start and the environment's messages after each model turn.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
    """

    def __init__(self, tokenizer: Any):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("a conversation with an environment needs a tokenizer with a chat template to render "
                              "the environment's messages; use a chat model (or model.tokenizer_path), or "
                              "rollout.max_turns=1")
        self.tokenizer = tokenizer
        base = self._render(_STAND_IN, add_generation_prompt=False)
        if _SENTINEL not in base:
            raise ConfigError("the chat template does not render an assistant message's text as given, so rlkit "
                              "cannot find where a model turn ends; use rollout.max_turns=1 with this model")
        self._base = base
        self._turn_end = base[base.rindex(_SENTINEL) + len(_SENTINEL):]  # e.g. "<|im_end|>\n"

    def prompt(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None
               ) -> tuple[str, list[int]]:
        """The text and ids of a conversation's start, ready for the model's first turn."""
        try:
            text = self.tokenizer.apply_chat_template(list(messages), tools=list(tools) if tools else None,
                                                      tokenize=False, add_generation_prompt=True)
        except Exception as error:
            raise ConfigError(f"the chat template cannot render the environment's first messages: "
                              f"{type(error).__name__}: {error}") from error
        return text, self.encode(text)

    def after_turn_ids(self, messages: Sequence[Message], last_model_token: int) -> list[int]:
        """The ids that follow a model turn whose last sampled token is `last_model_token`: the rest of the
        assistant message's end, `messages` (the environment's), and the header of the next assistant turn."""
        try:
            full = self._render([*_STAND_IN, *messages], add_generation_prompt=True)
        except Exception as error:  # jinja errors, "roles must alternate", ...
            raise ConfigError(f"the chat template cannot render the environment's messages {list(messages)}: "
                              f"{type(error).__name__}: {error}") from error
        if not full.startswith(self._base):
            raise ConfigError("the chat template renders a conversation's start differently once environment "
                              "messages follow, so they cannot be appended to the model's tokens; use another "
                              "model or rollout.max_turns=1")
        sampled_end = self.tokenizer.decode([last_model_token], skip_special_tokens=False)
        turn_end = self._turn_end
        if sampled_end and turn_end.startswith(sampled_end):
            turn_end = turn_end[len(sampled_end):]
        return self.encode(turn_end + full[len(self._base):])

    def encode(self, text: str) -> list[int]:
        """Ids of template text: its special tokens are written in it, so none are added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render(self, messages: list[Message], *, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
