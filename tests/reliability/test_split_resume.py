"""kill -9 a split job (one trainer, one rollout rank, under torchrun) while the rollout rank is ahead of
training, and resume it with trainer.resume=auto.

- staleness 0: the resumed run's metrics and weights equal a colocated run's that was never interrupted.
- staleness 2: the rollout rank had generated up to two batches past the trainer's checkpoint when it died;
  those are generated again after the resume, from the checkpoint's weights. No prompt is lost or seen twice: the
  trainer checks every batch's prompts against its own seeded order (a mismatch stops the run), every step is
  logged once, and the last checkpoint's place in the prompt order is an uninterrupted run's.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from helpers import REPO

RUN_DEPENDENT = ("time/", "throughput/", "memory/", "staleness/")  # split runs also report staleness

TOTAL_STEPS = 4


def wait_for(condition, process, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended (code {process.returncode}) before the kill point"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.01)


def comparable(output_dir: Path, keep: tuple[str, ...] = ()) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k.startswith(keep) or not k.startswith(RUN_DEPENDENT)}
            for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def split_command(small_run, output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlkit",
            "train", *small_run(output_dir, f"trainer.total_steps={TOTAL_STEPS}", "trainer.save_freq=2",
                                "trainer.test_freq=2", "placement.mode=split", *extra)]


def start(command: list[str], log) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its ranks in sessions of their own), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_after_checkpoint(command: list[str], output_dir: Path, step: int, log) -> None:
    """kill -9 torchrun and both ranks at once, as a lost machine would, just after checkpoint `step`."""
    run = start(command, log)
    wait_for((output_dir / f"checkpoints/step_{step:08d}/manifest.json").exists, run)
    for pid in [*descendants(run.pid), run.pid]:
        os.kill(pid, signal.SIGKILL)
    run.wait()


def test_kill_and_resume_a_split_job(small_run, train, tmp_path):
    log = (tmp_path / "runs.log").open("w")
    # staleness 0: exact, against a colocated run in this process.
    reference, exact = tmp_path / "colocated", tmp_path / "k0"
    train(small_run(reference, f"trainer.total_steps={TOTAL_STEPS}", "trainer.save_freq=2", "trainer.test_freq=2"))
    command = split_command(small_run, exact)
    kill_after_checkpoint(command, exact, 2, log)
    assert not (exact / "checkpoints/step_00000004").exists()
    assert start(command, log).wait(timeout=600) == 0, (tmp_path / "runs.log").read_text()[-3000:]
    assert comparable(exact) == comparable(reference)
    final = [load_file(d / "checkpoints/step_00000004/actor/model.safetensors") for d in (reference, exact)]
    assert all(torch.equal(final[0][name], final[1][name]) for name in final[0])

    # staleness 2: consistent.
    ahead = tmp_path / "k2"
    command = split_command(small_run, ahead, "placement.staleness=2")
    kill_after_checkpoint(command, ahead, 2, log)
    assert start(command, log).wait(timeout=600) == 0, (tmp_path / "runs.log").read_text()[-3000:]
    log.close()
    records = comparable(ahead, keep=("staleness/",))
    assert [record["step"] for record in records] == [0, 1, 2, 3, 4]
    # Resumed at step 2 from version 2: batches 3 and 4 were regenerated with it (an uninterrupted run would have
    # generated them with versions 0 and 1).
    assert [record["staleness/max"] for record in records[1:]] == [0, 1, 0, 1]
    state = json.loads((ahead / "checkpoints/step_00000004/trainer_state.json").read_text())
    assert state["sampler"] == {"epoch": 0, "position": TOTAL_STEPS}  # four batches of the first epoch consumed
    resumed = [line for line in (tmp_path / "runs.log").read_text().splitlines() if "resumed from" in line]
    assert [line.rsplit(" ", 1)[-1] for line in resumed] == ["2", "2"]



SIGNAL_BOTH_RANKS = '''
import os, signal
from pathlib import Path

from rlkit.algorithms.policy_losses import ppo_loss

CALLS = [0]


def policy_loss(*args, **kwargs):
    CALLS[0] += 1
    if os.environ.get("SIGNAL_AT_CALL") == str(CALLS[0]):  # as a cluster signals every process of the job
        parent = os.getppid()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    os.kill(int(stat.parent.name), signal.SIGTERM)
            except (OSError, ProcessLookupError):
                pass
    return ppo_loss(*args, **kwargs)
'''


def test_a_preempted_split_job_saves_and_resumes_without_losing_a_prompt(small_run, tmp_path):
    # SIGTERM to both ranks in the middle of step 2's update (four loss calls a step), the rollout rank a batch
    # ahead: the trainer finishes step 2, saves, tells the rollout rank to stop and exits with 75; the rollout rank,
    # which ignores the signal, exits cleanly (torchrun names no other failure). The same command resumes.
    plugin = tmp_path / "plugin.py"
    plugin.write_text(SIGNAL_BOTH_RANKS)
    out, log_path = tmp_path / "k1", tmp_path / "runs.log"
    command = split_command(small_run, out, "placement.staleness=1", "trainer.save_freq=0",
                            f"algorithm.policy_loss={plugin}:policy_loss")
    with log_path.open("w") as log:
        stopped = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                                                 "SIGNAL_AT_CALL": "6"}, stdout=log, stderr=subprocess.STDOUT)
        assert stopped.wait(timeout=600) != 0
    text = log_path.read_text()
    assert "stopped after step 2 on SIGTERM" in text, text[-3000:]
    assert re.search(r"exitcode\s*:\s*75", text) and "<NO_OTHER_FAILURES>" in text, text[-3000:]
    assert sorted(path.name for path in (out / "checkpoints").glob("step_*")) == ["step_00000002"]
    with log_path.open("a") as log:
        assert start(command, log).wait(timeout=600) == 0, log_path.read_text()[-3000:]
    records = comparable(out)
    assert [record["step"] for record in records] == [0, 1, 2, 3, 4]  # every step once
    state = json.loads((out / "checkpoints/step_00000004/trainer_state.json").read_text())
    assert state["sampler"] == {"epoch": 0, "position": TOTAL_STEPS}  # no batch of prompts lost or seen twice
