"""verl's keys translated to rlkit's (rlkit/config/verl/): each key of the common subset lands where it means
the same, with one log line; a key rlkit cannot honour is an error saying what to do instead."""

from __future__ import annotations

import logging

import pytest
import yaml
from click.testing import CliRunner

from rlkit.cli.main import cli
from rlkit.config import RunConfig, build_config
from rlkit.errors import ConfigError

A = "actor_rollout_ref."


def build(*overrides: str, config_file=None, flags=None) -> RunConfig:
    return build_config(RunConfig, config_file, list(overrides), flags)


def value_at(cfg: RunConfig, dotted: str):
    node = cfg
    for key in dotted.split("."):
        node = node.block(key) if key not in type(node).model_fields and hasattr(node, "block") else getattr(node, key)
    return node


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.max_response_length=64"], {"rollout.max_new_tokens": 64}),
        (["data.train_max_samples=-1", "data.val_max_samples=5"],
         {"data.max_train_samples": None, "data.max_val_samples": 5}),
        ([f"{A}model.path=/models/qwen", f"{A}model.enable_gradient_checkpointing=True"],
         {"model.path": "/models/qwen", "engine.gradient_checkpointing": True}),
        ([f"{A}model.use_remove_padding=True"], {"engine.pack_sequences": True}),
        ([f"{A}model.lora_rank=8", f"{A}model.lora_alpha=32", f"{A}model.target_modules=[q_proj,v_proj]"],
         {"model.lora.rank": 8, "model.lora.alpha": 32.0, "model.lora.target_modules": ["q_proj", "v_proj"]}),
        ([f"{A}model.lora_rank=0", f"{A}model.lora_alpha=32"], {"model.lora": None}),
        ([f"{A}actor.optim.lr=3e-6", f"{A}actor.optim.lr_warmup_steps=5", f"{A}actor.optim.weight_decay=0.1"],
         {"optim.lr": 3e-6, "optim.warmup_steps": 5, "optim.weight_decay": 0.1}),
        ([f"{A}actor.optim.lr_warmup_steps_ratio=0.1"], {"optim.warmup_ratio": 0.1, "optim.warmup_steps": 0}),
        ([f"{A}actor.optim.lr_warmup_steps=3", f"{A}actor.optim.lr_warmup_steps_ratio=0.1"],
         {"optim.warmup_steps": 3, "optim.warmup_ratio": None}),  # verl: steps >= 0 win over the ratio
        (["data.train_batch_size=16", f"{A}actor.ppo_mini_batch_size=4", f"{A}actor.ppo_epochs=2",
          f"{A}actor.ppo_micro_batch_size_per_gpu=2"],
         {"data.train_batch_size": 16, "algorithm.mini_batch_size": 4, "algorithm.ppo_epochs": 2,
          "algorithm.micro_batch_size_per_device": 2}),
        ([f"{A}actor.use_kl_loss=True", f"{A}actor.kl_loss_coef=0.01", f"{A}actor.kl_loss_type=k3",
          f"{A}actor.entropy_coeff=0.001", f"{A}actor.loss_agg_mode=seq-mean-token-mean",
          f"{A}actor.clip_ratio_low=0.2", f"{A}actor.clip_ratio_high=0.28"],
         {"algorithm.use_kl_loss": True, "algorithm.kl_loss_coef": 0.01, "algorithm.kl_loss_type": "k3",
          "algorithm.entropy_coeff": 0.001, "algorithm.loss_agg_mode": "seq-mean-token-mean",
          "algorithm.clip_ratio_low": 0.2, "algorithm.clip_ratio_high": 0.28}),
        # verl's loss reads clip_ratio_low/high (0.2 by default), never clip_ratio alone: neither does rlkit
        ([f"{A}actor.clip_ratio=0.3"], {"algorithm.clip_ratio_low": 0.2, "algorithm.clip_ratio_high": 0.2}),
        ([f"{A}actor.fsdp_config.param_offload=True"],
         {"engine.fsdp2.cpu_offload": True, "engine.deepspeed.offload_param": True,
          "engine.deepspeed.offload_optimizer": False}),
        ([f"{A}actor.fsdp_config.param_offload=False", f"{A}actor.fsdp_config.optimizer_offload=True"],
         {"engine.fsdp2.cpu_offload": True, "engine.deepspeed.offload_param": False,
          "engine.deepspeed.offload_optimizer": True}),  # FSDP2 offloads both together
        ([f"{A}actor.strategy=fsdp"], {"engine.name": "fsdp2"}),
        ([f"{A}rollout.name=sglang", f"{A}rollout.n=4", f"{A}rollout.temperature=0.7", f"{A}rollout.top_p=0.9",
          f"{A}rollout.top_k=20", f"{A}rollout.gpu_memory_utilization=0.4",
          f"{A}rollout.tensor_model_parallel_size=1"],
         {"rollout.name": "sglang", "rollout.n": 4, "rollout.temperature": 0.7, "rollout.top_p": 0.9,
          "rollout.top_k": 20, "rollout.sglang.mem_fraction_static": 0.4,
          "rollout.vllm.gpu_memory_utilization": 0.4, "rollout.sglang.tensor_parallel_size": 1}),
        ([f"{A}actor.ppo_micro_batch_size_per_gpu=8", f"{A}rollout.log_prob_micro_batch_size_per_gpu=4",
          f"{A}ref.log_prob_micro_batch_size_per_gpu=16"],
         {"algorithm.micro_batch_size_per_device": 4}),  # one size for every pass: the smallest fits each
        ([f"{A}ref.fsdp_config.param_offload=True"],
         {"engine.fsdp2.offload_ref": True, "engine.deepspeed.offload_ref": True}),
        (["algorithm.adv_estimator=gae", "critic.model.path=/models/critic", "critic.optim.lr=2e-5",
          "critic.ppo_micro_batch_size_per_gpu=4", "trainer.critic_warmup=3"],
         {"critic.model_path": "/models/critic", "critic.optim.lr": 2e-5,
          "algorithm.micro_batch_size_per_device": 4, "critic.warmup_steps": 2}),  # verl: actor from step 3
        (["algorithm.adv_estimator=grpo", "algorithm.norm_adv_by_std_in_grpo=False"],
         {"algorithm.adv_estimator": "drgrpo", "algorithm.loss_agg_mode": "token-mean"}),
        (["algorithm.norm_adv_by_std_in_grpo=False", f"{A}actor.loss_agg_mode=seq-mean-token-sum-norm"],
         {"algorithm.adv_estimator": "drgrpo", "algorithm.loss_agg_mode": "seq-mean-token-sum-norm"}),
        (["algorithm.adv_estimator=rloo", "algorithm.norm_adv_by_std_in_grpo=False"],
         {"algorithm.adv_estimator": "rloo"}),
        (["algorithm.adv_estimator=gae", "algorithm.use_kl_in_reward=True", "algorithm.kl_ctrl.type=adaptive",
          "algorithm.kl_ctrl.kl_coef=0.05", "algorithm.gamma=0.99", "algorithm.lam=0.95"],
         {"algorithm.use_kl_in_reward": True, "algorithm.kl_ctrl.type": "adaptive",
          "algorithm.kl_ctrl.kl_coef": 0.05, "algorithm.gamma": 0.99, "algorithm.lam": 0.95}),
        (["custom_reward_function.path=/rewards/mine.py", "custom_reward_function.name=score"],
         {"reward.name": "/rewards/mine.py:score"}),
        (["custom_reward_function.path=/rewards/mine.py"], {"reward.name": "/rewards/mine.py:compute_score"}),
        (["reward_model.reward_manager=naive"], {"reward.name": "auto"}),
        (["trainer.total_epochs=3"], {"trainer.total_epochs": 3, "trainer.total_steps": None}),
        (["trainer.total_training_steps=7"], {"trainer.total_steps": 7}),
        (["trainer.save_freq=-1", "trainer.test_freq=-1", "trainer.val_before_train=False"],
         {"trainer.save_freq": 0, "trainer.save_at_end": False, "trainer.test_freq": 0,
          "trainer.val_before_train": False}),
        (["trainer.save_freq=20", "trainer.test_freq=5"], {"trainer.save_freq": 20, "trainer.test_freq": 5}),
        (["trainer.default_local_dir=/ckpt/run1", "trainer.logger=[console,wandb]", "trainer.project_name=p",
          "trainer.experiment_name=e"],
         {"trainer.output_dir": "/ckpt/run1", "trainer.loggers": ["console", "wandb"],
          "trainer.project_name": "p", "trainer.experiment_name": "e"}),
        (["trainer.resume_mode=disable"], {"trainer.resume": "disable"}),
        (["trainer.resume_mode=resume_path", "trainer.resume_from_path=/ckpt/global_step_40"],
         {"trainer.resume": "/ckpt/global_step_40"}),
        (["trainer.n_gpus_per_node=8", "trainer.nnodes=2"], {"trainer.device": "auto"}),  # the launcher's job
        ([f"{A}rollout.free_cache_engine=True"], {"rollout.sleep": "auto"}),  # frees it when training needs it
        ([f"{A}rollout.free_cache_engine=False"], {"rollout.sleep": False}),
    ],
)
def test_verl_keys_mean_the_same_in_rlkit(overrides, expected):
    cfg = build(*overrides)
    for dotted, value in expected.items():
        assert value_at(cfg, dotted) == value, dotted


