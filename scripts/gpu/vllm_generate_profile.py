"""Where the trainer's vLLM generate time goes: rlkit's VLLMRollout.generate against plain LLM.generate on the
same engine and prompts (32 prompts x n=8, 128 prompt + 256 new tokens, ignore EOS).

usage: python3 vllm_generate_profile.py MODEL_DIR
"""

import sys
import time

import torch
from transformers import AutoTokenizer

from rlkit.config.schema import RolloutConfig
from rlkit.distributed import DistInfo
from rlkit.rollout.base import SamplingParams
from rlkit.rollout.vllm import VLLMRollout
from rlkit.rollout.vllm_options import VLLMOptions

model = sys.argv[1]
rollout = VLLMRollout(RolloutConfig(), VLLMOptions(gpu_memory_utilization=0.5, sleep_level=0), model,
                      AutoTokenizer.from_pretrained(model), DistInfo(device="cuda:0"))
generator = torch.Generator().manual_seed(0)
prompts = [torch.randint(100, 20000, (128,), generator=generator).tolist() for _ in range(32)]
params = SamplingParams(n=8, temperature=1.0, max_new_tokens=256, ignore_eos=True)
vllm = rollout._vllm
requests = [vllm.TokensPrompt(prompt_token_ids=p) for p in prompts]


def timed(label, fn):
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<55} {seconds:6.2f} s  {32 * 8 * 256 / seconds:>9,.0f} tokens/s", flush=True)


timed("VLLMRollout.generate (per-request seeds, logprobs)", lambda: rollout.generate(prompts, params))
plain = dict(n=8, temperature=1.0, max_tokens=256, ignore_eos=True)
timed("LLM.generate, n=8, no seed, no logprobs", lambda: rollout.llm.generate(
    requests, vllm.SamplingParams(**plain), use_tqdm=False))
timed("LLM.generate, n=8, no seed, logprobs=0", lambda: rollout.llm.generate(
    requests, vllm.SamplingParams(**plain, logprobs=0), use_tqdm=False))
timed("LLM.generate, n=8, per-request seed, no logprobs", lambda: rollout.llm.generate(
    requests, [vllm.SamplingParams(**plain, seed=i) for i in range(32)], use_tqdm=False))
