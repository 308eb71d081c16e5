"""Resuming with a changed config, and the smaller input mistakes of issue 21.

A resume lists what changed since the checkpoint and refuses what the checkpoint no longer fits (the training
data and its order, the world size) unless trainer.force_resume; trainer.total_steps below the checkpoint's
step is an error; `~` in paths is the home folder; a verl row whose prompt is text is read as a prompt; a
config given to the wrong command names the right one.
"""

import json
import logging
from pathlib import Path

import pytest

from helpers import REPO
from rlkit.trainer.checkpoint import write_manifest


def test_a_changed_config_is_listed_when_resuming(small_run, train, run_copy, caplog):
    with caplog.at_level(logging.WARNING):
        train(small_run(run_copy, "trainer.total_steps=3", "optim.lr=0.001", "algorithm.adv_estimator=rloo"))
    warning = next(r.getMessage() for r in caplog.records if "with a changed config" in r.getMessage())
    assert "algorithm.adv_estimator grpo -> rloo" in warning and "optim.lr 0.005 -> 0.001" in warning
    assert "trainer.total_steps 2 -> 3" in warning and "trainer.output_dir" not in warning


def test_a_change_the_checkpoint_does_not_fit_is_refused_unless_forced(small_run, invoke, run_copy, dir_snapshot):
    before = dir_snapshot(run_copy)
    changed = small_run(run_copy, "trainer.total_steps=3", "data.train_batch_size=4", "algorithm.mini_batch_size=4",
                        "trainer.seed=7")
    result = invoke("train", *changed)
    assert result.exit_code == 2, result.output
    assert "step_00000002 cannot be continued exactly with this config: data.train_batch_size 8 -> 4 (the sampler " \
           "position); trainer.seed 1 -> 7 (the data order and sampling seeds)" in result.output
    assert "trainer.force_resume=true" in result.output
    assert dir_snapshot(run_copy) == before
    forced = invoke("train", *changed, "trainer.force_resume=true")
    assert forced.exit_code == 0, forced.output
    assert (run_copy / "checkpoints/step_00000003").is_dir()


def test_another_world_size_is_refused_unless_forced(small_run, invoke, run_copy):
    checkpoint = run_copy / "checkpoints/step_00000002"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["world_size"] == 1
    state["world_size"] = 2  # as if two ranks had written it
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    write_manifest(checkpoint, 2)
    result = invoke("train", *small_run(run_copy, "trainer.total_steps=3"))
    assert result.exit_code == 2, result.output
    assert "world size 2 -> 1 (which ranks' shares make up each mini-batch)" in result.output
    assert invoke("train", *small_run(run_copy, "trainer.total_steps=3", "trainer.force_resume=true")).exit_code == 0


def test_total_steps_below_the_checkpoint_is_an_error(small_run, invoke, run_copy, dir_snapshot):
    before = dir_snapshot(run_copy)
    result = invoke("train", *small_run(run_copy, "trainer.total_steps=1"))
    assert result.exit_code == 2, result.output
    assert "trainer.total_steps=1 is below step 2 of" in result.output and "raise trainer.total_steps" in result.output
    assert dir_snapshot(run_copy) == before


def test_a_tilde_in_paths_is_the_home_folder(small_run, train, tmp_path, monkeypatch, tiny_model):
    """Without expansion the run went to a folder named '~' and the error blamed model.path."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    (home / "data.jsonl").write_text('{"prompt": "repeat the letter a", "answer": "a", "data_source": "letters"}\n' * 8)
    train(small_run(Path("~/runs/first"), "model.path=builtin:tiny", "trainer.total_steps=1",
                    "data.train_files=[~/data.jsonl]", "data.val_files=[]"))
    assert (home / "runs/first/checkpoints/step_00000001").is_dir()
    assert (home / "runs/first/builtin_tiny").is_dir()
    assert list(cwd.iterdir()) == []


def test_a_verl_row_with_a_text_prompt_is_read_as_a_prompt(tiny_model, tmp_path):
    from rlkit.config.schema import DataConfig
    from rlkit.data.prompts import load_prompt_dataset
    from rlkit.models.loading import load_tokenizer

    rows = [{"data_source": "letters", "prompt": "repeat the letter a", "reward_model": {"ground_truth": "a"}},
            {"data_source": "letters", "prompt": [{"role": "user", "content": "repeat the letter b"}],
             "reward_model": {"ground_truth": "b"}}]
    path = tmp_path / "verl.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenizer = load_tokenizer(tiny_model)
    data = load_prompt_dataset([str(path)], DataConfig(), tokenizer)
    assert [record.ground_truth for record in data] == ["a", "b"]
    # Text is rendered as the user's message, the same as the messages form of it.
    text_form = data[0].prompt_text
    assert text_form == data[1].prompt_text.replace("letter b", "letter a")


@pytest.mark.parametrize("command, config, right", [
    ("train", "configs/sft_gsm8k_full.yaml", "an SFT config, not an RL one: run it with `rlkit sft"),
    ("sft", "configs/grpo_gsm8k.yaml", "an RL config, not an SFT one: run it with `rlkit train"),
])
def test_a_config_given_to_the_wrong_command_names_the_right_one(invoke, command, config, right):
    result = invoke(command, REPO / config)
    assert result.exit_code == 2, result.output
    assert right in result.output and "Traceback" not in result.output
