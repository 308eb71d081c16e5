"""vLLM's own offline throughput on the bench shapes: the reference the trainer's generate phase is held to.

usage: python3 vllm_offline_throughput.py MODEL_DIR   (random token-id prompts of 128 tokens, 256 new tokens)
"""

import sys
import time

import torch
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

model = sys.argv[1]
llm = LLM(model=model, dtype="bfloat16", gpu_memory_utilization=0.5, seed=0)
generator = torch.Generator().manual_seed(0)
for num_prompts, n in ((32, 8), (256, 1)):
    prompts = [TokensPrompt(prompt_token_ids=torch.randint(100, 20000, (128,), generator=generator).tolist())
               for _ in range(num_prompts)]
    params = SamplingParams(n=n, temperature=1.0, max_tokens=256, ignore_eos=True)
    llm.generate(prompts[:4], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    print(f"vllm offline: {num_prompts} prompts x n={n} x 256 new tokens: {tokens} tokens in {seconds:.2f} s "
          f"= {tokens / seconds:,.0f} tokens/s")
