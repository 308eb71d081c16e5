"""SFT data: demonstrations -> token ids with a per-token training mask -> Batches in the RL layout.

Two record formats are read (`data.format`, 'auto' decides per file from its first row):
  * ``prompt_response``: ``{prompt_key: text | messages, response_key: text | assistant messages}``; only the
    response is trained on. Keys may be dotted paths, so verl's GSM8K parquet (prompt messages, the
    solution in ``extra_info.answer``) is read as it is.
  * ``messages``: ``{messages_key: [{role, content}, ...]}``; every assistant turn is trained on, every other
    token (system, user, tool turns, the template's role headers) is context only.

Rendering. With a chat template, a conversation is rendered turn by turn: the text before assistant turn i
is the template applied to messages[:i] with the generation prompt (exactly the prompt `rlkit train` and
`rlkit generate` show the model), and the turn's trained text is what messages[:i + 1] adds to it, up to and
including the end-of-turn (EOS) token, so the model learns to stop. Each piece is tokenized on its own, the
first as the RL prompt dataset tokenizes prompts, so an SFT prompt has the very ids an RL prompt has.
Templates that rewrite earlier turns (Qwen3 drops past reasoning) break this and are reported. Raw text
(no template) is prompt text followed by the response and EOS.

Layout. The prompt is everything before the first trained token; the response is the rest, with
``response_mask`` 0 on the context tokens inside it (later user turns). `collate_sft` builds the Batch of
rlkit.batch (prompt left-padded, response right-padded), so engines score SFT and RL batches alike.

Packing several samples into one row is not offered: the engines hand transformers a 2-D attention mask,
with which eager and SDPA attention would let packed samples see each other (restarting position_ids
alone do not stop it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch

from rlkit.batch import Batch
from rlkit.config.sft import SFTDataConfig
from rlkit.data.builtin import builtin_examples, is_builtin
from rlkit.data.records import Row, read_rows
from rlkit.data.templates import resolve_prompt_format, to_messages
from rlkit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
Segment = tuple[str, bool]  # (text, trained)
LETTERS_RESPONSE_LENGTH = 8  # the `letters` reward scores the first 8 letters


@dataclass(frozen=True)
class Demonstration:
    """A conversation as read; assistant turns at index >= ``num_context`` are trained on."""

    messages: Messages
    num_context: int
    location: str


@dataclass(frozen=True)
class SFTSample:
    """One tokenized sample: ``response_mask[i]`` is 1 when ``response_ids[i]`` is trained on."""

    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    location: str

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


class SFTDataset(Sequence[SFTSample]):
    """The tokenized samples, and how many were truncated or dropped (no response tokens left)."""

    def __init__(self, samples: list[SFTSample], num_truncated: int = 0, num_dropped: int = 0):
        self.samples = samples
        self.num_truncated = num_truncated
        self.num_dropped = num_dropped

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> SFTSample:  # type: ignore[override]
        return self.samples[index]

    def __iter__(self) -> Iterator[SFTSample]:
        return iter(self.samples)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def load_sft_dataset(
    files: list[str], cfg: SFTDataConfig, tokenizer: Any, *, max_samples: int | None = None
) -> SFTDataset:
    """Read, render, tokenize and fit to ``cfg.max_length`` the demonstrations of ``files`` in order.

    ``max_samples`` keeps the first N demonstrations across all files (before truncation drops any).
    """
    if not files:
        raise DataError("no data files given; list demonstration files (or builtin:<task>) in data.train_files")
    demonstrations = [demo for name in files for demo in read_demonstrations(name, cfg)]
    if max_samples is not None:
        demonstrations = demonstrations[:max_samples]
    prompt_format = resolve_prompt_format(cfg.prompt_format, tokenizer)
    segments = [render_segments(demo, tokenizer, prompt_format, cfg.system_prompt) for demo in demonstrations]
    tokenized = tokenize_segments(segments, tokenizer, prompt_format)

    samples, num_truncated = [], 0
    for demo, (ids, trained) in zip(demonstrations, tokenized, strict=True):
        if len(ids) > cfg.max_length:
            num_truncated += 1
            ids, trained = truncate(ids, trained, cfg.max_length, cfg.truncation, demo.location)
        sample = split_prompt_response(ids, trained, demo.location)
        if sample is not None:
            samples.append(sample)
    num_dropped = len(demonstrations) - len(samples)
    if not samples:
        raise DataError(
            f"none of the {len(demonstrations)} samples in {', '.join(files)} has a response token left within "
            f"data.max_length={cfg.max_length}; raise data.max_length or set data.truncation=left"
        )
    if num_truncated:
        logger.warning("truncated %d of %d samples in %s to data.max_length=%d tokens (data.truncation=%s)",
                       num_truncated, len(demonstrations), ", ".join(files), cfg.max_length, cfg.truncation)
    if num_dropped:
        logger.warning("dropped %d samples in %s: no response token left after truncation",
                       num_dropped, ", ".join(files))
    return SFTDataset(samples, num_truncated, num_dropped)


def read_demonstrations(name: str, cfg: SFTDataConfig) -> list[Demonstration]:
    """The demonstrations of one file or built-in task, unrendered."""
    if is_builtin(name):
        return builtin_demonstrations(name)
    rows = read_rows(name)
    if not rows:
        raise DataError(f"data file {name} has no records")
    record_format = cfg.format if cfg.format != "auto" else detect_format(rows[0], cfg)
    if record_format == "messages":
        return [messages_demonstration(row, cfg.messages_key) for row in rows]
    return [prompt_response_demonstration(row, cfg.prompt_key, cfg.response_key) for row in rows]


def detect_format(row: Row, cfg: SFTDataConfig) -> Literal["prompt_response", "messages"]:
    """'messages' when the row has messages_key but no prompt_key, else 'prompt_response'."""
    has_prompt = _lookup(row.fields, cfg.prompt_key)[0]
    return "messages" if cfg.messages_key in row.fields and not has_prompt else "prompt_response"


def builtin_demonstrations(name: str) -> list[Demonstration]:
    """Demonstrations of a built-in task: ``letters`` answers "repeat the letter a" with "a a a a a a a a"."""
    demonstrations = []
    for index, example in enumerate(builtin_examples(name)):
        if example["data_source"] != "letters":
            raise DataError(f"built-in task '{name}' has no demonstrations for SFT; SFT knows builtin:letters*")
        response = " ".join([example["ground_truth"]] * LETTERS_RESPONSE_LENGTH)
        messages = [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": response}]
        demonstrations.append(Demonstration(messages, 1, f"{name} example {index}"))
    return demonstrations


def prompt_response_demonstration(row: Row, prompt_key: str, response_key: str) -> Demonstration:
    prompt = _require(row, prompt_key, "data.prompt_key", "the prompt")
    response = _require(row, response_key, "data.response_key", "the response")
    if isinstance(prompt, str):
        context = [{"role": "user", "content": prompt}]
    else:
        context = _check_messages(prompt, row, prompt_key, "data.prompt_key")
    if isinstance(response, str):
        answer = [{"role": "assistant", "content": response}]
    else:
        answer = _check_messages(response, row, response_key, "data.response_key")
        if not any(message["role"] == "assistant" for message in answer):
            raise DataError(f"{row.location}: '{response_key}' holds no assistant message, so there is nothing to "
                            "train on; give the response as text or as assistant messages")
    return Demonstration(context + answer, len(context), row.location)


def messages_demonstration(row: Row, messages_key: str) -> Demonstration:
    messages = _check_messages(_require(row, messages_key, "data.messages_key", "the conversation"), row,
                               messages_key, "data.messages_key")
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(f"{row.location}: the conversation in '{messages_key}' has no assistant turn, so there is "
                        "nothing to train on")
    return Demonstration(messages, 0, row.location)


def _lookup(fields: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key path in nested dicts."""
    node: Any = fields
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _require(row: Row, dotted: str, field: str, what: str) -> Any:
    """The value at a dotted key path; a missing or null value is a DataError naming file, row and key."""
    found, value = _lookup(row.fields, dotted)
    if not found:
        parent, _, leaf = dotted.rpartition(".")
        node = _lookup(row.fields, parent)[1] if parent else row.fields
        where = f"'{parent}' has" if parent else "it has"
        keys = ", ".join(sorted(map(str, node))) if isinstance(node, dict) else f"no keys: '{parent}' is not a mapping"
        raise DataError(f"{row.location} has no key '{dotted}' ({where}: {keys or 'no keys'}); "
                        f"set {field} to the key that holds {what}")
    if value is None:
        raise DataError(f"{row.location}: '{dotted}' is null; every row needs {what} (set {field} if it lives "
                        "under another key)")
    return value


