"""The vLLM rollout engine: fast sampling on the trainer's GPUs, weights pushed in place between steps.

One `vllm.LLM` runs inside each training process (never a server, never a subprocess): at world size 1 an
in-process engine, under torchrun one engine per rank (or per tensor-parallel group) through vLLM's
`external_launcher` backend, so rollout and training share the GPUs (the colocated SPMD layout). Under
torchrun every rank of a tensor-parallel group must be given the same prompts.

Weights. `update_weights` streams the trainer's full tensors, in Hugging Face names, into the engine's model
object with its own `load_weights` (which fuses q/k/v and gate/up itself), in buckets of at most
`WEIGHT_BUCKET_BYTES` on the GPU; nothing touches the disk and nothing is re-initialised. Then the prefix
cache is reset, since cached KV blocks were computed with the old weights.

Memory. With `sleep_level` 1 `sleep()` drops the KV cache and moves the weights to CPU; `wake_up()` brings
both back. With `sleep_level` 2 `sleep()` drops both: `wake_up()` reallocates only the weights, the trainer
then pushes its weights with `update_weights`, and the KV cache comes back at the start of the next
`generate` (so the weights' upload never competes with the KV cache for memory).

Log-probs are log_softmax(logits / temperature) of each sampled token (see rlkit.rollout.vllm_args). Requests
ask vLLM for token ids only; the text is decoded here, once per response, with the run's tokenizer
(rlkit.rollout.vllm_args says why).
Heavy imports (vllm) happen at construction, so importing this module needs only torch.
"""

from __future__ import annotations

import gc
import os
import random
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from rlkit.rollout import vllm_args
from rlkit.rollout.base import Completion, SamplingParams, check_prompts
from rlkit.buckets import bucket_weights

if TYPE_CHECKING:  # the schema imports pydantic and yaml; keep this module importable with torch alone
    from rlkit.config.rollouts import RolloutConfig
    from rlkit.rollout.vllm_options import VLLMOptions
    from rlkit.distributed import DistInfo

WEIGHT_BUCKET_BYTES = 512 * 1024**2  # GPU memory a weight update stages at once


def _load_weights_on_worker(worker: Any, weights: list[tuple[str, Tensor]]) -> None:
    """Runs inside vLLM's worker (this process): load HF-named tensors into the model in place."""
    worker.get_model().load_weights(weights=weights)


def _model_dtype_and_device(worker: Any) -> tuple[torch.dtype, torch.device]:
    parameter = next(worker.get_model().parameters())
    return parameter.dtype, parameter.device


