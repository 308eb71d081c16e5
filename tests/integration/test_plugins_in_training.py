"""Plugins reach a real training run: a reward from an installed distribution, an estimator from a file."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from helpers import small_run, write_reward_distribution
from rlkit.cli.main import cli

LETTERPLUG = (
    "def first_letter(data_source, solution_str, ground_truth, extra_info):\n"
    "    return {'score': float(solution_str[:1] == ground_truth), 'acc': float(solution_str[:1] == ground_truth)}\n"
)


def test_entry_point_reward_is_listed_and_trains(tiny_model, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_reward_distribution(site, "letterplug", LETTERPLUG, {"first_letter": "letterplug:first_letter"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-m", "rlkit", "list"], capture_output=True, text=True, env=env)
    assert "first_letter" in listed.stdout and "entry point (letterplug)" in listed.stdout
    output_dir = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "rlkit", "train",
                          *small_run(tiny_model, output_dir, "reward.name=first_letter")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    last = json.loads((output_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert "reward_extra/acc" in last and 0.0 <= last["reward/mean"] <= 1.0


def test_estimator_from_a_file_trains(tiny_model, tmp_path):
    estimator = tmp_path / "my_estimator.py"
    estimator.write_text(
        "import torch\n"
        "def centred(inputs, gamma, lam):\n"
        "    scores = (inputs.token_level_rewards * inputs.response_mask).sum(-1)\n"
        "    advantages = (scores - scores.mean())[:, None] * inputs.response_mask\n"
        "    return advantages, advantages\n"
    )
    result = CliRunner().invoke(cli, ["train", *small_run(tiny_model, tmp_path / "run",
                                                          f"algorithm.adv_estimator={estimator}:centred")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run/checkpoints/step_00000002/manifest.json").is_file()


def test_plot_draws_the_curves(tiny_model, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["train", *small_run(tiny_model, tmp_path)]).exit_code == 0
    result = runner.invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert runner.invoke(cli, ["plot", str(tmp_path / "missing")]).exit_code == 2
