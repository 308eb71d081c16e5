"""VLLMRollout on a GPU: sampling, log-probs against a transformers forward, in-place weight sync, sleep/wake.

A tiny random Qwen2 (hidden 256, 4 layers, bf16) and a byte-level BPE tokenizer are built in a temporary
folder. Log-probs are compared with a plain transformers forward of the same weights; both run in bf16, so
they agree to bf16 noise (~1e-2), while two different random models differ by ~0.35 per token on average.
Measured numbers are printed and, when RLKIT_GPU_NUMBERS names a file, written there as JSON.

Run on the GPU machine with scripts/gpu/vllm_tests.sh; skipped where CUDA or vLLM is missing.
"""

import math
import random

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
vllm = pytest.importorskip("vllm")

from rlkit.config.schema import RolloutConfig  # noqa: E402
from rlkit.rollout.vllm_options import VLLMOptions  # noqa: E402
from rlkit.distributed import DistInfo  # noqa: E402
from rlkit.rollout import vllm as vllm_rollout  # noqa: E402
from rlkit.rollout.base import SamplingParams  # noqa: E402
from rlkit.rollout.vllm import VLLMRollout  # noqa: E402
from vllm_tiny import build_tiny, random_model, record, write_numbers  # noqa: E402

pytestmark = pytest.mark.gpu

LOGPROB_TOLERANCE = 0.05  # max |vLLM - transformers| per token, both bf16
MEAN_TOLERANCE = 0.01
GIB = 1024**3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = str(tmp_path_factory.mktemp("tiny_qwen2"))
    ids = build_tiny(directory)
    model_a = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).to("cuda").eval()
    return {
        "path": directory,
        "ids": ids,
        "tokenizer": AutoTokenizer.from_pretrained(directory),
        "model_a": model_a,  # the weights on disk
        "model_b": random_model(ids, seed=1),  # the weights a "trainer" pushes
    }


@pytest.fixture(scope="module")
def engines(tiny):
    """engines(level) -> a VLLMRollout with that sleep level; one engine lives at a time (sleep mode's
    memory pool is per process)."""
    current: dict[int, VLLMRollout] = {}

    def get(sleep_level: int) -> VLLMRollout:
        if sleep_level not in current:
            for rollout in current.values():
                rollout.close()
            current.clear()
            options = VLLMOptions(
                gpu_memory_utilization=0.25, enforce_eager=True, max_model_len=512, sleep_level=sleep_level
            )
            current[sleep_level] = VLLMRollout(
                RolloutConfig(name="vllm"), options, tiny["path"], tiny["tokenizer"], DistInfo(device="cuda:0"),
                seed=3,
            )
        return current[sleep_level]

    yield get
    for rollout in current.values():
        rollout.close()


@pytest.fixture(scope="module", autouse=True)
def _write_numbers():
    """Write what the tests measured to $RLKIT_GPU_NUMBERS (JSON) once the module is done."""
    yield
    write_numbers()


# -- helpers -----------------------------------------------------------------------------------
def _prompts(ids, lengths=(5, 9, 3), seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(4, ids["vocab"]) for _ in range(length)] for length in lengths]


@torch.no_grad()
def _hf_logprobs(model, prompt, response, temperature=1.0) -> torch.Tensor:
    """log_softmax(logits / temperature) of each response token under a transformers forward, (len(response),)."""
    input_ids = torch.tensor([prompt + response], device="cuda")
    logits = model(input_ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(1, input_ids[0, len(prompt) :, None]).squeeze(1).cpu()


def _vllm_prompt_logprobs(rollout, prompt, response) -> torch.Tensor:
    """vLLM's log-probs of `response` given `prompt`, read as prompt log-probs of prompt + response."""
    sequence = prompt + response
    (output,) = rollout.llm.generate(
        [vllm.TokensPrompt(prompt_token_ids=sequence)],
        vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0),
        use_tqdm=False,
    )
    positions = output.prompt_logprobs  # None for the first token, then {token: Logprob}
    return torch.tensor([positions[i][sequence[i]].logprob for i in range(len(prompt), len(sequence))])


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    delta = (a - b).abs()
    return delta.max().item(), delta.mean().item()


def _free_gib() -> float:
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0] / GIB


