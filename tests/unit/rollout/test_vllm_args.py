"""The vLLM rollout's pure logic on CPU: engine and sampling arguments, output conversion (weight buckets:
test_weights.py).

vLLM is not needed: its outputs are faked with SimpleNamespace objects shaped like vllm.RequestOutput.
"""

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from rlkit.distributed import DistInfo
from rlkit.errors import ConfigError, PluginError
from rlkit.rollout.base import SamplingParams
from rlkit.rollout.vllm_options import VLLMOptions
from rlkit.rollout.vllm_args import (
    RANK_SEED_STRIDE,
    completions_from_outputs,
    engine_env,
    engine_kwargs,
    prompt_copies,
    request_seeds,
    sampling_kwargs,
    vllm_dtype,
)


# -- environment and engine arguments ----------------------------------------------------------
def test_engine_env_forces_in_process_and_keeps_the_users_sampler():
    assert engine_env({}) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_USE_FLASHINFER_SAMPLER": "0"}
    user = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_USE_FLASHINFER_SAMPLER": "1"}
    assert engine_env(user) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_USE_FLASHINFER_SAMPLER": "1"}


@pytest.mark.parametrize(
    "dtype, expected",
    [(None, "bfloat16"), (torch.bfloat16, "bfloat16"), (torch.float16, "float16"), ("float32", "float32"),
     ("auto", "auto")],
)
def test_vllm_dtype(dtype, expected):
    assert vllm_dtype(dtype) == expected


def test_vllm_dtype_rejects_others():
    with pytest.raises(ConfigError, match="int8"):
        vllm_dtype(torch.int8)


def test_engine_kwargs_single_process():
    config = VLLMOptions(gpu_memory_utilization=0.3, enforce_eager=True, sleep_level=2)
    kwargs = engine_kwargs(config, "/models/tiny", dist=DistInfo(), seed=7)
    assert kwargs == {
        "model": "/models/tiny",
        "tokenizer": "/models/tiny",
        "trust_remote_code": False,
        "dtype": "bfloat16",
        "seed": 7,  # seed + (rank 0 // tp 1) * stride
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.3,
        "enforce_eager": True,
        "enable_prefix_caching": True,
        "enable_sleep_mode": True,
        "logprobs_mode": "processed_logprobs",
    }


def test_engine_kwargs_options():
    config = VLLMOptions(sleep_level=0, max_model_len=4096, enable_prefix_caching=False, seed=123)
    kwargs = engine_kwargs(
        config, "/m", dist=DistInfo(), seed=7, dtype=torch.float16, tokenizer_path="/tok", trust_remote_code=True
    )
    assert kwargs["enable_sleep_mode"] is False
    assert kwargs["max_model_len"] == 4096
    assert kwargs["enable_prefix_caching"] is False
    assert kwargs["seed"] == 123  # config.seed wins over the trainer's
    assert kwargs["dtype"] == "float16"
    assert kwargs["tokenizer"] == "/tok"
    assert kwargs["trust_remote_code"] is True
    assert "distributed_executor_backend" not in kwargs
    assert "max_model_len" not in engine_kwargs(VLLMOptions(), "/m", dist=DistInfo(), seed=7)


def test_engine_kwargs_under_torchrun_share_seeds_within_a_tensor_parallel_group():
    config = VLLMOptions(tensor_parallel_size=2)
    seeds = []
    for rank in range(4):
        kwargs = engine_kwargs(config, "/m", dist=DistInfo(rank=rank, world_size=4, local_rank=rank), seed=1)
        assert kwargs["distributed_executor_backend"] == "external_launcher"
        assert kwargs["tensor_parallel_size"] == 2
        seeds.append(kwargs["seed"])
    # ranks 0,1 form engine 0 and ranks 2,3 engine 1: 1 + 0 * stride, 1 + 1 * stride
    assert seeds == [1, 1, 1 + RANK_SEED_STRIDE, 1 + RANK_SEED_STRIDE]


def test_engine_kwargs_one_engine_per_rank_without_tensor_parallelism():
    config = VLLMOptions()
    seeds = [engine_kwargs(config, "/m", dist=DistInfo(rank=r, world_size=2), seed=1)["seed"] for r in range(2)]
    assert seeds == [1, 1 + RANK_SEED_STRIDE]


