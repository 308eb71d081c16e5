"""Where the trainer's vLLM generate phase loses time against "vLLM alone" (issue 17, targets 2 and 3).

In the workload's benches rlkit's generate phase took 0.95-1.18x the time of vLLM alone on the same prompts, though
it asks for no text (the eighth session measured vLLM alone 1.45 s with text against 1.21 s without). This times,
in one process, on one engine and the same prompts (the prefix cache reset before every call), each difference
between the two, taking turns round by round in a rotated order:

  alone         LLM.generate with vLLM's own output handling (what `rlkit bench`'s "vLLM alone" row times)
  no_text       ... detokenize=False, no seeds
  seeded        ... detokenize=False, a seed per request as rlkit sends them (vLLM draws each seeded request's
                noise with a kernel of its own at every decoding step)
  rlkit         VLLMRollout.generate (what the trainer's generate phase calls), no log-probs
  after_step    VLLMRollout.generate right after a trainer step in this process: FSDP2's compiled, packed update
                and log-prob pass on the same model (one unit, as `auto` builds it on one GPU), then the weight push

The heap is frozen after the set-up, as the trainer freezes its own (rlkit.heap). What comes before a call (the
reset, the step, the push) is not timed. Medians over the rounds after a warm-up.

usage: python3 scripts/gpu/vllm_generate_gap.py --model DIR --data FILE.parquet [--prompts 32] [--n 8]
       [--max-tokens 256] [--rounds 5]
Prints one JSON line per variant (median seconds, tokens/s, every round's seconds and tokens).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from rlkit.config.schema import DataConfig, RolloutConfig
from rlkit.data import load_prompt_dataset
from rlkit.distributed import DistInfo
from rlkit.models.loading import load_tokenizer
from rlkit.rollout import vllm_args
from rlkit.rollout.base import SamplingParams
from rlkit.rollout.vllm import VLLMRollout
from rlkit.rollout.vllm_options import VLLMOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host_overhead import fsdp2_setup  # noqa: E402  (a sibling script: the engine and the calls it times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    data = load_prompt_dataset([args.data], DataConfig(max_prompt_length=1024), tokenizer, max_samples=args.prompts)
    prompts = [record.prompt_ids for record in data]
    rollout = VLLMRollout(RolloutConfig(name="vllm", sleep=False), VLLMOptions(gpu_memory_utilization=0.5,
                                                                              sleep_level=0),
                          args.model, tokenizer, DistInfo(device="cuda:0"))
    build, _, step, logprob_pass, _ = fsdp2_setup(compiled=True, model_path=args.model, group=args.n)
    engine = build("model")
    vllm, llm = rollout._vllm, rollout.llm
    scheduler = llm.llm_engine.vllm_config.scheduler_config
    print(json.dumps({"async_scheduling": scheduler.async_scheduling}), flush=True)

    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_tokens,
                            stop_token_ids=(tokenizer.eos_token_id,), logprobs=False)
    requests = [vllm.TokensPrompt(prompt_token_ids=prompt) for prompt in prompts]
    kwargs = {key: value for key, value in vllm_args.sampling_kwargs(params).items()
              if key not in ("detokenize", "flat_logprobs")}
    copies = vllm_args.prompt_copies(params)
    seeds = vllm_args.request_seeds(7, 0, len(prompts) * copies, kwargs["n"])

    def raw(**options) -> Callable[[], int]:
        def call() -> int:
            if "seed" in options:
                sampling = [vllm.SamplingParams(**kwargs, detokenize=False, seed=seed) for seed in seeds]
                rows = [request for request in requests for _ in range(copies)]
            else:
                sampling, rows = vllm.SamplingParams(**kwargs, **options), [r for r in requests for _ in range(copies)]
            outputs = llm.generate(rows, sampling, use_tqdm=False)
            return sum(len(sample.token_ids) for request in outputs for sample in request.outputs)
        return call

    def rlkit() -> int:
        return sum(len(completion.response_ids) for completion in rollout.generate(prompts, params))

    def reset() -> None:
        llm.reset_prefix_cache()

    def trainer_step() -> None:
        step(engine, 256)
        logprob_pass(engine, 256)
        rollout.update_weights(engine.full_weights())

    variants: dict[str, tuple[Callable[[], int], Callable[[], None]]] = {
        "alone": (raw(), reset), "no_text": (raw(detokenize=False), reset), "seeded": (raw(seed=True), reset),
        "rlkit": (rlkit, reset), "after_step": (rlkit, trainer_step),
    }
    trainer_step()  # compiles the engine's passes and pushes its weights (the same values: lr 1e-7)
    gc.collect()
    gc.freeze()
    names = list(variants)
    for call, before in variants.values():  # warm-up
        before()
        call()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, list[int]] = {name: [] for name in names}
    for index in range(args.rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            call, before = variants[name]
            before()
            torch.cuda.synchronize()
            start = time.perf_counter()
            tokens[name].append(call())
            seconds[name].append(time.perf_counter() - start)
    for name in names:
        median = statistics.median(seconds[name])
        print(json.dumps({"variant": name, "median_s": round(median, 3), "over_alone": round(
            median / statistics.median(seconds["alone"]), 3), "tokens_per_s": round(statistics.median(
                t / s for t, s in zip(tokens[name], seconds[name]))), "seconds": [round(s, 3) for s in seconds[name]],
            "tokens": tokens[name]}), flush=True)
    rollout.close()


if __name__ == "__main__":
    main()
