"""VLLMRollout in the colocated SPMD layout: under torchrun, one engine per rank (tensor_model_parallel_size 1)
or one engine over both GPUs (2), through vLLM's external launcher; weight sync and sleep on every rank.

Needs 2 GPUs and vLLM; run on the GPU machine with scripts/gpu/vllm_tests.sh (tests/gpu/test_vllm.py holds
the single-GPU tests and the tiny model's description).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from vllm_tiny import build_tiny, record, write_numbers

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("vllm")

pytestmark = [pytest.mark.gpu, pytest.mark.multi_gpu]

LOGPROB_TOLERANCE = 0.05  # max |vLLM - transformers| per token, both bf16, as in test_vllm.py


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("tiny_qwen2"))
    build_tiny(directory)
    return directory


@pytest.fixture(scope="module", autouse=True)
def _write_numbers():
    yield
    write_numbers()


_SPMD_WORKER = """
import json, os, sys
import torch
import torch.distributed as dist
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from rlkit.config.schema import RolloutConfig
from rlkit.distributed import DistInfo
from rlkit.rollout.base import SamplingParams
from rlkit.rollout.vllm import VLLMRollout
from rlkit.rollout.vllm_options import VLLMOptions

path, tp, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rank, world, local = (int(os.environ[key]) for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
device = torch.device("cuda", local)
torch.cuda.set_device(device)
dist.init_process_group("nccl", device_id=device)  # the trainer's group: the engines run on it
options = VLLMOptions(
    tensor_parallel_size=tp, gpu_memory_utilization=0.25, enforce_eager=True, max_model_len=512, sleep_level=1
)
dist_info = DistInfo(rank=rank, world_size=world, local_rank=local, device=str(device))
rollout = VLLMRollout(RolloutConfig(name="vllm"), options, path, AutoTokenizer.from_pretrained(path), dist_info,
                      seed=3)
prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]  # the same prompts on every rank
params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, ignore_eos=True)
before = rollout.generate(prompts, params)

torch.manual_seed(1)  # the "trainer's" new weights, the same on every rank
model_b = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).to(device, torch.bfloat16).eval()
torch.cuda.synchronize()
free_awake = torch.cuda.mem_get_info()[0]
rollout.sleep()
free_asleep = torch.cuda.mem_get_info()[0]
rollout.wake_up()
rollout.update_weights(model_b.state_dict().items())
after = rollout.generate(prompts, params)
diffs = []
with torch.no_grad():
    for c in after:
        ids = torch.tensor([c.prompt_ids + c.response_ids], device=device)
        logits = model_b(ids).logits[0, len(c.prompt_ids) - 1 : -1].float()
        reference = torch.log_softmax(logits, -1).gather(1, ids[0, len(c.prompt_ids) :, None]).squeeze(1)
        diffs.append((torch.tensor(c.logprobs, device=device) - reference).abs().max().item())
record = {
    "before": [c.response_ids for c in before],
    "after": [c.response_ids for c in after],
    "logprob_max_diff": max(diffs),
    "sync_seconds": rollout.last_sync_seconds,
    "freed_gib": (free_asleep - free_awake) / 2**30,
}
with open(os.path.join(out, f"rank{rank}.json"), "w") as file:
    json.dump(record, file)
rollout.close()
dist.barrier()  # the trainer's group survives close()
dist.destroy_process_group()
"""


@pytest.mark.parametrize("tp", [1, 2])
def test_external_launcher_one_engine_per_rank_or_per_tensor_parallel_group(tiny_path, tmp_path, tp):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    worker = tmp_path / "spmd_worker.py"
    worker.write_text(_SPMD_WORKER)
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
               tiny_path, str(tp), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for rank, measured in enumerate(ranks):
        record(f"torchrun_tp{tp}_rank{rank}_logprob_vs_b_max", measured["logprob_max_diff"])
        record(f"torchrun_tp{tp}_rank{rank}_sync_seconds", measured["sync_seconds"])
        record(f"torchrun_tp{tp}_rank{rank}_sleep1_freed_gib", measured["freed_gib"])
        assert measured["logprob_max_diff"] < LOGPROB_TOLERANCE
        assert measured["freed_gib"] > 1.0
    if tp == 2:  # one engine over both GPUs: its two ranks sample the very same tokens
        assert ranks[0]["before"] == ranks[1]["before"] and ranks[0]["after"] == ranks[1]["after"]
    else:  # an engine per rank, seeded apart: different samples for the same prompts
        assert ranks[0]["before"] != ranks[1]["before"]
