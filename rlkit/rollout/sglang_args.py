"""The SGLang rollout's pure logic, kept free of any SGLang import so that it runs (and is tested) on CPU.

- `engine_kwargs`: the sglang options block (rollout.sglang) -> keyword arguments of `sglang.Engine`.
- `check_environment`: refuses environment variables that change what the log-probs mean.
- `scheduler_environment`: hides torchrun's agent-store flag from the scheduler processes SGLang spawns, and
  undoes the environment variables SGLang sets in this process while it starts.
- `logging_kept`: keeps this process's logging as it was while SGLang starts (it reconfigures the root logger).
- `sampling_params` / `repeat_prompts`: rlkit's SamplingParams -> SGLang's sampling-params dict, prompts
  repeated n times (prompt-major) so that the order of the outputs is the order rlkit wants.
- `completions_from_outputs`: SGLang's output dicts -> `Completion`s.
(The in-place weight update's name and shape checks and its buckets are in rlkit.rollout.weights.)

What SGLang 0.5.17 returns as `meta_info["output_token_logprobs"]` (read in sglang/srt/layers/sampler.py,
`Sampler.forward`, with `SGLANG_RETURN_ORIGINAL_LOGPROB` unset):
- a request with temperature 0 becomes temperature 1, top_k 1 (`SamplingParams.__post_init__`), and an
  all-greedy batch returns log_softmax(logits): the raw logits, as rlkit scores greedy responses;
- otherwise the logits are divided by the temperature in place, softmax-ed into `probs`, and the token is
  drawn from top-k/top-p *filtered copies* of `probs` (the pytorch backend sorts into new tensors; the
  flashinfer kernel reads `probs` without changing it). The log-prob returned is log(probs) of the drawn
  token: log_softmax(logits / temperature), untruncated by top-k/top-p, which is what rlkit's trainer
  recomputes. (vLLM 0.26 differs here: its processed log-probs are renormalised after truncation.)
`SGLANG_RETURN_ORIGINAL_LOGPROB=1` would return log_softmax(logits) before the temperature instead, so the
engine refuses to start with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, MutableMapping, Sequence

import torch

from rlkit.errors import ConfigError
from rlkit.rollout.base import RANK_SEED_STRIDE, Completion, SamplingParams, dtype_name, stop_token_ids, unique_ids

if TYPE_CHECKING:  # the schema imports pydantic; keep this module importable with torch alone
    from rlkit.rollout.sglang_options import SGLangOptions
    from rlkit.distributed import DistInfo

MEMORY_TAGS = ("kv_cache", "weights", "cuda_graph")  # sglang.srt.constants.GPU_MEMORY_ALL_TYPES
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_ORIGINAL_LOGPROB_ENV = "SGLANG_RETURN_ORIGINAL_LOGPROB"
_AGENT_STORE_ENV = "TORCHELASTIC_USE_AGENT_STORE"


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------
def engine_dtype(dtype: Any) -> str:
    """A torch dtype, a dtype name or None (-> bfloat16, as the HF rollout uses on GPU) as SGLang spells it."""
    return dtype_name(dtype, _DTYPES, "SGLang")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of an `engine_dtype` name."""
    return _DTYPES[name]


def gpu_index(dist: DistInfo) -> int:
    """The GPU this process's engine starts on: the index in dist.device, else the local rank."""
    if not dist.device.startswith("cuda"):
        raise ConfigError(
            f"the sglang rollout needs a CUDA GPU, but this process runs on '{dist.device}'; "
            "use --rollout hf on CPU"
        )
    index = torch.device(dist.device).index
    return dist.local_rank if index is None else index


