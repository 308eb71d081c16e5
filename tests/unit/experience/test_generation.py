"""The weight push (the trainer's cached GPU memory is released before the rollout engine wakes), and the
colocated experience source against a scripted rollout engine: call order, policy versions, ReMax baselines,
dynamic sampling, validation, resumable prompt order, close."""

import pytest
import torch

from rlkit.config import RunConfig, build_config
from rlkit.data.prompts import PromptDataset, PromptRecord
from rlkit.distributed import DistInfo
from rlkit.experience import ColocatedExperience, Experience, ExperienceSource, SingleTurnGeneration, sync_weights
from rlkit.experience.generation import PromptItem, assemble_responses
from rlkit.rewards.base import RewardManager, RewardOutput
from rlkit.rollout.base import Completion
from rlkit.timing import PhaseTimer


class RecordingRollout:
    def __init__(self, calls):
        self.calls = calls

    def wake_up(self):
        self.calls.append("wake_up")

    def update_weights(self, weights):
        self.calls.append(("update_weights", list(weights)))


class OneWeightActor:
    def full_weights(self):
        yield "w", torch.ones(1)


def test_sync_empties_the_cuda_cache_before_waking_the_rollout(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    sync_weights(RecordingRollout(calls), OneWeightActor().full_weights, "cuda:0")
    assert [call if isinstance(call, str) else call[0] for call in calls] == ["empty_cache", "wake_up",
                                                                            "update_weights"]
    assert calls[-1][1][0][0] == "w"


def test_sync_into_an_engine_that_stayed_awake_keeps_the_cache(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    sync_weights(RecordingRollout(calls), OneWeightActor().full_weights, "cuda:0", release_cache=False)
    assert [call if isinstance(call, str) else call[0] for call in calls] == ["wake_up", "update_weights"]


def test_sync_on_cpu_leaves_cuda_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    sync_weights(RecordingRollout(calls), OneWeightActor().full_weights, "cpu")
    assert calls[0] == "wake_up" and "empty_cache" not in calls


# -- the colocated source ---------------------------------------------------------------------------------
class ScriptedRollout:
    """Answers prompt p's k-th sample with tokens [p[0], k] (greedy: [p[0], 9]); records every call."""

    def __init__(self):
        self.calls: list = []
        self.weights: list[str] = []
        self.num_generate_calls = 0

    def generate(self, prompts, params):
        self.calls.append(("generate", len(prompts), params.n, params.temperature))
        self.num_generate_calls += 1
        completions = []
        for prompt in prompts:
            for k in range(params.n):
                response = [prompt[0], 9 if params.temperature == 0 else k]
                completions.append(Completion(prompt_ids=list(prompt), response_ids=response,
                                              logprobs=[-1.0, -1.0] if params.logprobs else None,
                                              finish_reason="stop", text=" ".join(map(str, response))))
        return completions

    def update_weights(self, weights):
        self.weights = [name for name, _ in weights]
        self.calls.append("update_weights")

    def sleep(self):
        self.calls.append("sleep")

    def wake_up(self):
        self.calls.append("wake_up")

    def close(self):
        self.calls.append("close")

    def state_dict(self):
        return {"num_generate_calls": self.num_generate_calls}

    def load_state_dict(self, state):
        self.num_generate_calls = state["num_generate_calls"]


class ScoreBySample(RewardManager):
    """Scores a response 1.0 when its second token is odd, else 0.0 (so groups of n=2 have signal)."""

    def __call__(self, samples):
        return RewardOutput.from_results([(float(int(s.response.split()[1]) % 2), {}) for s in samples])


def dataset(num: int) -> PromptDataset:
    return PromptDataset([PromptRecord([10 + i, 1], f"p{i}", "test", "gt", {}, i) for i in range(num)])


def source(*overrides: str, rollout=None, sleeps: bool = True
           ) -> tuple[ColocatedExperience, ScriptedRollout, PhaseTimer]:
    cfg = build_config(RunConfig, None, ["data.train_batch_size=2", "algorithm.mini_batch_size=2", "rollout.n=2",
                                         "rollout.max_new_tokens=4", *overrides])
    rollout = rollout or ScriptedRollout()
    timer = PhaseTimer()
    experience = ColocatedExperience(cfg, rollout=rollout, generation=SingleTurnGeneration(rollout, pad_token_id=0),
                                     reward=ScoreBySample(), train_data=dataset(6), val_data=dataset(3),
                                     dist=DistInfo(), timer=timer, sleeps=sleeps)
    return experience, rollout, timer


def weights():
    yield "w", torch.zeros(1)


def test_a_batch_is_pushed_weights_then_generation_then_sleep():
    experience, rollout, timer = source()
    assert isinstance(experience, ExperienceSource)
    with pytest.raises(AssertionError, match="publish the policy"):
        experience.next_batch()
    rollout.calls.clear()
    experience.publish(weights, version=0)
    assert rollout.calls == []  # colocated: taken up at the next wake, not at once
    batch = experience.next_batch()
    assert isinstance(batch, Experience)
    assert rollout.calls == ["wake_up", "update_weights", ("generate", 2, 2, 1.0), "sleep"]
    assert rollout.weights == ["w"]
    assert len(batch.batch) == 4 and batch.batch["group_index"] == [0, 0, 1, 1]
    assert batch.scores.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert batch.batch["policy_version"] == [0, 0, 0, 0] and batch.policy_version == 0
    assert batch.metrics["reward/mean"] == 0.5 and batch.metrics["reward/failures"] == 0.0
    assert {"time/weight_sync", "time/generate", "time/reward"} <= set(timer.metrics())

    experience.publish(weights, version=1)
    assert experience.next_batch().batch["policy_version"] == [1, 1, 1, 1]


def test_an_engine_the_run_keeps_awake_never_sleeps():
    experience, rollout, _ = source(sleeps=False)
    experience.publish(weights, version=0)
    experience.next_batch()
    experience.validate()
    assert "sleep" not in rollout.calls
    assert rollout.calls.count("update_weights") == 2  # still fed the weights before each generation


def test_remax_baselines_are_the_greedy_rewards():
    experience, rollout, _ = source("algorithm.adv_estimator=remax")
    experience.publish(weights, version=0)
    batch = experience.next_batch()
    assert ("generate", 2, 1, 0.0) in rollout.calls  # one greedy response per prompt
    assert batch.batch["reward_baselines"].tolist() == [1.0, 1.0, 1.0, 1.0]  # greedy token 9: odd


class FirstPromptTiesOnce(ScriptedRollout):
    """The first generate call answers prompt 10 with two even (score 0) responses: a group without signal."""

    def generate(self, prompts, params):
        completions = super().generate(prompts, params)
        if self.num_generate_calls == 1:
            for completion in completions:
                if completion.prompt_ids[0] == 10:
                    completion.response_ids[1] = 2
                    completion.text = "10 2"
        return completions


def test_dynamic_sampling_replaces_a_group_without_signal():
    experience, rollout, _ = source("algorithm.dynamic_sampling.max_generate_batches=3", "data.shuffle=false",
                                    rollout=FirstPromptTiesOnce())
    experience.publish(weights, version=0)
    batch = experience.next_batch()
    # The first prompt's group (0) tied and is dropped; one more generation, for the next batch of the prompt
    # order (prompts 2 and 3, as DAPO draws new prompts), refills it with that batch's first group: group ids
    # shift by data.train_batch_size per round (position 0 -> 2), so its statistics are its own.
    assert [call[0] for call in rollout.calls if call[0] == "generate"] == ["generate", "generate"]
    assert batch.batch["group_index"] == [1, 1, 2, 2]
    assert batch.batch["prompt_text"] == ["p1", "p1", "p2", "p2"]
    assert experience.state_dict()["sampler"] == {"epoch": 0, "position": 2}  # both batches taken from the order
    assert batch.scores.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert batch.metrics["dynamic_sampling/kept_samples"] == 4.0
    assert batch.metrics["dynamic_sampling/generate_rounds"] == 2.0
    assert batch.batch["policy_version"] == [0, 0, 0, 0]


def test_validation_pushes_the_weights_again_and_gathers_every_prompt():
    experience, rollout, _ = source("rollout.val_n=1", "rollout.val_temperature=0")
    experience.publish(weights, version=3)
    rollout.calls.clear()
    metrics = experience.validate()
    assert rollout.calls == ["wake_up", "update_weights", ("generate", 3, 1, 0.0), "sleep"]
    assert metrics["val/reward/mean"] == 1.0 and metrics["val/accuracy"] == 1.0


def test_the_state_resumes_the_prompt_order_and_close_closes_the_engine():
    first, _, _ = source()
    first.publish(weights, version=0)
    first.next_batch()
    state = first.state_dict()
    expected = first.next_batch().batch["prompt_text"]
    resumed, rollout, _ = source()
    resumed.load_state_dict(state)
    resumed.publish(weights, version=1)
    assert resumed.next_batch().batch["prompt_text"] == expected
    assert rollout.num_generate_calls == state["rollout"]["num_generate_calls"] + 1
    resumed.close()
    assert rollout.calls[-1] == "close"


def test_assembled_responses_carry_their_prompts_group_and_meta():
    owners = [PromptItem(7, [1, 2], "two", "gsm8k", "4", {"id": 0}),
              PromptItem(9, [3], "one", "letters", "b", {"id": 1})]
    completions = [Completion([1, 2], [5, 6, 7], None, "stop", "x"), Completion([3], [8], None, "length", "y")]
    batch = assemble_responses(completions, owners, pad_token_id=0, max_prompt_length=2, max_response_length=4)
    assert batch["group_index"] == [7, 9]
    assert (batch["prompt_text"], batch["data_source"]) == (["two", "one"], ["gsm8k", "letters"])
    assert (batch["ground_truth"], batch["extra_info"]) == (["4", "b"], [{"id": 0}, {"id": 1}])
    assert batch["response_text"] == ["x", "y"] and batch["input_ids"].shape == (2, 6)
    rendered = assemble_responses(completions, owners, pad_token_id=0, max_prompt_length=2, max_response_length=4,
                                  prompt_texts=["<two>", "<one>"])  # a prompt an environment rendered afresh
    assert rendered["prompt_text"] == ["<two>", "<one>"] and rendered["data_source"] == ["gsm8k", "letters"]
