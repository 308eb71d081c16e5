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
    from rlkit.config.kinds import model_for_file

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


def test_epochs_take_effect_and_both_lengths_are_an_error():
    cfg = build_config(RunConfig, None, ["trainer.total_epochs=3"])
    assert cfg.trainer.total_steps is None and cfg.trainer.num_steps(steps_per_epoch=5) == 15
    assert build_config(RunConfig, None, []).trainer.num_steps(steps_per_epoch=5) == 100  # the default length
    assert build_config(RunConfig, None, ["trainer.total_steps=null"]).trainer.num_steps(steps_per_epoch=5) == 5
    with pytest.raises(ConfigError, match="trainer.total_steps=4 and trainer.total_epochs=3 are both set"):
        build_config(RunConfig, None, ["trainer.total_epochs=3", "trainer.total_steps=4"])


def test_a_config_dump_reads_back_as_the_same_config(tmp_path):
    import yaml

    for overrides in ([], ["trainer.total_epochs=2", "engine.name=deepspeed", "rollout.name=vllm"]):
        cfg = build_config(RunConfig, None, overrides)
        dumped = tmp_path / "dump.yaml"
        dumped.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True)))
        assert build_config(RunConfig, dumped) == cfg


def test_file_lists_take_a_string_or_null():
    cfg = build_config(RunConfig, None, ["data.train_files=/x.parquet", "data.val_files=null"])
    assert cfg.data.train_files == ["/x.parquet"] and cfg.data.val_files == []


@pytest.mark.parametrize("where", ["override", "file"])
def test_key_value_without_a_space_names_yaml_not_the_section(where, tmp_path):
    if where == "override":
        args = (None, ["reward.kwargs={method:flexible}"])
    else:
        (tmp_path / "run.yaml").write_text("reward:\n  kwargs: {method:flexible}\n")
        args = (tmp_path / "run.yaml", [])
    with pytest.raises(ConfigError, match="YAML needs a space after the colon of key: value; write {method: flexible}"):
        build_config(RunConfig, *args)


@pytest.mark.parametrize(
    "override, hint",
    [
        ("optim.learning_rate=1e-6", "did you mean 'optim.lr'?"),
        ("rollout.num_samples=4", "did you mean 'rollout.n'?"),
        ("algorithm.clip_ratio=0.3", "did you mean 'algorithm.clip_ratio_low' or 'algorithm.clip_ratio_high'?"),
        ("trainer.max_steps=10", "did you mean 'trainer.total_steps'?"),
        ("rollout.response_length=64", "did you mean 'rollout.max_new_tokens'?"),
    ],
)
def test_renamed_concepts_suggest_rlkits_key_not_the_nearest_spelling(override, hint):
    with pytest.raises(ConfigError) as error:
        build_config(RunConfig, None, [override])
    assert hint in str(error.value)


def test_an_alias_is_suggested_only_where_its_key_exists():
    from rlkit.config.sft import SFTConfig

    with pytest.raises(ConfigError) as error:  # SFT has no rollout: spelling decides
        build_config(SFTConfig, None, ["data.max_response_length=64"])
    assert "rollout.max_new_tokens" not in str(error.value) and "did you mean 'data." in str(error.value)


def test_a_checkpoint_config_of_the_flat_layout_still_loads(tmp_path):
    from rlkit.config.loading import load_saved_config

    saved = tmp_path / "config.yaml"  # what rlkit wrote before backend blocks
    saved.write_text(
        "engine:\n  name: deepspeed\n  precision: fp32\n  zero_stage: 2\n  offload_ref: true\n"
        "rollout:\n  name: vllm\n  n: 4\n  gpu_memory_utilization: 0.3\n  sleep_level: 2\n"
        "trainer:\n  total_steps: 100\n  total_epochs: 1\n"
    )
    cfg = load_saved_config(RunConfig, saved)
    assert cfg.engine.precision == "fp32" and cfg.engine.options.zero_stage == 2 and cfg.engine.options.offload_ref
    assert cfg.rollout.n == 4 and cfg.rollout.options.gpu_memory_utilization == 0.3
    assert cfg.rollout.options.sleep_level == 2 and cfg.trainer.total_steps == 100


def test_every_block_present_is_validated_and_only_the_selected_one_is_used(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("engine:\n  name: fsdp2\n  fsdp2: {cpu_offload: true}\n  deepspeed: {zero_stage: 2}\n"
                      "rollout:\n  name: hf\n  vllm: {gpu_memory_utilization: 0.7}\n"
                      "  sglang: {mem_fraction_static: 2}\n")
    with pytest.raises(ConfigError, match="rollout.sglang.mem_fraction_static: Input should be less than or equal"):
        build_config(RunConfig, recipe)  # a block of an engine not selected is still checked
    recipe.write_text(recipe.read_text().replace("mem_fraction_static: 2", "mem_fraction_static: 0.2"))
    cfg = build_config(RunConfig, recipe)
    assert cfg.engine.options.cpu_offload is True and cfg.rollout.options.batch_size is None
    swapped = build_config(RunConfig, recipe, flags={"engine.name": "deepspeed", "rollout.name": "vllm"})
    assert swapped.engine.options.zero_stage == 2 and swapped.rollout.options.gpu_memory_utilization == 0.7


@pytest.mark.parametrize(
    "override, place",
    [
        ("rollout.gpu_memory_utilization=0.3", "write rollout.vllm.gpu_memory_utilization"),
        ("rollout.batch_size=4", "write rollout.hf.batch_size"),
        ("rollout.mem_fraction_static=0.3", "write rollout.sglang.mem_fraction_static"),
        ("engine.cpu_offload=true", "write engine.fsdp2.cpu_offload"),
        ("engine.offload_ref=true", "write engine.fsdp2.offload_ref or engine.deepspeed.offload_ref"),
        ("engine.options={a: 1}", "write engine.<name>.OPTION (engine.fsdp2.OPTION for the selected one)"),
    ],
)
def test_an_old_flat_key_names_its_new_place(override, place):
    with pytest.raises(ConfigError) as error:
        build_config(RunConfig, None, [override])
    assert place in str(error.value)


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