def engine_kwargs(
    options: SGLangOptions,
    model_path: str,
    *,
    dist: DistInfo,
    seed: int,
    dtype: Any = None,
    trust_remote_code: bool = False,
    may_sleep: bool = True,
) -> dict[str, Any]:
    """Keyword arguments of `sglang.Engine` for the engine of this process.

    may_sleep=False (rollout.sleep=false: the engine is never put to sleep) starts it without SGLang's memory
    saver even with options.release_memory: the saver would release nothing, and in one measurement it cost
    generation speed (one H200, SmolLM2-135M, 32 x 8 responses: 1.13 s a step with it, 0.96 s without, per-step
    times overlapping; docs/sglang.md).

    One engine per rank at tensor_parallel_size 1, on the rank's GPU (`base_gpu_id`). An engine of tp > 1 spans
    GPUs base_gpu_id .. base_gpu_id + tp - 1: in a single process, or, under torchrun, started by the first of tp
    consecutive ranks (rlkit.placement.layout) on its own GPU and the next tp - 1, which its workers then use. The
    engines of one job sample under seeds tp ranks apart, one per engine group.
    """
    tp = options.tensor_parallel_size
    return {
        "model_path": model_path,
        "dtype": engine_dtype(dtype),
        "trust_remote_code": trust_remote_code,
        "tp_size": tp,
        "base_gpu_id": gpu_index(dist),
        "random_seed": seed + (dist.rank // tp) * RANK_SEED_STRIDE,
        "mem_fraction_static": options.mem_fraction_static,
        "attention_backend": options.attention_backend,
        "sampling_backend": options.sampling_backend,
        "disable_cuda_graph": options.disable_cuda_graph,
        "enable_memory_saver": options.release_memory and may_sleep,
        # The idle scheduler otherwise polls its sockets in a loop, a CPU core at 100% through every training
        # phase; it then blocks in zmq.Poller on the same sockets and wakes at once for the next request.
        "sleep_on_idle": True,
        # Prompts arrive as token ids and rlkit decodes the text itself (with the stop token kept).
        "skip_tokenizer_init": True,
        # "model" would fill unset options (repetition_penalty, ...) from generation_config.json.
        "sampling_defaults": "openai",
        "log_level": "error",
    }


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse SGLANG_RETURN_ORIGINAL_LOGPROB: it makes the log-probs ignore the temperature."""
    value = environ.get(_ORIGINAL_LOGPROB_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        raise ConfigError(
            f"{_ORIGINAL_LOGPROB_ENV}={environ[_ORIGINAL_LOGPROB_ENV]} makes SGLang return log-probs before the "
            "temperature, which are not those the trainer recomputes; unset it"
        )


@contextlib.contextmanager
def scheduler_environment(environ: MutableMapping[str, str]) -> Iterator[None]:
    """Start SGLang's scheduler processes without torchrun's TORCHELASTIC_USE_AGENT_STORE, and leave this
    process's environment as it was before (restored on exit, errors included).

    torchrun sets the flag in every worker, and a process that has it set turns any `tcp://host:port` rendezvous
    into a client of a store it assumes torchrun's agent hosts there. The scheduler builds its own process
    group on a free port of its choosing, so with the flag inherited it waits for a server that never starts:
    the trainer hung at engine start under torchrun. The trainer's own group is already up when this runs.

    SGLang also writes process-wide variables while it starts (`_set_envs_and_config`: NCCL_CUMEM_ENABLE=0,
    NCCL_NVLS_ENABLE=0, CUDA_DEVICE_MAX_CONNECTIONS, CUDA_MODULE_LOADING, ...). Its scheduler and detokenizer
    have been spawned with them by the time the engine is built; the trainer keeps its own, so that the NCCL
    communicators it creates later (lazily, at their first collective) are configured as without SGLang.
    """
    before = dict(environ)
    environ.pop(_AGENT_STORE_ENV, None)
    try:
        yield
    finally:
        for name in [name for name in environ if name not in before]:
            del environ[name]
        for name, value in before.items():
            if environ.get(name) != value:
                environ[name] = value


@contextlib.contextmanager
def logging_kept(log_level: str) -> Iterator[None]:
    """Start SGLang without it taking over this process's logging; its own loggers log at `log_level`.

    Starting an engine calls `logging.basicConfig(force=True, level=log_level)` in the calling process (SGLang's
    configure_logger): the root logger's handlers go and its level becomes the engine's ("error"), which
    silenced every rlkit line after the engine started, the run header's speed lines and the step lines among
    them. On exit the root logger has its handlers and level back (errors included), SGLang's handler is
    dropped, and the "sglang" loggers keep `log_level`.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logging.getLogger("sglang").setLevel(log_level.upper())
    try:
        yield
    finally:
        for handler in [handler for handler in root.handlers if handler not in handlers]:
            root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def eos_token_ids(tokenizer, model_path: str) -> list[int]:
    """EOS ids in first-seen order: the tokenizer's, then config.json's and generation_config.json's."""
    ids: list[Any] = [getattr(tokenizer, "eos_token_id", None)]
    for file_name in ("config.json", "generation_config.json"):
        path = Path(model_path) / file_name
        if path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            ids += eos if isinstance(eos, list) else [eos]
    return unique_ids(ids)


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------
def sampling_params(params: SamplingParams, eos_ids: Sequence[int]) -> dict[str, Any]:
    """SGLang's sampling-params dict for one request (one prompt copy, see `repeat_prompts`).

    EOS ids are passed as stop ids, so a tokenizer EOS missing from the model's config also ends a response
    (SGLang adds the config's own). ignore_eos disables every stop id in SGLang, as in rlkit.
    """
    return {
        "n": 1,
        "max_new_tokens": params.max_new_tokens,
        "temperature": params.temperature,  # 0: greedy
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,  # SGLang: -1 off, 0 is invalid
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "stop_token_ids": stop_token_ids(params, eos_ids),
        "ignore_eos": params.ignore_eos,
        "no_stop_trim": True,
        "skip_special_tokens": True,
    }


def repeat_prompts(prompts: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """Each prompt n times in a row, [p0, p0, ..., p1, ...]: one request per completion.

    SGLang's own `n` orders a batch's samples sample-major; one request per copy keeps rlkit's prompt-major
    order by construction, and the radix cache still computes each shared prompt once.
    """
    return [[int(token) for token in prompt] for prompt in prompts for _ in range(n)]


def finish_reason(meta_info: Mapping[str, Any], where: str) -> str:
    """'stop' (EOS or a stop id) or 'length' from meta_info['finish_reason']; an abort raises RuntimeError."""
    reason = meta_info.get("finish_reason")
    kind = reason.get("type") if isinstance(reason, Mapping) else reason
    if kind in ("stop", "length"):
        return kind
    message = reason.get("message", "") if isinstance(reason, Mapping) else ""
    raise RuntimeError(
        f"SGLang {where} ended with finish_reason={reason!r}; only 'stop' and 'length' are expected"
        + (f" ({message})" if message else "")
    )


def sampled_logprobs(meta_info: Mapping[str, Any], response_ids: Sequence[int], where: str) -> list[float]:
    """The log-prob of each response token from meta_info['output_token_logprobs'] ((logprob, id, text) each)."""
    entries = meta_info.get("output_token_logprobs")
    if entries is None:
        raise RuntimeError(f"SGLang {where} returned no output_token_logprobs although return_logprob=True")
    if len(entries) != len(response_ids):
        raise RuntimeError(f"SGLang {where} returned {len(entries)} log-probs for {len(response_ids)} tokens")
    token_ids = [int(entry[1]) for entry in entries]
    if token_ids != list(response_ids):
        raise RuntimeError(f"SGLang {where}: log-prob token ids {token_ids} differ from output_ids {response_ids}")
    return [float(entry[0]) for entry in entries]


def completions_from_outputs(
    rows: Sequence[list[int]], outputs: Sequence[Mapping[str, Any]], decode: Callable[[list[int]], str], *,
    with_logprobs: bool = True,
) -> list[Completion]:
    """One Completion per SGLang output dict ({"output_ids", "meta_info"}), in request order.

    SGLang's output_ids run through the token that stopped the response (EOS or a stop id), which stays in
    `response_ids`: it is a sampled action with a log-prob. `decode` turns response ids into text.
    """
    if len(outputs) != len(rows):
        raise RuntimeError(f"SGLang returned {len(outputs)} outputs for {len(rows)} requests")
    completions = []
    for index, (row, output) in enumerate(zip(rows, outputs)):
        where = f"request {index}"
        meta_info = output["meta_info"]
        reason = finish_reason(meta_info, where)
        response_ids = [int(token) for token in output["output_ids"]]
        finish = meta_info["finish_reason"]
        matched = finish.get("matched") if isinstance(finish, Mapping) else None
        if reason == "stop" and isinstance(matched, int) and response_ids[-1:] != [matched]:
            raise RuntimeError(f"SGLang {where} stopped on token {matched}, but its output_ids end {response_ids[-1:]}")
        completions.append(
            Completion(
                prompt_ids=row,
                response_ids=response_ids,
                logprobs=sampled_logprobs(meta_info, response_ids, where) if with_logprobs else None,
                finish_reason=reason,
                text=decode(response_ids),
            )
        )
    return completions
