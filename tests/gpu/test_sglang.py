"""SGLangRollout on a GPU: the behaviour suite, then SGLang-specific checks of log-probs, lengths, in-place
weight sync and memory release.

The checkpoint is rlkit.rollout.behaviour's tiny random Qwen2 (hidden 128, head_dim 64, word-level tokenizer);
the reference is the same checkpoint in fp32 transformers on the GPU. SGLang runs it in bf16, so per-token
log-probs agree to bf16 noise (max ~1e-2), while two different random models differ by far more.
Measured numbers are printed and, when RLKIT_GPU_NUMBERS names a file, written there as JSON.

Run on the GPU machine with scripts/gpu/sglang_tests.sh; skipped where CUDA or SGLang is missing.
One engine lives in this process from the first test to the last.
"""

import json
import os
import time

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("sglang")

from rlkit.config.schema import RolloutConfig  # noqa: E402
from rlkit.distributed import DistInfo  # noqa: E402
from rlkit.registry import ROLLOUT_ENGINES  # noqa: E402
from rlkit.rollout import sglang as sglang_rollout  # noqa: E402
from rlkit.rollout.sglang_options import SGLangOptions  # noqa: E402
from rlkit.rollout.base import Completion, RolloutEngine, SamplingParams  # noqa: E402
from rlkit.rollout.behaviour import (  # noqa: E402
    CHECKS, Reference, build_tiny_checkpoint, reference_logprobs, tiny_prompts,
)
from rlkit.rollout.sglang import SGLangRollout  # noqa: E402

pytestmark = pytest.mark.gpu

# |SGLang (bf16) - transformers (fp32)| per token. The behaviour checkpoint's wide random weights (std 0.2)
# amplify bf16 rounding: on CPU, bf16 against fp32 transformers differ by max 0.38, mean 0.04, p99 0.22 over
# 1,500 tokens. Wrong maths shows up far above these: ignoring the temperature ~0.7 per token on average,
# renormalising after top-k/top-p ~0.5, the old weights after a sync ~7.
LOGPROB_ATOL = 0.6  # the largest single-token difference
MEAN_ATOL = 0.1  # the mean over a test's tokens
GIB = 1024**3
NUMBERS: dict[str, float] = {}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    path = tmp_path_factory.mktemp("tiny")
    # head_dim 64: the GPU attention kernels take it, while the model stays tiny
    tokenizer = build_tiny_checkpoint(path, hidden_size=128, num_heads=2, num_kv_heads=1)
    return Reference(str(path), tokenizer, tiny_prompts(tokenizer), "cuda:0", LOGPROB_ATOL, MEAN_ATOL)


@pytest.fixture(scope="module")
def rollout(reference):
    options = SGLangOptions(mem_fraction_static=0.3, disable_cuda_graph=True)
    start = time.perf_counter()
    engine = SGLangRollout(RolloutConfig(name="sglang"), options, reference.model_path, reference.tokenizer,
                           DistInfo(device="cuda:0"), seed=3)
    _record("engine_start_seconds", time.perf_counter() - start)
    yield engine
    engine.close()
    path = os.environ.get("RLKIT_GPU_NUMBERS")
    if path:
        with open(path, "w") as file:
            json.dump(NUMBERS, file, indent=1, sort_keys=True)


# -- helpers -----------------------------------------------------------------------------------
def _record(name, value):
    NUMBERS[name] = value
    print(f"[sglang-gpu] {name} = {value}")


def _free_gib() -> float:
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0] / GIB


def _errors(completions, expected) -> torch.Tensor:
    """|returned - expected| over every response token, flat."""
    return torch.cat([(torch.tensor(c.logprobs) - e).abs() for c, e in zip(completions, expected)])


def _pairs_as_completions(pairs, logprobs=None) -> list[Completion]:
    logprobs = logprobs or [None] * len(pairs)
    return [Completion(p, r, lp, "length") for (p, r), lp in zip(pairs, logprobs)]


