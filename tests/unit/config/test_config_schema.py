"""The run config: defaults, cross-field rules, overrides, unknown keys, the YAML recipes and the reference doc."""

from pathlib import Path

import pytest

from rlkit.config import RunConfig, build_config
from rlkit.config.loading import parse_override
from rlkit.config.reference import render_config_reference
from rlkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_defaults_are_the_embedded_run():
    cfg = RunConfig()
    assert cfg.model.path == "builtin:tiny"
    assert cfg.engine.name == "fsdp2" and cfg.rollout.name == "hf"
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.rollout.n >= 2


def test_yaml_then_flags_then_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("trainer:\n  total_steps: 5\nalgorithm:\n  adv_estimator: rloo\n")
    cfg = build_config(RunConfig, config, ["trainer.total_steps=7"], {"algorithm.adv_estimator": "drgrpo"})
    assert cfg.trainer.total_steps == 7  # the override wins over the file
    assert cfg.algorithm.adv_estimator == "drgrpo"  # the flag wins over the file


def test_the_selected_backend_reads_its_own_block():
    cfg = build_config(RunConfig, None, ["engine.name=deepspeed", "engine.deepspeed.zero_stage=2"])
    assert cfg.engine.name == "deepspeed" and cfg.engine.options.zero_stage == 2
    cfg = build_config(RunConfig, None, ["rollout.name=vllm", "rollout.vllm.gpu_memory_utilization=0.3"])
    assert cfg.rollout.options.gpu_memory_utilization == 0.3


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["trainer.total_step=3"], "did you mean 'trainer.total_steps'"),
        (["engine.fsdp2.reshard_after_forwad=false"], "did you mean 'engine.fsdp2.reshard_after_forward'"),
        (["engine.zero_stage=3"], "engine.zero_stage: 'zero_stage' is an option of the deepspeed training engine"),
        (["algorithm.adv_estimator=grpoo"], "Did you mean 'grpo'"),
        (["rollout.n=1"], "rollout.n must be at least 2"),
        (["algorithm.use_kl_loss=true", "algorithm.use_kl_in_reward=true"], "not both"),
        (["data.train_batch_size=10"], "not a multiple of algorithm.mini_batch_size=8"),
        (["engine.name=fsdp"], "Did you mean 'fsdp2'"),
        (["rollout.temperature=-1"], "rollout.temperature"),
        (["trainer.total_steps"], "not of the form key.path=value"),
    ],
)
def test_bad_configs_name_the_key(overrides, expected):
    with pytest.raises(ConfigError, match=None) as error:
        build_config(RunConfig, None, overrides)
    assert expected in str(error.value)


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        build_config(RunConfig, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(RunConfig, tmp_path / "missing.yaml")


def test_override_values_parse_as_yaml():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=[x, y]") == (["a"], ["x", "y"])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=hello") == (["a"], "hello")


def test_every_recipe_validates():
    from rlkit.cli.configs import model_for_file

    recipes = sorted((REPO / "configs").glob("*.yaml"))
    assert recipes, "configs/ has no YAML recipes"
    for recipe in recipes:
        build_config(model_for_file(str(recipe)), recipe)


def test_config_reference_is_in_sync():
    committed = (REPO / "docs" / "config.md").read_text()
    assert committed == render_config_reference(), "docs/config.md is stale: run `rlkit config docs > docs/config.md`"


def test_every_field_is_described():
    from rlkit.config.sections import reference_rows

    missing = [key for key, _, _, description in reference_rows(RunConfig) if not description]
    assert not missing, f"fields without a description: {missing}"