def test_engine_kwargs_reject_impossible_layouts():
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 needs 2 processes"):
        engine_kwargs(VLLMOptions(tensor_parallel_size=2), "/m", dist=DistInfo(), seed=1)
    with pytest.raises(ConfigError, match="does not divide the world size 3"):
        engine_kwargs(VLLMOptions(tensor_parallel_size=2), "/m", dist=DistInfo(world_size=3), seed=1)


# -- sampling arguments ------------------------------------------------------------------------
def test_sampling_kwargs():
    params = SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=-1, max_new_tokens=32, stop_token_ids=(5, 9))
    assert sampling_kwargs(params) == {
        "n": 4,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,  # rlkit's -1 (off) is vLLM's 0
        "max_tokens": 32,
        "stop_token_ids": [5, 9],
        "ignore_eos": False,
        "logprobs": 0,
        "detokenize": False,  # rlkit decodes each response once itself
        "flat_logprobs": True,  # flat lists, not a dict and a Logprob object per token
    }
    assert prompt_copies(params) == 1
    assert "flat_logprobs" not in sampling_kwargs(params, flat_logprobs=False)  # a vLLM without the field
    without = sampling_kwargs(SamplingParams(logprobs=False))
    assert without["logprobs"] is None and without["detokenize"] is False and "flat_logprobs" not in without
    assert sampling_kwargs(SamplingParams(top_k=20))["top_k"] == 20
    assert sampling_kwargs(SamplingParams(ignore_eos=True))["ignore_eos"] is True


def test_greedy_with_several_samples_sends_the_prompt_several_times():
    params = SamplingParams(n=3, temperature=0.0)
    assert sampling_kwargs(params)["n"] == 1  # vLLM refuses n > 1 when greedy
    assert prompt_copies(params) == 3


def test_sampling_kwargs_reject_temperatures_vllm_refuses():
    with pytest.raises(ConfigError, match="temperature 2.5"):
        sampling_kwargs(SamplingParams(temperature=2.5))


def test_request_seeds_leave_room_for_every_sample_and_replay():
    seeds = request_seeds(engine_seed=1, call_index=0, num_requests=3, samples_per_request=4)
    # vLLM gives sample s of a request seed + s: requests sit 4 apart, so 12 distinct sample seeds
    assert [b - a for a, b in zip(seeds, seeds[1:])] == [4, 4]
    assert all(0 <= seed < 2**56 + 8 for seed in seeds)  # a 56-bit start: inside vLLM's int64 seeds
    assert request_seeds(1, 0, 3, 4) == seeds  # a resumed run (same call index) replays the same seeds
    assert request_seeds(1, 1, 3, 4)[0] != seeds[0]  # the next call
    assert request_seeds(1 + RANK_SEED_STRIDE, 0, 3, 4)[0] != seeds[0]  # another data-parallel engine
    assert request_seeds(1, 0, 0, 4) == []


# -- output conversion -------------------------------------------------------------------------
def _logprob_maps(token_ids, values):
    """vLLM's per-position maps with logprobs=0: just the sampled token."""
    return [{token: SimpleNamespace(logprob=value, rank=1)} for token, value in zip(token_ids, values)]


@dataclass
class _FlatLogprobs:
    """Shaped like vLLM's FlatLogprobs: flat lists, position i spanning start_indices[i]:end_indices[i]."""

    start_indices: list[int]
    end_indices: list[int]
    token_ids: list[int]
    logprobs: list[float]

    def __len__(self):
        return len(self.start_indices)


def _flat_logprobs(token_ids, values):
    """With logprobs=0: one entry, the sampled token, per position."""
    return _FlatLogprobs(list(range(len(token_ids))), list(range(1, len(token_ids) + 1)), list(token_ids), list(values))


def _sample(index, token_ids, values, finish_reason, flat=False):
    # text is None: requests ask for token ids only (detokenize=False), rlkit decodes
    return SimpleNamespace(
        index=index,
        token_ids=token_ids,
        logprobs=(_flat_logprobs if flat else _logprob_maps)(token_ids, values),
        finish_reason=finish_reason,
        text=None,
    )


def _decode(token_ids):
    return " ".join(f"t{token}" for token in token_ids)