def _check_messages(value: Any, row: Row, key: str, field: str) -> Messages:
    """A list of {role, content: text} messages, keys with null values dropped (parquet fills them in)."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{row.location}: '{key}' must be text or a non-empty list of {{role, content}} messages, "
                        f"not {type(value).__name__}; set {field} to the right key")
    messages = []
    for position, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise DataError(f"{row.location}: '{key}' message {position} is not a {{role, content}} mapping with "
                            f"text content: {message!r}")
        messages.append({name: item for name, item in message.items() if item is not None})
    return messages


# ---------------------------------------------------------------------------------------------
# rendering and tokenizing
# ---------------------------------------------------------------------------------------------
def render_segments(
    demo: Demonstration, tokenizer: Any, prompt_format: Literal["chat", "raw"], system_prompt: str | None
) -> list[Segment]:
    """The demonstration as consecutive (text, trained) pieces (see the module docstring)."""
    if prompt_format == "raw":
        return _raw_segments(demo, tokenizer, system_prompt)
    messages = to_messages(demo.messages, system_prompt)
    offset = len(messages) - len(demo.messages)  # a system prompt was put first
    targets = [i for i, message in enumerate(messages)
               if message["role"] == "assistant" and i >= demo.num_context + offset]
    segments: list[Segment] = []
    rendered = ""
    for turn in targets:
        before = _apply_template(tokenizer, messages[:turn], True, demo.location)
        after = _apply_template(tokenizer, messages[: turn + 1], False, demo.location)
        if not before.startswith(rendered) or not after.startswith(before):
            raise DataError(
                f"{demo.location}: the chat template changes the text of earlier messages when message "
                f"{turn - offset} is added (it rewrites earlier turns), so the assistant tokens cannot be located; "
                "train on one turn per row (format prompt_response) or use a template that only appends"
            )
        segments += [(before[len(rendered):], False), *_split_after_eos(after[len(before):], tokenizer.eos_token)]
        rendered = after
    return segments


def _split_after_eos(turn: str, eos_token: str | None) -> list[Segment]:
    """A rendered assistant turn is trained on up to its last EOS (end-of-turn) token; what the template puts
    after it ("\n" in ChatML) is never generated, so it is context."""
    cut = turn.rfind(eos_token) + len(eos_token) if eos_token and eos_token in turn else len(turn)
    return [(turn[:cut], True)] + ([(turn[cut:], False)] if turn[cut:] else [])


def _raw_segments(demo: Demonstration, tokenizer: Any, system_prompt: str | None) -> list[Segment]:
    context, answer = demo.messages[: demo.num_context], demo.messages[demo.num_context:]
    if demo.num_context == 0 or [message["role"] for message in answer] != ["assistant"]:
        raise ConfigError(
            f"{demo.location}: data.prompt_format=raw takes a prompt and one response; conversations need a chat "
            "template (data.prompt_format=chat and a tokenizer with a chat_template)"
        )
    if tokenizer.eos_token is None:
        raise ConfigError("data.prompt_format=raw appends EOS to every response, but the tokenizer has no eos_token")
    parts = ([system_prompt] if system_prompt is not None else []) + [str(m["content"]) for m in context]
    return [("\n".join(parts), False), (answer[0]["content"] + tokenizer.eos_token, True)]


def _apply_template(tokenizer: Any, messages: Messages, add_generation_prompt: bool, location: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as error:  # a chat template may raise anything (jinja, ValueError, ...)
        raise DataError(f"{location}: the chat template failed on this conversation: {type(error).__name__}: "
                        f"{error}; check the messages, or set data.prompt_format=raw") from error


def tokenize_segments(
    samples: Sequence[list[Segment]], tokenizer: Any, prompt_format: Literal["chat", "raw"]
) -> list[tuple[list[int], list[int]]]:
    """(ids, trained 0/1 per id) of each sample, in two batched tokenizer calls.

    The first piece of a sample is tokenized as `rlkit train` tokenizes a prompt (the tokenizer's special
    tokens such as BOS only for raw text: a chat template writes its own); later pieces get none.
    """
    firsts = [segments[0][0] for segments in samples]
    rest = [text for segments in samples for text, _ in segments[1:]]
    first_ids = tokenizer(firsts, add_special_tokens=prompt_format == "raw")["input_ids"] if firsts else []
    rest_ids = iter(tokenizer(rest, add_special_tokens=False)["input_ids"] if rest else [])
    tokenized = []
    for segments, ids in zip(samples, first_ids, strict=True):
        all_ids, trained = list(ids), [int(segments[0][1])] * len(ids)
        for _, is_trained in segments[1:]:
            piece = list(next(rest_ids))
            all_ids += piece
            trained += [int(is_trained)] * len(piece)
        tokenized.append((all_ids, trained))
    return tokenized


def truncate(
    ids: list[int], trained: list[int], max_length: int, truncation: str, location: str
) -> tuple[list[int], list[int]]:
    """Fit an overlong sample: 'left' keeps the end, 'right' keeps the start, 'error' raises."""
    if truncation == "left":
        return ids[-max_length:], trained[-max_length:]
    if truncation == "right":
        return ids[:max_length], trained[:max_length]
    num_response = len(ids) - trained.index(1) if 1 in trained else 0
    raise DataError(
        f"{location}: the sample has {len(ids)} tokens ({num_response} from the first trained token on), more than "
        f"data.max_length={max_length}; raise data.max_length, or set data.truncation=left (drop the start of "
        "the prompt) or right (drop the end of the response)"
    )


def split_prompt_response(ids: list[int], trained: list[int], location: str) -> SFTSample | None:
    """Prompt = the ids before the first trained one (at least one: it predicts the first response token);
    None when no trained id is left."""
    if 1 not in trained[1:]:
        return None
    start = max(trained.index(1), 1)
    end = len(trained) - trained[::-1].index(1)  # nothing after the last trained token matters
    return SFTSample(ids[:start], ids[start:end], trained[start:end], location)


# ---------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------
def collate_sft(samples: Sequence[SFTSample], pad_token_id: int) -> Batch:
    """A Batch in rlkit.batch's layout: prompt left-padded to P, response right-padded to T (the widest here).

    Tensors: input_ids, attention_mask, position_ids (B, P + T) long; response_mask (B, T) float, 1.0 on
    trained tokens.
    """
    num = len(samples)
    width_p = max(len(sample.prompt_ids) for sample in samples)
    width_t = max(len(sample.response_ids) for sample in samples)
    input_ids_BL = torch.full((num, width_p + width_t), pad_token_id, dtype=torch.long)
    attention_mask_BL = torch.zeros((num, width_p + width_t), dtype=torch.long)
    response_mask_BT = torch.zeros((num, width_t), dtype=torch.float32)
    for i, sample in enumerate(samples):
        num_p, num_t = len(sample.prompt_ids), len(sample.response_ids)
        input_ids_BL[i, width_p - num_p : width_p] = torch.tensor(sample.prompt_ids, dtype=torch.long)
        input_ids_BL[i, width_p : width_p + num_t] = torch.tensor(sample.response_ids, dtype=torch.long)
        attention_mask_BL[i, width_p - num_p : width_p + num_t] = 1
        response_mask_BT[i, :num_t] = torch.tensor(sample.response_mask, dtype=torch.float32)
    # Left padding sits at position 0, right padding repeats the last real position (as rollouts assemble it).
    position_ids_BL = (attention_mask_BL.cumsum(dim=1) - 1).clamp(min=0)
    return Batch({
        "input_ids": input_ids_BL,
        "attention_mask": attention_mask_BL,
        "position_ids": position_ids_BL,
        "response_mask": response_mask_BT,
    })


def without_loss(sample: SFTSample) -> SFTSample:
    """The sample with every token masked: filler that keeps ranks' batches equal in size and adds nothing."""
    return SFTSample(sample.prompt_ids, sample.response_ids, [0] * len(sample.response_ids), sample.location)
