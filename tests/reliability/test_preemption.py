"""Preemption: on SIGTERM or SIGUSR1 a run finishes its step, saves a checkpoint and exits with code 75, and the
same command resumes it exactly; under torchrun a signal to one rank stops every rank after the same step
(and the run holds its output directory's lock meanwhile). Ctrl-C stops at once, saying where and how to
resume, without a traceback.

The signals land deterministically: the run's policy loss is a plugin that wraps the built-in one and, only
in the run the test means to stop, sends the signal to its own process at its Nth call, half-way through a
step (or waits there for the test). SFT has no plugin: a patched train_step signals instead.
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

LOCK_FILE = ".rlkit.lock"  # rlkit.trainer.lock

RUN_DEPENDENT = ("time/", "throughput/", "memory/")

PLUGIN = '''
import os, signal, time
from pathlib import Path

from rlkit.algorithms.policy_losses import ppo_loss

CALLS = [0]


def policy_loss(*args, **kwargs):
    CALLS[0] += 1
    env, rank = os.environ, os.environ.get("RANK", "0")
    if env.get("SIGNAL_AT_CALL") == str(CALLS[0]) and env.get("SIGNAL_RANK", rank) == rank:
        os.kill(os.getpid(), getattr(signal, env["SIGNAL"]))
    if env.get("PAUSE_AT_CALL") == str(CALLS[0]) and env.get("PAUSE_RANK", rank) == rank:
        Path(env["PAUSE_MARKER"]).write_text(str(os.getpid()))
        go = env.get("GO_MARKER")
        while go is None or not Path(go).exists():  # without GO_MARKER: until the test signals
            time.sleep(0.05)
    return ppo_loss(*args, **kwargs)
'''

SFT_SIGNALLING_AT_STEP_2 = '''
import os, signal, sys
from rlkit.trainer import sft

train_step = sft.SFTTrainer.train_step


def signalling(self, indices):
    if self.step == 2 and os.environ.get("SIGNAL"):
        os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    return train_step(self, indices)


sft.SFTTrainer.train_step = signalling
from rlkit.cli.main import cli
cli(sys.argv[1:], prog_name="rlkit")
'''


def comparable(output_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(RUN_DEPENDENT)}
            for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(output_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(output_dir / f"checkpoints/step_{step:08d}/actor/model.safetensors")


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def published(output_dir: Path) -> list[str]:
    return sorted(p.name for p in (output_dir / "checkpoints").iterdir())


def rlkit(args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "rlkit", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended (code {process.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_sigterm_saves_the_step_and_the_resumed_run_equals_an_uninterrupted_one(small_run, train, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    common = ["trainer.total_steps=3", "trainer.test_freq=0", f"algorithm.policy_loss={plugin}:policy_loss"]
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    train(small_run(reference, *common))

    # Four loss calls a step: the 6th is in the middle of step 2's update.
    run = rlkit(["train", *small_run(stopped, *common)], env={"SIGNAL": "SIGTERM", "SIGNAL_AT_CALL": "6"})
    assert run.returncode == 75, run.stderr[-3000:]
    assert "received SIGTERM: finishing step 2, then saving a checkpoint and stopping" in run.stderr
    assert (f"stopped after step 2 on SIGTERM: saved {stopped / 'checkpoints/step_00000002'}; run the same command "
            "again to resume from it (exit code 75)") in run.stderr
    assert "Traceback" not in run.stderr
    assert published(stopped) == ["step_00000002"]  # save_freq=0: saved because of the signal
    assert [record["step"] for record in comparable(stopped)] == [0, 1, 2]
    assert json.loads((stopped / LOCK_FILE).read_text())["state"] == "stopped"

    resumed = rlkit(["train", *small_run(stopped, *common)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "at step 2" in resumed.stderr
    assert comparable(stopped) == comparable(reference)
    assert same_weights(final_weights(stopped, 3), final_weights(reference, 3))


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(small_run, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    out, marker = tmp_path / "run", tmp_path / "paused"
    args = small_run(out, "trainer.total_steps=3", "trainer.save_freq=1", f"algorithm.policy_loss={plugin}:policy_loss")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PAUSE_AT_CALL": "6", "PAUSE_MARKER": str(marker)}
    run = subprocess.Popen([sys.executable, "-m", "rlkit", "train", *args], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    wait_for(marker, run)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert (f"interrupted (Ctrl-C) during step 2; the same command resumes from "
            f"{out / 'checkpoints/step_00000001'}") in stderr
    assert published(out) == ["step_00000001"]
    assert json.loads((out / LOCK_FILE).read_text())["state"] == "stopped"


def test_sft_stops_on_sigterm_and_resumes_exactly(tmp_path, tiny_model):
    def sft(output_dir: Path, env=None):
        args = [f"model.path={tiny_model}", f"trainer.output_dir={output_dir}", "data.train_batch_size=8",
                "data.micro_batch_size_per_device=4", "data.max_val_samples=4", "trainer.total_steps=4",
                "trainer.test_freq=0", "trainer.loggers=[jsonl]", "trainer.progress_bar=false"]
        return subprocess.run([sys.executable, "-c", SFT_SIGNALLING_AT_STEP_2, "sft", *args], capture_output=True,
                              text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    assert sft(reference).returncode == 0
    run = sft(stopped, env={"SIGNAL": "SIGUSR1"})
    assert run.returncode == 75, run.stderr[-3000:]
    assert f"stopped after step 2 on SIGUSR1: saved {stopped / 'checkpoints/step_00000002'}" in run.stderr
    assert published(stopped) == ["step_00000002"]
    resumed = sft(stopped)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(stopped) == comparable(reference)
    assert same_weights(final_weights(stopped, 4), final_weights(reference, 4))


def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_after_the_same_step(small_run, tmp_path):
    """Two ranks, one output directory: while the run holds it, a second run is refused; SIGUSR1 to rank 1 alone
    in the middle of step 2 stops both ranks after step 2, with one checkpoint; the same command resumes."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    out, paused, go = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    args = small_run(out, "trainer.total_steps=3", "trainer.test_freq=0", f"algorithm.policy_loss={plugin}:policy_loss")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlkit",
                "train", *args]
    # Per rank two loss calls a step: rank 0 waits in step 1 for the lock check; rank 1 signals in step 2.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PAUSE_AT_CALL": "1", "PAUSE_RANK": "0", "PAUSE_MARKER": str(paused),
           "GO_MARKER": str(go), "SIGNAL": "SIGUSR1", "SIGNAL_AT_CALL": "3", "SIGNAL_RANK": "1"}
    log = (tmp_path / "torchrun.log").open("w")
    run = subprocess.Popen(torchrun, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(paused, run)
        second = rlkit(["train", *args])
        assert second.returncode == 2, second.stderr[-3000:]
        rank0_pid = paused.read_text()
        assert f"is in use by another run: rlkit train (pid {rank0_pid} on " in second.stderr
        go.write_text("go")
        assert run.wait(timeout=600) != 0
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
    output = (tmp_path / "torchrun.log").read_text()
    assert "received SIGUSR1: finishing step 2" in output, output[-3000:]
    assert (f"stopped after step 2 on a preemption signal on another rank: saved {out / 'checkpoints/step_00000002'}"
            in output), output[-3000:]
    # torchrun stops the other rank once one exits, and names the first exit code as the root cause.
    root_cause = output[output.index("Root Cause"):]
    assert "exitcode  : 75" in root_cause, output[-3000:]
    assert published(out) == ["step_00000002"]
    assert [record["step"] for record in comparable(out)] == [0, 1, 2]

    resumed = subprocess.run(torchrun, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert [record["step"] for record in comparable(out)] == [0, 1, 2, 3]
    assert published(out) == ["step_00000002", "step_00000003"]
