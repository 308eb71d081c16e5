"""The CLI's config commands, listing, and how user errors end (exit code 2, one line, no traceback)."""

import subprocess
import sys

import yaml
from click.testing import CliRunner

from rlkit.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_config_show_prints_resolved_yaml():
    result = run("config", "show", "trainer.total_steps=3", "rollout.n=4")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["trainer"]["total_steps"] == 3 and shown["rollout"]["n"] == 4
    assert shown["engine"]["name"] == "fsdp2"


def test_validate_reports_each_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("trainer:\n  total_steps: 2\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  total_step: 2\n")
    result = run("validate", str(good), str(bad))
    assert result.exit_code == 2
    assert f"OK    {good}" in result.output
    assert "did you mean 'trainer.total_steps'" in result.output


def test_list_shows_components_and_sources():
    result = run("list")
    assert result.exit_code == 0, result.output
    for name in ("fsdp2", "deepspeed", "hf", "vllm", "sglang", "grpo", "gae", "ppo", "gsm8k", "math"):
        assert name in result.output
    assert "built-in" in result.output


def test_user_error_exits_2_without_traceback(tmp_path):
    command = [sys.executable, "-m", "rlkit", "train", "trainer.total_step=3"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'trainer.total_steps'" in result.stderr
    assert "Traceback" not in result.stderr
    debug = subprocess.run([sys.executable, "-m", "rlkit", "--debug", *command[3:]], capture_output=True,
                           text=True, cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_missing_config_file_is_a_user_error(tmp_path):
    result = run("train", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "nope.yaml does not exist" in result.output


def test_deepspeed_launcher_local_rank_is_accepted(tmp_path):
    # The deepspeed launcher puts --local_rank=N before the subcommand; LOCAL_RANK carries the same value.
    env = {key: value for key, value in __import__("os").environ.items() if key != "LOCAL_RANK"}
    probe = "import os, sys; from rlkit.cli.main import main; sys.argv = sys.argv[1:]; main()"
    result = subprocess.run([sys.executable, "-c", probe, "rlkit", "--local_rank=1", "config", "show",
                             "trainer.total_steps=1"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "total_steps: 1" in result.stdout


def test_unknown_option_names_itself():
    result = run("train", "--engin", "fsdp2")
    assert result.exit_code == 2
    assert "unknown option '--engin'" in result.output
