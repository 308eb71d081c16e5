"""The weight-sync phase: the trainer's cached GPU memory is released before the rollout engine wakes."""

import torch

from rlkit.trainer import experience


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
    experience.sync_weights(RecordingRollout(calls), OneWeightActor(), "cuda:0")
    assert [call if isinstance(call, str) else call[0] for call in calls] == ["empty_cache", "wake_up",
                                                                            "update_weights"]
    assert calls[-1][1][0][0] == "w"


def test_sync_on_cpu_leaves_cuda_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    experience.sync_weights(RecordingRollout(calls), OneWeightActor(), "cpu")
    assert calls[0] == "wake_up" and "empty_cache" not in calls
