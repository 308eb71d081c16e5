"""The SGLang rollout's pure logic on CPU (rlkit.rollout.sglang_args): config -> Engine kwargs, sampling params,
output dicts -> Completions, the scheduler's environment and the trainer's logging. SGLangRollout's call sequence
against a fake `sglang` module: test_sglang_rollout.py; weight checks and buckets: test_weights.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sglang_outputs import output

from rlkit.rollout.sglang_options import SGLangOptions
from rlkit.distributed import DistInfo
from rlkit.errors import ConfigError
from rlkit.rollout import sglang_args
from rlkit.rollout.base import SamplingParams

GPU0 = DistInfo(device="cuda:0")


# ---------------------------------------------------------------------------------------------
# engine kwargs
# ---------------------------------------------------------------------------------------------
def test_engine_kwargs_defaults():
    kwargs = sglang_args.engine_kwargs(SGLangOptions(), "/m", dist=GPU0, seed=7)
    assert kwargs == {
        "model_path": "/m",
        "dtype": "bfloat16",
        "trust_remote_code": False,
        "tp_size": 1,
        "base_gpu_id": 0,
        "random_seed": 7,
        "mem_fraction_static": 0.5,
        "attention_backend": "triton",
        "sampling_backend": "pytorch",
        "disable_cuda_graph": False,
        "enable_memory_saver": True,
        "sleep_on_idle": True,  # the idle scheduler blocks on its sockets instead of spinning a core
        "skip_tokenizer_init": True,
        "sampling_defaults": "openai",
        "log_level": "error",
    }


def test_engine_kwargs_follow_the_config_rank_and_device():
    config = SGLangOptions(
        mem_fraction_static=0.3, attention_backend="fa3", sampling_backend="flashinfer", disable_cuda_graph=True,
        release_memory=False,
    )
    dist = DistInfo(rank=3, world_size=4, local_rank=3, device="cuda:3")
    kwargs = sglang_args.engine_kwargs(config, "/m", dist=dist, seed=7, dtype=torch.float16, trust_remote_code=True)
    assert kwargs["base_gpu_id"] == 3
    assert kwargs["random_seed"] == 7 + 3 * 1_000_003  # ranks sample different streams
    assert kwargs["dtype"] == "float16" and kwargs["trust_remote_code"] is True
    assert (kwargs["mem_fraction_static"], kwargs["attention_backend"], kwargs["sampling_backend"]) == (
        0.3, "fa3", "flashinfer")
    assert kwargs["disable_cuda_graph"] is True and kwargs["enable_memory_saver"] is False
    # "cuda" without an index: the local rank's GPU
    assert sglang_args.gpu_index(DistInfo(rank=5, world_size=8, local_rank=1, device="cuda")) == 1


def test_engine_kwargs_tensor_parallel_in_one_process_or_from_the_first_rank_of_a_group():
    config = SGLangOptions(tensor_parallel_size=2)
    assert sglang_args.engine_kwargs(config, "/m", dist=GPU0, seed=1)["tp_size"] == 2
    # Under torchrun rank 2 starts the engine of ranks 2 and 3 (GPUs 2, 3): engine group 1's seed.
    kwargs = sglang_args.engine_kwargs(config, "/m", dist=DistInfo(rank=2, world_size=4, local_rank=2,
                                                                   device="cuda:2"), seed=1)
    assert (kwargs["tp_size"], kwargs["base_gpu_id"], kwargs["random_seed"]) == (2, 2, 1 + 1 * 1_000_003)


def test_engine_kwargs_refuse_cpu_and_unknown_dtypes():
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        sglang_args.engine_kwargs(SGLangOptions(), "/m", dist=DistInfo(), seed=1)
    with pytest.raises(ConfigError, match="int8"):
        sglang_args.engine_kwargs(SGLangOptions(), "/m", dist=GPU0, seed=1, dtype="int8")
    assert sglang_args.engine_dtype("bfloat16") == "bfloat16"
    assert sglang_args.torch_dtype(sglang_args.engine_dtype(torch.float32)) is torch.float32


def test_check_environment_refuses_pre_temperature_logprobs():
    sglang_args.check_environment({})
    sglang_args.check_environment({"SGLANG_RETURN_ORIGINAL_LOGPROB": "0"})
    with pytest.raises(ConfigError, match="SGLANG_RETURN_ORIGINAL_LOGPROB"):
        sglang_args.check_environment({"SGLANG_RETURN_ORIGINAL_LOGPROB": "true"})


def test_eos_token_ids_gather_the_tokenizer_config_and_generation_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 5}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 9]}))
    tokenizer = SimpleNamespace(eos_token_id=1)
    assert sglang_args.eos_token_ids(tokenizer, str(tmp_path)) == [1, 5, 9]
    assert sglang_args.eos_token_ids(SimpleNamespace(eos_token_id=None), str(tmp_path / "none")) == []


# ---------------------------------------------------------------------------------------------
# sampling params
# ---------------------------------------------------------------------------------------------
def test_sampling_params():
    params = SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=5, max_new_tokens=12, stop_token_ids=(7, 1))
    sp = sglang_args.sampling_params(params, eos_ids=[1, 2])
    assert sp["n"] == 1  # n comes from repeated prompts
    assert (sp["temperature"], sp["top_p"], sp["top_k"], sp["max_new_tokens"]) == (0.7, 0.9, 5, 12)
    assert sp["stop_token_ids"] == [1, 2, 7]  # EOS ids first, no repeats
    assert sp["ignore_eos"] is False and sp["no_stop_trim"] is True
    assert (sp["min_p"], sp["repetition_penalty"], sp["frequency_penalty"], sp["presence_penalty"]) == (0, 1, 0, 0)


def test_sampling_params_greedy_top_k_off_and_ignore_eos():
    for top_k in (0, -1):  # rlkit's two spellings of "off"; SGLang takes only -1
        assert sglang_args.sampling_params(SamplingParams(top_k=top_k), [1])["top_k"] == -1
    greedy = sglang_args.sampling_params(SamplingParams(temperature=0.0), [1])
    assert greedy["temperature"] == 0.0  # SGLang turns it into top_k=1
    ignoring = sglang_args.sampling_params(SamplingParams(ignore_eos=True, stop_token_ids=(7,)), [1])
    assert ignoring["ignore_eos"] is True and ignoring["stop_token_ids"] == []


def test_repeat_prompts_is_prompt_major():
    assert sglang_args.repeat_prompts([[1, 2], [3]], 2) == [[1, 2], [1, 2], [3], [3]]
    assert sglang_args.repeat_prompts([], 3) == []


# ---------------------------------------------------------------------------------------------
# outputs -> completions
# ---------------------------------------------------------------------------------------------
def test_completions_keep_the_stop_token_and_map_logprobs():
    rows = [[5, 6], [5, 6], [8]]
    outputs = [
        output([10, 11, 1], [-0.5, -1.0, -0.25], ("stop", 1)),  # EOS ends it and stays
        output([12, 13, 14], [-0.1, -0.2, -0.3], ("length", 3)),
        output([7], [-2.0], ("stop", 7)),  # a stop id
    ]
    decoded = []

    def decode(ids):
        decoded.append(ids)
        return " ".join(map(str, ids))

    completions = sglang_args.completions_from_outputs(rows, outputs, decode)
    assert [c.prompt_ids for c in completions] == rows
    assert [c.response_ids for c in completions] == [[10, 11, 1], [12, 13, 14], [7]]
    assert [c.logprobs for c in completions] == [[-0.5, -1.0, -0.25], [-0.1, -0.2, -0.3], [-2.0]]
    assert [c.finish_reason for c in completions] == ["stop", "length", "stop"]
    assert [c.text for c in completions] == ["10 11 1", "12 13 14", "7"]
    assert decoded == [[10, 11, 1], [12, 13, 14], [7]]


def test_completions_refuse_aborts_and_inconsistent_outputs():
    abort = output([3], [-1.0], ("length", 1))
    abort["meta_info"]["finish_reason"] = {"type": "abort", "message": "input is longer than the context"}
    with pytest.raises(RuntimeError, match="abort.*longer than the context"):
        sglang_args.completions_from_outputs([[1]], [abort], str)

    short = output([3, 4], [-1.0, -2.0], ("length", 2))
    short["meta_info"]["output_token_logprobs"].pop()
    with pytest.raises(RuntimeError, match="1 log-probs for 2 tokens"):
        sglang_args.completions_from_outputs([[1]], [short], str)

    swapped = output([3, 4], [-1.0, -2.0], ("length", 2))
    swapped["meta_info"]["output_token_logprobs"] = [(-1.0, 4, None), (-2.0, 3, None)]
    with pytest.raises(RuntimeError, match="differ from output_ids"):
        sglang_args.completions_from_outputs([[1]], [swapped], str)

    trimmed = output([3, 4], [-1.0, -2.0], ("stop", 1))  # SGLang trimmed the stop token away
    with pytest.raises(RuntimeError, match="stopped on token 1"):
        sglang_args.completions_from_outputs([[1]], [trimmed], str)

    no_logprobs = output([3], [-1.0], ("length", 1))
    del no_logprobs["meta_info"]["output_token_logprobs"]
    with pytest.raises(RuntimeError, match="no output_token_logprobs"):
        sglang_args.completions_from_outputs([[1]], [no_logprobs], str)

    with pytest.raises(RuntimeError, match="1 outputs for 2 requests"):
        sglang_args.completions_from_outputs([[1], [2]], [output([3], [-1.0], ("length", 1))], str)


# ---------------------------------------------------------------------------------------------
# the scheduler's environment under torchrun
# ---------------------------------------------------------------------------------------------
def test_scheduler_environment_hides_the_agent_store_flag_and_restores_it():
    environ = {"TORCHELASTIC_USE_AGENT_STORE": "True", "OTHER": "1"}
    with pytest.raises(KeyError), sglang_args.scheduler_environment(environ):
        assert environ == {"OTHER": "1"}
        raise KeyError("restored on errors too")
    assert environ == {"TORCHELASTIC_USE_AGENT_STORE": "True", "OTHER": "1"}
    unset = {"OTHER": "1"}
    with sglang_args.scheduler_environment(unset):
        pass
    assert unset == {"OTHER": "1"}


def test_scheduler_environment_undoes_what_sglang_sets_while_starting():
    environ = {"NCCL_NVLS_ENABLE": "1", "KEEP": "x"}
    with sglang_args.scheduler_environment(environ):
        # as SGLang's _set_envs_and_config does, in the process that builds the Engine
        environ.update(NCCL_CUMEM_ENABLE="0", NCCL_NVLS_ENABLE="0", CUDA_DEVICE_MAX_CONNECTIONS="8")
    assert environ == {"NCCL_NVLS_ENABLE": "1", "KEEP": "x"}


def test_logging_kept_undoes_what_sglang_configures_while_starting():
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    with pytest.raises(KeyError), sglang_args.logging_kept("error"):
        logging.basicConfig(level=logging.ERROR, format="[sglang] %(message)s", force=True)
        assert root.level == logging.ERROR and list(root.handlers) != before[0]
        raise KeyError("restored on errors too")
    assert (list(root.handlers), root.level) == before
    assert logging.getLogger("sglang").level == logging.ERROR


def test_a_spawned_scheduler_forms_its_process_group_under_torchrun():
    """The mechanism itself: under torchrun, a spawned process's tcp:// rendezvous fails with the inherited
    flag (it waits for an agent's store on its own port) and succeeds inside scheduler_environment."""
    repo_root = str(Path(sglang_args.__file__).parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    script = Path(__file__).parent / "scripts" / "scheduler_rendezvous.py"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"torchrun failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    lines = run.stdout.splitlines()
    assert "scheduler_environment exit 0" in lines and "restored True" in lines
    assert "inherited exit 1" in lines, run.stdout  # the hang this guards against, cut short by a 3 s timeout
