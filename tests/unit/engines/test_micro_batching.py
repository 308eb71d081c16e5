"""Padding removal and token-budget micro-batches (rlkit/engines/micro_batches.py); packing: test_packing.py.

The pure functions are checked on hand-made masks; then, on the tiny model, FSDP2 and DeepSpeed ZeRO-3 with
the switches on must give what fixed micro-batches give (log-probs, entropy, values at the response tokens;
loss, grad norm and updated weights), at world size 1 and, for FSDP2, at world size 2, where the two ranks
need different numbers of micro-batches on their own. Last, a small `rlkit train` run with both switches.
"""

import logging

import pytest
import torch
from micro_batching_cases import MICRO_BATCH, SWITCHES, assert_same, make_uneven_batch, measure_world1

from rlkit.batch import Batch
from rlkit.engines import micro_batches
from rlkit.distributed import DistInfo
from rlkit.engines.micro_batches import (
    MicroBatching,
    balanced_runs,
    fixed_runs,
    greedy_runs,
    in_batch_order,
    longest_first,
    pad_response,
    padded_size,
    plan,
    sequence_extents,
    trim,
)


# -- pure functions ----------------------------------------------------------------------------------------
def hand_batch() -> Batch:
    """P = 4, T = 5. Row 2's last response token is attended but out of the loss: it still counts."""
    attention_mask = torch.tensor([
        [0, 0, 1, 1,  1, 1, 1, 0, 0],  # prompt 2, response 3
        [0, 1, 1, 1,  1, 0, 0, 0, 0],  # prompt 3, response 1
        [0, 0, 0, 1,  1, 1, 1, 1, 0],  # prompt 1, response 4 (the 4th attended, not in the loss)
    ])
    response_mask = torch.tensor([
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0],
    ], dtype=torch.float)
    input_ids = torch.arange(27).reshape(3, 9)
    return Batch({"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0), "response_mask": response_mask})


def test_extents_and_trim_by_hand():
    batch = hand_batch()
    prompt, response = sequence_extents(batch["attention_mask"], batch["response_mask"])
    assert prompt.tolist() == [2, 3, 1] and response.tolist() == [3, 1, 4]
    # keep max prompt 3 and max response 4: columns 4 - 3 = 1 .. 4 + 4 = 8 of the 9; T' = 4
    inputs, kept_response = trim(batch)
    assert kept_response == 4
    for key, value in inputs.items():
        assert torch.equal(value, batch[key][:, 1:8]), key
    assert padded_size(prompt.tolist(), response.tolist(), [0, 1, 2]) == 3 * (3 + 4)
    assert padded_size(prompt.tolist(), response.tolist(), [1]) == 1 * (3 + 1)


def test_trim_keeps_a_column_of_each_side():
    """A micro-batch whose rows have no prompt or no response tokens still scores from position P' - 1."""
    batch = hand_batch().select([1])
    batch["attention_mask"] = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 0]])
    batch["response_mask"] = torch.zeros(1, 5)
    inputs, kept_response = trim(batch)
    assert kept_response == 1 and inputs["input_ids"].tolist() == [[12, 13]]  # columns 3 and 4


def test_pad_response_pads_zeros_and_keeps_gradients():
    values = torch.ones(2, 3, requires_grad=True)
    padded = pad_response(values, 5)
    assert padded.tolist() == [[1, 1, 1, 0, 0]] * 2
    padded.sum().backward()
    assert values.grad.tolist() == [[1, 1, 1]] * 2
    assert pad_response(values, 3) is values


def test_fixed_runs_are_batch_split():
    assert fixed_runs(5, 2) == [[0, 1], [2, 3], [4]]
    batch = hand_batch()
    runs = plan(batch, 2, MicroBatching(remove_padding=True))  # no budget: the fixed cut, unsorted
    assert runs == [[0, 1], [2]]


