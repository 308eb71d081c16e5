"""`rlkit plot` with several runs over each other, against steps or training seconds."""

import json

from click.testing import CliRunner

from rlkit.cli.main import cli
from rlkit.plotting import _positions


def write_run(directory, step_seconds, rewards):
    directory.mkdir()
    lines = [{"step": step, "time/step": seconds, "reward/mean": reward}
             for step, (seconds, reward) in enumerate(zip(step_seconds, rewards), start=1)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_several_runs_share_each_panel(tmp_path, monkeypatch):
    write_run(tmp_path / "colocated", [2.0, 2.0, 2.0], [0.1, 0.2, 0.3])
    write_run(tmp_path / "split_k1", [1.0, 1.0, 1.0], [0.1, 0.15, 0.3])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["plot", "colocated", "split_k1", "--x", "time", "--keys", "reward/mean",
                                      "--out", "curves.png"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_time_axis_adds_up_the_steps():
    records = [{"step": 0}, {"step": 1, "time/step": 2.0}, {"step": 2, "time/step": 1.5}]
    assert _positions(records, "time") == [0.0, 2.0, 3.5]
    assert _positions(records, "step") == [0, 1, 2]
