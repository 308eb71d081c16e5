"""HFRollout on CPU with a tiny random Qwen2 (fp32): sampling contract, log-probs, seeds, weights, sleep."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from rlkit.config.schema import RolloutConfig
from rlkit.distributed import DistInfo
from rlkit.rollout.base import RolloutEngine, SamplingParams, call_seed
from rlkit.rollout.behaviour import build_tiny_checkpoint, reference_logprobs, tiny_prompts
from rlkit.rollout.hf import HFRollout
from rlkit.rollout.hf_options import HFOptions

SAMPLED = SamplingParams(n=3, temperature=0.7, top_k=8, top_p=0.9, max_new_tokens=10)
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=10)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tokenizer = build_tiny_checkpoint(path)
    return str(path), tokenizer


@pytest.fixture(scope="module")
def prompts(checkpoint):
    return tiny_prompts(checkpoint[1])


def make(checkpoint, *, seed: int = 1, rank: int = 0, batch_size: int | None = None, path: str | None = None):
    model_path, tokenizer = checkpoint
    return HFRollout(RolloutConfig(), HFOptions(batch_size=batch_size), path or model_path, tokenizer,
                     DistInfo(rank=rank), seed=seed)


def as_tuples(completions):
    return [(c.prompt_ids, c.response_ids, c.logprobs, c.finish_reason, c.text) for c in completions]


def test_implements_the_protocol(checkpoint):
    assert isinstance(make(checkpoint), RolloutEngine)


def test_n_completions_per_prompt_in_prompt_major_order(checkpoint, prompts):
    completions = make(checkpoint).generate(prompts, SAMPLED)
    # 4 prompts x n=3 -> [p0 s0, p0 s1, p0 s2, p1 s0, ...]
    assert [c.prompt_ids for c in completions] == [p for p in prompts for _ in range(3)]
    assert len({len(p) for p in prompts}) == 4 and min(map(len, prompts)) == 1  # left padding is exercised
    reasons = {c.finish_reason for c in completions}
    assert reasons == {"stop", "length"}  # the tiny model samples EOS often enough to see both
    for c in completions:
        assert c.text == checkpoint[1].decode(c.response_ids, skip_special_tokens=True)
        if c.finish_reason == "stop":  # EOS is kept as the last response token; nothing after it
            assert c.response_ids[-1] == checkpoint[1].eos_token_id
            assert checkpoint[1].eos_token_id not in c.response_ids[:-1]
        else:
            assert len(c.response_ids) == SAMPLED.max_new_tokens


@pytest.mark.parametrize("params", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_logprobs_equal_a_forward_pass(checkpoint, prompts, params):
    """log_softmax(logits / T) of an unpadded forward, without top-k/top-p truncation; raw logits for greedy."""
    completions = make(checkpoint).generate(prompts, params)
    reference = AutoModelForCausalLM.from_pretrained(checkpoint[0], dtype=torch.float32).eval()
    expected = reference_logprobs(reference, completions, params.temperature)
    for completion, logprobs in zip(completions, expected):
        torch.testing.assert_close(torch.tensor(completion.logprobs), logprobs, atol=1e-4, rtol=0)
    if params.top_k > 0:
        # The truncation is not vacuous: somewhere the top-8 tokens hold < 99% of the mass, so log-probs
        # renormalised over them would be larger by -log(mass) > 0.01 than the ones matched above.
        completion = completions[0]
        with torch.no_grad():
            logits = reference(torch.tensor([completion.prompt_ids + completion.response_ids])).logits[0]
        top_mass = torch.softmax(logits / params.temperature, -1).topk(params.top_k, -1).values.sum(-1)
        assert top_mass.min() < 0.99


def test_greedy_is_deterministic_and_independent_of_batching(checkpoint, prompts):
    batched = make(checkpoint).generate(prompts, GREEDY)
    again = make(checkpoint, seed=99).generate(prompts, GREEDY)
    one_by_one = make(checkpoint, batch_size=1).generate(prompts, GREEDY)
    assert [c.response_ids for c in batched] == [c.response_ids for c in again]
    # batch_size=1 has no padding at all: equal outputs mean left padding changes nothing
    assert [c.response_ids for c in batched] == [c.response_ids for c in one_by_one]
    for a, b in zip(batched, one_by_one):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)


def test_a_tokenizer_without_pad_pads_with_eos(checkpoint, prompts):
    model_path, tokenizer = checkpoint
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    engine = HFRollout(RolloutConfig(), HFOptions(), model_path, no_pad, DistInfo())
    assert engine.pad_token_id == tokenizer.eos_token_id
    assert as_tuples(engine.generate(prompts, GREEDY)) == as_tuples(make(checkpoint).generate(prompts, GREEDY))


def test_ignore_eos_gives_exactly_max_new_tokens(checkpoint, prompts):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, ignore_eos=True)
    completions = make(checkpoint).generate(prompts, params)
    assert all(len(c.response_ids) == 12 and c.finish_reason == "length" for c in completions)
    assert any(checkpoint[1].eos_token_id in c.response_ids for c in completions)  # EOS sampled, not stopped at


def test_stop_token_ids_stop_and_are_kept(checkpoint, prompts):
    engine = make(checkpoint)
    free = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=10, ignore_eos=True))
    response = free[0].response_ids
    stop = response[3]  # greedy continues identically, so the stopped response is the prefix through `stop`
    stopped = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=10,
                                                      stop_token_ids=(stop,)))
    cut = response.index(stop) + 1
    eos = checkpoint[1].eos_token_id
    if eos in response[:cut]:
        cut = response.index(eos) + 1
    assert stopped[0].response_ids == response[:cut]
    assert stopped[0].finish_reason == "stop"
    assert stopped[0].logprobs == pytest.approx(free[0].logprobs[:cut], abs=1e-6)


def test_same_seed_same_samples_and_resume_reproduces_the_next_call(checkpoint, prompts):
    first, second = make(checkpoint, seed=5), make(checkpoint, seed=5)
    call_0 = first.generate(prompts, SAMPLED)
    assert as_tuples(call_0) == as_tuples(second.generate(prompts, SAMPLED))
    call_1 = first.generate(prompts, SAMPLED)
    assert as_tuples(call_1) != as_tuples(call_0)  # the counter moves the seed on
    assert first.state_dict() == {"num_generate_calls": 2}

    resumed = make(checkpoint, seed=5)
    resumed.load_state_dict({"num_generate_calls": 1})  # as if restored from a checkpoint after call 0
    assert as_tuples(resumed.generate(prompts, SAMPLED)) == as_tuples(call_1)
    # Other ranks and other seeds sample other streams.
    assert as_tuples(make(checkpoint, seed=5, rank=1).generate(prompts, SAMPLED)) != as_tuples(call_0)
    assert as_tuples(make(checkpoint, seed=6).generate(prompts, SAMPLED)) != as_tuples(call_0)


def test_a_calls_seed_samples_as_the_rank_and_call_it_names(checkpoint, prompts):
    # What a split placement's rollout rank relies on: call_seed(seed, k, r) given in the params samples what
    # rank r's engine samples on its k-th call, from any engine.
    rank_1 = make(checkpoint, seed=5, rank=1)
    rank_1.generate(prompts, SAMPLED)
    expected = rank_1.generate(prompts, SAMPLED)  # rank 1's call 1
    elsewhere = make(checkpoint, seed=7, rank=3)
    seeded = dataclasses.replace(SAMPLED, seed=call_seed(5, 1, 1))
    assert as_tuples(elsewhere.generate(prompts, seeded)) == as_tuples(expected)


def test_generate_leaves_the_global_rng_alone(checkpoint, prompts):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make(checkpoint).generate(prompts, SAMPLED)
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_generation_defaults_do_not_leak(checkpoint, prompts, tmp_path):
    """A generation_config.json with its own sampling defaults must not change what SamplingParams asks for."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint[0])
    model.generation_config = GenerationConfig(
        eos_token_id=checkpoint[1].eos_token_id, do_sample=True, top_k=1, repetition_penalty=5.0, temperature=0.1
    )
    model.save_pretrained(tmp_path)
    with_defaults = make(checkpoint, path=str(tmp_path)).generate(prompts, SAMPLED)
    assert as_tuples(with_defaults) == as_tuples(make(checkpoint).generate(prompts, SAMPLED))


