"""Loading from local folders only, with errors that name the path."""

import pytest
import torch

from rlkit.errors import RlkitError
from rlkit.models.loading import load_causal_lm, load_critic, load_tokenizer
from rlkit.models.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def test_causal_lm_loads_fp32_in_eval_mode(tiny_dir):
    model = load_causal_lm(tiny_dir)
    assert not model.training and {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.dtype for p in load_causal_lm(tiny_dir, dtype=torch.bfloat16).parameters()} == {torch.bfloat16}


def test_critic_has_one_label_and_no_dropout(tiny_dir):
    critic = load_critic(tiny_dir)
    assert critic.score.out_features == 1 and critic.dropout.p == 0.0
    logits = critic(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert logits.shape == (1, 3, 1)


def test_tokenizer_has_a_pad_token(tiny_dir):
    assert load_tokenizer(tiny_dir).pad_token_id is not None


@pytest.mark.parametrize("loader", [load_causal_lm, load_critic, load_tokenizer])
def test_missing_path_is_an_error_naming_it(loader, tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(RlkitError, match="no-such-model"):
        loader(missing)


def test_folder_without_config_is_an_error(tmp_path):
    with pytest.raises(RlkitError, match="config.json"):
        load_causal_lm(str(tmp_path))


def test_uncached_hub_id_is_an_error_and_nothing_is_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RlkitError, match="never downloads"):
        load_causal_lm("rlkit-test/no-such-model")