class VLLMRollout:
    """RolloutEngine over an in-process `vllm.LLM`.

    Args:
        config: the rollout section (shared options; sampling options arrive per call as SamplingParams).
        options: the vllm block (rollout.vllm): the engine's own options.
        model_path: local Hugging Face folder of the initial policy.
        tokenizer: the run's tokenizer; vLLM loads the same one from its `name_or_path` folder.
        dist: this process's rank and world size; world size > 1 selects the external_launcher backend.
        dtype: weights' dtype (torch dtype or name); default bfloat16.
        seed: base seed; the engine seed is options.seed or seed + (rank // tp) * 1000003, and the requests of
            generate call k get seeds hashed from (engine seed, k), so a resumed run that restores
            `state_dict()` samples what an uninterrupted one would; a call with params.seed hashes that instead.
        trust_remote_code: allow custom modelling code in model_path.

    Attributes:
        llm: the `vllm.LLM` (tests read prompt log-probs through it).
        last_sync_seconds: wall time of the last `update_weights`.
    """

    def __init__(
        self,
        config: RolloutConfig,
        options: VLLMOptions,
        model_path: str,
        tokenizer,
        dist: DistInfo,
        *,
        dtype: torch.dtype | str | None = None,
        seed: int = 1,
        trust_remote_code: bool = False,
    ):
        self.config = config
        self.options = options
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.dist = dist
        self.num_generate_calls = 0
        self.last_sync_seconds = 0.0
        self._asleep = False
        self._kv_cache_asleep = False  # sleep_level 2: woken weights, KV cache waits for generate
        self._weights_stale = False  # sleep_level 2: woken weights hold garbage until update_weights

        tokenizer_path = getattr(tokenizer, "name_or_path", None)
        kwargs = vllm_args.engine_kwargs(
            options,
            model_path,
            dist=dist,
            seed=seed,
            dtype=dtype,
            tokenizer_path=tokenizer_path if tokenizer_path and os.path.isdir(tokenizer_path) else None,
            trust_remote_code=trust_remote_code,
        )
        self.seed = kwargs["seed"]
        os.environ.update(vllm_args.engine_env(os.environ))
        import numpy as np  # vLLM's dependency; imported here with it
        import vllm

        self._vllm = vllm
        self._owns_process_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        # vLLM seeds python, numpy and torch (CPU and every GPU) while it starts: keep the trainer's streams.
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=self._cuda_devices()):
            self.llm = vllm.LLM(**kwargs)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        self._dtype, self._device = self.llm.collective_rpc(_model_dtype_and_device)[0]
        self._has_flat_logprobs = "flat_logprobs" in getattr(vllm.SamplingParams, "__struct_fields__", ())

    # -- RolloutEngine --------------------------------------------------------------------------
    def generate(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[Completion]:
        """params.n completions per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]."""
        if self._asleep:
            raise RuntimeError("VLLMRollout.generate called while asleep; call wake_up() first")
        if self._weights_stale:
            raise RuntimeError(
                "VLLMRollout.generate called after wake_up() with sleep_level=2 but before update_weights(): "
                "level 2 discards the weights, so push them first"
            )
        check_prompts(prompts)
        if self._kv_cache_asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._kv_cache_asleep = False

        copies = vllm_args.prompt_copies(params)
        requests = [
            self._vllm.TokensPrompt(prompt_token_ids=[int(t) for t in prompt])
            for prompt in prompts
            for _ in range(copies)
        ]
        kwargs = vllm_args.sampling_kwargs(params, flat_logprobs=self._has_flat_logprobs)
        # params.seed already names the call; otherwise this engine's stream at this call.
        stream, call = (params.seed, 0) if params.seed is not None else (self.seed, self.num_generate_calls)
        seeds = vllm_args.request_seeds(stream, call, len(requests), kwargs["n"])
        sampling = [self._vllm.SamplingParams(**kwargs, seed=seed) for seed in seeds]
        self.num_generate_calls += 1
        # Per-request seeds make sampling reproducible; fork_rng keeps the trainer's torch streams intact
        # should any vLLM code path still draw from the global generators.
        with torch.random.fork_rng(devices=self._cuda_devices()):
            outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        return vllm_args.completions_from_outputs(outputs, self._decode, with_logprobs=params.logprobs)

    def update_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        """Load full weights, given in Hugging Face names, into the engine in place, bucket by bucket.

        Records the time taken in `last_sync_seconds`.
        """
        if self._asleep:
            raise RuntimeError("VLLMRollout.update_weights called while asleep; call wake_up() first")
        start = time.perf_counter()
        for bucket in bucket_weights(self._on_engine_device(weights), WEIGHT_BUCKET_BYTES):
            self.llm.collective_rpc(_load_weights_on_worker, args=(bucket,))
        if not self._kv_cache_asleep:  # a sleeping KV cache was cleared by sleep() already
            self.llm.reset_prefix_cache()
        torch.cuda.synchronize(self._device)
        self._weights_stale = False
        self.last_sync_seconds = time.perf_counter() - start

    def sleep(self) -> None:
        """Free GPU memory for training: KV cache and weights (kept on CPU at level 1, dropped at level 2)."""
        level = self.options.sleep_level
        if level == 0 or self._asleep:
            return
        if self._kv_cache_asleep:  # woken at level 2 but never generated: make the engine whole first
            self.llm.wake_up(tags=["kv_cache"])
            self._kv_cache_asleep = False
        self.llm.sleep(level=level)
        self._asleep = True

    def wake_up(self) -> None:
        """Take the memory back. At sleep_level 2 only the weights' memory; call update_weights next."""
        if not self._asleep:
            return
        if self.options.sleep_level == 2:
            self.llm.wake_up(tags=["weights"])
            self._kv_cache_asleep = True
            self._weights_stale = True
        else:
            self.llm.wake_up()
        self._asleep = False

    # -- resumption and shutdown ----------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """The sampling position: a resumed run that loads it samples what an uninterrupted one would."""
        return {"num_generate_calls": self.num_generate_calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.num_generate_calls = int(state["num_generate_calls"])

    def close(self) -> None:
        """Shut the engine down and free its GPU memory and its model-parallel groups.

        At world size 1 vLLM's own process group goes too. Under torchrun the default process group is the
        trainer's and stays: vLLM's EngineCore.shutdown would destroy it, so only the executor, the
        scheduler and the model-parallel groups are shut here.
        """
        if getattr(self, "llm", None) is None:
            return
        from vllm.distributed.parallel_state import destroy_model_parallel

        client = self.llm.llm_engine.engine_core  # the in-process client; .engine_core is vLLM's EngineCore
        if self._owns_process_group:
            client.shutdown()
        else:
            client.engine_core.model_executor.shutdown()  # weights, KV cache, sleep-mode memory pools
            client.engine_core.scheduler.shutdown()
            destroy_model_parallel()
            gc.unfreeze()  # vLLM froze the objects alive at start-up; let the collector see them again
        self.llm = None
        gc.collect()
        torch.cuda.empty_cache()

    # -- internals ------------------------------------------------------------------------------
    def _cuda_devices(self) -> list[int]:
        device = torch.device(self.dist.device)
        return [device.index if device.type == "cuda" and device.index is not None else self.dist.local_rank]

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _on_engine_device(self, weights: Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
        """Each tensor on the engine's GPU, floating ones in the engine's dtype (lazily, one at a time)."""
        for name, tensor in weights:
            dtype = self._dtype if tensor.is_floating_point() else tensor.dtype
            yield name, tensor.to(device=self._device, dtype=dtype, non_blocking=True)
