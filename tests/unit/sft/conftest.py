"""Fixtures of the SFT tests: a word-level tokenizer whose tokens can be counted by hand, the tiny model,
and SFT configs for short runs on it. The shared runs under scripts/ are on the import path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = "user assistant system repeat the letter a b c d e hi there how are you fine thanks bye q"


def build_word_tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """One token per word or special token, newlines dropped by the whitespace pre-tokenizer:
    "<|im_start|>user\\nrepeat the letter a<|im_end|>\\n" is 7 tokens (<|im_start|> user repeat the letter a
    <|im_end|>). EOS is <|im_end|>."""
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>"]
    backend.train_from_iterator([WORDS], trainers.WordLevelTrainer(special_tokens=special))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="session")
def word_tokenizer() -> PreTrainedTokenizerFast:
    return build_word_tokenizer()


@pytest.fixture(scope="session")
def make_word_tokenizer():
    """The word tokenizer with a chat template of the test's choosing."""
    return build_word_tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from rlkit.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
