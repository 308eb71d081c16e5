"""SGLangRollout's call sequence against a fake `sglang` module on CPU (no engine is started, CPU tensors):
generation, weight pushes, sleep and wake, the memory saver, and what starting the engine leaves in the trainer's
process (environment, logging). The pure logic it calls: test_sglang_args.py.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from sglang_outputs import output

from rlkit.config.schema import RolloutConfig
from rlkit.distributed import DistInfo
from rlkit.rollout import sglang_args
from rlkit.rollout.base import RolloutEngine, SamplingParams
from rlkit.rollout.behaviour import build_tiny_checkpoint
from rlkit.rollout.sglang_options import SGLangOptions

GPU0 = DistInfo(device="cuda:0")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tokenizer = build_tiny_checkpoint(path)
    return str(path), tokenizer


class FakeEngine:
    """Records calls; generate answers [last prompt token + 1, EOS] with fixed log-probs."""

    eos = 1

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.agent_store_flag = os.environ.get("TORCHELASTIC_USE_AGENT_STORE")  # what its schedulers inherit
        os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] = "8"  # as SGLang's _set_envs_and_config
        logging.basicConfig(level=logging.ERROR, format="[sglang] %(message)s", force=True)  # its configure_logger
        self.calls: list[tuple] = []
        self.loaded: dict[str, torch.Tensor] = {}

    def generate(self, input_ids, sampling_params, return_logprob):
        self.calls.append(("generate", len(input_ids)))
        assert return_logprob is True
        return [output([row[-1] + 1, self.eos], [-0.5, -0.25], ("stop", self.eos)) for row in input_ids]

    def update_weights_from_tensor(self, named_tensors, flush_cache):
        self.calls.append(("update", [name for name, _ in named_tensors], flush_cache))
        self.loaded.update(named_tensors)
        return True, "Success"

    def flush_cache(self):
        self.calls.append(("flush",))
        return SimpleNamespace(success=True)

    def release_memory_occupation(self, tags):
        self.calls.append(("release", tuple(tags)))

    def resume_memory_occupation(self, tags):
        self.calls.append(("resume", tuple(tags)))

    def shutdown(self):
        self.calls.append(("shutdown",))


@pytest.fixture
def fake_sglang(monkeypatch):
    patched = []
    modules = {name: types.ModuleType(name) for name in ("sglang", "sglang.srt", "sglang.srt.utils",
                                                         "sglang.srt.utils.patch_torch")}
    modules["sglang"].Engine = FakeEngine
    modules["sglang.srt.utils.patch_torch"].monkey_patch_torch_reductions = lambda: patched.append(True)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return patched


def make_rollout(checkpoint, **config):
    from rlkit.rollout.sglang import SGLangRollout

    model_path, tokenizer = checkpoint
    rollout = SGLangRollout(RolloutConfig(), SGLangOptions(**config), model_path, tokenizer, GPU0, seed=3)
    rollout.device = torch.device("cpu")  # the fake engine takes CPU tensors
    return rollout


def test_rollout_generates_prompt_major_with_eos_as_stop_id(checkpoint, fake_sglang):
    rollout = make_rollout(checkpoint)
    assert isinstance(rollout, RolloutEngine) and fake_sglang == [True]
    assert rollout.engine.kwargs["random_seed"] == 3 and rollout.engine.kwargs["skip_tokenizer_init"] is True
    completions = rollout.generate([[5, 6], [9]], SamplingParams(n=2, max_new_tokens=4))
    assert [c.prompt_ids for c in completions] == [[5, 6], [5, 6], [9], [9]]
    assert [c.response_ids for c in completions] == [[7, 1], [7, 1], [10, 1], [10, 1]]
    assert all(c.finish_reason == "stop" and c.logprobs == [-0.5, -0.25] for c in completions)
    tokenizer = checkpoint[1]
    assert completions[0].text == tokenizer.decode([7, 1], skip_special_tokens=True)
    assert tokenizer.eos_token_id in rollout.eos_token_ids
    assert rollout.generate([], SamplingParams()) == [] and rollout.engine.calls == [("generate", 4)]
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        rollout.generate([[5], []], SamplingParams())


def test_rollout_update_weights_checks_casts_buckets_and_flushes(checkpoint, fake_sglang, monkeypatch):
    from rlkit.rollout import sglang as sglang_rollout

    rollout = make_rollout(checkpoint)
    weights = [(name, torch.ones(shape)) for name, shape in list(rollout._weight_shapes.items())[:3]]
    monkeypatch.setattr(sglang_rollout, "WEIGHT_BUCKET_BYTES", 1)  # one tensor a bucket
    rollout.update_weights(iter(weights))
    names = [name for name, _ in weights]
    assert rollout.engine.calls == [("update", [n], False) for n in names] + [("flush",)]
    assert all(rollout.engine.loaded[n].dtype is torch.bfloat16 for n in names)  # the engine's dtype
    assert rollout.last_sync_seconds > 0

    rollout.engine.calls.clear()
    with pytest.raises(ValueError, match="unknown weight 'model.nope'"):
        rollout.update_weights([weights[0], weights[1], ("model.nope", torch.ones(2))])
    # the bucket of weights[0] was sent when weights[1] opened the next one; that one was pending; no flush
    assert rollout.engine.calls == [("update", [names[0]], False)]


def test_rollout_sleep_wake_resumes_weights_then_kv_cache_at_generate(checkpoint, fake_sglang):
    rollout = make_rollout(checkpoint)
    engine = rollout.engine
    rollout.sleep()
    rollout.sleep()  # twice is once
    assert engine.calls == [("release", ("kv_cache", "weights", "cuda_graph"))]
    with pytest.raises(RuntimeError, match="asleep"):
        rollout.generate([[5]], SamplingParams())
    with pytest.raises(RuntimeError, match="asleep"):
        rollout.update_weights([])
    rollout.wake_up()
    assert engine.calls[-1] == ("resume", ("weights",))
    with pytest.raises(RuntimeError, match="before update_weights"):
        rollout.generate([[5]], SamplingParams())
    name, shape = next(iter(rollout._weight_shapes.items()))
    rollout.update_weights([(name, torch.zeros(shape))])
    assert engine.calls[-1] == ("update", [name], False)  # no flush: the released KV cache was flushed then
    rollout.generate([[5]], SamplingParams())
    assert engine.calls[-2:] == [("resume", ("kv_cache", "cuda_graph")), ("generate", 1)]

    # sleeping straight after a wake_up releases only what is resident
    rollout.sleep()
    rollout.wake_up()
    rollout.sleep()
    assert engine.calls[-3:] == [("release", ("kv_cache", "weights", "cuda_graph")), ("resume", ("weights",)),
                                 ("release", ("weights",))]
    rollout.close()
    rollout.close()
    assert engine.calls[-1] == ("shutdown",) and rollout.engine is None


def test_rollout_without_release_memory_never_releases(checkpoint, fake_sglang):
    rollout = make_rollout(checkpoint, release_memory=False)
    rollout.sleep()
    rollout.wake_up()
    rollout.generate([[5]], SamplingParams())  # the weights were never dropped: no update needed
    assert rollout.engine.calls == [("generate", 1)]
    assert rollout.engine.kwargs["enable_memory_saver"] is False


def test_rollout_that_never_sleeps_starts_without_the_memory_saver(checkpoint, fake_sglang):
    """rollout.sleep=false: the saver would release nothing and costs generation speed."""
    from rlkit.rollout.sglang import SGLangRollout

    model_path, tokenizer = checkpoint
    for sleep, saver in ((False, False), (True, True), ("auto", True)):
        rollout = SGLangRollout(RolloutConfig(sleep=sleep), SGLangOptions(), model_path, tokenizer, GPU0, seed=3)
        assert rollout.engine.kwargs["enable_memory_saver"] is saver, sleep
    rollout.sleep()  # sleep=auto decided to sleep after all: the saver releases
    assert rollout.engine.calls == [("release", sglang_args.MEMORY_TAGS)]


def test_rollout_starts_the_engine_without_the_agent_store_flag(checkpoint, fake_sglang, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    rollout = make_rollout(checkpoint)
    assert rollout.engine.agent_store_flag is None and os.environ["TORCHELASTIC_USE_AGENT_STORE"] == "True"
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in os.environ  # the fake engine set it while starting


def test_rollout_keeps_the_trainers_log_lines(checkpoint, fake_sglang, caplog):
    """A started engine once left the root logger at ERROR with SGLang's handler: the run header's speed lines
    and the step lines vanished from every SGLang run's log."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    make_rollout(checkpoint)
    assert (list(root.handlers), root.level) == before
    with caplog.at_level(logging.INFO, logger="rlkit"):
        logging.getLogger("rlkit.trainer.speed").info("speed: after the engine started")
    assert "speed: after the engine started" in caplog.text
