"""The behaviour suite (rlkit.rollout.behaviour) over every rollout engine.

The engines (CASES) and the `subject` fixture are in conftest.py: hf runs on CPU; hf on cuda, vllm and sglang
are marked `gpu` and skip without a GPU or their package.
Run one GPU engine per pytest process (`-k vllm`): engines do not always hand a GPU back cleanly.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rlkit.rollout.behaviour import CHECKS, build_tiny_checkpoint


def test_the_tiny_tokenizer_survives_a_reload(tmp_path):
    built = build_tiny_checkpoint(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "what is two plus two? the cat runs"
    assert reloaded(text).input_ids == built(text).input_ids
    assert reloaded.decode(range(len(built))) == built.decode(range(len(built)))
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (built.eos_token_id, built.pad_token_id) == (1, 0)


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__.removeprefix("check_") for check in CHECKS])
def test_behaviour(subject, check):
    engine, reference = subject
    check(engine, reference)
