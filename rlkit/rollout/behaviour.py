"""Behavioural checks every rollout engine must pass, whatever its backend.

Each `check_*` takes an engine and a `Reference` (the same checkpoint loaded in plain transformers) and
raises AssertionError on a broken contract. The hf engine runs them on CPU; vLLM and SGLang run the very
same checks on GPU (`tests/rollout_behaviour`), with a looser log-prob tolerance for bf16.

    ref = Reference(model_path, tokenizer, prompts=tiny_prompts(tokenizer))
    run_all(lambda: HFRollout(RolloutConfig(), HFOptions(), model_path, tokenizer, DistInfo()), ref)

Checks that change the weights put the original ones back, so they may run in any order on one engine.
Every engine is used as the trainer uses it: wake_up -> update_weights -> generate -> sleep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from rlkit.rollout.base import Completion, RolloutEngine, SamplingParams

EngineFactory = Callable[[], RolloutEngine]

_WORDS = (
    "the a cat dog runs jumps over under red blue green fast slow one two three four five six seven eight nine "
    "ten plus minus equals what is answer yes no user assistant hello world model token reward policy value"
).split()


# ---------------------------------------------------------------------------------------------
# a tiny checkpoint (no downloads)
# ---------------------------------------------------------------------------------------------
def build_tiny_checkpoint(
    directory: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
) -> Any:
    """Write a random Qwen2ForCausalLM and its tokenizer to `directory`; returns the tokenizer.

    The tokenizer is a Qwen2Tokenizer (byte-level BPE, 384 tokens, trained here on a few words):
    transformers maps a saved `qwen2` model to that class, so any other kind would change its ids when
    vLLM, SGLang or the trainer reload it from the folder. `<|pad|>` is 0, `<|im_end|>` (EOS) is 1.
    The weights are drawn wide (std 0.2) so that distributions are peaked rather than near-uniform, and the
    EOS row of the LM head is set so that EOS is sampled about once per ten tokens: responses end both ways
    ("stop" and "length").
    """
    import json
    import random

    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    rng = random.Random(seed)
    texts = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(500)]
    bpe = Tokenizer(models.BPE())  # Qwen2Tokenizer's normaliser and pre-tokenizer, so its merges carry over
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<|pad|>", "<|im_end|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    ))
    trained = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"], merges=[tuple(merge) for merge in trained["merges"]],
        eos_token="<|im_end|>", pad_token="<|pad|>", unk_token="<|endoftext|>",
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).eval()
        _make_eos_likely(model, tokenizer.eos_token_id, probability=0.1)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return tokenizer


@torch.no_grad()
def _make_eos_likely(model, eos_token_id: int, probability: float) -> None:
    """Point the LM head's EOS row along the mean final hidden state, scaled so that EOS has `probability`
    on average over random inputs (bisection on the scale)."""
    inputs = torch.randint(3, model.config.vocab_size, (16, 24))
    hidden = model.model(inputs).last_hidden_state  # after the final norm
    direction = hidden.mean(dim=(0, 1))
    direction /= direction.norm()
    logits = model.lm_head(hidden)
    low, high = 0.0, 64.0
    for _ in range(40):
        scale = (low + high) / 2
        logits[..., eos_token_id] = scale * hidden @ direction
        if torch.softmax(logits, dim=-1)[..., eos_token_id].mean() < probability:
            low = scale
        else:
            high = scale
    model.lm_head.weight[eos_token_id] = scale * direction


def tiny_prompts(tokenizer) -> list[list[int]]:
    """Four prompts of different lengths (1 to ~20 tokens), so left padding matters."""
    texts = ["the cat runs over the red dog", "a", "what is two plus two", "hello world one two three four five six"]
    return [tokenizer(text, add_special_tokens=False).input_ids for text in texts]


# ---------------------------------------------------------------------------------------------
# the reference
# ---------------------------------------------------------------------------------------------
@dataclass
class Reference:
    """What an engine is judged against: its checkpoint in plain transformers, fp32, on `device`.

    Engine log-probs may differ from the reference's by at most `logprob_max_error` at any token and by
    `logprob_mean_error` on average. fp32 engines: 1e-4 and 1e-4. bf16 engines: 0.5 and 0.1 (hf in bf16
    on an H200 measured 0.29 and 0.048 on the suite's checkpoint, whose log-probs under other weights
    differ by 5 on average).
    """

    model_path: str
    tokenizer: Any
    prompts: list[list[int]]
    device: str = "cpu"
    logprob_max_error: float = 1e-4
    logprob_mean_error: float = 1e-4
    _extra_models: dict[int, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def model(self):
        from rlkit.models.loading import load_causal_lm

        model = load_causal_lm(self.model_path, dtype=torch.float32)  # offline
        return model.to(self.device).eval().requires_grad_(False)

    def original_weights(self) -> Iterator[tuple[str, Tensor]]:
        """The checkpoint's weights, one at a time, as a trainer's `full_weights` yields them."""
        return ((name, tensor.detach()) for name, tensor in self.model.state_dict().items())

    def other_model(self, seed: int = 1234):
        """A model of the same shape with freshly drawn weights (as wide as the checkpoint's)."""
        if seed not in self._extra_models:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                other = type(self.model)(self.model.config)
            self._extra_models[seed] = other.to(self.device).eval().requires_grad_(False)
        return self._extra_models[seed]

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}


