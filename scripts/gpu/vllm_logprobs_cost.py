"""What asking vLLM for per-token log-probs costs, and which part of it rlkit's request avoids (issue 17, 1a).

One in-process engine (rlkit's VLLMRollout, sleep_level 0, so its engine settings are the trainer's), the same
prompts for every variant: call k of a variant generates block k of the prompts. Variants differ only in the
request's output options:
  vllm default, no logprobs          what `LLM.generate` does by default (text detokenized as it goes)
  vllm default, logprobs=0           + the sampled token's log-prob: dict + Logprob + decoded token per token
  logprobs=0, flat_logprobs          ... kept in flat lists (no object per token)
  logprobs=0, detokenize=False       ... no text: no per-token decode in the output processor
  rlkit request, logprobs=0          detokenize=False + flat_logprobs (what rlkit's rollout sends now)
  rlkit request, no logprobs         detokenize=False
  VLLMRollout.generate, logprobs     rlkit's whole generate: per-request seeds, conversion, one decode per response
Per variant: one warm-up call, then --calls timed ones; median seconds, tokens/s, and the seconds spent in
Python's garbage collector during the timed calls. Then cProfile of one call of the default logprobs=0 request
and of rlkit's, top functions by own time, to $OUT/vllm_logprobs_profile.txt.

usage: python3 scripts/gpu/vllm_logprobs_cost.py --model DIR [--data FILE.parquet] [--prompts 32] [--n 8]
       [--max-tokens 256] [--calls 2]
Without --data: random 128-token prompts and ignore_eos (the bench's synthetic shape); with --data: the file's
prompts as rlkit train reads them (chat template), responses ending at EOS.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import time
from pathlib import Path

import torch

from rlkit.config.schema import DataConfig, RolloutConfig
from rlkit.rollout.vllm_options import VLLMOptions
from rlkit.data import load_prompt_dataset
from rlkit.distributed import DistInfo
from rlkit.models.loading import load_tokenizer
from rlkit.rollout.base import SamplingParams
from rlkit.rollout.vllm import VLLMRollout

VARIANTS = {
    "vllm default, no logprobs": {},
    "vllm default, logprobs=0": {"logprobs": 0},
    "logprobs=0, flat_logprobs": {"logprobs": 0, "flat_logprobs": True},
    "logprobs=0, detokenize=False": {"logprobs": 0, "detokenize": False},
    "rlkit request, logprobs=0": {"logprobs": 0, "detokenize": False, "flat_logprobs": True},
    "rlkit request, no logprobs": {"detokenize": False},
}
PROFILED = ("vllm default, logprobs=0", "rlkit request, logprobs=0")


def prompt_blocks(args: argparse.Namespace, tokenizer) -> list[list[list[int]]]:
    """calls + 1 blocks of --prompts prompt-id lists (block 0 is the warm-up's)."""
    count = args.prompts * (args.calls + 1)
    if args.data is None:
        generator = torch.Generator().manual_seed(0)
        ids = [torch.randint(100, min(20000, len(tokenizer)), (128,), generator=generator).tolist()
               for _ in range(count)]
    else:
        data = load_prompt_dataset([args.data], DataConfig(max_prompt_length=1024), tokenizer, max_samples=count)
        ids = [record.prompt_ids for record in data]
    return [ids[i:i + args.prompts] for i in range(0, count, args.prompts)]


class GcClock:
    """Seconds spent in Python's garbage collector while it is on (gc.callbacks)."""

    def __init__(self):
        self.seconds, self._start = 0.0, 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=None)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--calls", type=int, default=2)
    args = parser.parse_args()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = load_tokenizer(args.model)
    blocks = prompt_blocks(args, tokenizer)
    rollout = VLLMRollout(RolloutConfig(name="vllm"), VLLMOptions(gpu_memory_utilization=0.5, sleep_level=0),
                          args.model, tokenizer, DistInfo(device="cuda:0"))
    vllm, llm = rollout._vllm, rollout.llm
    ignore_eos = args.data is None
    base = {"n": args.n, "temperature": 1.0, "max_tokens": args.max_tokens, "ignore_eos": ignore_eos}

    def raw_call(options: dict, block: list[list[int]]):
        requests = [vllm.TokensPrompt(prompt_token_ids=prompt) for prompt in block]
        outputs = llm.generate(requests, vllm.SamplingParams(**base, **options), use_tqdm=False)
        return sum(len(sample.token_ids) for request in outputs for sample in request.outputs)

    def rollout_call(block: list[list[int]]):
        params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_tokens, ignore_eos=ignore_eos,
                                logprobs=True)
        return sum(len(c.response_ids) for c in rollout.generate(block, params))

    calls = {name: (lambda block, options=options: raw_call(options, block)) for name, options in VARIANTS.items()}
    calls["VLLMRollout.generate, logprobs"] = rollout_call
    gc_clock = GcClock()
    gc.callbacks.append(gc_clock)
    for name, call in calls.items():
        call(blocks[0])  # warm-up
        seconds, tokens, gc_before = [], [], gc_clock.seconds
        for block in blocks[1:]:
            start = time.perf_counter()
            tokens.append(call(block))
            seconds.append(time.perf_counter() - start)
        print(json.dumps({"variant": name, "median_s": round(statistics.median(seconds), 3),
                          "tokens_per_s": round(statistics.median(t / s for t, s in zip(tokens, seconds))),
                          "tokens": tokens, "gc_s": round(gc_clock.seconds - gc_before, 3)}), flush=True)
    gc.callbacks.remove(gc_clock)

    report = io.StringIO()
    for name in PROFILED:
        profiler = cProfile.Profile()
        profiler.runcall(calls[name], blocks[1])
        report.write(f"==== {name}\n")
        pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(15)
    (out / "vllm_logprobs_profile.txt").write_text(report.getvalue())
    print(f"profiles in {out / 'vllm_logprobs_profile.txt'}")


if __name__ == "__main__":
    main()
