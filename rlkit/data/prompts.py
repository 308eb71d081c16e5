"""The prompt dataset: files or built-in tasks -> rendered, tokenized prompts with their ground truth.

Two record schemas are read:
  * ``flat``: ``{prompt_key: text, answer_key: answer, data_source?: ..., extra_info?: {...}}``
    (GSM8K's jsonl is flat with prompt_key=question, answer_key=answer);
  * ``verl``: verl's parquet schema, ``{prompt: [{role, content}, ...], reward_model: {ground_truth},
    data_source, extra_info}``, so datasets prepared for verl work unchanged.
``schema: auto`` decides per file from its first row: verl when the row has a ``reward_model`` object.
A verl prompt may also be plain text (some converters write it so): it is rendered like a flat prompt, as
the user's message under ``prompt_format: chat``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.config.schema import DataConfig
from rlkit.data.builtin import builtin_examples, is_builtin
from rlkit.data.records import Row, read_rows
from rlkit.data.templates import (
    Prompt,
    encode_prompts,
    render_prompt,
    resolve_prompt_format,
    to_messages,
    truncate_prompt,
)
from rlkit.errors import DataError

logger = logging.getLogger(__name__)

PROMPT_KEY_FIX = "set data.prompt_key to the key that holds the prompt"


@dataclass
class PromptRecord:
    """One prompt ready for rollout. ``index`` is its position in the dataset (0..len-1)."""

    prompt_ids: list[int]
    prompt_text: str  # the rendered text the ids encode
    data_source: str
    ground_truth: Any
    extra_info: dict[str, Any]
    index: int
    # The prompt as chat messages, the system prompt included (None for raw text): what an environment that
    # renders the prompt afresh (with tools, say) starts from; it is not truncated to max_prompt_length.
    messages: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class PromptExample:
    """A prompt as read, before rendering; ``location`` names its file and row for errors."""

    prompt: Prompt
    ground_truth: Any
    data_source: str
    extra_info: dict[str, Any]
    location: str


class PromptDataset(Sequence[PromptRecord]):
    """The loaded prompts, plus how many were dropped for being longer than max_prompt_length."""

    def __init__(self, records: list[PromptRecord], num_filtered: int = 0):
        self.records = records
        self.num_filtered = num_filtered

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> PromptRecord:  # type: ignore[override]
        return self.records[index]

    def __iter__(self) -> Iterator[PromptRecord]:
        return iter(self.records)


def load_prompt_dataset(
    files: list[str], cfg: DataConfig, tokenizer: Any, *, max_samples: int | None = None, key: str | None = None
) -> PromptDataset:
    """Read, render and tokenize the prompts of ``files`` (paths or ``builtin:<task>``) in order.

    ``max_samples`` keeps the first N prompts across all files (before length filtering). ``key`` is the
    config field that lists the files (data.train_files), named when one of them does not exist.
    """
    if not files:
        raise DataError(
            "no data files given; list prompt files (or builtin:<task>) in data.train_files or data.val_files"
        )
    for name in files:
        if key and not is_builtin(name) and not Path(name).exists():
            raise DataError(f"data file {name} (in {key}) does not exist; fix the path or remove it from {key}")
    examples = [example for name in files for example in read_examples(name, cfg)]
    if max_samples is not None:
        examples = examples[:max_samples]

    prompt_format = resolve_prompt_format(cfg.prompt_format, tokenizer)
    texts = [_render(example, tokenizer, prompt_format, cfg.system_prompt) for example in examples]
    all_ids = encode_prompts(texts, tokenizer, prompt_format)

    records: list[PromptRecord] = []
    for example, text, ids in zip(examples, texts, all_ids):
        if not ids:
            raise DataError(
                f"{example.location}: the prompt encodes to no tokens; give it some text (or check the tokenizer, "
                "model.tokenizer_path)"
            )
        if len(ids) > cfg.max_prompt_length:
            if cfg.filter_overlong_prompts:
                continue
            ids = truncate_prompt(ids, cfg.max_prompt_length, cfg.truncation, example.location)
            text = tokenizer.decode(ids, skip_special_tokens=False)  # the text of what the model sees
        messages = to_messages(example.prompt, cfg.system_prompt) if prompt_format == "chat" else None
        records.append(PromptRecord(ids, text, example.data_source, example.ground_truth, example.extra_info,
                                    len(records), messages))

    num_filtered = len(examples) - len(records)
    if not records:
        raise DataError(
            f"all {len(examples)} prompts in {', '.join(files)} are longer than data.max_prompt_length="
            f"{cfg.max_prompt_length} tokens; raise data.max_prompt_length"
        )
    if num_filtered:
        logger.warning(
            "dropped %d of %d prompts in %s: longer than data.max_prompt_length=%d tokens",
            num_filtered,
            len(examples),
            ", ".join(files),
            cfg.max_prompt_length,
        )
    return PromptDataset(records, num_filtered)


def read_examples(name: str, cfg: DataConfig) -> list[PromptExample]:
    """The prompts of one file or built-in task, unrendered."""
    if is_builtin(name):
        return [
            PromptExample(raw["prompt"], raw["ground_truth"], raw["data_source"], {}, f"{name} example {index}")
            for index, raw in enumerate(builtin_examples(name))
        ]
    rows = read_rows(name)
    if not rows:
        raise DataError(f"data file {name} has no records")
    schema = cfg.schema_ if cfg.schema_ != "auto" else detect_schema(rows[0], cfg.prompt_key)
    default_source = cfg.data_source or Path(name).stem
    to_example = verl_example if schema == "verl" else flat_example
    return [to_example(row, cfg, default_source) for row in rows]


def detect_schema(row: Row, prompt_key: str) -> str:
    """'verl' when the row has a reward_model object and a prompt (messages or text), else 'flat'."""
    prompt = row.fields.get(prompt_key)
    return "verl" if isinstance(prompt, (list, str)) and isinstance(row.fields.get("reward_model"), dict) else "flat"


def flat_example(row: Row, cfg: DataConfig, default_source: str) -> PromptExample:
    prompt = _check_prompt(row.require(cfg.prompt_key, PROMPT_KEY_FIX), row, cfg.prompt_key)
    ground_truth = row.require(cfg.answer_key, "set data.answer_key to the key that holds the answer")
    return PromptExample(
        prompt,
        ground_truth,
        *_source_and_info(row, default_source),
        row.location,
    )


def verl_example(row: Row, cfg: DataConfig, default_source: str) -> PromptExample:
    prompt = _check_prompt(row.require(cfg.prompt_key, PROMPT_KEY_FIX), row, cfg.prompt_key)
    reward_model = row.fields.get("reward_model")
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise DataError(
            f"{row.location} has no reward_model.ground_truth, which the verl schema needs "
            f"(it has: {', '.join(sorted(row.fields))}); for flat records set data.schema=flat and data.answer_key"
        )
    return PromptExample(
        prompt,
        reward_model["ground_truth"],
        *_source_and_info(row, default_source),
        row.location,
    )


def _source_and_info(row: Row, default_source: str) -> tuple[str, dict[str, Any]]:
    """The row's data_source (text: it picks the reward) and extra_info (an object), or their defaults."""
    data_source = row.fields.get("data_source") or default_source
    extra_info = row.fields.get("extra_info") or {}
    if not isinstance(data_source, str):
        raise DataError(f"{row.location}: data_source must be text, not {type(data_source).__name__} ({data_source!r})")
    if not isinstance(extra_info, dict):
        raise DataError(f"{row.location}: extra_info must be an object with keys, not {type(extra_info).__name__}")
    return data_source, extra_info


def _check_prompt(value: Any, row: Row, key: str) -> Prompt:
    """Text, or a list of {role, content} messages (keys with null values dropped)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        # Parquet gives every message every key any message has, as null where absent; chat templates
        # test keys with `is defined` (tool_calls, say), so the nulls must go.
        return [{k: v for k, v in message.items() if v is not None} for message in value]
    raise DataError(
        f"{row.location}: '{key}' must be text or a list of {{role, content}} messages, "
        f"not {type(value).__name__}; set data.prompt_key to the key that holds the prompt"
    )


def _render(example: PromptExample, tokenizer: Any, prompt_format: str, system_prompt: str | None) -> str:
    try:
        return render_prompt(example.prompt, tokenizer, prompt_format, system_prompt)  # type: ignore[arg-type]
    except Exception as error:  # a chat template may raise anything (jinja, ValueError, ...)
        raise DataError(
            f"{example.location}: the chat template failed on this prompt: {type(error).__name__}: {error}; "
            "check the messages, or set data.prompt_format=raw"
        ) from error