def test_each_translated_key_logs_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="rlkit.config.verl"):
        build(f"{A}actor.optim.lr=1e-6", f"{A}rollout.gpu_memory_utilization=0.6", "trainer.n_gpus_per_node=8")
    lines = [record.getMessage() for record in caplog.records]
    assert "verl key actor_rollout_ref.actor.optim.lr -> optim.lr" in lines
    assert ("verl key actor_rollout_ref.rollout.gpu_memory_utilization -> rollout.sglang.mem_fraction_static, "
            "rollout.vllm.gpu_memory_utilization") in lines
    assert any(line.startswith("verl key trainer.n_gpus_per_node=8: rlkit runs on the processes its launcher "
                               "starts: torchrun --nnodes=1 --nproc_per_node=8") for line in lines)
    assert len(lines) == 3


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([f"{A}actor.strategy=megatron"], "rlkit has no training engine for verl's 'megatron'; choose one of fsdp2"),
        ([f"{A}rollout.name=trtllm"], "rlkit has no rollout engine for verl's 'trtllm'"),
        ([f"{A}actor.ulysses_sequence_parallel_size=2"], "rlkit has no sequence parallelism"),
        ([f"{A}rollout.multi_turn.enable=True"], "and rollout.max_turns instead (docs/environments.md)"),
        (["reward_model.enable=True"], "rlkit has no reward-model worker"),
        (["reward_model.reward_manager=dapo"], "set algorithm.overlong_penalty"),
        (["trainer.logger=[console,mlflow]"], "mlflow is not one of them"),
        (["trainer.resume_mode=resume_path"], "needs trainer.resume_from_path"),
        ([f"{A}actor.ppo_micro_batch_size=64"], "give the per-GPU size"),
        ([f"{A}rollout.some_new_option=3"], "actor_rollout_ref.rollout.some_new_option=3: rlkit has no equivalent"),
        (["trainer.default_local_dir=checkpoints/${trainer.project_name}"], "OmegaConf interpolation"),
    ],
)
def test_a_verl_key_rlkit_cannot_honour_is_an_error_saying_what_to_do(overrides, expected):
    with pytest.raises(ConfigError, match="verl settings rlkit cannot honour") as error:
        build(*overrides)
    assert expected in str(error.value)