def test_completions_are_prompt_major_and_keep_the_stop_token():
    eos = 2
    outputs = [
        # samples arrive out of index order: they are put back in order
        SimpleNamespace(
            prompt_token_ids=[10, 11],
            outputs=[
                _sample(1, [7, eos], [-0.5, -0.25], "stop"),
                _sample(0, [5, 6, 8], [-1.0, -2.0, -3.0], "length", flat=True),
            ],
        ),
        SimpleNamespace(prompt_token_ids=[12], outputs=[_sample(0, [9], [-0.125], "stop", flat=True)]),
    ]
    completions = completions_from_outputs(outputs, _decode)
    assert [c.prompt_ids for c in completions] == [[10, 11], [10, 11], [12]]
    assert [c.response_ids for c in completions] == [[5, 6, 8], [7, eos], [9]]
    # the same numbers from FlatLogprobs (samples 0 and 2) and from per-position maps (sample 1)
    assert [c.logprobs for c in completions] == [[-1.0, -2.0, -3.0], [-0.5, -0.25], [-0.125]]
    assert [c.finish_reason for c in completions] == ["length", "stop", "stop"]
    assert [c.text for c in completions] == ["t5 t6 t8", "t7 t2", "t9"]  # decoded by rlkit, stop token included


def test_completions_copies_of_a_greedy_prompt_stay_together():
    outputs = [
        SimpleNamespace(prompt_token_ids=[1], outputs=[_sample(0, [3], [-0.5], "length")]),
        SimpleNamespace(prompt_token_ids=[1], outputs=[_sample(0, [3], [-0.5], "length")]),
        SimpleNamespace(prompt_token_ids=[2], outputs=[_sample(0, [4], [-0.5], "length")]),
        SimpleNamespace(prompt_token_ids=[2], outputs=[_sample(0, [4], [-0.5], "length")]),
    ]
    assert [c.prompt_ids for c in completions_from_outputs(outputs, _decode)] == [[1], [1], [2], [2]]


def test_completions_without_logprobs():
    sample = SimpleNamespace(index=0, token_ids=[3], logprobs=None, finish_reason="length", text=None)
    (completion,) = completions_from_outputs([SimpleNamespace(prompt_token_ids=[1], outputs=[sample])], _decode,
                                             with_logprobs=False)
    assert completion.logprobs is None
    assert completion.text == "t3"


def test_completions_reject_aborted_and_malformed_outputs():
    aborted = SimpleNamespace(prompt_token_ids=[1], outputs=[_sample(0, [3], [-0.5], "abort")])
    with pytest.raises(RuntimeError, match="finish_reason='abort'"):
        completions_from_outputs([aborted], _decode)
    short = _sample(0, [3, 4], [-0.5, -0.5], "length")
    short.logprobs = short.logprobs[:1]
    with pytest.raises(RuntimeError, match="1 log-prob positions for 2 tokens"):
        completions_from_outputs([SimpleNamespace(prompt_token_ids=[1], outputs=[short])], _decode)
    missing = _sample(0, [3], [-0.5], "length")
    missing.logprobs = None
    with pytest.raises(RuntimeError, match="no log-probs"):
        completions_from_outputs([SimpleNamespace(prompt_token_ids=[1], outputs=[missing])], _decode)
    swapped = _sample(0, [3, 4], [-0.5, -0.5], "length", flat=True)
    swapped.logprobs.token_ids = [4, 3]
    with pytest.raises(RuntimeError, match=r"log-prob token ids \[4, 3\] differ"):
        completions_from_outputs([SimpleNamespace(prompt_token_ids=[1], outputs=[swapped])], _decode)


# -- import hygiene ----------------------------------------------------------------------------
def test_the_engine_module_imports_without_vllm_pydantic_or_yaml():
    # a fresh interpreter: importing rlkit.rollout.vllm must not import vllm (or the config stack)
    code = (
        "import sys, rlkit.rollout.vllm as m; "
        "assert callable(m.VLLMRollout); "
        "print(sorted(k for k in ('vllm', 'pydantic', 'yaml') if k in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_registry_names_vllm_when_it_is_missing():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from rlkit.registry import ROLLOUT_ENGINES

    with pytest.raises(PluginError, match="needs vllm"):
        ROLLOUT_ENGINES.get("vllm")