# -- tests (in order: one level-1 engine, then one level-2 engine) ------------------------------
def test_generate_n_per_prompt_with_temperature_scaled_logprobs(engines, tiny):
    rollout = engines(1)
    ids, prompts = tiny["ids"], _prompts(tiny["ids"])
    temperature = 0.6
    completions = rollout.generate(prompts, SamplingParams(n=4, temperature=temperature, max_new_tokens=16))

    assert len(completions) == 12
    assert [c.prompt_ids for c in completions] == [p for p in prompts for _ in range(4)]  # prompt-major
    eos_ids = {ids["eos"], ids["endoftext"]}
    scaled, unscaled = [], []
    for c in completions:
        assert c.finish_reason in ("stop", "length")
        assert 1 <= len(c.response_ids) <= 16 and len(c.logprobs) == len(c.response_ids)
        if c.finish_reason == "length":
            assert len(c.response_ids) == 16
        else:
            assert c.response_ids[-1] in eos_ids  # the EOS stays in the response
        assert not eos_ids & set(c.response_ids[:-1])
        assert isinstance(c.text, str)
        vllm_lp = torch.tensor(c.logprobs)
        scaled.append(vllm_lp - _hf_logprobs(tiny["model_a"], c.prompt_ids, c.response_ids, temperature))
        unscaled.append(vllm_lp - _hf_logprobs(tiny["model_a"], c.prompt_ids, c.response_ids, 1.0))
    max_scaled, mean_scaled = _diff(torch.cat(scaled), torch.tensor(0.0))
    _, mean_unscaled = _diff(torch.cat(unscaled), torch.tensor(0.0))
    record("sampled_logprob_vs_hf_T0.6_max", max_scaled)
    record("sampled_logprob_vs_hf_T0.6_mean", mean_scaled)
    record("sampled_logprob_vs_hf_T1_mean", mean_unscaled)
    assert max_scaled < LOGPROB_TOLERANCE and mean_scaled < MEAN_TOLERANCE
    assert mean_unscaled > 5 * mean_scaled  # the log-probs are the temperature-scaled ones


def test_ignore_eos_exact_lengths_and_greedy_copies(engines, tiny):
    rollout = engines(1)
    prompts = _prompts(tiny["ids"], seed=1)
    completions = rollout.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=20, ignore_eos=True))
    assert len(completions) == 6  # greedy n=2: each prompt sent twice
    assert [c.prompt_ids for c in completions] == [p for p in prompts for _ in range(2)]
    assert all(len(c.response_ids) == 20 and c.finish_reason == "length" for c in completions)
    assert all(len(c.logprobs) == 20 and max(c.logprobs) <= 0.0 for c in completions)


def test_sampling_is_reproducible_per_call_and_leaves_the_trainers_rng_alone(engines, tiny):
    rollout = engines(1)
    prompts = _prompts(tiny["ids"], seed=6)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, ignore_eos=True)
    state = rollout.state_dict()
    cpu_rng, cuda_rng, numpy_rng = torch.get_rng_state(), torch.cuda.get_rng_state(), np.random.get_state()[1]
    rollout.llm.reset_prefix_cache()  # both replayed calls take the same compute path
    first = rollout.generate(prompts, params)
    assert torch.equal(cpu_rng, torch.get_rng_state()) and torch.equal(cuda_rng, torch.cuda.get_rng_state())
    assert (numpy_rng == np.random.get_state()[1]).all()  # vLLM draws unseeded requests' seeds from numpy
    following = rollout.generate(prompts, params)  # the next call draws a new stream
    rollout.load_state_dict(state)  # as a resumed run would
    rollout.llm.reset_prefix_cache()
    replay = rollout.generate(prompts, params)
    assert [c.response_ids for c in replay] == [c.response_ids for c in first]
    assert [c.response_ids for c in following] != [c.response_ids for c in first]