def test_greedy_runs_by_hand():
    prompt, response = [2, 3, 1, 1], [3, 1, 4, 1]
    order = longest_first(prompt, response)
    assert order == [0, 2, 1, 3]  # totals 5, 5, 4, 2: ties keep the batch's order
    # budget 12: [0] is 1 x (2 + 3) = 5; + row 2: 2 x (2 + 4) = 12; + row 1: 3 x (3 + 4) = 21 > 12
    # [1] is 1 x 4; + row 3: 2 x (3 + 1) = 8
    assert greedy_runs(order, prompt, response, 12) == [[0, 2], [1, 3]]
    # budget 4: row 0 (5) and row 2 (5) are over it and run alone; rows 1 (4) and 3 (2) cannot share (2 x 4 = 8)
    assert greedy_runs(order, prompt, response, 4) == [[0], [2], [1], [3]]


def test_balanced_runs_give_the_count_with_the_smallest_largest_size():
    prompt, response = [2, 3, 1, 1], [3, 1, 4, 1]
    order = longest_first(prompt, response)
    # 2 runs: [0, 2] (12) and [1, 3] (8); the only other cuts, [0] + [2, 1, 3] (21) and [0, 2, 1] + [3] (21),
    # are worse
    assert balanced_runs(order, prompt, response, 2) == [[0, 2], [1, 3]]
    # 3 runs: [0] (5), [2] (5), [1, 3] (8); 4 runs: one row each
    assert balanced_runs(order, prompt, response, 3) == [[0], [2], [1, 3]]
    assert balanced_runs(order, prompt, response, 4) == [[0], [2], [1], [3]]
    # 1 run: everything, 4 x (3 + 4) = 28
    assert balanced_runs(order, prompt, response, 1) == [order]


@pytest.mark.parametrize("budget", [8, 16, 30, 64, 1000])
def test_budget_respected_and_every_row_once(budget):
    batch = make_uneven_batch(vocab_size=100)
    prompt, response = (e.tolist() for e in sequence_extents(batch["attention_mask"], batch["response_mask"]))
    runs = plan(batch, MICRO_BATCH, MicroBatching(remove_padding=True, max_tokens=budget))
    assert sorted(i for run in runs for i in run) == list(range(len(batch)))
    for run in runs:
        assert len(run) == 1 or padded_size(prompt, response, run) <= budget
    assert len(runs) == len(greedy_runs(longest_first(prompt, response), prompt, response, budget))


def test_ranks_agree_on_the_largest_count(monkeypatch):
    """Two simulated ranks, the first needing 3 micro-batches, the second 1 (hand count in
    scripts/micro_batching_cases.py): both run 3."""
    batch = make_uneven_batch(vocab_size=100)
    shards = [batch.shard(rank, 2) for rank in range(2)]
    batching = MicroBatching(remove_padding=True, max_tokens=40)
    monkeypatch.setattr(micro_batches, "all_reduce_max", lambda local: local)  # alone: each its own count
    assert [len(plan(shard, MICRO_BATCH, batching)) for shard in shards] == [3, 1]
    monkeypatch.setattr(micro_batches, "all_reduce_max", lambda local: 3)  # the max over the two
    runs = [plan(shard, MICRO_BATCH, batching) for shard in shards]
    assert [len(r) for r in runs] == [3, 3]
    for shard, shard_runs in zip(shards, runs):
        prompt, response = (e.tolist() for e in sequence_extents(shard["attention_mask"], shard["response_mask"]))
        assert all(padded_size(prompt, response, run) <= 40 for run in shard_runs)
    monkeypatch.setattr(micro_batches, "all_reduce_max", lambda local: 5)
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch"):
        plan(shards[1], MICRO_BATCH, batching)


def test_outputs_come_back_in_batch_order():
    batch = make_uneven_batch(vocab_size=100)
    runs = plan(batch, MICRO_BATCH, MicroBatching(remove_padding=True, max_tokens=40))
    assert [i for run in runs for i in run] != list(range(len(batch)))  # sorted: the check is not vacuous
    pieces = [torch.tensor(run, dtype=torch.float)[:, None].expand(-1, 3) for run in runs]
    assert in_batch_order(pieces, runs)[:, 0].tolist() == list(range(len(batch)))