def _sglang_scores(rollout, pairs) -> list[list[float]]:
    """SGLang's log-probs of each fixed response given its prompt: input log-probs of prompt + response."""
    outputs = rollout.engine.generate(
        input_ids=[p + r for p, r in pairs],
        sampling_params={"max_new_tokens": 1, "temperature": 0.0},
        return_logprob=True,
        logprob_start_len=0,
    )
    scores = []
    for (prompt, response), output in zip(pairs, outputs):
        entries = output["meta_info"]["input_token_logprobs"]  # (logprob, id, text) per input token; first None
        assert len(entries) == len(prompt) + len(response)
        scores.append([float(entry[0]) for entry in entries[len(prompt) :]])
    return scores


def _kept_mass(model, completions, temperature, top_k, top_p) -> torch.Tensor:
    """Probability mass top-k then top-p keep at each response position, flat (SGLang's rule: a token stays
    while the mass before it is at most top_p)."""
    device = next(model.parameters()).device
    masses = []
    with torch.no_grad():
        for c in completions:
            ids = torch.tensor([c.prompt_ids + c.response_ids], device=device)
            logits = model(ids).logits[0, len(c.prompt_ids) - 1 : -1].float() / temperature
            probs = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values
            keep = torch.arange(probs.shape[-1], device=device) < top_k
            keep = keep & ((probs.cumsum(-1) - probs) <= top_p)
            masses.append((probs * keep).sum(-1).cpu())
    return torch.cat(masses)


# -- the behaviour suite -----------------------------------------------------------------------
def test_registered_and_implements_the_protocol(rollout):
    assert ROLLOUT_ENGINES.get("sglang") is SGLangRollout
    assert isinstance(rollout, RolloutEngine)


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__.removeprefix("check_") for check in CHECKS])
def test_behaviour(rollout, reference, check):
    check(rollout, reference)


# -- SGLang-specific ---------------------------------------------------------------------------
def test_logprobs_are_temperature_scaled_and_not_renormalised_after_truncation(rollout, reference):
    temperature, top_k, top_p = 0.6, 3, 0.5  # aggressive truncation: kept mass well below 1
    params = SamplingParams(n=4, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=16)
    completions = rollout.generate(reference.prompts, params)
    assert [c.prompt_ids for c in completions] == [p for p in reference.prompts for _ in range(4)]

    untruncated = _errors(completions, reference_logprobs(reference.model, completions, temperature))
    unscaled = _errors(completions, reference_logprobs(reference.model, completions, 1.0))
    # a renormalised log-prob would exceed the untruncated one by -log(kept mass) at its step
    renormalisation = -_kept_mass(reference.model, completions, temperature, top_k, top_p).log()
    _record("logprob_vs_untruncated_T0.6_max", untruncated.max().item())
    _record("logprob_vs_untruncated_T0.6_mean", untruncated.mean().item())
    _record("logprob_vs_T1_mean", unscaled.mean().item())
    _record("renormalisation_shift_mean", renormalisation.mean().item())
    assert untruncated.max() <= LOGPROB_ATOL and untruncated.mean() <= MEAN_ATOL
    assert unscaled.mean() > 3 * untruncated.mean()  # the temperature is applied
    assert renormalisation.mean() > 3 * untruncated.mean()  # and top-k/top-p do not renormalise


def test_ignore_eos_gives_exact_lengths(rollout, reference):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=24, ignore_eos=True)
    completions = rollout.generate(reference.prompts, params)
    assert len(completions) == 3 * len(reference.prompts)
    assert all(len(c.response_ids) == 24 and c.finish_reason == "length" for c in completions)
    assert all(len(c.logprobs) == 24 and max(c.logprobs) <= 1e-5 for c in completions)
    # the tiny model samples EOS about once per ten tokens: ignore_eos really ran past it
    assert any(reference.eos_token_ids & set(c.response_ids) for c in completions)


