"""kill -9 a run mid-rollout, mid-update, during a checkpoint write and mid-step; each restart with
trainer.resume=auto continues from the last complete checkpoint, and the final weights and metrics equal an
uninterrupted run's.

The kills land deterministically without any hook in rlkit: the run's reward and policy loss are user
plugins (file.py:attr) that wrap the built-in ones and, only in the run the test means to kill, stop at their
Nth call after writing a marker file; the kill during a save waits for the `.tmp_step_*` directory.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

RUN_DEPENDENT = ("time/", "throughput/", "memory/")  # metrics that differ between processes

PLUGIN = '''
import os, time
from pathlib import Path

from rlkit.algorithms.policy_losses import ppo_loss
from rlkit.rewards.letters import compute_score

CALLS = {"reward": 0, "loss": 0}


def _count(kind):
    CALLS[kind] += 1
    if os.environ.get("PAUSE_KIND") == kind and CALLS[kind] == int(os.environ["PAUSE_AT_CALL"]):
        Path(os.environ["PAUSE_MARKER"]).write_text(kind)
        time.sleep(600)  # the test kills the process here


def reward(data_source, solution_str, ground_truth, extra_info):
    _count("reward")
    return compute_score(data_source, solution_str, ground_truth, extra_info)


def policy_loss(*args, **kwargs):
    _count("loss")
    return ppo_loss(*args, **kwargs)
'''

TOTAL_STEPS = 4
# Per step: 8 prompts x 4 samples = 32 reward calls; 2 mini-batches x 2 micro-batches = 4 loss calls.
# Validation (5 prompts, 1 sample each) runs before training and at steps 2 and 4.


def wait_for(condition, process, timeout=300.0, interval=0.002):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended (code {process.returncode}) before the kill point"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(interval)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def comparable(output_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(RUN_DEPENDENT)}
            for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_kill_at_several_points_then_resume_equals_an_uninterrupted_run(small_run, train, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    common = [f"trainer.total_steps={TOTAL_STEPS}", "trainer.save_freq=1", "trainer.keep_last=2",
              "trainer.test_freq=2", f"reward.name={plugin}:reward", f"algorithm.policy_loss={plugin}:policy_loss"]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    train(small_run(reference, *common))

    command = [sys.executable, "-m", "rlkit", "train", *small_run(crashed, *common)]
    checkpoints = crashed / "checkpoints"
    log = (tmp_path / "runs.log").open("w")

    def start(pause_kind=None, pause_at=0):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PAUSE_MARKER": str(tmp_path / "paused")}
        if pause_kind:
            env.update(PAUSE_KIND=pause_kind, PAUSE_AT_CALL=str(pause_at))
        (tmp_path / "paused").unlink(missing_ok=True)
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def published():
        return sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else []

    # 1. Mid-rollout: scoring step 2's responses (5 validation + 32 step-1 calls came first).
    run = start("reward", 5 + 32 + 10)
    wait_for((tmp_path / "paused").exists, run)
    kill(run)
    assert published() == ["step_00000001"]

    # 2. Mid-update: step 2's second mini-batch (this run starts at step 2), after its first optimizer step
    # changed the weights in memory.
    run = start("loss", 3)
    wait_for((tmp_path / "paused").exists, run)
    kill(run)
    assert published() == ["step_00000001"]

    # 3. During the checkpoint write of step 3.
    run = start()
    wait_for((checkpoints / ".tmp_step_00000003").exists, run)
    kill(run)
    assert ".tmp_step_00000003" in published() and "step_00000003" not in published()

    # 4. Mid-step: just after step 3's checkpoint is published, while step 4 runs.
    run = start()
    wait_for((checkpoints / "step_00000003" / "manifest.json").exists, run)
    time.sleep(0.05)
    kill(run)
    assert "step_00000004" not in published()

    # 5. The last restart runs to the end; every interrupted save was cleaned up.
    run = start()
    assert run.wait(timeout=600) == 0, (tmp_path / "runs.log").read_text()[-3000:]
    log.close()
    assert published() == ["step_00000003", "step_00000004"]

    assert comparable(crashed) == comparable(reference)
    assert [record["step"] for record in comparable(crashed)] == [0, 1, 2, 3, 4]
    final = [load_file(d / "checkpoints/step_00000004/actor/model.safetensors") for d in (reference, crashed)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][name], final[1][name]) for name in final[0])
    resumed_from = [line for line in (tmp_path / "runs.log").read_text().splitlines() if "resumed from" in line]
    assert [line.rsplit(" ", 1)[-1] for line in resumed_from] == ["1", "1", "2", "3"]
    # Each restart took over the lock its killed predecessor left.
    took_over = "which is no longer running (killed?); this run takes the lock over"
    assert (tmp_path / "runs.log").read_text().count(took_over) == 4
