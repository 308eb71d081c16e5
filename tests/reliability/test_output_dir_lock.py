"""One run at a time in an output directory, and a fresh start never overwrites another run's metrics.

A second run on a locked directory stops with one line naming the holder; a lock left by a killed process on
this host is taken over with a warning, one written on another host is not; a metrics.jsonl that no
interrupted attempt left (a finished run without checkpoints, another program's file) is never replaced.
Two runs under torchrun: tests/reliability/test_preemption.py.
"""

import json
import logging
import socket
import subprocess
import sys

import pytest

from rlkit.trainer.lock import LOCK_FILE, OutputDirLock


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(directory, **fields):
    directory.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": a_dead_pid(), "command": "rlkit train",
              "started": "2026-01-01T00:00:00+00:00", "state": "running", **fields}
    (directory / LOCK_FILE).write_text(json.dumps(holder) + "\n")


def test_a_second_run_on_a_locked_directory_exits_2_naming_the_holder(small_run, invoke, run_copy, dir_snapshot):
    held = OutputDirLock(run_copy, "rlkit train")  # another open file: the OS lock conflicts as between processes
    held.acquire()
    try:
        before = dir_snapshot(run_copy)
        result = invoke("train", *small_run(run_copy, "trainer.total_steps=3"))
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in result.output
        assert f"trainer.output_dir={run_copy} is in use by another run: rlkit train (pid " in errors[0]
        assert f"on {socket.gethostname()}" in errors[0] and "choose another trainer.output_dir" in errors[0]
        assert dir_snapshot(run_copy) == before
    finally:
        held.release("finished")


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_warning(small_run, train, run_copy, caplog):
    write_lock(run_copy)
    with caplog.at_level(logging.WARNING):
        train(small_run(run_copy, "trainer.total_steps=3"))
    assert "which is no longer running (killed?); this run takes the lock over" in caplog.text
    holder = json.loads((run_copy / LOCK_FILE).read_text())
    assert holder["state"] == "finished" and holder["pid"] != -1


def test_a_running_lock_from_another_host_is_not_taken_over(small_run, invoke, run_copy, dir_snapshot):
    write_lock(run_copy, host="another-node-17", pid=4242)
    before = dir_snapshot(run_copy)
    result = invoke("train", *small_run(run_copy, "trainer.total_steps=3"))
    assert result.exit_code == 2, result.output
    assert "pid 4242 on another-node-17" in result.output
    assert f"If it is gone, delete {run_copy / LOCK_FILE} and start again" in result.output
    assert dir_snapshot(run_copy) == before


def test_a_failed_setup_gives_the_lock_back(small_run, invoke, tmp_path):
    """The lock of a setup that fails goes with it: the next run in the same directory starts."""
    out = tmp_path / "run"
    failed = invoke("train", *small_run(out, f"data.train_files=[{tmp_path / 'nope.jsonl'}]"))
    assert failed.exit_code == 2 and not out.exists()
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine\n")
    failed = invoke("train", *small_run(shared, f"data.train_files=[{tmp_path / 'nope.jsonl'}]"))
    assert failed.exit_code == 2
    assert sorted(p.name for p in shared.iterdir()) == ["notes.txt"]


def test_a_fresh_start_never_replaces_metrics_of_a_finished_run(small_run, invoke, train, tmp_path):
    """A run that finished without a checkpoint (nothing to resume from): the same command again is refused
    instead of starting over and overwriting its metrics."""
    out = tmp_path / "run"
    train(small_run(out, "trainer.save_at_end=false"))
    metrics = (out / "metrics.jsonl").read_bytes()
    result = invoke("train", *small_run(out, "trainer.save_at_end=false"))
    assert result.exit_code == 2, result.output
    assert "holds the metrics.jsonl of a run that finished without saving a checkpoint" in result.output
    assert (out / "metrics.jsonl").read_bytes() == metrics


def test_a_fresh_start_never_replaces_a_metrics_file_it_has_no_record_of(small_run, invoke, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 7, "loss": 0.5}\n')  # another tool's, or an older rlkit's
    result = invoke("train", *small_run(out))
    assert result.exit_code == 2, result.output
    assert "holds the metrics.jsonl of a run rlkit has no record of" in result.output
    assert (out / "metrics.jsonl").read_text() == '{"step": 7, "loss": 0.5}\n'
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("state", ["running", "failed", "stopped"])
def test_an_attempt_interrupted_before_its_first_checkpoint_starts_over(small_run, train, tmp_path, caplog, state):
    out = tmp_path / "run"
    write_lock(out, state=state)
    (out / "metrics.jsonl").write_text('{"step": 0, "val/reward/mean": 0.0}\n{"step": 1, "reward/me')
    with caplog.at_level(logging.WARNING):
        train(small_run(out))
    assert "before its first checkpoint; this run starts over and writes them again" in caplog.text
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
