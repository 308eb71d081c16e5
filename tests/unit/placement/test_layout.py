"""Which rank does what: roles, engine groups, shards, who takes weights and who reports, and the settings a
world cannot be laid out with."""

import pytest

from rlkit.config import RunConfig, build_config
from rlkit.errors import ConfigError
from rlkit.placement.layout import Layout, layout_for, part_rows, shard_positions


def test_colocated_one_engine_per_rank_is_the_layout_before_placements():
    layout = Layout(world_size=4)
    assert not layout.split and list(layout.trainer_ranks) == [0, 1, 2, 3] and list(layout.rollout_ranks) == []
    assert layout.engine_groups == [(0,), (1,), (2,), (3,)] and layout.num_shards == 4
    assert [layout.training_part(rank) for rank in range(4)] == [(0, 0, 1), (1, 0, 1), (2, 0, 1), (3, 0, 1)]
    assert all(layout.runs_engine(rank) for rank in range(4))


def test_colocated_tensor_parallel_groups_share_a_shard_and_train_its_parts():
    # TP 2 on 4 ranks: engines {0,1} and {2,3}; each engine generates one shard, each rank trains half of it.
    layout = Layout(world_size=4, tensor_parallel_size=2, tensor_parallel="every_rank")
    assert layout.engine_groups == [(0, 1), (2, 3)] and layout.num_shards == 2
    assert [layout.training_part(rank) for rank in range(4)] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
    assert all(layout.runs_engine(rank) for rank in range(4))  # vLLM: every rank runs its part, pushes weights
    assert [layout.leader_of(rank) for rank in range(4)] == [0, 0, 2, 2]
    sglang = Layout(world_size=4, tensor_parallel_size=2, tensor_parallel="first_rank")
    assert [sglang.runs_engine(rank) for rank in range(4)] == [True, False, True, False]  # the first rank drives


def test_split_trainers_first_and_engines_serving_whole_trainers():
    # 4 trainers, 4 rollout ranks as 2 engines of TP 2: engine 0 (ranks 4, 5) serves trainers 0-1.
    layout = Layout(world_size=8, num_rollout_ranks=4, tensor_parallel_size=2, tensor_parallel="every_rank")
    assert list(layout.trainer_ranks) == [0, 1, 2, 3] and list(layout.rollout_ranks) == [4, 5, 6, 7]
    assert layout.engine_groups == [(4, 5), (6, 7)] and layout.num_shards == 4
    assert [list(layout.shards_of_engine(e)) for e in range(2)] == [[0, 1], [2, 3]]
    assert [layout.sender_of_shard(s) for s in range(4)] == [4, 4, 6, 6]
    assert layout.weight_receivers == [4, 5, 6, 7]
    assert not layout.runs_engine(0) and layout.training_part(3) == (3, 0, 1)
    # SGLang: only each engine's first rank takes weights; the others have nothing to do.
    sglang = Layout(world_size=8, num_rollout_ranks=4, tensor_parallel_size=2, tensor_parallel="first_rank")
    assert sglang.weight_receivers == [4, 6] and not sglang.runs_engine(5)
    # One rollout rank serving two trainers (world 3).
    three = Layout(world_size=3, num_rollout_ranks=1)
    assert list(three.shards_of_engine(0)) == [0, 1] and three.weight_receivers == [2]


def test_shards_and_parts_are_contiguous_equal_shares():
    assert [list(shard_positions(8, 2, s)) for s in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # 2 prompts x 4 responses (prompt-major) split over 2 parts: whole prompts each.
    assert [list(part_rows(8, p, 2)) for p in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def config(*overrides):
    return build_config(RunConfig, None, list(overrides))


def test_layout_for_reads_the_placement_and_the_engine_block():
    layout = layout_for(config("placement.mode=split", "placement.rollout_ranks=2", "rollout.name=vllm",
                               "rollout.vllm.tensor_parallel_size=2"), 4)
    assert (layout.num_trainers, layout.engine_groups, layout.tensor_parallel) == (2, [(2, 3)], "every_rank")
    layout = layout_for(config("rollout.name=sglang", "rollout.sglang.tensor_parallel_size=2"), 4)
    assert (layout.split, layout.num_shards, layout.tensor_parallel) == (False, 2, "first_rank")
    assert layout_for(config(), 1) == Layout(world_size=1)


@pytest.mark.parametrize("overrides, world, message", [
    (["rollout.name=vllm", "rollout.vllm.tensor_parallel_size=2"], 3, "does not divide the 3 ranks"),
    (["placement.mode=split"], 1, "needs at least two processes"),
    (["placement.mode=split", "placement.rollout_ranks=2"], 2, "leaves no training rank"),
    (["placement.mode=split", "placement.rollout_ranks=3", "rollout.name=vllm", "rollout.vllm.tensor_parallel_size=2"],
     5, "not a multiple of rollout.vllm.tensor_parallel_size=2"),
    (["placement.mode=split", "placement.rollout_ranks=2"], 3, "2 rollout engines for 1 training ranks"),
    (["placement.mode=split", "placement.rollout_ranks=2"], 5, "3 training ranks must be a multiple of the 2"),
    (["placement.mode=split", "data.train_batch_size=6", "algorithm.mini_batch_size=6"], 5,
     "data.train_batch_size=6 does not split over the 4 training ranks"),
])
def test_a_world_that_cannot_be_laid_out_names_the_setting(overrides, world, message):
    with pytest.raises(ConfigError, match=message):
        layout_for(config(*overrides), world)


def test_staleness_and_reweighting_need_what_they_rely_on():
    with pytest.raises(ConfigError, match="placement.staleness=1 needs placement.mode=split"):
        config("placement.staleness=1")
    with pytest.raises(ConfigError, match="set algorithm.rollout_is_cap"):
        config("placement.mode=split", "placement.on_stale=reweight")
    assert config("placement.mode=split", "placement.on_stale=reweight", "algorithm.rollout_is_cap=2").placement
    with pytest.raises(ConfigError, match="set algorithm.reuse_rollout_logprobs=false"):
        config("placement.mode=split", "placement.staleness=1", "algorithm.reuse_rollout_logprobs=true",
               "algorithm.mini_batch_size=16")
