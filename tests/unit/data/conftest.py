"""A word-level tokenizer built in memory (no downloads), with and without a ChatML-like template.

Every word and punctuation mark is one token, so prompt lengths can be counted by hand:
"<|im_start|>user\\nrepeat the letter a<|im_end|>\\n<|im_start|>assistant\\n" is 9 tokens
(<|im_start|> user repeat the letter a <|im_end|> <|im_start|> assistant).
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>"]
SENTENCES = [
    "repeat the letter a b c d e",
    "user assistant system you are helpful",
    "how many clips did natalia sell ?",
    "what is one plus one ?",
]


def build_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer(CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def plain_tokenizer() -> PreTrainedTokenizerFast:
    """No chat template: `prompt_format: auto` renders raw text."""
    return build_tokenizer(None)


@pytest.fixture(scope="session")
def make_tokenizer():
    """Build a fresh tokenizer with a chat template of the test's choosing."""
    return build_tokenizer
