"""`rlkit generate` on a Hugging Face folder of the tiny model: printing, scoring, --output and user errors.
(Generating from SFT checkpoints and run directories is tested in test_sft_trainer.py.)"""

import json

import pytest
from click.testing import CliRunner

from rlkit.cli.generate import generate_command
from rlkit.cli.main import RlkitGroup


def invoke(*args):
    group = RlkitGroup()  # as `rlkit` runs it: user errors become one line and exit code 2
    group.add_command(generate_command)
    return CliRunner().invoke(group, ["generate", *map(str, args)])


def test_prompts_are_printed_and_scored(tiny_model_dir):
    result = invoke(tiny_model_dir, "--prompt", "repeat the letter a", "--prompt", "repeat the letter b",
                    "--ground-truth", "a", "--reward", "letters", "--n", 2, "--temperature", 1.0,
                    "--max-new-tokens", 6)
    assert result.exit_code == 0, result.output
    assert f"# model {tiny_model_dir}" in result.output
    assert result.output.count("=== prompt") == 2 and result.output.count("--- sample") == 4
    assert "repeat the letter b" in result.output and "(ground truth: a)" in result.output
    assert "[score " in result.output
    assert "reward letters: mean " in result.output and "over 4 completions | acc " in result.output


def test_data_file_writes_jsonl_with_scores(tiny_model_dir, tmp_path):
    out = tmp_path / "completions.jsonl"
    result = invoke(tiny_model_dir, "--data", "builtin:letters-val", "--limit", 3, "--reward", "auto",
                    "--max-new-tokens", 4, "--output", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and [row["prompt_index"] for row in rows] == [0, 1, 2]
    assert all({"response", "score", "acc", "ground_truth", "finish_reason"} <= row.keys() for row in rows)
    assert "reward auto: mean" in result.output


def test_without_reward_nothing_is_scored(tiny_model_dir):
    result = invoke(tiny_model_dir, "--prompt", "hi", "--max-new-tokens", 3)
    assert result.exit_code == 0, result.output
    assert "[score" not in result.output and "reward" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give either --prompt TEXT (one or more) or --data FILE"),
        (("--prompt", "hi", "--data", "builtin:letters"), "give either --prompt TEXT"),
        (("--prompt", "hi", "--reward", "letterz"), "unknown reward 'letterz'. Did you mean 'letters'?"),
    ],
)
def test_user_errors_exit_2(tiny_model_dir, args, message):
    result = invoke(tiny_model_dir, *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_missing_model_is_a_user_error(tmp_path):
    result = invoke(tmp_path / "nope", "--prompt", "hi")
    assert result.exit_code == 2 and "does not exist" in result.output, result.output
