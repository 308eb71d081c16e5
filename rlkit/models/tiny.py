"""The embedded tiny model: a randomly initialised Qwen2 and a locally trained tokenizer, built in about a second.

It is what `model.path: builtin:tiny` resolves to, so the default run and the test suite need no download.
The tokenizer is a byte-level BPE with ~300 tokens trained on generated text ("repeat the letter a 3
times", small sums, plain words), so a response like "a a a a" spans several tokens and rewards on it can
move during a short run. It uses Qwen2's normaliser and pre-tokenizer: transformers 5 reloads a `qwen2`
folder as `Qwen2Tokenizer`, which rebuilds exactly that pipeline around the saved vocab and merges, so
the ids survive a save and reload.

Same seed, same files: the text comes from a seeded `random.Random`, BPE training is deterministic, and
the weights are drawn under a forked, seeded torch RNG (the caller's RNG state is left alone).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch

TINY_MODEL_NAME = "tiny-qwen2-v1"  # bump when the recipe changes, so cached copies are rebuilt
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TOKENIZER_VOCAB_SIZE = 320  # an upper bound: training stops early when no pair occurs twice
_WORDS = (
    "the a an is of to and in it you that he was for on are with as his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said each she "
    "which do their time if will way about many then them write would like so these her long make thing "
    "see him two has look more day could go come did number sound no most people my over know water than "
    "call first who may down side been now find answer question letter repeat times sum plus minus equals "
    "user assistant system please think step reply count correct wrong"
).split()
_LETTERS = "abcde"


def build_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    """Write a Hugging Face folder (config, safetensors weights, tokenizer, chat template, generation
    config) for a 2-layer Qwen2 with hidden size 64 into `directory`; returns `directory`."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = as_qwen2_tokenizer(train_tokenizer(seed))
    eos_id, pad_id = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def ensure_tiny_model(cache_dir: Path) -> Path:
    """The tiny model under `cache_dir`, built on first use. Safe when several processes race: each builds
    in its own temporary folder and renames it into place; the losers discard theirs."""
    cache_dir = Path(cache_dir)
    target = cache_dir / TINY_MODEL_NAME
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_NAME}-", dir=cache_dir))
    try:
        build_tiny_model(staging)
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def train_tokenizer(seed: int = 0):
    """A byte-level BPE (a `tokenizers.Tokenizer`) trained on generated text with Qwen2's pipeline."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    # Qwen2Tokenizer rebuilds exactly this normaliser, pre-tokenizer and decoder on reload.
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TOKENIZER_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_text(random.Random(seed)), trainer)
    return bpe


def as_qwen2_tokenizer(bpe):
    """The trained BPE as the Qwen2Tokenizer that a `qwen2` folder reloads as, with specials and chat template."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    trained = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(pair) for pair in trained["merges"]],
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _training_text(rng: random.Random) -> list[str]:
    """Lines shaped like the built-in tasks: letter repetition, sums, and plain words."""
    lines = []
    for _ in range(1500):
        letter, count = rng.choice(_LETTERS), rng.randint(1, 8)
        lines.append(f"repeat the letter {letter} {count} times")
        lines.append(" ".join(letter * count))  # spaced only: "aaaa" must stay several tokens
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        lines.append(f"what is {a} + {b}? the answer is {a + b}.")
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))))
    return lines