@torch.no_grad()
def reference_logprobs(model, completions: list[Completion], temperature: float) -> list[Tensor]:
    """log_softmax(logits / temperature) of each response token under `model`, one unpadded forward each.

    Greedy completions (temperature 0) are scored under the raw logits (temperature 1).
    """
    scale = temperature if temperature > 0 else 1.0
    device = next(model.parameters()).device
    result = []
    for completion in completions:
        num_prompt = len(completion.prompt_ids)
        input_ids = torch.tensor([completion.prompt_ids + completion.response_ids], device=device)
        logits_NV = model(input_ids).logits[0, num_prompt - 1 : -1].float()  # position i predicts token i+1
        logprobs_NV = torch.log_softmax(logits_NV / scale, dim=-1)
        result.append(logprobs_NV.gather(1, input_ids[0, num_prompt:, None]).squeeze(1).cpu())
    return result


def logprob_errors(completions: list[Completion], reference: list[Tensor]) -> tuple[float, float]:
    """Largest and mean |returned log-prob - reference log-prob| over every response token."""
    errors = torch.cat([torch.zeros(0)] + [
        (torch.tensor(completion.logprobs, dtype=torch.float32) - expected).abs()
        for completion, expected in zip(completions, reference)
    ])
    return (errors.max().item(), errors.mean().item()) if errors.numel() else (0.0, 0.0)


def assert_logprobs_match(completions: list[Completion], model, temperature: float, ref: Reference, what: str) -> None:
    """The completions' log-probs are `model`'s within the reference's tolerances."""
    largest, mean = logprob_errors(completions, reference_logprobs(model, completions, temperature))
    assert largest <= ref.logprob_max_error and mean <= ref.logprob_mean_error, (
        f"{what}: log-probs off by {largest:.2e} at most and {mean:.2e} on average; "
        f"allowed {ref.logprob_max_error:.0e} and {ref.logprob_mean_error:.0e}"
    )


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------
def check_generate(engine: RolloutEngine, ref: Reference) -> None:
    """n completions per prompt, prompt-major; lengths, finish reasons, log-probs and text are consistent."""
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=12)
    completions = engine.generate(ref.prompts, params)
    assert len(completions) == len(ref.prompts) * params.n, f"{len(completions)} completions"
    # build_tiny_checkpoint samples EOS about once per ten tokens: 32 responses end both ways.
    reasons = {(c.finish_reason, len(c.response_ids) > 1) for c in completions}
    assert {("stop", True), ("length", True)} <= reasons, f"finish reasons and lengths: {reasons}"
    for index, completion in enumerate(completions):
        where = f"completion {index} (prompt {index // params.n})"
        assert completion.prompt_ids == ref.prompts[index // params.n], f"{where}: prompt out of order"
        _check_ending(completion, ref.eos_token_ids, params.max_new_tokens, where)
        assert completion.logprobs is not None and len(completion.logprobs) == len(completion.response_ids), where
        assert all(lp <= 1e-5 and lp == lp for lp in completion.logprobs), f"{where}: log-probs {completion.logprobs}"
        expected_text = ref.tokenizer.decode(completion.response_ids, skip_special_tokens=True)
        assert completion.text == expected_text, f"{where}: text {completion.text!r} != {expected_text!r}"
    assert engine.generate([], params) == [], "no prompts must give no completions"


def check_logprobs(engine: RolloutEngine, ref: Reference) -> None:
    """Returned log-probs equal a forward pass's log_softmax(logits / T), untruncated by top-k/top-p."""
    for params in (
        SamplingParams(n=2, temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=10),
        SamplingParams(n=1, temperature=0.0, max_new_tokens=10),
    ):
        assert_logprobs_match(engine.generate(ref.prompts, params), ref.model, params.temperature, ref, str(params))


def check_ignore_eos(engine: RolloutEngine, ref: Reference) -> None:
    """ignore_eos gives exactly max_new_tokens tokens, finish_reason 'length', sampling past EOS (not masking it)."""
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, ignore_eos=True)
    completions = engine.generate(ref.prompts, params)
    for index, completion in enumerate(completions):
        assert len(completion.response_ids) == params.max_new_tokens, f"completion {index}: {completion}"
        assert completion.finish_reason == "length", f"completion {index}: {completion.finish_reason}"
    assert any(ref.eos_token_ids & set(c.response_ids) for c in completions), "EOS was never sampled"
    assert_logprobs_match(completions, ref.model, params.temperature, ref, "ignore_eos (is EOS masked?)")


