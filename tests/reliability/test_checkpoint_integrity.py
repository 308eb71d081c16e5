"""Checkpoints: a manifest written last, damage named by file, fallback to the previous good checkpoint, old
checkpoints deleted only after the new one is complete."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from rlkit.errors import CheckpointError
from rlkit.trainer.checkpoint import MANIFEST, CheckpointManager, verify

RUN_DEPENDENT = ("time/", "throughput/", "memory/")  # metrics that differ between processes

MODEL = "actor/model.safetensors"


def writer(step: int, seen: list | None = None, fail: bool = False):
    """A `write(tmp_dir)` callback that writes two small files, like an engine and the trainer do."""

    def write(directory):
        if seen is not None:
            seen.append(sorted(p.name for p in directory.parent.iterdir()))
        (directory / "actor").mkdir()
        (directory / MODEL).write_bytes(bytes(range(256)) * 4 + bytes([step]))
        if fail:
            raise RuntimeError("killed in the middle of the save")
        (directory / "trainer_state.json").write_text(json.dumps({"step": step}))

    return write


def test_save_publishes_complete_checkpoints_and_prunes_only_afterwards(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, is_main=True)
    seen: list = []
    for step in (1, 2, 3):
        manager.save(step, writer(step, seen))
    # While step 3 was written, steps 1 and 2 were both still there, beside the temporary directory.
    assert seen[-1] == [".tmp_step_00000003", "step_00000001", "step_00000002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002", "step_00000003"]
    manifest = json.loads((tmp_path / "step_00000003" / MANIFEST).read_text())
    assert manifest["step"] == 3 and sorted(manifest["files"]) == [MODEL, "trainer_state.json"]
    assert manifest["files"][MODEL]["size"] == 1025 and len(manifest["files"][MODEL]["sha256"]) == 64

    # A save that dies half-way leaves the older checkpoints whole and is never taken for a checkpoint.
    with pytest.raises(RuntimeError):
        manager.save(4, writer(4, fail=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp_step_00000004", "step_00000002", "step_00000003"]
    assert manager.latest() == tmp_path / "step_00000003"
    manager.save(4, writer(4))  # the next save clears the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]


def truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda d: truncate(d / MODEL), f"{MODEL} has 100 bytes, the manifest says 1025 (truncated)"),
        (lambda d: flip_a_byte(d / MODEL), f"{MODEL} does not match its sha256 (corrupted)"),
        (lambda d: (d / MODEL).unlink(), f"is missing {MODEL}"),
        (lambda d: (d / MANIFEST).unlink(), f"it has no {MANIFEST}"),
        (lambda d: (d / MANIFEST).write_text("{\"step\": 3, \"fil"), f"{MANIFEST} is corrupted"),
    ],
    ids=["truncated", "corrupted", "missing-file", "missing-manifest", "garbled-manifest"],
)
def test_damage_is_named_and_latest_falls_back(tmp_path, caplog, damage, expected):
    manager = CheckpointManager(tmp_path, keep_last=3, is_main=True)
    for step in (1, 2, 3):
        manager.save(step, writer(step))
    damage(tmp_path / "step_00000003")
    with pytest.raises(CheckpointError, match="step_00000003") as error:
        verify(tmp_path / "step_00000003")
    assert expected in str(error.value)
    with caplog.at_level(logging.WARNING):
        assert manager.latest() == tmp_path / "step_00000002"
    assert "skipping step_00000003" in caplog.text and expected in caplog.text


def test_latest_refuses_to_start_over_when_every_checkpoint_is_broken(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, is_main=True)
    assert manager.latest() is None  # no checkpoints: a fresh run
    for step in (1, 2):
        manager.save(step, writer(step))
    truncate(tmp_path / "step_00000001" / MODEL)
    flip_a_byte(tmp_path / "step_00000002" / MODEL)
    with pytest.raises(CheckpointError, match=f"no checkpoint in {tmp_path} is complete: .*step_00000002: {MODEL}"):
        manager.latest()


def test_resume_auto_falls_back_past_a_corrupted_checkpoint(run_copy, finished_run, small_run, train, caplog,
                                                            dir_snapshot):
    flip_a_byte(run_copy / "checkpoints/step_00000002" / MODEL)
    with caplog.at_level(logging.INFO):
        train(small_run(run_copy, "trainer.save_freq=1", "trainer.keep_last=2"))
    assert "does not match its sha256" in caplog.text and "resumed from" in caplog.text
    assert "step_00000001 at step 1" in caplog.text
    # Step 2 was trained again from step 1's checkpoint: the same weights and metrics as the first time.
    redone, original = (load_file(d / "checkpoints/step_00000002" / MODEL) for d in (run_copy, finished_run))
    assert all(torch.equal(redone[name], original[name]) for name in original)

    def comparable(directory):
        return [{k: v for k, v in json.loads(line).items() if not k.startswith(RUN_DEPENDENT)}
                for line in (directory / "metrics.jsonl").read_text().splitlines()]

    assert comparable(run_copy) == comparable(finished_run)


@pytest.mark.parametrize(
    "damage, named",
    [(lambda d: truncate(d / MODEL), f"{MODEL} has 100 bytes"), (lambda d: (d / MANIFEST).unlink(), MANIFEST)],
    ids=["truncated", "missing-manifest"],
)
def test_resume_path_to_a_damaged_checkpoint_exits_2_naming_the_file(run_copy, small_run, invoke, dir_snapshot,
                                                                      damage, named):
    checkpoint = run_copy / "checkpoints/step_00000002"
    damage(checkpoint)
    before = dir_snapshot(run_copy)
    result = invoke("train", *small_run(run_copy, f"trainer.resume={checkpoint}", "trainer.total_steps=3"))
    assert result.exit_code == 2, result.output
    assert named in result.output and f"trainer.resume={checkpoint}" in result.output
    assert "Traceback" not in result.output
    assert dir_snapshot(run_copy) == before


def test_resume_path_to_a_run_directory_uses_its_newest_good_checkpoint(run_copy, small_run, train, tmp_path, caplog):
    flip_a_byte(run_copy / "checkpoints/step_00000002" / MODEL)
    with caplog.at_level(logging.INFO):
        train(small_run(tmp_path / "branch", f"trainer.resume={run_copy}"))
    assert f"resumed from {run_copy / 'checkpoints/step_00000001'} at step 1" in caplog.text
    assert sorted(p.name for p in (tmp_path / "branch/checkpoints").iterdir()) == ["step_00000002"]
