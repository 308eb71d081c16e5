"""`rlkit plot`: one run's curves, or several runs overlaid in one figure."""

import json

from click.testing import CliRunner

from rlkit.cli.main import cli


def write_run(directory, rewards):
    directory.mkdir()
    lines = [json.dumps({"step": step, "reward/mean": reward}) for step, reward in enumerate(rewards, start=1)]
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_several_runs_share_one_figure(tmp_path):
    fsdp2, deepspeed = write_run(tmp_path / "fsdp2", [0.1, 0.2, 0.3]), write_run(tmp_path / "deepspeed", [0.1, 0.25])
    runner = CliRunner()
    result = runner.invoke(cli, ["plot", str(fsdp2), str(deepspeed), "--out", str(tmp_path / "both.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "both.png").read_bytes()[:4] == b"\x89PNG"
    refused = runner.invoke(cli, ["plot", str(fsdp2), str(deepspeed)])
    assert refused.exit_code == 2 and "--out" in refused.output
    assert runner.invoke(cli, ["plot", str(fsdp2)]).exit_code == 0 and (fsdp2 / "curves.png").is_file()
