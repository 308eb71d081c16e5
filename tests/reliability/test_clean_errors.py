"""Failures of the machine, not of the config, still end with one line and exit code 2, and lose nothing:
trainer.device=cuda without a GPU; a full disk during a checkpoint save (simulated by patching the writer);
a metrics.jsonl cut off by a crash mid-write (repaired on resume); the resume-time rewrite of metrics.jsonl
(atomic: a failure during it leaves the old file)."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlkit.trainer.checkpoint import verify

SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(small_run, invoke, tmp_path):
    error = one_error_line(invoke("train", *small_run(tmp_path / "run", "trainer.device=cuda")))
    assert "trainer.device=cuda, but torch finds no CUDA GPU here" in error and "trainer.device=auto or cpu" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["OSError", "safetensors"])
def test_a_full_disk_during_a_save_says_so_and_keeps_the_earlier_checkpoint(small_run, invoke, tmp_path,
                                                                            monkeypatch, how):
    from rlkit.engines import checkpoint_files

    real_save_file, calls = checkpoint_files.save_file, []

    def save_file(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint's weights: the disk is full
            Path(path).write_bytes(b"\0" * 100)  # part of the file got written
            if how == "OSError":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            raise RuntimeError(SAFETENSORS_FULL)  # safetensors' own error type carries no errno
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_files, "save_file", save_file)
    out = tmp_path / "run"
    error = one_error_line(invoke("train", *small_run(out, "trainer.save_freq=1")))
    assert error.startswith("error: the disk is full: saving the checkpoint of step 2 failed writing ")
    # Where: the file when the error names it (OSError), else the checkpoint being written.
    assert (".tmp_step_00000002/actor/model.safetensors" if how == "OSError" else ".tmp_step_00000002") in error
    assert f"the earlier checkpoint {out / 'checkpoints/step_00000001'} is intact" in error
    assert "run the same command again to resume" in error
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000001"]  # the half save is gone
    verify(out / "checkpoints/step_00000001")

    monkeypatch.setattr(checkpoint_files, "save_file", real_save_file)  # space freed: the same command resumes
    result = invoke("train", *small_run(out, "trainer.save_freq=1"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]


def test_a_cut_off_last_metrics_line_is_dropped_on_resume(small_run, train, run_copy, caplog):
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines) + '\n{"step": 3, "reward/mean": 0.2, "pg_lo')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        train(small_run(run_copy, "trainer.total_steps=3"))
    assert "ends in a cut-off line (a crash during its write); dropped it" in caplog.text
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [record["step"] for record in records] == [0, 1, 2, 3]
    assert [json.loads(line) for line in lines] == records[:3]


def test_a_damaged_line_inside_metrics_is_named(small_run, invoke, run_copy):
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    error = one_error_line(invoke("train", *small_run(run_copy, "trainer.total_steps=3")))
    assert f"{metrics} line 2 is not a metrics record" in error


REWRITE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from rlkit.cli.main import cli
cli(sys.argv[2:], prog_name="rlkit")
"""


def test_the_resume_time_rewrite_of_metrics_is_atomic(small_run, run_copy):
    """The resumed run rewrites metrics.jsonl (dropping the steps after its checkpoint); a write that fails half
    way (here: a file-size limit below the file's size) must leave the file as it was, not truncated."""
    metrics = run_copy / "metrics.jsonl"
    before = metrics.read_bytes()
    resume_from_step_1 = small_run(run_copy, "trainer.total_steps=3", "trainer.loggers=[jsonl]",
                                   f"trainer.resume={run_copy / 'checkpoints/step_00000001'}")
    kept = b"".join(line for line in before.splitlines(keepends=True) if json.loads(line)["step"] <= 1)
    limit = len(kept) // 2  # the rewrite (the lines through step 1) fails half way
    result = subprocess.run([sys.executable, "-c", REWRITE_UNDER_A_FILE_SIZE_LIMIT, str(limit), "train",
                             *resume_from_step_1], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode not in (0, -signal.SIGXFSZ), result.stderr[-2000:]
    assert "File too large" in result.stderr, result.stderr[-2000:]
    assert metrics.read_bytes() == before
