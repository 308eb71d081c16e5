"""Split placement end to end on the CPU: rollout ranks (HF rollout, gloo) and training ranks under torchrun.

One torchrun launch per world size runs many cases in turn (tests/integration/scripts/split_runs.py), since
process start-up dominates on a small machine:
- world 2 (one trainer, one rollout rank): staleness 0 gives the colocated run's metrics and weights exactly,
  with multi-turn tool conversations too, and resumes exactly; the rollout rank's weights equal the trainer's
  after the last publish; staleness 1 and 2 learn the built-in task as the synchronous run does; a failing
  reward on the rollout rank stops the trainer with its message, and a trainer that fails while the rollout
  rank generates stops it cleanly.
- world 3 (two trainers, one rollout engine serving both): staleness 0 with ReMax's greedy baselines and DAPO's
  dynamic sampling gives a two-rank colocated run's numbers exactly (the colocated run: a third launch).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO, small_run
from rlkit.config import RunConfig, build_config
from rlkit.distributed import DistInfo
from rlkit.trainer.rl import RLTrainer

SCRIPT = REPO / "tests/integration/scripts/split_runs.py"
RUN_DEPENDENT = ("time/", "throughput/", "memory/", "staleness/")  # split runs also report staleness
EXACT = ["trainer.total_steps=4", "trainer.test_freq=2", "trainer.save_freq=2"]
# A short run that learns: the built-in task's reward rises within 16 steps at this learning rate.
LEARN = ["trainer.total_steps=16", "trainer.test_freq=0", "trainer.val_before_train=false", "trainer.save_at_end=false",
         "optim.lr=2e-2", "rollout.n=8", "algorithm.mini_batch_size=8"]
SPLIT = "placement.mode=split"
# Conversations of two turns with a tool (examples/environments/letter_lookup.py): the environments step on the
# rollout rank, and every turn is a generate call with its own seed.
MULTI_TURN = [f"environment.name={REPO}/examples/environments/letter_lookup.py:LetterLookup", "reward.name=environment",
              "rollout.max_turns=2", "rollout.max_total_tokens=32"]

PLUGIN = '''
from rlkit.algorithms.policy_losses import ppo_loss
from rlkit.rewards.letters import compute_score

CALLS = {"reward": 0, "loss": 0}


def reward(data_source, solution_str, ground_truth, extra_info):
    CALLS["reward"] += 1
    if CALLS["reward"] == 40:  # step 2's responses (5 validation + 32 step-1 calls come first)
        raise ValueError("the reward service is down")
    return compute_score(data_source, solution_str, ground_truth, extra_info)


def policy_loss(*args, **kwargs):
    CALLS["loss"] += 1
    if CALLS["loss"] == 5:  # step 2's update (2 mini-batches of 2 micro-batches a step)
        raise RuntimeError("the trainer broke down")
    return ppo_loss(*args, **kwargs)
'''


def launch(world_size: int, directory: Path, tiny_model: str, cases: list[dict]) -> list[dict]:
    """Run `cases` under torchrun with `world_size` processes; each rank's {case: error or None}."""
    directory.mkdir(parents=True, exist_ok=True)
    for case in cases:
        case.setdefault("output_dir", str(directory / case["name"]))
    spec = directory / "cases.json"
    spec.write_text(json.dumps({"tiny_model": tiny_model, "cases": cases}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
               str(SCRIPT), str(spec)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, f"torchrun failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    return [json.loads((directory / f"results_rank{rank}.json").read_text()) for rank in range(world_size)]


def train(overrides: list[str]) -> dict:
    return RLTrainer(build_config(RunConfig, None, overrides), DistInfo()).fit()


def metrics(output_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(RUN_DEPENDENT)}
            for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def actor_weights(output_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(output_dir / f"checkpoints/step_{step:08d}/actor/model.safetensors")


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"weights differ: {different}"


def rewards(output_dir: Path) -> list[float]:
    return [json.loads(line)["reward/mean"] for line in (output_dir / "metrics.jsonl").read_text().splitlines()
            if "reward/mean" in json.loads(line)]


# -- world 2 ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world2(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("split-world2")
    plugin = root / "plugin.py"
    plugin.write_text(PLUGIN)
    cases = [
        {"name": "k0", "overrides": [*EXACT, SPLIT, "placement.weight_bucket_mb=0.05"],
         "rollout_weights": str(root / "k0_rollout_weights.pt")},
        {"name": "k0_part", "overrides": [*EXACT, SPLIT, "trainer.total_steps=2"], "output_dir": str(root / "resumed")},
        {"name": "k0_resumed", "overrides": [*EXACT, SPLIT], "output_dir": str(root / "resumed")},
        {"name": "k0_multi_turn", "overrides": [*EXACT, SPLIT, *MULTI_TURN]},
        {"name": "k1", "overrides": [*LEARN, SPLIT, "placement.staleness=1"]},
        {"name": "k2", "overrides": [*LEARN, SPLIT, "placement.staleness=2"]},
        {"name": "reward_fails", "overrides": [SPLIT, f"reward.name={plugin}:reward"]},
        {"name": "trainer_fails", "overrides": [SPLIT, "placement.staleness=2", "trainer.total_steps=6",
                                                f"algorithm.policy_loss={plugin}:policy_loss"]},
    ]
    results = launch(2, root, tiny_model, cases)
    # The synchronous references: one colocated rank, in this process.
    train(small_run(tiny_model, root / "colocated", *EXACT))
    train(small_run(tiny_model, root / "sync", *LEARN))
    train(small_run(tiny_model, root / "colocated_multi_turn", *EXACT, *MULTI_TURN))
    return root, results


def test_staleness_0_is_the_colocated_run_exactly(world2):
    root, results = world2
    assert results[0]["k0"] is None and results[1]["k0"] is None
    assert metrics(root / "k0") == metrics(root / "colocated")
    assert [record["step"] for record in metrics(root / "k0")] == [0, 1, 2, 3, 4]
    assert_same_weights(actor_weights(root / "k0", 4), actor_weights(root / "colocated", 4))


def test_staleness_0_with_multi_turn_conversations_is_the_colocated_run_exactly(world2):
    root, results = world2
    assert results[0]["k0_multi_turn"] is None and results[1]["k0_multi_turn"] is None
    split, colocated = metrics(root / "k0_multi_turn"), metrics(root / "colocated_multi_turn")
    assert split == colocated
    assert any(record.get("env/tool_calls/mean", 0) > 0 for record in split)  # the tool was called and answered
    assert_same_weights(actor_weights(root / "k0_multi_turn", 4), actor_weights(root / "colocated_multi_turn", 4))


def test_the_rollout_rank_holds_the_trainers_weights_after_the_last_publish(world2):
    root, _ = world2
    # Step 4 validates (test_freq=2), so version 4 went to the rollout rank in ~0.05 MB broadcasts.
    rollout = torch.load(root / "k0_rollout_weights.pt", weights_only=True)
    trained = actor_weights(root / "k0", 4)
    assert set(trained) <= set(rollout)
    assert all(torch.equal(rollout[name], trained[name]) for name in trained)


def test_staleness_0_resumes_exactly(world2):
    root, results = world2
    assert results[0]["k0_part"] is None and results[0]["k0_resumed"] is None
    assert metrics(root / "resumed") == metrics(root / "colocated")
    assert_same_weights(actor_weights(root / "resumed", 4), actor_weights(root / "colocated", 4))


@pytest.mark.parametrize("case", ["k1", "k2"])
def test_staleness_1_and_2_learn_as_the_synchronous_run_does(world2, case):
    root, results = world2
    assert results[0][case] is None and results[1][case] is None
    records = [json.loads(line) for line in (root / case / "metrics.jsonl").read_text().splitlines()]
    staleness = int(case[1])
    # Batch t is generated with version max(0, t-1-k) and trains from version t-1.
    assert [record["staleness/max"] for record in records] == [min(step - 1, staleness) for step in range(1, 17)]

    def first_and_last_quarter(values):
        return sum(values[:4]) / 4, sum(values[-4:]) / 4

    sync_first, sync_last = first_and_last_quarter(rewards(root / "sync"))
    first, last = first_and_last_quarter(rewards(root / case))
    assert sync_last > sync_first + 0.04  # the reference learns...
    assert last > first + 0.04 and last > 0.5 * sync_last, (first, last, sync_first, sync_last)  # ... and so does k


def test_a_failing_reward_on_the_rollout_rank_stops_the_trainer_with_its_message(world2):
    _, results = world2
    trainer_error, rollout_error = results[0]["reward_fails"], results[1]["reward_fails"]
    assert trainer_error.startswith("RlkitError: rollout rank 1 failed: RewardError:")
    assert "the reward service is down" in trainer_error
    assert rollout_error.startswith("RewardError:")


def test_a_trainer_that_fails_while_the_rollout_rank_generates_stops_it_cleanly(world2):
    root, results = world2
    assert results[0]["trainer_fails"].startswith("RuntimeError: the trainer broke down")
    assert results[1]["trainer_fails"] is None  # the rollout rank took the stop and closed its engine
    assert [record["step"] for record in metrics(root / "trainer_fails")] == [0, 1]


# -- world 3 ------------------------------------------------------------------------------------------
ALGORITHMS = [["algorithm.adv_estimator=remax", "trainer.total_steps=2"],
              ["algorithm.dynamic_sampling.max_generate_batches=3", "trainer.total_steps=2"]]


@pytest.fixture(scope="module")
def world3(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("split-world3")
    split = [{"name": f"split{i}", "overrides": [*EXACT, *algorithm, SPLIT],
              "rollout_weights": str(root / f"split{i}_rollout_weights.pt")} for i, algorithm in enumerate(ALGORITHMS)]
    colocated = [{"name": f"colocated{i}", "overrides": [*EXACT, *algorithm]} for i, algorithm in enumerate(ALGORITHMS)]
    return root, launch(3, root / "split", tiny_model, split), launch(2, root / "colocated", tiny_model, colocated)


@pytest.mark.parametrize("index", range(len(ALGORITHMS)))
def test_two_trainers_and_one_rollout_engine_match_a_two_rank_colocated_run(world3, index):
    root, split_results, colocated_results = world3
    assert all(result[f"split{index}"] is None for result in split_results)
    assert all(result[f"colocated{index}"] is None for result in colocated_results)
    split_dir, colocated_dir = root / "split" / f"split{index}", root / "colocated" / f"colocated{index}"
    assert metrics(split_dir) == metrics(colocated_dir)
    if "dynamic_sampling" in ALGORITHMS[index][0]:  # a refill round drew the next prompts on both sides
        assert max(record.get("dynamic_sampling/generate_rounds", 0) for record in metrics(split_dir)) > 1
    last = metrics(split_dir)[-1]["step"]
    assert_same_weights(actor_weights(split_dir, last), actor_weights(colocated_dir, last))
    rollout = torch.load(root / f"split{index}_rollout_weights.pt", weights_only=True)
    trained = actor_weights(split_dir, last)
    assert all(torch.equal(rollout[name], trained[name]) for name in trained)
    assert math.isfinite(metrics(split_dir)[-1]["pg_loss"])