def test_every_key_rlkit_cannot_honour_is_listed_at_once():
    with pytest.raises(ConfigError) as error:
        build(f"{A}actor.strategy=megatron", "reward_model.enable=True", f"{A}actor.optim.lr=1e-6")
    message = str(error.value)
    assert f"{A}actor.strategy='megatron'" in message and "reward_model.enable=True" in message
    assert "optim.lr" not in message


def test_epochs_and_steps_together_are_an_error_in_verl_keys_too():
    with pytest.raises(ConfigError, match="trainer.total_steps=7 and trainer.total_epochs=3 are both set"):
        build("trainer.total_epochs=3", "trainer.total_training_steps=7")


def test_a_yaml_in_verl_layout_is_translated(tmp_path):
    config = tmp_path / "verl.yaml"
    config.write_text(
        "data:\n  train_files: /data/train.parquet\n  val_files: null\n  max_response_length: 32\n"
        "actor_rollout_ref:\n"
        "  model:\n    path: /models/qwen\n    external_lib: null\n"
        "  actor:\n    optim:\n      _target_: verl.workers.config.FSDPOptimizerConfig\n      lr: 2.0e-6\n"
        "    fsdp_config:\n      param_offload: true\n"
        "  rollout:\n    name: vllm\n    'n': 4\n    val_kwargs:\n      temperature: 0\n"
        "trainer:\n  logger: [console]\n  total_epochs: 2\n"
    )
    cfg = build(config_file=config)
    assert cfg.data.train_files == ["/data/train.parquet"] and cfg.data.val_files == []
    assert cfg.rollout.max_new_tokens == 32 and cfg.model.path == "/models/qwen" and cfg.optim.lr == 2e-6
    assert cfg.rollout.name == "vllm" and cfg.rollout.n == 4 and cfg.rollout.val_temperature == 0
    assert cfg.engine.options.cpu_offload is True and cfg.trainer.loggers == ["console"]
    assert cfg.trainer.total_epochs == 2 and cfg.trainer.total_steps is None


