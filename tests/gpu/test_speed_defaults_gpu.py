"""What `auto` picks on a GPU, in a real run (docs/speed_defaults.md; the CPU side is
tests/integration/test_speed_defaults.py): the tiny model, the HF rollout, one optimizer step per batch.

`pytest tests/gpu/test_speed_defaults_gpu.py -m gpu` (DeepSpeed's case needs it on PYTHONPATH). The tiny model
is too small to compile; everything else resolves as for a real model: packing where torch has the flash varlen
kernel, a token budget from the free memory with no checkpointing, no rollout log-probs, old log-probs from the
update, and ZeRO-2 on one GPU.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from rlkit.engines.varlen_attention import flash_varlen_available
from rlkit.trainer.speed import parse_header_line

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
def test_auto_on_a_gpu(engine, tmp_path):
    if engine == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    command = [sys.executable, "-m", "rlkit", "train", "--engine", engine, f"trainer.output_dir={tmp_path}",
               "trainer.device=cuda", "trainer.progress_bar=false", "trainer.total_steps=3", "trainer.test_freq=0",
               "trainer.val_before_train=false", "algorithm.mini_batch_size=16", "algorithm.use_kl_loss=true"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-4000:]
    settings = dict(item for item in map(parse_header_line, result.stderr.splitlines()) if item is not None)
    values = {key: item["value"] for key, item in settings.items()}
    assert all(item["source"] == "auto" for item in settings.values()), settings
    assert values["engine.pack_sequences"] is flash_varlen_available()
    # shared in a batch only where that saves a micro-batch (docs/speed_defaults.md); packing off: never
    assert values["engine.share_prompts"] == ("if_fewer_micro_batches" if flash_varlen_available() else False)
    assert values["engine.torch_compile"] is False  # 0.1M parameters
    # prompts of at most data.max_prompt_length=512 tokens and 16 new ones: one sequence is 528 tokens
    assert values["engine.max_tokens_per_micro_batch"] >= 528 and values["engine.gradient_checkpointing"] is False
    assert values["rollout.return_logprobs"] is False and values["algorithm.old_logprobs_from_update"] is True
    assert values["rollout.sleep"] is False  # 32,768 tokens fit beside the awake HF rollout of a 0.1M model
    if engine == "deepspeed":
        assert values["engine.deepspeed.zero_stage"] == 2
    else:
        assert values["engine.fsdp2.units"] == "model"  # one GPU, a 0.1M model: one unit, no per-layer hooks
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all("time/old_logprobs" not in r and "rollout/logprob_abs_diff" not in r
                                     for r in records)
    assert all(r["memory/peak_gb"] * 2**30 < torch.cuda.get_device_properties(0).total_memory for r in records)
