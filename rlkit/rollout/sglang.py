"""The SGLang rollout engine: fast sampling on the trainer's GPU, weights pushed in place between steps.

Each training process starts one `sglang.Engine` on its own GPU (`base_gpu_id` = the local rank), or, with
tensor_parallel_size k > 1 under torchrun, the first of each k consecutive ranks starts one on its GPU and the
next k - 1 (rlkit.placement.layout): the engine's schedulers run in child processes that SGLang spawns, one
per GPU, and this process talks to them over ZMQ.
Prompts go in as token ids and the engine's tokenizer is never loaded; rlkit decodes the text itself.

Weights. `update_weights` checks each tensor's Hugging Face name and shape against the model's
architecture, casts it to the engine's dtype on the engine's GPU, and sends buckets of at most
`WEIGHT_BUCKET_BYTES` through `Engine.update_weights_from_tensor`: the tensors travel as CUDA IPC handles
(no copy through the CPU), and the scheduler loads them with the model's own `load_weights`, which fuses
q/k/v and gate/up. Nothing touches the disk. Then the radix (prefix) cache is flushed, since cached KV
blocks were computed with the old weights.

Memory (`release_memory`, SGLang's `enable_memory_saver`, left off with rollout.sleep=false). `sleep()`
releases the KV cache, the weights and the CUDA graphs (`release_memory_occupation`); `wake_up()` takes back
the weights' memory only, and the KV cache comes back at the start of the next `generate`, so the weight upload
never competes with the KV cache.
The released weights are not kept (SGLang keeps a CPU copy only with `enable_weights_cpu_backup`, which
rlkit leaves off to save host memory): after `wake_up()` the engine holds garbage until `update_weights()`
runs. The trainer always calls wake_up() then update_weights(actor.full_weights()) before generating, which
is what makes this correct; `generate` refuses to run on woken-but-unsynced weights.

Log-probs are log_softmax(logits / temperature) of each sampled token, untruncated by top-k/top-p (raw
logits when greedy); see rlkit.rollout.sglang_args for where in SGLang's sampler this comes from.

Sampling is seeded once per engine (seed + engine group * 1000003, SGLang's `random_seed`): SGLang has no
per-request seed outside its deterministic-inference mode, so a resumed run does not replay the samples
of an uninterrupted one, and a call's `SamplingParams.seed` is not used.

Side effects of starting SGLang in the trainer's process: it sets the multiprocessing start method to
"spawn" and patches torch's CUDA-tensor pickling to name devices by UUID. The environment variables it sets
while starting (NCCL_CUMEM_ENABLE, NCCL_NVLS_ENABLE, CUDA_DEVICE_MAX_CONNECTIONS, ...) are undone once its
processes are up, and under torchrun the engine starts without TORCHELASTIC_USE_AGENT_STORE, or its
scheduler's process group would never form (`sglang_args.scheduler_environment`). The root logger, which
SGLang reconfigures while it starts, gets its handlers and level back (`sglang_args.logging_kept`). The idle
scheduler sleeps on its sockets (`sleep_on_idle`) instead of polling them with a CPU core while the trainer trains.
`close()` (SGLang's shutdown) kills every child process of this process.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from rlkit.rollout import sglang_args
from rlkit.rollout.base import Completion, SamplingParams, check_prompts
from rlkit.buckets import bucket_weights
from rlkit.rollout.weights import check_weight, weight_shapes

if TYPE_CHECKING:  # the schema imports pydantic; keep this module importable with torch alone
    from rlkit.config.rollouts import RolloutConfig
    from rlkit.rollout.sglang_options import SGLangOptions
    from rlkit.distributed import DistInfo

WEIGHT_BUCKET_BYTES = 512 * 1024**2  # GPU memory a weight update stages at once
_KV_TAGS = ("kv_cache", "cuda_graph")  # resumed together, at the first generate after wake_up


class SGLangRollout:
    """RolloutEngine over an `sglang.Engine` (one per process).

    Args:
        config: the rollout section (shared options; sampling options arrive per call as SamplingParams).
        options: the sglang block (rollout.sglang): the engine's own options.
        model_path: local Hugging Face folder of the initial policy.
        tokenizer: the run's tokenizer: EOS ids and decoding (SGLang's own tokenizer is not loaded).
        dist: this process's rank and device; the engine runs on dist.device's GPU.
        dtype: weights' dtype (torch dtype or name); default bfloat16.
        seed: base seed; the engine samples under seed + (rank // tensor_parallel_size) * 1000003.
        trust_remote_code: allow custom modelling code in model_path.

    Attributes:
        engine: the `sglang.Engine` (tests score sequences through it).
        last_sync_seconds: wall time of the last `update_weights`.
    """

    def __init__(
        self,
        config: RolloutConfig,
        options: SGLangOptions,
        model_path: str,
        tokenizer,
        dist: DistInfo,
        *,
        dtype: torch.dtype | str | None = None,
        seed: int = 1,
        trust_remote_code: bool = False,
    ):
        sglang_args.check_environment(os.environ)
        kwargs = sglang_args.engine_kwargs(
            options, model_path, dist=dist, seed=seed, dtype=dtype, trust_remote_code=trust_remote_code,
            may_sleep=config.sleep is not False,
        )
        self.config = config
        self.options = options
        self.memory_saver = kwargs["enable_memory_saver"]  # whether sleep() can release anything
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.dist = dist
        self.device = torch.device("cuda", kwargs["base_gpu_id"])
        self.dtype = sglang_args.torch_dtype(kwargs["dtype"])
        self.eos_token_ids = sglang_args.eos_token_ids(tokenizer, model_path)
        self.last_sync_seconds = 0.0
        # SGLang's load_weights skips unknown names and asserts on shapes in the scheduler: check them here first.
        self._weight_shapes = weight_shapes(model_path, trust_remote_code=trust_remote_code)
        self._released: set[str] = set()  # memory tags released and not yet resumed
        self._asleep = False
        self._weights_stale = False  # woken weights hold garbage until update_weights

        import sglang
        from sglang.srt.utils.patch_torch import monkey_patch_torch_reductions

        # CUDA tensors are pickled with the device's UUID, so the scheduler finds them whatever its device order.
        monkey_patch_torch_reductions()
        # the scheduler processes inherit the environment; what SGLang sets in it goes again afterwards, and
        # the trainer keeps its logging
        with sglang_args.scheduler_environment(os.environ), sglang_args.logging_kept(kwargs["log_level"]):
            self.engine = sglang.Engine(**kwargs)

    # -- RolloutEngine --------------------------------------------------------------------------
    def generate(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[Completion]:
        """params.n completions per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]."""
        if self._asleep:
            raise RuntimeError("SGLangRollout.generate called while asleep; call wake_up() first")
        if self._weights_stale:
            raise RuntimeError(
                "SGLangRollout.generate called after wake_up() but before update_weights(): releasing memory "
                "discards the engine's weights, so push them first"
            )
        check_prompts(prompts)
        if not prompts:
            return []
        self._resume(_KV_TAGS)
        rows = sglang_args.repeat_prompts(prompts, params.n)
        outputs = self.engine.generate(
            input_ids=rows,
            sampling_params=sglang_args.sampling_params(params, self.eos_token_ids),
            return_logprob=params.logprobs,
        )
        return sglang_args.completions_from_outputs(rows, outputs, self._decode, with_logprobs=params.logprobs)

    def update_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        """Load full weights, given in Hugging Face names, into the engine in place, bucket by bucket.

        An unknown name or a wrong shape raises ValueError naming the weight; buckets completed before it may
        have been loaded, the one it would have joined is not. Records the time taken in `last_sync_seconds`.
        """
        if self._asleep:
            raise RuntimeError("SGLangRollout.update_weights called while asleep; call wake_up() first")
        start = time.perf_counter()
        for bucket in bucket_weights(self._checked_on_device(weights), WEIGHT_BUCKET_BYTES):
            # The call returns once the scheduler has copied the bucket, so the bucket may be freed after it.
            success, message = self.engine.update_weights_from_tensor(bucket, flush_cache=False)
            if not success:
                raise RuntimeError(f"SGLang update_weights_from_tensor failed: {message}")
        if "kv_cache" not in self._released:  # a released KV cache was flushed when it was released
            self._flush_cache()
        self._weights_stale = False
        self.last_sync_seconds = time.perf_counter() - start

    def sleep(self) -> None:
        """Release the KV cache, weights and CUDA graphs (no-op without the memory saver: options.release_memory
        off, or rollout.sleep=false)."""
        if not self.memory_saver or self._asleep:
            return
        resident = [tag for tag in sglang_args.MEMORY_TAGS if tag not in self._released]
        if resident:  # after a wake_up without generate, only the weights are resident
            self.engine.release_memory_occupation(tags=resident)
        self._released = set(sglang_args.MEMORY_TAGS)
        self._asleep = True

    def wake_up(self) -> None:
        """Take back the weights' memory; call update_weights next (the KV cache returns at generate)."""
        if not self._asleep:
            return
        self._resume(("weights",))
        self._weights_stale = True
        self._asleep = False

    # -- shutdown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Shut the engine down and free its GPU (SGLang kills every child process of this process)."""
        if getattr(self, "engine", None) is None:
            return
        self.engine.shutdown()
        self.engine = None

    # -- internals ------------------------------------------------------------------------------
    def _resume(self, tags: Sequence[str]) -> None:
        pending = [tag for tag in tags if tag in self._released]
        if pending:  # SGLang fails on resuming a tag that is not released
            self.engine.resume_memory_occupation(tags=pending)
            self._released.difference_update(pending)

    def _flush_cache(self) -> None:
        result: Any = self.engine.flush_cache()
        if not getattr(result, "success", True):
            raise RuntimeError("SGLang could not flush its prefix cache after a weight update (requests pending)")

    def _checked_on_device(self, weights: Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
        """Each tensor checked, on the engine's GPU, floating ones in the engine's dtype (lazily, one at a time)."""
        for name, tensor in weights:
            check_weight(name, tensor, self._weight_shapes, self.model_path)
            dtype = self.dtype if tensor.is_floating_point() else tensor.dtype
            yield name, tensor.detach().to(device=self.device, dtype=dtype).contiguous()

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)
