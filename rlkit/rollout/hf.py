"""The Hugging Face `generate` rollout engine: slow, but it runs anywhere torch runs (CPU included).

It holds its own unsharded copy of the policy and takes the trainer's weights in place through
`update_weights`, so it samples with the current training weights once they are pushed.

Log-probs. Each sampled token's log-prob is taken under softmax(logits / temperature), *before* top-k/top-p
truncation (raw logits for greedy): that is what the trainer recomputes. A logits processor records it one
step behind during `generate` (at step t+1 the token sampled at step t is the last input id), so memory
stays at one (rows, vocab) tensor instead of `output_logits`' (rows, vocab) per step, and the numbers come
from the very forward passes that sampled the tokens, not from a second pass.

Shape legend: R rows (prompts x n) in one `generate` call, S prompt width, N new tokens, V vocabulary.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from rlkit.config.rollouts import RolloutConfig
from rlkit.distributed import DistInfo
from rlkit.models.loading import load_causal_lm
from rlkit.rollout.base import (
    Completion,
    SamplingParams,
    call_seed,
    check_prompts,
    stop_token_ids,
    unique_ids,
)
from rlkit.rollout.hf_options import HFOptions
from rlkit.rollout.weights import check_weight


class _LogprobRecorder(LogitsProcessor):
    """Records log_softmax(logits / temperature) at each sampled token, one step behind.

    transformers runs user processors after its own non-sampling processors (none are active with the
    clean generation config HFRollout uses) and before the temperature/top-k/top-p warpers, so `scores`
    here are the model's raw fp32 logits.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self._previous_RV: Tensor | None = None
        self._columns: list[Tensor] = []  # (R,) per step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._previous_RV is not None:
            self._take(input_ids[:, -1])
        self._previous_RV = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def _take(self, tokens_R: Tensor) -> None:
        self._columns.append(self._previous_RV.gather(1, tokens_R[:, None]).squeeze(1))

    def finish(self, last_tokens_R: Tensor) -> Tensor:
        """Log-probs of every generated column, (R, N); `last_tokens_R` is the final column."""
        self._take(last_tokens_R)
        self._previous_RV = None
        return torch.stack(self._columns, dim=1)