def test_update_weights_in_place_matches_transformers(engines, tiny, monkeypatch):
    rollout = engines(1)
    prompts = _prompts(tiny["ids"], seed=2)
    sampled = rollout.generate(prompts, SamplingParams(n=1, temperature=1.0, max_new_tokens=12, ignore_eos=True))
    pairs = [(c.prompt_ids, c.response_ids) for c in sampled]

    def compare(model):
        vllm_lp = torch.cat([_vllm_prompt_logprobs(rollout, p, r) for p, r in pairs])
        return _diff(vllm_lp, torch.cat([_hf_logprobs(model, p, r) for p, r in pairs]))

    before_vs_a, before_vs_b = compare(tiny["model_a"]), compare(tiny["model_b"])
    # the generic path: fp32 CPU tensors, converted and staged on the GPU in 1 MiB buckets (~30 buckets)
    monkeypatch.setattr(vllm_rollout, "WEIGHT_BUCKET_BYTES", 1024**2)
    rollout.update_weights((name, t.detach().float().cpu()) for name, t in tiny["model_b"].state_dict().items())
    record("sync_seconds_fp32_cpu_1MiB_buckets", rollout.last_sync_seconds)
    after_vs_b = compare(tiny["model_b"])
    # the trainer's usual path: bf16 tensors already on the GPU, default buckets
    monkeypatch.undo()
    rollout.update_weights(tiny["model_b"].state_dict().items())
    record("sync_seconds_bf16_gpu", rollout.last_sync_seconds)
    again_vs_b = compare(tiny["model_b"])

    record("prompt_logprob_before_update_vs_a_max", before_vs_a[0])
    record("prompt_logprob_before_update_vs_b_mean", before_vs_b[1])
    record("prompt_logprob_after_update_vs_b_max", after_vs_b[0])
    record("prompt_logprob_after_update_vs_b_mean", after_vs_b[1])
    assert before_vs_a[0] < LOGPROB_TOLERANCE
    assert before_vs_b[1] > 0.1  # the engine really held other weights before
    assert after_vs_b[0] < LOGPROB_TOLERANCE and after_vs_b[1] < MEAN_TOLERANCE
    assert again_vs_b[0] < LOGPROB_TOLERANCE

    # sampled log-probs (greedy: raw logits) follow the new weights too
    greedy = rollout.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True))
    sampled_diff = _diff(
        torch.cat([torch.tensor(c.logprobs) for c in greedy]),
        torch.cat([_hf_logprobs(tiny["model_b"], c.prompt_ids, c.response_ids) for c in greedy]),
    )
    record("greedy_sampled_logprob_after_update_vs_b_max", sampled_diff[0])
    assert sampled_diff[0] < LOGPROB_TOLERANCE


def _constant_output_weights(weights, favoured_ids):
    """Weights whose next-token logits are the same after every prefix: 25.6 for `favoured_ids`, 0 elsewhere.

    Every embedding row is all ones and every attention and MLP block outputs zero (o_proj and down_proj are
    zero), so the final hidden state is norm(ones) = ones and the logits are lm_head @ ones.
    """
    crafted = {}
    for name, tensor in weights.items():
        if name == "model.embed_tokens.weight" or name == "model.norm.weight":
            tensor = torch.ones_like(tensor)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            tensor = torch.zeros_like(tensor)
        elif name == "lm_head.weight":
            tensor = torch.zeros_like(tensor)
            tensor[list(favoured_ids)] = 0.1  # 0.1 * 256 hidden units = 25.6
        crafted[name] = tensor
    return crafted


def test_eos_and_stop_token_ids_end_the_response_and_are_kept(engines, tiny):
    rollout = engines(1)
    ids = tiny["ids"]
    weights = tiny["model_b"].state_dict()
    prompts = _prompts(ids, seed=3)
    try:
        # the tokenizer's EOS and generation_config's second EOS, each with probability ~1/2
        rollout.update_weights(_constant_output_weights(weights, [ids["eos"], ids["endoftext"]]).items())
        completions = rollout.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=8))
        assert [c.finish_reason for c in completions] == ["stop"] * 6
        assert all(c.response_ids in ([ids["eos"]], [ids["endoftext"]]) for c in completions)
        assert all(c.text == "" for c in completions)  # special tokens are skipped in the text
        assert all(abs(c.logprobs[0] - math.log(0.5)) < 1e-2 for c in completions)
        record("eos_ids_seen", sorted({c.response_ids[0] for c in completions}))
        long = rollout.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, ignore_eos=True))
        assert all(len(c.response_ids) == 8 and c.finish_reason == "length" for c in long)

        # an ordinary token: it ends the response only when it is a stop id
        token = 10
        rollout.update_weights(_constant_output_weights(weights, [token]).items())
        free = rollout.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8))
        assert all(c.response_ids == [token] * 8 and c.finish_reason == "length" for c in free)
        assert all(max(abs(lp) for lp in c.logprobs) < 1e-3 for c in free)
        stopped = rollout.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, stop_token_ids=(token,)))
        assert all(c.response_ids == [token] and c.finish_reason == "stop" for c in stopped)
    finally:
        rollout.update_weights(weights.items())


