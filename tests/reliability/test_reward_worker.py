"""A reward that hangs cannot pin the run: reward functions run in a worker process that a timeout kills.

The hang here is a regular expression that backtracks for ever: it never releases the GIL, so a timeout in a
thread of the trainer's own process could not even take control back. reward.timeout_s has a default.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlkit.config.schema import RewardConfig
from rlkit.rewards.base import RewardSample

# The first call anywhere hangs (and records the process it hangs in); every other call scores 1.
HANGS_ONCE = '''
import os, re
from pathlib import Path

MARKER = Path(os.environ["HANG_MARKER"])


def reward(data_source, solution_str, ground_truth, extra_info):
    if not MARKER.exists():
        MARKER.write_text(str(os.getpid()))
        re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking: 2**64 steps, all holding the GIL
    return 1.0
'''

FUNCTIONS = '''
import os, time


def double(data_source, solution_str, ground_truth, extra_info, factor=2):
    return {"score": factor * float(solution_str), "acc": 1.0}


def fails(data_source, solution_str, ground_truth, extra_info):
    raise KeyError("no such answer")


def sleeps(data_source, solution_str, ground_truth, extra_info):
    if "PID_FILE" in os.environ:
        open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
    time.sleep(60)


def dies(data_source, solution_str, ground_truth, extra_info):
    os._exit(3)


def pid(data_source, solution_str, ground_truth, extra_info):
    return float(os.getpid())
'''


def sample(response: str = "1.5") -> RewardSample:
    return RewardSample(0, "src", "prompt", response, "gt")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_reward_timeout_has_a_default():
    assert RewardConfig().timeout_s == 60.0


def test_the_worker_scores_reports_errors_and_is_killed_on_a_timeout(tmp_path):
    from rlkit.rewards.worker import RemoteRewardError, RewardTimeout, RewardWorker

    plugin = tmp_path / "functions.py"
    plugin.write_text(FUNCTIONS)
    worker = RewardWorker()
    try:
        assert worker.call(f"{plugin}:double", {"factor": 3}, sample(), 5.0) == {"score": 4.5, "acc": 1.0}
        with pytest.raises(RemoteRewardError) as raised:
            worker.call(f"{plugin}:fails", {}, sample(), 5.0)
        assert (raised.value.type_name, str(raised.value)) == ("KeyError", "'no such answer'")

        first = int(worker.call(f"{plugin}:pid", {}, sample(), 5.0))
        assert first != os.getpid()
        start = time.monotonic()
        with pytest.raises(RewardTimeout, match=r"took longer than reward.timeout_s=0.5 s \(its worker process was"):
            worker.call(f"{plugin}:sleeps", {}, sample(), 0.5)
        assert time.monotonic() - start < 30
        assert not alive(first)
        second = int(worker.call(f"{plugin}:pid", {}, sample(), 5.0))  # a fresh worker takes over
        assert second != first

        with pytest.raises(RuntimeError, match=r"the reward worker process died \(exit code 3\)"):
            worker.call(f"{plugin}:dies", {}, sample(), 5.0)
        assert worker.call(f"{plugin}:double", {}, sample(), 5.0)["score"] == 3.0
    finally:
        worker.close()


TRAINER_KILLED_DURING_A_CALL = """
import sys
from rlkit.rewards.base import RewardSample
from rlkit.rewards.worker import RewardWorker

RewardWorker().call(sys.argv[1], {}, RewardSample(0, "src", "p", "1", "gt"), None)
"""


def test_the_worker_dies_with_a_trainer_killed_during_a_call(tmp_path):
    plugin, pid_file = tmp_path / "functions.py", tmp_path / "worker_pid"
    plugin.write_text(FUNCTIONS)
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER_KILLED_DURING_A_CALL, f"{plugin}:sleeps"],
                               env={**os.environ, "PID_FILE": str(pid_file)})
    deadline = time.monotonic() + 120
    while not pid_file.exists():
        assert trainer.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    trainer.kill()
    trainer.wait()
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


def test_a_hung_reward_cannot_pin_the_run(small_run, tmp_path):
    plugin = tmp_path / "hangs_once.py"
    plugin.write_text(HANGS_ONCE)
    marker, out = tmp_path / "hung_pid", tmp_path / "run"
    args = small_run(out, "trainer.total_steps=1", "trainer.val_before_train=false", "trainer.test_freq=0",
                     "data.val_files=[]", f"reward.name={plugin}:reward", "reward.timeout_s=2", "reward.on_error=zero")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HANG_MARKER": str(marker)}
    run = subprocess.Popen([sys.executable, "-m", "rlkit", "train", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, stderr = run.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
        pytest.fail("the hung reward pinned the run")
    assert run.returncode == 0, stderr[-3000:]
    assert f"reward '{plugin}:reward' failed on sample 0 (data_source 'letters'): RewardTimeout: took longer than " \
           "reward.timeout_s=2 s (its worker process was killed)" in stderr
    hung = int(marker.read_text())
    assert hung != run.pid and not alive(hung)  # it hung in a worker process, which is gone
    step = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert step["reward/failures"] == 1.0 and step["reward/mean"] == pytest.approx(31 / 32)
