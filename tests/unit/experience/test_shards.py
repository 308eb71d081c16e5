"""A step's experience shard by shard (rlkit.experience.shards) against a scripted rollout engine: the rows an
engine group's rank keeps, seeds by shard, several shards on one engine with dynamic sampling in step, a rank
that generates and keeps nothing; and a colocated rank of a tensor-parallel group."""

import pytest

from rlkit.config import RunConfig, build_config
from rlkit.distributed import DistInfo
from rlkit.experience import ColocatedExperience, SingleTurnGeneration
from rlkit.experience.shards import SeededRollout, ShardSeeds, StepBuilder, prompt_item, validation_shard
from rlkit.experience.tensor_parallel import LeaderGeneration
from rlkit.placement.layout import Layout
from rlkit.rollout.base import SamplingParams, call_seed
from rlkit.timing import PhaseTimer
from test_generation import FirstPromptTiesOnce, ScoreBySample, ScriptedRollout, dataset, weights


class SeedRecordingRollout(ScriptedRollout):
    def generate(self, prompts, params):
        self.calls.append(("seed", params.seed))
        return super().generate(prompts, params)


def config(*overrides):
    return build_config(RunConfig, None, ["data.train_batch_size=4", "algorithm.mini_batch_size=4", "rollout.n=2",
                                          "rollout.max_new_tokens=4", *overrides])


def builder(cfg, rollout, *, part=(0, 1), seeds=None, peers=None):
    peers = [] if peers is None else peers
    engine = rollout if seeds is None else SeededRollout(rollout, seeds)  # as a split job's rollout rank has it
    return StepBuilder(cfg, SingleTurnGeneration(engine, pad_token_id=0), ScoreBySample(), PhaseTimer(),
                       min_over_peers=lambda value: peers.append(value) or value, part=part, seeds=seeds)


def shard(data, shard_index, positions):
    return shard_index, [prompt_item(data, position, position) for position in positions]


def test_a_rank_of_an_engine_group_keeps_its_part_of_the_shard():
    # Ranks 0 and 1 share one engine (TP 2): both generate all 4 prompts; rank 1 trains prompts 2 and 3.
    cfg, rollout = config(), ScriptedRollout()
    experience = ColocatedExperience(cfg, rollout=rollout, generation=SingleTurnGeneration(rollout, pad_token_id=0),
                                     reward=ScoreBySample(), train_data=dataset(8), val_data=dataset(3),
                                     dist=DistInfo(rank=1, world_size=2), timer=PhaseTimer(),
                                     layout=Layout(world_size=2, tensor_parallel_size=2))
    experience.publish(weights, version=0)
    batch = experience.next_batch().batch
    assert ("generate", 4, 2, 1.0) in rollout.calls
    assert batch["group_index"] == [2, 2, 3, 3] and batch["policy_version"] == [0] * 4


def test_seeds_by_shard_are_the_colocated_ranks_seeds():
    # Shard s's k-th call samples as colocated rank s's HF engine does on its k-th call.
    cfg, rollout, data = config(), SeedRecordingRollout(), dataset(8)
    seeds = ShardSeeds(seed=1, calls={1: 5})
    pieces = builder(cfg, rollout, seeds=seeds).build([shard(data, 0, [0, 1]), shard(data, 1, [2, 3])], version=2)
    assert [call[1] for call in rollout.calls if call[0] == "seed"] == [call_seed(1, 0, 0), call_seed(1, 5, 1)]
    assert seeds.calls == {0: 1, 1: 6}
    assert [piece.shard for piece in pieces] == [0, 1]
    assert pieces[1].batch["group_index"] == [2, 2, 3, 3] and pieces[1].batch["policy_version"] == [2] * 4
    assert pieces[0].generated == ([0.0, 1.0, 0.0, 1.0], [2, 2, 2, 2], ["stop"] * 4)


def test_every_engine_call_of_a_conversation_draws_its_own_seed():
    # A two-turn Generation calls the engine twice: each turn counts as a call, as the engine's own counter does
    # in a colocated run, so turn 2 does not sample with turn 1's seed.
    class TwoTurns:
        def __init__(self, engine):
            self.engine, self.single = engine, SingleTurnGeneration(engine, pad_token_id=0)

        def __call__(self, prompts, params):
            self.engine.generate([prompt.prompt_ids for prompt in prompts], params)  # the first turn
            return self.single(prompts, params)  # the second

    cfg, rollout, data, seeds = config(), SeedRecordingRollout(), dataset(8), ShardSeeds(seed=1)
    step = StepBuilder(cfg, TwoTurns(SeededRollout(rollout, seeds)), ScoreBySample(), PhaseTimer(),
                       min_over_peers=lambda value: value, seeds=seeds)
    step.build([shard(data, 3, [0, 1])], version=0)
    step.build([shard(data, 3, [2, 3])], version=1)
    assert [call[1] for call in rollout.calls if call[0] == "seed"] == [call_seed(1, k, 3) for k in range(4)]
    assert seeds.calls == {3: 4}