def check_stop_tokens(engine: RolloutEngine, ref: Reference) -> None:
    """A stop token ends a response, which keeps it; greedy with the first greedy token as stop gives [it]."""
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    first_tokens = [c.response_ids[0] for c in engine.generate(ref.prompts, greedy)]
    index, stop = next((i, t) for i, t in enumerate(first_tokens) if t not in ref.eos_token_ids)
    stopped = engine.generate(ref.prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=8,
                                                          stop_token_ids=(stop,)))
    assert stopped[index].response_ids == [stop], f"prompt {index}: {stopped[index].response_ids}, stop {stop}"
    assert stopped[index].finish_reason == "stop"
    sampled = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, stop_token_ids=(stop,))
    for i, completion in enumerate(engine.generate(ref.prompts, sampled)):
        _check_ending(completion, ref.eos_token_ids | {stop}, sampled.max_new_tokens, f"completion {i}")


def check_weight_sync(engine: RolloutEngine, ref: Reference) -> None:
    """After update_weights the engine samples with the new weights; the old ones come back the same way."""
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=10)
    other = ref.other_model()
    engine.update_weights((name, tensor.detach()) for name, tensor in other.state_dict().items())
    completions = engine.generate(ref.prompts, params)
    assert_logprobs_match(completions, other, params.temperature, ref, "after update_weights, against the new weights")
    _, old_distance = logprob_errors(completions, reference_logprobs(ref.model, completions, params.temperature))
    assert old_distance > max(0.5, 10 * ref.logprob_mean_error), f"the old weights explain these ({old_distance})"

    engine.update_weights(ref.original_weights())
    completions = engine.generate(ref.prompts, params)
    assert_logprobs_match(completions, ref.model, params.temperature, ref, "after restoring the weights")


def check_weight_errors(engine: RolloutEngine, ref: Reference) -> None:
    """An unknown name or a wrong shape raises ValueError naming the weight."""
    name, tensor = next(iter(ref.original_weights()))
    for bad_name, bad_tensor in (("model.no_such_layer.weight", tensor), (name, tensor[..., :1].clone())):
        try:
            engine.update_weights(iter([(bad_name, bad_tensor)]))
        except ValueError as error:
            assert bad_name in str(error), f"the error does not name '{bad_name}': {error}"
        else:
            raise AssertionError(f"update_weights accepted '{bad_name}' of shape {tuple(bad_tensor.shape)}")
    engine.update_weights(ref.original_weights())


def check_sleep_wake(engine: RolloutEngine, ref: Reference) -> None:
    """sleep -> wake_up -> update_weights -> generate samples as before sleeping."""
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    before = engine.generate(ref.prompts, greedy)
    for _ in range(2):  # twice: a second cycle must work as the first did
        engine.sleep()
        engine.wake_up()
        engine.update_weights(ref.original_weights())  # engines that drop weights when asleep need them back
        after = engine.generate(ref.prompts, greedy)
        # First tokens come from the prefill alone, so even engines with run-to-run noise agree on them.
        assert [c.response_ids[:1] for c in after] == [c.response_ids[:1] for c in before]
        assert_logprobs_match(after, ref.model, 0.0, ref, "after sleep and wake_up")


CHECKS: tuple[Callable[[RolloutEngine, Reference], None], ...] = (
    check_generate,
    check_logprobs,
    check_ignore_eos,
    check_stop_tokens,
    check_weight_sync,
    check_weight_errors,
    check_sleep_wake,
)


def run_all(make_engine: EngineFactory, ref: Reference) -> list[str]:
    """Build one engine and run every check on it in order; returns the names of the checks run."""
    engine = make_engine()
    assert isinstance(engine, RolloutEngine), f"{type(engine).__name__} does not implement RolloutEngine"
    for check in CHECKS:
        check(engine, ref)
    return [check.__name__ for check in CHECKS]


def _check_ending(completion: Completion, stop_ids: set[int], max_new_tokens: int, where: str) -> None:
    """A response stops at its first stop id (kept, finish 'stop') or runs to max_new_tokens ('length')."""
    response = completion.response_ids
    assert 1 <= len(response) <= max_new_tokens, f"{where}: {len(response)} tokens"
    assert not stop_ids & set(response[:-1]), f"{where}: a stop id inside the response {response}"
    if completion.finish_reason == "stop":
        assert response[-1] in stop_ids, f"{where}: 'stop' but ends with {response[-1]}"
    else:
        assert completion.finish_reason == "length", f"{where}: finish_reason {completion.finish_reason!r}"
        assert len(response) == max_new_tokens and response[-1] not in stop_ids, f"{where}: 'length' at {response}"