class HFRollout:
    """RolloutEngine over `model.generate` with its own copy of the weights.

    Args:
        config: the rollout section (sampling defaults live in the trainer, which turns them into SamplingParams).
        options: the hf block (`batch_size` prompts per generate call).
        model_path: local Hugging Face folder of the initial policy.
        tokenizer: the run's tokenizer (pad, EOS and decoding).
        dist: this process's rank and device; sampling streams differ by rank.
        dtype: weights' dtype; default bf16 on cuda, fp32 on cpu.
        seed: base seed; call k on rank r samples under seed + k + r * 1000003 (params.seed, when given, instead).
        trust_remote_code: allow custom modelling code in model_path.
    """

    def __init__(
        self,
        config: RolloutConfig,
        options: HFOptions,
        model_path: str,
        tokenizer,
        dist: DistInfo,
        *,
        dtype: torch.dtype | None = None,
        seed: int = 1,
        trust_remote_code: bool = False,
    ):
        self.config = config
        self.options = options
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.dist = dist
        self.device = torch.device(dist.device)
        self.seed = seed
        self.num_generate_calls = 0
        self._asleep = False
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        model = load_causal_lm(model_path, dtype=dtype, trust_remote_code=trust_remote_code)  # offline
        self.model = model.to(self.device).eval().requires_grad_(False)

        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError(f"the tokenizer of {model_path} has neither a pad nor an EOS token; give it one of them")
        model_eos = self.model.generation_config.eos_token_id
        model_eos = model_eos if isinstance(model_eos, list) else [model_eos]
        self.eos_token_ids = unique_ids([tokenizer.eos_token_id, *model_eos])
        # The checkpoint's generation_config.json (sampling defaults, repetition penalty, ...) would fill every
        # option left unset in a call; a clean one makes SamplingParams the only source of sampling options.
        self.model.generation_config = GenerationConfig(pad_token_id=self.pad_token_id)

    # -- RolloutEngine --------------------------------------------------------------------------
    def generate(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[Completion]:
        """params.n completions per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]."""
        if self._asleep:
            raise RuntimeError("HFRollout.generate called while asleep; call wake_up() first")
        if self.model is None:
            raise RuntimeError("HFRollout.generate called after close()")
        check_prompts(prompts)
        seed = params.seed if params.seed is not None else call_seed(self.seed, self.num_generate_calls, self.dist.rank)
        self.num_generate_calls += 1
        per_call = self.options.batch_size or max(len(prompts), 1)
        cuda_devices = [] if self.device.type != "cuda" else [
            self.device.index if self.device.index is not None else torch.cuda.current_device()
        ]
        completions: list[Completion] = []
        # fork_rng: sampling is reproducible from (seed, call counter) and leaves the trainer's RNG untouched.
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), per_call):
                completions += self._generate_rows(
                    [list(prompt) for prompt in prompts[start : start + per_call] for _ in range(params.n)], params
                )
        return completions

    def update_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        """Copy full tensors, given in Hugging Face names, into the model in place.

        A name the model lacks or a shape that differs raises ValueError naming it; the tensors before it in
        the stream have already been copied. Tied weights may arrive under either name.
        """
        targets = self.model.state_dict(keep_vars=True)  # every name, tied ones included; references
        shapes = {name: tuple(target.shape) for name, target in targets.items()}
        with torch.no_grad():
            for name, tensor in weights:
                check_weight(name, tensor, shapes, self.model_path)
                targets[name].data.copy_(tensor)

    def sleep(self) -> None:
        """Move the weights to CPU to make room for training (no-op on CPU)."""
        if self.device.type == "cuda" and not self._asleep:
            self.model.to("cpu")
            torch.cuda.empty_cache()
        self._asleep = True

    def wake_up(self) -> None:
        """Bring the weights back to the device."""
        if self.device.type == "cuda" and self._asleep:
            self.model.to(self.device)
        self._asleep = False

    def close(self) -> None:
        """Drop the model copy and give its GPU memory back."""
        if self.model is None:
            return
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- resumption -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """The sampling position: a resumed run that loads it samples what an uninterrupted one would."""
        return {"num_generate_calls": self.num_generate_calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.num_generate_calls = int(state["num_generate_calls"])

    # -- internals ------------------------------------------------------------------------------
    def _generate_rows(self, rows: list[list[int]], params: SamplingParams) -> list[Completion]:
        """One `model.generate` call over rows (already repeated n times), left-padded."""
        width = max(len(row) for row in rows)
        input_ids_RS = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask_RS = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids_RS[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask_RS[i, width - len(row) :] = 1

        sample = params.temperature > 0
        stop_ids = stop_token_ids(params, self.eos_token_ids)
        # Greedy leaves the sampling options unset: transformers flags them as ignored otherwise.
        sampling_options = (
            dict(temperature=params.temperature, top_p=params.top_p, top_k=max(params.top_k, 0)) if sample else {}
        )
        generation_config = GenerationConfig(
            do_sample=sample,
            **sampling_options,
            max_new_tokens=params.max_new_tokens,
            # ignore_eos: no stop id at all, so every response has exactly max_new_tokens tokens
            min_new_tokens=params.max_new_tokens if params.ignore_eos else None,
            eos_token_id=stop_ids or None,
            pad_token_id=self.pad_token_id,
            num_beams=1,
        )
        # The recorder only reads the logits, so sampling is the same with and without it.
        recorder = _LogprobRecorder(params.temperature if sample else 1.0) if params.logprobs else None
        sequences_RL = self.model.generate(
            input_ids=input_ids_RS.to(self.device),
            attention_mask=attention_mask_RS.to(self.device),
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([recorder] if recorder else []),
        )
        new_RN = sequences_RL[:, width:]
        logprobs_RN = recorder.finish(new_RN[:, -1]) if recorder else None
        assert logprobs_RN is None or logprobs_RN.shape == new_RN.shape, (logprobs_RN.shape, new_RN.shape)

        # A response ends at its first stop id, which it keeps (a sampled action); the rest is padding.
        num_new = new_RN.shape[1]
        if stop_ids:
            is_stop_RN = torch.isin(new_RN, torch.tensor(stop_ids, device=new_RN.device))
            stopped_R = is_stop_RN.any(dim=1)
            lengths_R = torch.where(stopped_R, is_stop_RN.int().argmax(dim=1) + 1, num_new)
        else:
            stopped_R = torch.zeros(len(rows), dtype=torch.bool)
            lengths_R = torch.full((len(rows),), num_new)

        completions = []
        logprob_rows = logprobs_RN.tolist() if logprobs_RN is not None else [None] * len(rows)
        for row, tokens, logprobs, length, stopped in zip(
            rows, new_RN.tolist(), logprob_rows, lengths_R.tolist(), stopped_R.tolist()
        ):
            response_ids = tokens[:length]
            completions.append(
                Completion(
                    prompt_ids=row,
                    response_ids=response_ids,
                    logprobs=logprobs[:length] if logprobs is not None else None,
                    finish_reason="stop" if stopped else "length",
                    text=self.tokenizer.decode(response_ids, skip_special_tokens=True),
                )
            )
        return completions