def test_precedence_is_file_then_flags_then_overrides_whatever_the_layout(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("actor_rollout_ref:\n  actor:\n    optim:\n      lr: 1.0e-5\n")
    assert build("optim.lr=2e-5", config_file=config).optim.lr == 2e-5
    config.write_text("optim:\n  lr: 1.0e-5\n")
    assert build(f"{A}actor.optim.lr=3e-5", config_file=config).optim.lr == 3e-5
    assert build(f"{A}rollout.name=hf", flags={"rollout.name": "vllm"}).rollout.name == "hf"


def test_a_file_setting_one_key_both_ways_is_an_error(tmp_path):
    config = tmp_path / "mixed.yaml"
    config.write_text("optim:\n  lr: 1.0e-5\nactor_rollout_ref:\n  actor:\n    optim:\n      lr: 2.0e-5\n")
    with pytest.raises(ConfigError, match="sets optim.lr=1e-05 and, through a verl key, optim.lr=2e-05; keep one"):
        build(config_file=config)


def test_a_selected_engine_reads_the_translated_offloads():
    cfg = build(f"{A}actor.fsdp_config.optimizer_offload=True", flags={"engine.name": "deepspeed"})
    assert cfg.engine.name == "deepspeed" and cfg.engine.options.offload_optimizer is True


def test_from_verl_prints_a_recipe_that_trains_the_same_run(tmp_path):
    verl_args = ["data.train_files=/data/train.parquet", "data.max_response_length=64",
                 f"{A}actor.optim.lr=1e-6", f"{A}rollout.name=vllm", f"{A}rollout.gpu_memory_utilization=0.6",
                 "algorithm.norm_adv_by_std_in_grpo=False", "trainer.total_epochs=2"]
    result = CliRunner().invoke(cli, ["config", "from-verl", *verl_args])
    assert result.exit_code == 0, result.output
    printed = result.stdout if hasattr(result, "stdout") else result.output
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(printed)
    assert "actor_rollout_ref" not in yaml.safe_load(printed)
    assert build_config(RunConfig, recipe) == build(*verl_args)


def test_from_verl_fails_like_train_on_what_rlkit_cannot_honour():
    result = CliRunner().invoke(cli, ["config", "from-verl", f"{A}actor.strategy=megatron"])
    assert result.exit_code == 2 and "choose one of fsdp2" in result.output


def test_docs_verl_md_lists_every_verl_key_rlkit_reads():
    from helpers import REPO
    from rlkit.config.verl.rules import RULES
    from rlkit.config.verl.translate import backend_keys

    doc = (REPO / "docs" / "verl.md").read_text()
    missing = []
    for key in [*RULES, *backend_keys()]:
        short = key.replace("actor_rollout_ref.", "A.")
        parent, _, leaf = short.rpartition(".")
        # a row may list several keys of one parent: `A.actor.optim.lr`, `weight_decay`, ...
        if f"`{short}`" not in doc and not (f"`{leaf}`" in doc and parent in doc):
            missing.append(key)
    assert not missing, f"docs/verl.md does not mention: {missing}"


def test_a_path_rlkit_shares_with_verl_keeps_rlkits_meaning_for_rlkits_values():
    from rlkit.config.sections import is_valid_key
    from rlkit.config.verl.rules import RULES
    from rlkit.config.verl.translation import Context

    defaults = RunConfig().model_dump(mode="json", by_alias=True)
    shared = [key for key in RULES if is_valid_key(RunConfig, key.split("."))]
    assert {"trainer.save_freq", "trainer.test_freq", "trainer.device", "algorithm.adv_estimator"} <= set(shared)
    for key in shared:
        value = Context(defaults).get(key)
        assert RULES[key](value, Context({})) is None, key  # untouched: the key is rlkit's own
