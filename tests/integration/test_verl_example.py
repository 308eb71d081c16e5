"""A verl user's whole GRPO command runs as `rlkit train`.

The command is verl's GSM8K GRPO example (examples/grpo_trainer/run_qwen2-7b.sh in verl's repository) with
`python3 -m verl.trainer.main_ppo` replaced by `rlkit train`, its data under a temporary $HOME. Like verl's
script, which passes `$@` last, extra overrides then point it at the tiny model, a CPU rollout, a few
prompts and two steps. Every verl key in it is translated, none is refused.
"""

from __future__ import annotations

import json
import logging

from click.testing import CliRunner

from rlkit.cli.main import cli
from rlkit.data.gsm8k import convert_gsm8k


def verl_gsm8k_grpo_example(home: str) -> list[str]:
    """verl's example command line, key for key, after `python3 -m verl.trainer.main_ppo`."""
    return [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={home}/data/gsm8k/train.parquet",
        f"data.val_files={home}/data/gsm8k/test.parquet",
        "data.train_batch_size=1024",
        "data.max_prompt_length=512",
        "data.max_response_length=1024",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        "actor_rollout_ref.model.path=Qwen/Qwen2-7B-Instruct",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.actor.ppo_mini_batch_size=256",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=40",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        "actor_rollout_ref.actor.fsdp_config.param_offload=False",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=40",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.6",
        "actor_rollout_ref.rollout.n=5",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=40",
        "actor_rollout_ref.ref.fsdp_config.param_offload=True",
        "algorithm.use_kl_in_reward=False",
        "trainer.critic_warmup=0",
        'trainer.logger=["console","wandb"]',
        "trainer.project_name=verl_grpo_example_gsm8k",
        "trainer.experiment_name=qwen2_7b_function_rm",
        "trainer.n_gpus_per_node=8",
        "trainer.nnodes=1",
        "trainer.save_freq=20",
        "trainer.test_freq=5",
        "trainer.total_epochs=15",
    ]


def write_gsm8k(home, num_train: int = 8, num_test: int = 2) -> None:
    """A few GSM8K-shaped rows, converted as `rlkit data gsm8k` converts the real ones."""
    raw = home / "raw"
    raw.mkdir()
    for split, count in (("train", num_train), ("test", num_test)):
        rows = [{"question": f"What is {i} plus {i + 1}?", "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"}
                for i in range(count)]
        (raw / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    convert_gsm8k(raw, home / "data" / "gsm8k")


def test_verls_gsm8k_grpo_example_trains_on_the_cpu(tiny_model, tmp_path, caplog):
    write_gsm8k(tmp_path)
    output_dir = tmp_path / "checkpoints"
    tiny = [  # what `$@` appends: the tiny model, the CPU rollout, 8 prompts in 2 steps of 4, 16-token responses
        f"actor_rollout_ref.model.path={tiny_model}",
        "actor_rollout_ref.rollout.name=hf",
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "data.max_response_length=16",
        "trainer.total_epochs=1",
        "trainer.logger=[console,file]",
        f"trainer.default_local_dir={output_dir}",
    ]
    with caplog.at_level(logging.INFO, logger="rlkit.config.verl"):
        result = CliRunner().invoke(cli, ["train", *verl_gsm8k_grpo_example(str(tmp_path)), *tiny,
                                          "trainer.progress_bar=false"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if record["step"] > 0]
    assert [record["step"] for record in steps] == [1, 2]  # total_epochs=1: 8 prompts / 4 a step
    assert all("kl" in record and record["response_length/max"] <= 16 for record in steps)
    assert "val/reward/mean" in records[0] and "val/reward/mean" in steps[-1]  # before training and at the end
    assert (output_dir / "checkpoints" / "step_00000002" / "manifest.json").is_file()
    translated = [record.getMessage() for record in caplog.records if record.getMessage().startswith("verl key")]
    assert "verl key actor_rollout_ref.actor.optim.lr -> optim.lr" in translated
    assert "verl key data.max_response_length -> rollout.max_new_tokens" in translated
