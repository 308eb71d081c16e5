"""What per-request seeds cost vLLM 0.26 on a small model, and whether a call-seeded engine replays (issue 17).

vLLM 0.26's V1 sampler draws the noise of each seeded request with a kernel of its own, in a Python loop, at
every decoding step (vllm/v1/sample/ops/topk_topp_sampler.py, random_sample); unseeded requests share one
kernel. On SmolLM2-135M a decoding step is short, so that loop may be what the trainer's generate phase loses
against "vLLM alone" (which sends no seeds). One in-process engine (rlkit's VLLMRollout, sleep_level 0), the
file's prompts (chat template, responses end at EOS), n samples each, temperature 1:
  vllm alone                  LLM.generate with one SamplingParams, vLLM's defaults (what rlkit bench's row runs)
  vllm alone, no text         ... detokenize=False
  rlkit, request seeds        VLLMRollout.generate with rollout.vllm.request_seeds=true (rlkit before)
  rlkit, call seed            VLLMRollout.generate as it runs by default (the engine's generator seeded per call)
Each round runs every variant once on the round's prompt block, in a rotated order; medians over the rounds
after a warm-up round. Then the replay checks of the call-seeded default: the same call index on the same
prompts, with the prefix cache as the first call left it and after a reset (a resumed run's cold cache).

usage: python3 scripts/gpu/vllm_seed_cost.py --model DIR --data FILE.parquet [--prompts 32] [--n 8]
       [--max-tokens 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from rlkit.config.schema import DataConfig, RolloutConfig
from rlkit.data import load_prompt_dataset
from rlkit.distributed import DistInfo
from rlkit.models.loading import load_tokenizer
from rlkit.rollout.base import SamplingParams
from rlkit.rollout.vllm import VLLMRollout
from rlkit.rollout.vllm_options import VLLMOptions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    count = args.prompts * (args.rounds + 1)
    data = load_prompt_dataset([args.data], DataConfig(max_prompt_length=1024), tokenizer, max_samples=count)
    ids = [record.prompt_ids for record in data]
    blocks = [ids[i:i + args.prompts] for i in range(0, count, args.prompts)]
    options = VLLMOptions(gpu_memory_utilization=0.5, sleep_level=0)
    rollout = VLLMRollout(RolloutConfig(name="vllm"), options, args.model, tokenizer, DistInfo(device="cuda:0"))
    vllm, llm = rollout._vllm, rollout.llm
    scheduler = llm.llm_engine.vllm_config.scheduler_config
    print(json.dumps({"async_scheduling": scheduler.async_scheduling,
                      "max_num_batched_tokens": scheduler.max_num_batched_tokens}), flush=True)
    stop_ids = [tokenizer.eos_token_id]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_tokens, stop_token_ids=stop_ids)

    def raw(block, **options):
        requests = [vllm.TokensPrompt(prompt_token_ids=prompt) for prompt in block]
        sampling = vllm.SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens,
                                       stop_token_ids=stop_ids, **options)
        outputs = llm.generate(requests, sampling, use_tqdm=False)
        return sum(len(sample.token_ids) for request in outputs for sample in request.outputs)

    def rlkit(block, request_seeds):
        rollout.options = options.model_copy(update={"request_seeds": request_seeds})
        return sum(len(c.response_ids) for c in rollout.generate(block, params))

    variants = {
        "vllm alone": lambda block: raw(block),
        "vllm alone, no text": lambda block: raw(block, detokenize=False),
        "rlkit, request seeds": lambda block: rlkit(block, True),
        "rlkit, call seed": lambda block: rlkit(block, False),
    }
    names = list(variants)
    for name in names:
        variants[name](blocks[0])  # warm-up
    seconds = {name: [] for name in names}
    tokens = {name: [] for name in names}
    for round_index, block in enumerate(blocks[1:]):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            tokens[name].append(variants[name](block))
            seconds[name].append(time.perf_counter() - start)
    for name in names:
        print(json.dumps({"variant": name, "median_s": round(statistics.median(seconds[name]), 3),
                          "seconds": [round(s, 3) for s in seconds[name]], "tokens": tokens[name],
                          "tokens_per_s": round(statistics.median(t / s for t, s in zip(tokens[name], seconds[name])))}),
              flush=True)

    # replay of the call-seeded default: a resumed run restores the call index and meets a cold prefix cache
    rollout.options = options
    state = rollout.state_dict()
    first = [c.response_ids for c in rollout.generate(blocks[1], params)]
    following = [c.response_ids for c in rollout.generate(blocks[1], params)]
    rollout.load_state_dict(state)
    warm = [c.response_ids for c in rollout.generate(blocks[1], params)]
    rollout.load_state_dict(state)
    rollout.llm.reset_prefix_cache()
    cold = [c.response_ids for c in rollout.generate(blocks[1], params)]
    print(json.dumps({"replay_warm_cache_equal": warm == first, "replay_cold_cache_equal": cold == first,
                      "next_call_differs": following != first,
                      "cold_cache_same_responses": sum(a == b for a, b in zip(cold, first)),
                      "responses": len(first)}), flush=True)
    rollout.close()


if __name__ == "__main__":
    main()