def test_sleep_level_1_frees_memory_and_keeps_weights(engines, tiny):
    rollout = engines(1)
    prompts = _prompts(tiny["ids"], seed=4)
    reference = rollout.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True))
    awake = _free_gib()
    rollout.sleep()
    asleep = _free_gib()
    with pytest.raises(RuntimeError, match="asleep"):
        rollout.generate(prompts, SamplingParams())
    rollout.wake_up()
    woken = _free_gib()
    record("sleep1_freed_gib", asleep - awake)
    record("sleep1_free_after_wake_minus_before_gib", woken - awake)
    assert asleep - awake > 1.0  # the KV cache (~25% of the GPU) and the weights
    assert abs(woken - awake) < 0.5

    # level 1 kept the weights (model B, pushed earlier) on CPU: same log-probs as before sleeping
    pairs = [(c.prompt_ids, c.response_ids) for c in reference]
    max_diff, _ = _diff(
        torch.cat([_vllm_prompt_logprobs(rollout, p, r) for p, r in pairs]),
        torch.cat([_hf_logprobs(tiny["model_b"], p, r) for p, r in pairs]),
    )
    record("sleep1_prompt_logprob_vs_b_max", max_diff)
    assert max_diff < LOGPROB_TOLERANCE
    # the trainer's order: wake_up, update_weights, generate
    rollout.sleep()
    rollout.wake_up()
    rollout.update_weights(tiny["model_b"].state_dict().items())
    assert len(rollout.generate(prompts, SamplingParams(n=2, max_new_tokens=4))) == 6


def test_sleep_level_2_drops_weights_until_they_are_pushed(engines, tiny):
    python_rng, cpu_rng, cuda_rng = random.getstate(), torch.get_rng_state(), torch.cuda.get_rng_state()
    rollout = engines(2)  # closes the level-1 engine; this one starts from model A on disk
    # vLLM seeds every generator while it starts; the trainer's streams are put back
    assert random.getstate() == python_rng
    assert torch.equal(cpu_rng, torch.get_rng_state()) and torch.equal(cuda_rng, torch.cuda.get_rng_state())
    prompts = _prompts(tiny["ids"], seed=5)
    rollout.generate(prompts, SamplingParams(n=2, max_new_tokens=8))
    awake = _free_gib()
    rollout.sleep()
    asleep = _free_gib()
    rollout.wake_up()  # weights only
    weights_only = _free_gib()
    with pytest.raises(RuntimeError, match="update_weights"):
        rollout.generate(prompts, SamplingParams())
    rollout.update_weights(tiny["model_b"].state_dict().items())
    record("sleep2_sync_seconds_after_wake", rollout.last_sync_seconds)
    # generate wakes the KV cache
    completions = rollout.generate(prompts, SamplingParams(n=2, max_new_tokens=8, ignore_eos=True))
    woken = _free_gib()
    record("sleep2_freed_gib", asleep - awake)
    record("sleep2_kv_still_free_after_weight_wake_gib", weights_only - awake)
    record("sleep2_free_after_generate_minus_before_gib", woken - awake)
    assert asleep - awake > 1.0
    assert weights_only - awake > 1.0  # the KV cache stays released until generate
    assert abs(woken - awake) < 0.5
    assert len(completions) == 6 and all(len(c.response_ids) == 8 for c in completions)

    pairs = [(c.prompt_ids, c.response_ids) for c in completions]
    max_diff, mean_diff = _diff(
        torch.cat([_vllm_prompt_logprobs(rollout, p, r) for p, r in pairs]),
        torch.cat([_hf_logprobs(tiny["model_b"], p, r) for p, r in pairs]),
    )
    record("sleep2_prompt_logprob_vs_b_max", max_diff)
    record("sleep2_prompt_logprob_vs_b_mean", mean_diff)
    assert max_diff < LOGPROB_TOLERANCE and mean_diff < MEAN_TOLERANCE

    # sleeping again straight after a weights-only wake (no generate in between) is safe
    rollout.sleep()
    rollout.wake_up()
    rollout.update_weights(tiny["model_b"].state_dict().items())
    assert len(rollout.generate(prompts, SamplingParams(max_new_tokens=4))) == 3
