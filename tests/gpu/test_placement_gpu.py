"""Placements on two GPUs, end to end: `torchrun --nproc_per_node=2 -m rlkit train` on the embedded task.

- colocated, rollout tensor parallelism 2: one vLLM engine over both GPUs (external_launcher; both ranks are
  given the same prompts and each trains half of the rows), or one SGLang engine started by rank 0 on both GPUs
  (rank 1 gets the responses from it);
- split: rank 0 trains, rank 1 rolls out (vLLM, SGLang or HF), weights over NCCL, staleness 0 and 1.

Each run must learn the task as the one-GPU runs of tests/gpu/test_rl_training_gpu.py do (the reward rises by
0.3). Needs 2 GPUs (and vLLM / SGLang for their cases). Run on the GPU machine with scripts/gpu/placement_2gpu.sh.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.multi_gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")]

MEMORY = {"vllm": ["rollout.vllm.enforce_eager=true"], "sglang": ["rollout.sglang.disable_cuda_graph=true"],
          "hf": []}
COLOCATED_SHARE = {"vllm": ["rollout.vllm.gpu_memory_utilization=0.3"],
                   "sglang": ["rollout.sglang.mem_fraction_static=0.3"], "hf": []}
CASES = {
    "vllm_tp2": ["--rollout", "vllm", "rollout.vllm.tensor_parallel_size=2", *MEMORY["vllm"], *COLOCATED_SHARE["vllm"]],
    "sglang_tp2": ["--rollout", "sglang", "rollout.sglang.tensor_parallel_size=2", *MEMORY["sglang"],
                   *COLOCATED_SHARE["sglang"]],
    "vllm_split_k0": ["--rollout", "vllm", "placement.mode=split", *MEMORY["vllm"]],
    "vllm_split_k1": ["--rollout", "vllm", "placement.mode=split", "placement.staleness=1", *MEMORY["vllm"]],
    "sglang_split_k1": ["--rollout", "sglang", "placement.mode=split", "placement.staleness=1", *MEMORY["sglang"]],
    "hf_split_k1": ["--rollout", "hf", "placement.mode=split", "placement.staleness=1"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_embedded_task_learns_on_two_gpus(case, tmp_path):
    rollout = CASES[case][1]
    if rollout != "hf" and importlib.util.find_spec(rollout) is None:
        pytest.skip(f"{rollout} is not installed")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlkit",
               "train", *CASES[case], f"trainer.output_dir={tmp_path}", "trainer.device=cuda",
               "trainer.progress_bar=false"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, env=dict(os.environ))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validations = [r["val/reward/mean"] for r in records if "val/reward/mean" in r]
    rewards = [r["reward/mean"] for r in records if "reward/mean" in r]
    assert validations[-1] >= validations[0] + 0.3, validations
    assert sum(rewards[-10:]) / 10 >= sum(rewards[:10]) / 10 + 0.3, rewards
    if "split" in case:
        staleness = int(case[-1])
        assert max(r["staleness/max"] for r in records if "staleness/max" in r) == staleness
        assert all(r["time/generate"] > 0 for r in records if "reward/mean" in r)  # the rollout rank's times
