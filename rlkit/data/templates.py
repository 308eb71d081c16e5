"""Prompt text -> model input: render (chat template or raw), tokenize, then fit `max_prompt_length`.

A prompt is either text or a list of chat messages ``{"role", "content"}`` (verl's schema).
  * ``chat``: messages (text becomes one user message) go through the tokenizer's chat template with
    ``add_generation_prompt=True``, so the model continues as the assistant.
  * ``raw``: the text is used as is; messages are joined by newlines (contents only).
  * ``auto``: chat when the tokenizer has a chat template, else raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from rlkit.errors import ConfigError, DataError

Prompt = str | list[dict[str, Any]]


def resolve_prompt_format(prompt_format: str, tokenizer: Any) -> Literal["chat", "raw"]:
    """'auto' becomes 'chat' or 'raw'; 'chat' without a template is an error."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "auto":
        return "chat" if has_template else "raw"
    if prompt_format == "chat" and not has_template:
        raise ConfigError(
            "data.prompt_format is 'chat' but the tokenizer has no chat_template; "
            "set data.prompt_format=raw or use a tokenizer with a chat template"
        )
    return prompt_format  # type: ignore[return-value]


def to_messages(prompt: Prompt, system_prompt: str | None) -> list[dict[str, Any]]:
    """Chat messages of a prompt; the system prompt goes first unless the prompt brings its own."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt is not None and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render_prompt(
    prompt: Prompt, tokenizer: Any, prompt_format: Literal["chat", "raw"], system_prompt: str | None = None
) -> str:
    """The text the model sees for one prompt (`prompt_format` already resolved)."""
    if prompt_format == "raw":
        parts = [prompt] if isinstance(prompt, str) else [str(message["content"]) for message in prompt]
        if system_prompt is not None:
            parts.insert(0, system_prompt)
        return "\n".join(parts)
    return tokenizer.apply_chat_template(to_messages(prompt, system_prompt), tokenize=False, add_generation_prompt=True)


def encode_prompts(texts: Sequence[str], tokenizer: Any, prompt_format: Literal["chat", "raw"]) -> list[list[int]]:
    """Token ids of rendered prompts, in one batched tokenizer call."""
    if not texts:
        return []
    # A chat template writes its special tokens (BOS included) into the text; raw text gets the
    # tokenizer's own ones (Llama's BOS, say), as it would in plain generation.
    encoded = tokenizer(list(texts), add_special_tokens=prompt_format == "raw")
    return [list(ids) for ids in encoded["input_ids"]]


def truncate_prompt(ids: list[int], max_length: int, truncation: str, location: str) -> list[int]:
    """Fit an overlong prompt: 'left' keeps the end, 'right' keeps the start, 'error' raises."""
    if len(ids) <= max_length:
        return ids
    if truncation == "left":
        return ids[-max_length:]
    if truncation == "right":
        return ids[:max_length]
    raise DataError(
        f"{location}: the prompt has {len(ids)} tokens, more than data.max_prompt_length={max_length}; "
        f"raise data.max_prompt_length, set data.filter_overlong_prompts=true to drop such prompts, "
        f"or set data.truncation=left (keep the end) or right (keep the start)"
    )
