"""SFTConfig: defaults, `kind`, errors, and the shipped recipes."""

from pathlib import Path

import pytest

from rlkit.config.kinds import model_for_file
from rlkit.config import build_config
from rlkit.config.sft import SFTConfig
from rlkit.errors import ConfigError

CONFIGS = Path(__file__).parents[3] / "configs"


def test_defaults_are_the_embedded_letters_run():
    cfg = SFTConfig()
    assert cfg.kind == "sft" and cfg.model.path == "builtin:tiny" and cfg.engine.name == "fsdp2"
    assert cfg.data.train_files == ["builtin:letters"] and cfg.data.val_files == ["builtin:letters-val"]


@pytest.mark.parametrize("name", ["sft_gsm8k_full.yaml", "sft_gsm8k_lora.yaml"])
def test_recipes_validate_as_sft(name):
    path = str(CONFIGS / name)
    assert model_for_file(path) is SFTConfig
    cfg = build_config(SFTConfig, path)
    assert cfg.data.response_key == "extra_info.answer" and cfg.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (cfg.model.lora is not None) == ("lora" in name)


def test_unknown_key_suggests_the_sft_key(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("kind: sft\ndata:\n  response_kye: answer\n")
    with pytest.raises(ConfigError, match=r"unknown key 'data.response_kye'; did you mean 'data.response_key'\?"):
        build_config(model_for_file(str(path)), path)


def test_an_rl_section_is_not_an_sft_key():
    with pytest.raises(ConfigError, match="unknown key 'rollout'"):
        build_config(SFTConfig, None, ["rollout.n=4"])


def test_micro_batch_larger_than_the_global_batch_is_refused():
    message = "data.micro_batch_size_per_device=32 is larger than data.train_batch_size=16"
    with pytest.raises(ConfigError, match=message):
        build_config(SFTConfig, None, ["data.micro_batch_size_per_device=32"])


def test_kind_is_fixed():
    with pytest.raises(ConfigError, match="kind"):
        build_config(SFTConfig, None, ["kind=train"])
