"""The vLLM rollout's pure logic, kept free of any vLLM import so that it runs (and is tested) on CPU.

- `engine_kwargs`: the vllm options block (rollout.vllm) -> keyword arguments of `vllm.LLM`.
- `engine_env`: the environment variables the engine needs, set before vLLM is imported.
- `sampling_kwargs` / `prompt_copies` / `request_seeds`: rlkit's SamplingParams -> keyword arguments of
  `vllm.SamplingParams`, one seed per request.
- `completions_from_outputs`: vLLM's `RequestOutput`s -> `Completion`s, written against duck-typed objects
  (`.prompt_token_ids`, `.outputs[i].{index, token_ids, logprobs, finish_reason}`).

Output handling, chosen for speed (docs/speed_defaults.md). Requests ask for token ids only
(`detokenize=False`): vLLM 0.26's output processor otherwise detokenizes every new token of every sequence at
every step and, with log-probs, decodes each returned token once more on its own (`LogprobsProcessor`), all in
the thread that drives the in-process engine. rlkit decodes each finished response once, with the run's
tokenizer, as the HF and SGLang rollouts do. Log-probs come as vLLM's `FlatLogprobs` (`flat_logprobs=True`):
a few flat lists per response instead of a dict and a `Logprob` object per token.

Log-probs. vLLM 0.26 returns, with `logprobs_mode="processed_logprobs"`, the sampled token's log-prob after
temperature scaling *and* after top-k/top-p masking (renormalised over the kept tokens); the default
`raw_logprobs` ignores the temperature. rlkit's trainer recomputes log_softmax(logits / temperature) without
truncation, so the two agree exactly when top_k and top_p are off (the usual RL setting). With top-k/top-p on,
each rollout log-prob exceeds the trainer's by log(1 / kept probability mass) of its step; see docs/vllm.md.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from rlkit.errors import ConfigError
from rlkit.rollout.base import RANK_SEED_STRIDE, Completion, SamplingParams, dtype_name

if TYPE_CHECKING:  # the schema imports pydantic; this module must import without it on the GPU machine
    from rlkit.rollout.vllm_options import VLLMOptions
    from rlkit.distributed import DistInfo

LOGPROBS_MODE = "processed_logprobs"  # log_softmax(logits / T) after top-k/top-p, see the module docstring
MAX_TEMPERATURE = 2.0  # vLLM rejects larger temperatures
_DTYPE_NAMES = ("bfloat16", "float16", "float32", "auto")


def engine_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables to set before importing vLLM (those the user set are kept, but one).

    VLLM_ENABLE_V1_MULTIPROCESSING is forced to 0: weights are loaded into the engine's model object
    through `collective_rpc` with CUDA tensors, which only works when the engine runs in this process
    (external_launcher requires it too). VLLM_USE_FLASHINFER_SAMPLER defaults to 0: flashinfer is optional
    and cannot return post-temperature log-probs anyway.
    """
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_USE_FLASHINFER_SAMPLER": environ.get("VLLM_USE_FLASHINFER_SAMPLER", "0"),
    }


def vllm_dtype(dtype: Any) -> str:
    """A torch dtype, a dtype name or None (-> bfloat16, as the HF rollout uses on GPU) as vLLM spells it."""
    return dtype_name(dtype, _DTYPE_NAMES, "vLLM")