def test_weight_sync_is_exact_on_fixed_continuations(rollout, reference, monkeypatch):
    greedy = rollout.generate(reference.prompts, SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True))
    pairs = [(c.prompt_ids, c.response_ids) for c in greedy]
    fixed = _pairs_as_completions(pairs)
    old_reference = reference_logprobs(reference.model, fixed, 1.0)
    other = reference.other_model()
    new_reference = reference_logprobs(other, fixed, 1.0)

    before = _errors(_pairs_as_completions(pairs, _sglang_scores(rollout, pairs)), old_reference)
    # the generic path: fp32 CPU tensors, cast and staged on the GPU in 64 KiB buckets (about ten calls)
    monkeypatch.setattr(sglang_rollout, "WEIGHT_BUCKET_BYTES", 64 * 1024)
    rollout.update_weights((name, tensor.detach().cpu()) for name, tensor in other.state_dict().items())
    _record("sync_seconds_fp32_cpu_64KiB_buckets", rollout.last_sync_seconds)
    monkeypatch.undo()
    scored = _pairs_as_completions(pairs, _sglang_scores(rollout, pairs))
    after_vs_new, after_vs_old = _errors(scored, new_reference), _errors(scored, old_reference)
    _record("fixed_logprob_before_vs_old_max", before.max().item())
    _record("fixed_logprob_after_vs_new_max", after_vs_new.max().item())
    _record("fixed_logprob_after_vs_new_mean", after_vs_new.mean().item())
    _record("fixed_logprob_after_vs_old_mean", after_vs_old.mean().item())
    assert before.max() <= LOGPROB_ATOL
    assert after_vs_new.max() <= LOGPROB_ATOL and after_vs_new.mean() <= MEAN_ATOL
    assert after_vs_old.mean() > 10 * MEAN_ATOL  # the old weights are gone

    # the trainer's usual path: tensors already on the GPU, default buckets; sampled log-probs follow too
    rollout.update_weights(reference.original_weights())
    _record("sync_seconds_fp32_gpu_default_buckets", rollout.last_sync_seconds)
    restored = _errors(_pairs_as_completions(pairs, _sglang_scores(rollout, pairs)), old_reference)
    sampled = rollout.generate(reference.prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=10))
    sampled_error = _errors(sampled, reference_logprobs(reference.model, sampled, 1.0))
    _record("fixed_logprob_restored_vs_old_max", restored.max().item())
    assert restored.max() <= LOGPROB_ATOL and sampled_error.max() <= LOGPROB_ATOL


def test_release_and_resume_memory_then_push_weights_and_generate(rollout, reference):
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    before = rollout.generate(reference.prompts, greedy)
    awake = _free_gib()
    for cycle in range(2):
        rollout.sleep()
        asleep = _free_gib()
        with pytest.raises(RuntimeError, match="asleep"):
            rollout.generate(reference.prompts, greedy)
        rollout.wake_up()  # the weights' memory only
        weights_only = _free_gib()
        with pytest.raises(RuntimeError, match="update_weights"):
            rollout.generate(reference.prompts, greedy)
        rollout.update_weights(reference.original_weights())
        after = rollout.generate(reference.prompts, greedy)  # takes the KV cache back
        woken = _free_gib()
        _record(f"cycle{cycle}_released_gib", asleep - awake)
        _record(f"cycle{cycle}_kv_still_released_after_wake_gib", weights_only - awake)
        _record(f"cycle{cycle}_free_after_generate_minus_before_gib", woken - awake)
        _record(f"cycle{cycle}_sync_seconds_after_wake", rollout.last_sync_seconds)
        assert asleep - awake > 1.0  # the KV cache (most of 30% of the GPU) and the weights
        assert weights_only - awake > 1.0
        assert abs(woken - awake) < 1.0
        # first tokens come from the prefill alone; log-probs follow the pushed weights
        assert [c.response_ids[:1] for c in after] == [c.response_ids[:1] for c in before]
        error = _errors(after, reference_logprobs(reference.model, after, 0.0))
        assert error.max() <= LOGPROB_ATOL


def test_throughput(rollout, reference):
    prompts = [reference.prompts[i % len(reference.prompts)] for i in range(64)]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=128, ignore_eos=True)
    start = time.perf_counter()
    completions = rollout.generate(prompts, params)
    seconds = time.perf_counter() - start
    assert len(completions) == 256 and all(len(c.response_ids) == 128 for c in completions)
    _record("tokens_per_second_64x4x128_tiny", 256 * 128 / seconds)
