"""Where rlkit's SGLang generate phase loses time against SGLang alone (issue 17, target 3: at least 90% of SGLang
alone's speed). On one H200 with SmolLM2-135M, 32 prompts x 8 responses, the bench's generate phase took 1.17 s
(47.6k tokens/s) against 0.75 s (71.7k) for an `sglang.Engine` alone on the same prompts; without the memory saver
0.96 s (docs/sglang.md). This times, in one process and on the same prompts, each difference between the two:

  raw          the engine's own `generate` (what the bench's "SGLang alone" rows time), the prefix cache flushed
  rlkit        SGLangRollout.generate: the same call plus the checks, the completions and rlkit's decoding
  after_sync   rlkit's generate right after update_weights (the step's weight push and cache flush)
  after_wake   after sleep, wake_up and update_weights (the KV cache and CUDA graphs resumed inside generate)
  after_gpu    rlkit's generate right after 2 s of matmuls in this process (a trainer's update on the same GPU)

What comes before a call (the flush, the push, sleeping and waking, the matmuls) is not timed.

for two engines: with the memory saver (rollout.sleep auto or true) and without it (rollout.sleep=false).

usage: python3 scripts/gpu/sglang_generate_gap.py --model DIR --data FILE.parquet [--prompts 32] [--n 8]
       [--max-tokens 256] [--repeats 3]
Prints one JSON line per measurement (median seconds and tokens/s) and writes $OUT/sglang_generate_gap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from rlkit.config.schema import DataConfig, RolloutConfig
from rlkit.data import load_prompt_dataset
from rlkit.distributed import DistInfo
from rlkit.models.loading import load_tokenizer
from rlkit.rollout import sglang_args
from rlkit.rollout.base import SamplingParams
from rlkit.rollout.sglang import SGLangRollout
from rlkit.rollout.sglang_options import SGLangOptions


def timed(call: Callable[[], int], repeats: int, before: Callable[[], None] | None = None) -> dict[str, float]:
    """Median seconds of `call` (which returns the tokens it generated) and tokens per second; `before` runs
    ahead of each call, untimed."""
    seconds, tokens = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        torch.cuda.synchronize()
        start = time.perf_counter()
        tokens.append(call())
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"seconds": round(median, 3), "tokens_per_s": round(statistics.median(tokens) / median)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(args.model)
    data = load_prompt_dataset([args.data], DataConfig(max_prompt_length=1024), tokenizer, max_samples=args.prompts)
    prompts = [record.prompt_ids for record in data]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_tokens, logprobs=False)
    weights = {name: tensor.to("cuda:0", torch.bfloat16) for name, tensor in
               load_file(str(Path(args.model) / "model.safetensors")).items()}
    matrix = torch.randn(8192, 8192, device="cuda:0", dtype=torch.bfloat16)
    results = []
    for sleep in ("auto", False):
        rollout = SGLangRollout(RolloutConfig(sleep=sleep), SGLangOptions(), args.model, tokenizer,
                                DistInfo(device="cuda:0"), seed=1)
        rows = sglang_args.repeat_prompts(prompts, args.n)
        sampling = sglang_args.sampling_params(params, rollout.eos_token_ids)

        def raw() -> int:
            outputs = rollout.engine.generate(input_ids=rows, sampling_params=sampling, return_logprob=False)
            return sum(len(output["output_ids"]) for output in outputs)

        def rlkit() -> int:
            return sum(len(c.response_ids) for c in rollout.generate(prompts, params))

        def sync() -> None:  # the step's weight push (which flushes the prefix cache)
            rollout.update_weights(weights.items())

        def sleep_wake_sync() -> None:  # the KV cache and CUDA graphs are resumed inside the next generate
            rollout.sleep()
            rollout.wake_up()
            sync()

        def gpu_work() -> None:  # ~2 s of bf16 matmuls (1.1 TFLOP each) in this process's CUDA context
            for _ in range(1500):
                matrix @ matrix
            torch.cuda.synchronize()
            rollout._flush_cache()

        rollout.update_weights(weights.items())
        raw()  # warm-up: the first generate compiles SGLang's kernels
        cases = {"raw": (raw, rollout._flush_cache), "rlkit": (rlkit, rollout._flush_cache),
                 "raw_again": (raw, rollout._flush_cache), "after_sync": (rlkit, sync),
                 "after_gpu": (rlkit, gpu_work)}
        if rollout.memory_saver:
            cases["after_wake"] = (rlkit, sleep_wake_sync)
        for name, (call, before) in cases.items():
            results.append({"memory_saver": rollout.memory_saver, "case": name, **timed(call, args.repeats, before)})
            print(json.dumps(results[-1]), flush=True)
        rollout.close()
        torch.cuda.empty_cache()
    (out / "sglang_generate_gap.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