def next_batch(data, indices):
    """The next batch of the prompt order (prompts `indices`, positions 0..3) cut into shards 0 and 1."""
    return lambda: [(0, [prompt_item(data, 0, indices[0]), prompt_item(data, 1, indices[1])]),
                    (1, [prompt_item(data, 2, indices[2]), prompt_item(data, 3, indices[3])])]


def test_the_shards_of_one_engine_refill_in_step_and_keep_as_many_groups():
    # Shard 0's first prompt ties in the first call: every shard generates a second round, for the next batch of
    # prompts (4-7, as DAPO draws new ones), and each keeps the same number of whole groups; the smallest count
    # anywhere goes through min_over_peers.
    cfg = config("algorithm.dynamic_sampling.max_generate_batches=3")
    rollout, data, peers, drawn = FirstPromptTiesOnce(), dataset(8), [], []
    refill = next_batch(data, [4, 5, 6, 7])
    pieces = builder(cfg, rollout, peers=peers).build([shard(data, 0, [0, 1]), shard(data, 1, [2, 3])], version=0,
                                                      next_shards=lambda: drawn.append(1) or refill())
    assert drawn == [1]  # one refill round, one batch of prompts for both shards
    assert [call[1] for call in rollout.calls if call[0] == "generate"] == [2, 2, 2, 2]  # 2 rounds x 2 shards
    # Round 2's groups are new groups: positions 0 and 1 + 4 (data.train_batch_size) per round.
    assert [piece.batch["group_index"] for piece in pieces] == [[1, 1, 4, 4], [2, 2, 3, 3]]
    assert pieces[0].batch["prompt_text"] == ["p1", "p1", "p4", "p4"]  # the tied prompt 0 is replaced by prompt 4
    assert peers == [-2, 2, 2]  # 2 responses short, then 2 over (shard 0: 2 + 4 of 4); then 2 groups each
    assert pieces[0].generated[0] == [0.0, 0.0, 0.0, 1.0]  # statistics describe the first generation


def test_dynamic_sampling_needs_the_next_prompts():
    cfg = config("algorithm.dynamic_sampling.max_generate_batches=2")
    with pytest.raises(ValueError, match="next_shards"):
        builder(cfg, ScriptedRollout()).build([shard(dataset(8), 0, [0, 1])], version=0)


def test_a_rank_that_keeps_nothing_still_generates_and_never_decides():
    cfg = config("algorithm.dynamic_sampling.max_generate_batches=2")
    rollout, data, peers = ScriptedRollout(), dataset(8), []
    pieces = builder(cfg, rollout, part=None, peers=peers).build([shard(data, 0, [0, 1])], version=0,
                                                                 next_shards=next_batch(data, [4, 5, 6, 7]))
    assert pieces == [] and [call[0] for call in rollout.calls] == ["generate"]
    assert peers == [float("inf"), float("inf")]  # the peers that keep rows decide
    assert builder(cfg, rollout, part=None).validate([shard(data, 0, [0, 1])]) == {}


def test_validation_answers_by_shard_follow_the_colocated_order():
    cfg, rollout, data = config("rollout.val_n=1", "rollout.val_temperature=0", "data.val_batch_size=2"), \
        ScriptedRollout(), dataset(5)
    assert [item.group for item in validation_shard(data, 1, 2)] == [1, 3]
    answers = builder(cfg, rollout).validate([(0, validation_shard(data, 0, 2)), (1, validation_shard(data, 1, 2))])
    assert [len(answers[s][0]) for s in (0, 1)] == [3, 2]  # prompts 0, 2, 4 and 1, 3
    assert [call[1] for call in rollout.calls] == [2, 1, 2]  # generate calls of at most 2 prompts


def test_leader_generation_without_a_process_group_is_the_leaders():
    rollout = ScriptedRollout()
    generation = LeaderGeneration(SingleTurnGeneration(rollout, pad_token_id=0), leader=0, group=None)
    batch = generation([prompt_item(dataset(1), 0, 0)], SamplingParams(n=2, max_new_tokens=4))
    assert len(batch) == 2 and batch["response_text"] == ["10 0", "10 1"]
