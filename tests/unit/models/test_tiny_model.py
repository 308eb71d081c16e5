"""The embedded tiny model: deterministic, loadable offline, and a tokenizer that survives a reload."""

import os
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlkit.models.tiny import (
    EOS_TOKEN,
    PAD_TOKEN,
    TINY_MODEL_NAME,
    build_tiny_model,
    ensure_tiny_model,
    train_tokenizer,
)

TEXTS = [
    "repeat the letter a 4 times",
    "a a a a",
    "aaaa",
    "what is 12 + 30? the answer is 42.",
    "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\nb b b<|im_end|><|pad|>",
    "Unseen WORDS, punctuation!? and ünïcode",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_same_seed_same_files(tiny_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    for path in sorted(tiny_dir.iterdir()):
        assert path.read_bytes() == (again / path.name).read_bytes(), path.name
    other = build_tiny_model(tmp_path / "other", seed=1)
    first, second = load_file(tiny_dir / "model.safetensors"), load_file(other / "model.safetensors")
    assert not torch.equal(first["model.embed_tokens.weight"], second["model.embed_tokens.weight"])


def test_reloaded_tokenizer_gives_the_trained_ids(tiny_dir):
    trained = train_tokenizer(seed=0)
    reloaded = AutoTokenizer.from_pretrained(tiny_dir)
    for text in TEXTS:
        assert reloaded(text)["input_ids"] == trained.encode(text).ids, text
        assert reloaded.decode(reloaded(text)["input_ids"]) == text


def test_letters_stay_several_tokens_and_specials_are_set(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert len(tokenizer("a a a a")["input_ids"]) == 4
    assert len(tokenizer("aaaa")["input_ids"]) >= 2
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") not in (None, tokenizer.unk_token_id)
    messages = [{"role": "user", "content": "hi"}]
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_model_loads_and_generates(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.num_key_value_heads == 2 and config.vocab_size == len(tokenizer) and not config.tie_word_embeddings
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    prompt = tokenizer("repeat the letter b 3 times", return_tensors="pt")
    assert model.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] > prompt["input_ids"].shape[1]


def test_ensure_builds_once_and_reuses(tmp_path):
    start = time.monotonic()
    path = ensure_tiny_model(tmp_path)
    assert time.monotonic() - start < 10 and path == tmp_path / TINY_MODEL_NAME
    stamp = os.stat(path / "model.safetensors").st_mtime_ns
    assert ensure_tiny_model(tmp_path) == path
    assert os.stat(path / "model.safetensors").st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [TINY_MODEL_NAME]  # no staging folder left behind
