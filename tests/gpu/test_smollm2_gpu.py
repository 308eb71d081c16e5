"""GRPO learns on a real model: 20 steps of configs/grpo_gsm8k_smollm2.yaml from the SFT model of SmolLM2-135M-Instruct
raise the mean train reward of the last 5 steps above that of the first 5 (strict GSM8K reward).

Needs a CUDA GPU, GSM8K and the SFT model, each found through the environment:
  RLKIT_SMOLLM2_SFT  the SFT model as a Hugging Face folder (`rlkit export` of configs/sft_gsm8k_smollm2.yaml's run);
                     without it the test imports the GGUF (RLKIT_SMOLLM2_GGUF, see tests/helpers.py) and runs that
                     SFT recipe for one epoch first (~2 min on an H200)
  RLKIT_GSM8K        a folder with train.parquet (from `rlkit data gsm8k`) or GSM8K's train.jsonl; default
                     the repository's datasets/gsm8k
The rollout is vLLM when it is importable, else Hugging Face generate. scripts/gpu/smollm2.sh test runs it.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, smollm2_gguf

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
STEPS, WINDOW = 20, 5


def gsm8k_train(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RLKIT_GSM8K", REPO / "datasets" / "gsm8k")).expanduser()
    if (folder / "train.parquet").is_file():
        return folder / "train.parquet"
    if not (folder / "train.jsonl").is_file():
        pytest.skip(f"no GSM8K in {folder}: set RLKIT_GSM8K to a folder with train.parquet or train.jsonl")
    from rlkit.data.gsm8k import convert_gsm8k

    return convert_gsm8k(folder, tmp_path / "gsm8k")["train"][1]


def rlkit(*args: str, timeout: int = 900) -> None:
    result = subprocess.run([sys.executable, "-m", "rlkit", *args], capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ), cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]


def sft_model(train_file: Path, tmp_path: Path) -> Path:
    if os.environ.get("RLKIT_SMOLLM2_SFT"):
        return Path(os.environ["RLKIT_SMOLLM2_SFT"]).expanduser()
    if not smollm2_gguf().is_file() or importlib.util.find_spec("gguf") is None:
        pytest.skip("set RLKIT_SMOLLM2_SFT, or RLKIT_SMOLLM2_GGUF with `pip install 'rlkit[gguf]'`")
    rlkit("model", "import", str(smollm2_gguf()), str(tmp_path / "base"))
    rlkit("sft", "configs/sft_gsm8k_smollm2.yaml", f"model.path={tmp_path / 'base'}",
          f"data.train_files=[{train_file}]", "data.val_files=[]", "trainer.total_epochs=1",
          f"trainer.output_dir={tmp_path / 'sft_run'}", "trainer.loggers=[jsonl]", "trainer.progress_bar=false")
    rlkit("export", str(tmp_path / "sft_run"), str(tmp_path / "sft"))
    return tmp_path / "sft"


@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
def test_grpo_raises_the_train_reward_of_the_sft_model(tmp_path, engine):
    if engine == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    train_file = gsm8k_train(tmp_path)
    model = sft_model(train_file, tmp_path)
    rollout = "vllm" if importlib.util.find_spec("vllm") else "hf"
    rlkit("train", "configs/grpo_gsm8k_smollm2.yaml", "--engine", engine, "--rollout", rollout, f"model.path={model}",
          f"data.train_files=[{train_file}]", "data.val_files=[]", f"trainer.total_steps={STEPS}",
          "trainer.save_at_end=false", "trainer.save_freq=0", f"trainer.output_dir={tmp_path / 'grpo'}",
          "trainer.loggers=[jsonl]", "trainer.progress_bar=false")
    records = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    rewards = [record["reward/mean"] for record in records if "reward/mean" in record]
    kl = [record["kl_loss"] for record in records if "kl_loss" in record]
    first, last = sum(rewards[:WINDOW]) / WINDOW, sum(rewards[-WINDOW:]) / WINDOW
    print(f"[smollm2-gpu] {engine} x {rollout}: train reward of steps 1-{WINDOW} {first:.4f}, "
          f"{STEPS - WINDOW + 1}-{STEPS} {last:.4f}; per step {[round(r, 4) for r in rewards]}; "
          f"KL to the reference per step {[round(k, 5) for k in kl]}")
    assert len(rewards) == STEPS
    assert last > first, rewards
    # The policy moves away from the reference: on one H200, with the recipe's earlier sampling (8 samples at
    # temperature 1), FSDP2's KL grew 2.7-7x in 20 steps (the first value is bf16 noise between the two passes);
    # with the recipe's present settings the KL loss of steps 11-20 was 3x that of steps 1-10 (docs/results.md). A
    # DeepSpeed ZeRO-2 run whose KL stayed at 0.0012 trained a model that did not change.
    assert sum(kl[-WINDOW:]) > 1.5 * sum(kl[:WINDOW]), kl