def engine_seed(options: VLLMOptions, seed: int, dist: DistInfo) -> int:
    """options.seed, or seed offset by this engine's data-parallel index.

    The ranks of one tensor-parallel group each run a scheduler and a sampler (external_launcher) and must
    draw the same tokens, so they share a seed: the offset is rank // tensor_parallel_size, not the rank.
    """
    if options.seed is not None:
        return options.seed
    return seed + (dist.rank // options.tensor_parallel_size) * RANK_SEED_STRIDE


def engine_kwargs(
    options: VLLMOptions,
    model_path: str,
    *,
    dist: DistInfo,
    seed: int,
    dtype: Any = None,
    tokenizer_path: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for one engine of this process.

    World size 1: an in-process engine on this GPU. Under torchrun (world size > 1): one engine per rank,
    or per group of `tensor_parallel_size` consecutive ranks, through vLLM's `external_launcher` backend,
    on the process group the trainer already runs (the colocated SPMD layout).
    """
    tp = options.tensor_parallel_size
    if dist.world_size == 1 and tp > 1:
        raise ConfigError(
            f"rollout.vllm.tensor_parallel_size={tp} needs {tp} processes: launch with torchrun --nproc_per_node={tp} "
            "(or more, a multiple), or set rollout.vllm.tensor_parallel_size=1"
        )
    if dist.world_size % tp:
        raise ConfigError(
            f"rollout.vllm.tensor_parallel_size={tp} does not divide the world size {dist.world_size}; "
            f"choose a tensor_parallel_size that divides {dist.world_size}"
        )
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tokenizer": tokenizer_path or model_path,
        "trust_remote_code": trust_remote_code,
        "dtype": vllm_dtype(dtype),
        "seed": engine_seed(options, seed, dist),
        "tensor_parallel_size": tp,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "enforce_eager": options.enforce_eager,
        "enable_prefix_caching": options.enable_prefix_caching,
        "enable_sleep_mode": options.sleep_level > 0,
        "logprobs_mode": LOGPROBS_MODE,
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if dist.world_size > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"
    return kwargs


def sampling_kwargs(params: SamplingParams, *, flat_logprobs: bool = True) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for one request (one prompt copy, see `prompt_copies`).

    Token ids only, no text (see the module docstring); `flat_logprobs=False` for a vLLM that predates it.
    """
    if params.temperature > MAX_TEMPERATURE:
        raise ConfigError(
            f"rollout temperature {params.temperature} is above vLLM's limit of {MAX_TEMPERATURE}; lower it"
        )
    greedy = params.temperature == 0
    return {
        "n": 1 if greedy else params.n,  # vLLM refuses n > 1 when greedy: the prompt is sent n times instead
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else 0,  # 0: off
        "max_tokens": params.max_new_tokens,
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": params.ignore_eos,
        "logprobs": 0 if params.logprobs else None,  # 0: the sampled token's log-prob only
        "detokenize": False,
        **({"flat_logprobs": True} if flat_logprobs and params.logprobs else {}),
    }


def prompt_copies(params: SamplingParams) -> int:
    """How many times each prompt is sent: n when greedy (n requests of one sample each), else once."""
    return params.n if params.temperature == 0 else 1


def request_seeds(engine_seed: int, call_index: int, num_requests: int, samples_per_request: int) -> list[int]:
    """One sampling seed per request of generate call `call_index`.

    vLLM seeds sample s of a request with seed + s, so requests are spaced `samples_per_request` apart from a
    56-bit start hashed from (engine_seed, call_index): distinct calls and engines draw from far-apart seeds,
    and a resumed run (same call index) draws the same ones. Explicit seeds also keep vLLM from drawing
    request seeds from the process's global numpy generator, which the trainer owns.
    """
    digest = hashlib.blake2b(f"{engine_seed}:{call_index}".encode(), digest_size=7).digest()
    start = int.from_bytes(digest, "big")
    return [start + index * samples_per_request for index in range(num_requests)]


def completions_from_outputs(
    request_outputs: Sequence[Any], decode: Callable[[list[int]], str], *, with_logprobs: bool = True
) -> list[Completion]:
    """Flatten vLLM `RequestOutput`s (in request order) into Completions, samples of a request in index order.

    The token that ended a response (EOS or a stop id) is part of `token_ids` in vLLM and stays in
    `response_ids`: it is a sampled action with a log-prob. `decode` turns response ids into text.
    """
    completions = []
    for request_index, request in enumerate(request_outputs):
        prompt_ids = [int(token) for token in request.prompt_token_ids]
        for output in sorted(request.outputs, key=lambda output: output.index):
            if output.finish_reason not in ("stop", "length"):
                raise RuntimeError(
                    f"vLLM request {request_index} sample {output.index} ended with finish_reason="
                    f"{output.finish_reason!r}; only 'stop' and 'length' are expected (was the engine aborted?)"
                )
            response_ids = [int(token) for token in output.token_ids]
            logprobs = sampled_logprobs(response_ids, output.logprobs) if with_logprobs else None
            completions.append(
                Completion(
                    prompt_ids=prompt_ids,
                    response_ids=response_ids,
                    logprobs=logprobs,
                    finish_reason=output.finish_reason,
                    text=decode(response_ids),
                )
            )
    return completions


def sampled_logprobs(response_ids: Sequence[int], positions: Any) -> list[float]:
    """The log-prob of each sampled token from vLLM's `FlatLogprobs`, or from per-position {token_id: Logprob} maps.

    With logprobs=0 each position holds the sampled token alone, first (FlatLogprobs: at its start index).
    """
    if positions is None:
        raise RuntimeError("vLLM returned no log-probs although logprobs=0 was requested")
    if len(positions) != len(response_ids):
        raise RuntimeError(f"vLLM returned {len(positions)} log-prob positions for {len(response_ids)} tokens")
    if hasattr(positions, "start_indices"):  # FlatLogprobs: flat lists, no object per token
        token_ids = [positions.token_ids[start] for start in positions.start_indices]
        if token_ids != list(response_ids):
            raise RuntimeError(f"vLLM log-prob token ids {token_ids} differ from the sampled ids {list(response_ids)}")
        return [float(positions.logprobs[start]) for start in positions.start_indices]
    return [float(position[token].logprob) for token, position in zip(response_ids, positions)]