def test_update_weights_equals_a_model_loaded_with_those_weights(checkpoint, prompts, tmp_path):
    torch.manual_seed(1234)
    other = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint[0]))  # new random weights
    other.save_pretrained(tmp_path)
    engine = make(checkpoint, seed=7)
    before = engine.generate(prompts, GREEDY)

    engine.update_weights((name, tensor.detach().clone()) for name, tensor in other.state_dict().items())
    engine.load_state_dict({"num_generate_calls": 0})  # same seed as the freshly loaded engine below
    updated = engine.generate(prompts, SAMPLED)
    loaded = make(checkpoint, seed=7, path=str(tmp_path)).generate(prompts, SAMPLED)
    assert as_tuples(updated) == as_tuples(loaded)

    after = engine.generate(prompts, GREEDY)
    assert [c.response_ids for c in after] != [c.response_ids for c in before]
    expected = reference_logprobs(other.eval(), after, 0.0)
    for completion, logprobs in zip(after, expected):
        torch.testing.assert_close(torch.tensor(completion.logprobs), logprobs, atol=1e-4, rtol=0)


def test_update_weights_rejects_unknown_names_and_wrong_shapes(checkpoint):
    engine = make(checkpoint)
    typo = "model.layers.0.mlp.up_proj.weigth"
    with pytest.raises(ValueError, match=rf"'{re.escape(typo)}'.*did you mean '{re.escape(typo[:-2])}ht'"):
        engine.update_weights([(typo, torch.zeros(128, 64))])
    with pytest.raises(ValueError, match=r"'model\.norm\.weight' has shape \(65,\).*\(64,\)"):
        engine.update_weights([("model.norm.weight", torch.zeros(65))])
    # A broadcastable shape is still a mismatch (copy_ alone would silently broadcast it).
    with pytest.raises(ValueError, match="lm_head.weight"):
        engine.update_weights([("lm_head.weight", torch.zeros(1, 64))])


def test_sleep_and_wake_up_round_trip(checkpoint, prompts):
    engine = make(checkpoint)
    before = engine.generate(prompts, GREEDY)
    engine.sleep()
    with pytest.raises(RuntimeError, match="wake_up"):
        engine.generate(prompts, GREEDY)
    engine.wake_up()
    assert as_tuples(engine.generate(prompts, GREEDY)) == as_tuples(before)
    assert next(engine.model.parameters()).device == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_sleep_moves_the_weights_off_the_gpu(checkpoint, prompts):
    model_path, tokenizer = checkpoint
    engine = HFRollout(RolloutConfig(), HFOptions(), model_path, tokenizer, DistInfo(device="cuda:0"))
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    before = engine.generate(prompts, GREEDY)
    engine.sleep()
    assert next(engine.model.parameters()).device.type == "cpu"
    engine.wake_up()
    assert next(engine.model.parameters()).device.type == "cuda"
    assert as_tuples(engine.generate(prompts, GREEDY)) == as_tuples(before)