def test_a_sequence_over_the_budget_runs_alone_and_warns_once(caplog):
    batch = make_uneven_batch(vocab_size=100)
    batching = MicroBatching(remove_padding=True, max_tokens=20)  # row 0 is 6 + 16 = 22
    with caplog.at_level(logging.WARNING, logger="rlkit.engines.micro_batches"):
        runs = plan(batch, MICRO_BATCH, batching)
        plan(batch, MICRO_BATCH, batching)
    assert [0] in runs
    assert sum("runs alone" in record.message for record in caplog.records) == 1


# -- engines at world size 1 -----------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
@pytest.mark.parametrize("switches", [
    SWITCHES, {"remove_padding": True}, {"max_tokens_per_micro_batch": SWITCHES["max_tokens_per_micro_batch"] * 3},
], ids=["both", "remove_padding", "budget"])
def test_switches_match_fixed_micro_batches(engine, switches, tiny_model_dir, fixed):
    off = fixed(engine)
    on = measure_world1(engine, tiny_model_dir, **switches)
    assert_same(on, off)
    assert off["actor_sizes"] == [[2, 2, 2, 2]]
    if "max_tokens_per_micro_batch" in switches:
        assert on["actor_sizes"] != off["actor_sizes"] and on["critic_sizes"] == on["actor_sizes"]
        if switches.get("remove_padding"):
            # rows by length 0 (6 + 16), 1 (3 + 14), 2 (5 + 9), 3 (2 + 12), 5, 7, 4, 6 (at most 4 + 3): within
            # 40 tokens greedy needs 4 runs, [0] [1 2] [3 5] [7 4 6]; the smallest cap that 4 runs meet is 34:
            # [0] 22, [1] 17, [2 3] 2 x (5 + 12) = 34, [5 7 4 6] 4 x (4 + 3) = 28
            assert on["actor_sizes"] == [[1, 1, 2, 4]]
        else:
            # no trimming: every row is 22 wide, so 120 tokens hold 5 rows: 8 rows in 2 runs of 4
            assert on["actor_sizes"] == [[4, 4]]


# -- FSDP2 at world size 2 ---------------------------------------------------------------------------------
def test_world2_switches_match_world1_fixed_micro_batches(world2, fixed):
    trimmed = world2["remove_padding"]  # the run with SWITCHES; scripts/micro_batching_cases.py
    # alone, rank 0 (the long rows) needs 3 micro-batches within 40 tokens and rank 1 one; both ran 3
    assert trimmed["local_runs"] == [3, 1]
    assert [len(sizes) for sizes in trimmed["actor_sizes"]] == [3, 3]
    assert [len(sizes) for sizes in trimmed["critic_sizes"]] == [3, 3]
    off = fixed("fsdp2")
    assert_same({**trimmed, "response_mask": off["response_mask"]}, off)


# -- rlkit train -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_switch", ["engine.remove_padding=true", "engine.pack_sequences=true"])
def test_rl_train_runs_with_a_token_budget_and(padding_switch, tiny_model, tmp_path):
    import math

    from helpers import small_run

    from rlkit.config import RunConfig, build_config
    from rlkit.trainer.rl import RLTrainer

    overrides = small_run(tiny_model, tmp_path, "algorithm.adv_estimator=gae", padding_switch,
                          "engine.max_tokens_per_micro_batch=64", "rollout.ignore_eos=false",
                          "trainer.val_before_train=false", "trainer.test_freq=0")
    last = RLTrainer(build_config(RunConfig, None, overrides), DistInfo()).fit()
    for key in ("pg_loss", "vf_loss", "grad_norm", "critic/grad_norm", "entropy"):
        assert math.isfinite(last[key]), key
