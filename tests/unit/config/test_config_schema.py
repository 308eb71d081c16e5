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


def test_engine_union_selects_options_by_name():
    cfg = build_config(RunConfig, None, ["engine.name=deepspeed", "engine.zero_stage=2"])
    assert cfg.engine.name == "deepspeed" and cfg.engine.zero_stage == 2
    cfg = build_config(RunConfig, None, ["rollout.name=vllm", "rollout.gpu_memory_utilization=0.3"])
    assert cfg.rollout.gpu_memory_utilization == 0.3


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["trainer.total_step=3"], "did you mean 'trainer.total_steps'"),
        (["engine.reshard_after_forwad=false"], "did you mean 'engine.reshard_after_forward'"),
        (["engine.zero_stage=3"], "unknown key 'engine.zero_stage'"),  # a deepspeed option under fsdp2
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


def _literal_values(annotation) -> set:
    """The values of the Literal inside an annotation (Literal[...] | None included)."""
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    return set().union(*(_literal_values(arg) for arg in typing.get_args(annotation)))


def test_the_configs_literals_are_the_algorithms_names():
    import torch

    from rlkit.algorithms import KL_KINDS, LOSS_AGG_MODES, agg_loss, kl_penalty
    from rlkit.config import AlgorithmConfig
    from rlkit.registry import ADV_ESTIMATORS, POLICY_LOSSES

    fields = AlgorithmConfig.model_fields
    assert _literal_values(fields["loss_agg_mode"].annotation) == set(LOSS_AGG_MODES)
    assert _literal_values(fields["kl_penalty"].annotation) == set(KL_KINDS)
    assert _literal_values(fields["kl_loss_type"].annotation) == set(KL_KINDS)
    ones = torch.ones(1, 2)
    for mode in LOSS_AGG_MODES:  # every name the config admits is one the functions take
        agg_loss(ones, ones, mode)
    for kind in KL_KINDS:
        kl_penalty(ones, ones, kind)
    declared = [ADV_ESTIMATORS.get(name).default_loss_agg_mode for name in ADV_ESTIMATORS.names()]
    declared += [getattr(POLICY_LOSSES.get(name), "default_loss_agg_mode", None) for name in POLICY_LOSSES.names()]
    assert set(declared) - {None} <= set(LOSS_AGG_MODES)


def test_a_built_config_cannot_be_changed():
    from pydantic import ValidationError

    cfg = RunConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.trainer.total_steps = 3
    assert cfg.trainer.model_copy(update={"total_steps": 3}).total_steps == 3
