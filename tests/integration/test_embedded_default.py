"""The embedded default: `rlkit train` with no arguments learns its built-in task on the CPU."""

import json
import os
import subprocess
import sys


def test_default_run_reward_rises(tmp_path):
    # Exactly the README's command, only with the output directory in tmp (the default is outputs/default).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "rlkit", "train", f"trainer.output_dir={tmp_path}"],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation reward" in result.stderr  # the before -> after summary line
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validations = [record["val/reward/mean"] for record in records if "val/reward/mean" in record]
    train_rewards = [record["reward/mean"] for record in records if "reward/mean" in record]
    assert records[0]["step"] == 0 and records[-1]["step"] == 100
    assert validations[-1] >= validations[0] + 0.4, validations
    first, last = sum(train_rewards[:10]) / 10, sum(train_rewards[-10:]) / 10
    assert last >= first + 0.4, (first, last)
