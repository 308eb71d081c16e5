"""`rlkit train` with environments on the tiny model: the default single-turn environment reproduces the run
without environments bit for bit; the tiny model learns to call a tool (examples/environments/letter_lookup.py);
a multi-turn run resumes exactly; the tool environment with the calculator and python tools trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from helpers import REPO, small_run
from rlkit.config import RunConfig, build_config
from rlkit.distributed import DistInfo
from rlkit.experience import ColocatedExperience, SingleTurnGeneration
from rlkit.trainer.rl import RLTrainer

LOOKUP = f"{REPO}/examples/environments/letter_lookup.py:LetterLookup"


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def train(overrides: list[str]) -> dict:
    return RLTrainer(build_config(RunConfig, None, overrides), DistInfo()).fit()


def comparable(output_dir: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    return [{k: v for k, v in record.items() if not k.startswith(("time/", "throughput/", "memory/", *drop))}
            for record in read_metrics(output_dir)]


def final_weights(output_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(output_dir / f"checkpoints/step_{step:08d}/actor/model.safetensors")


def test_the_default_environment_is_the_run_without_environments_bit_for_bit(tiny_model, tmp_path, monkeypatch):
    train(small_run(tiny_model, tmp_path / "environment", "trainer.total_steps=3"))

    def single_turn_source(cfg, parts, speed, dist, timer, placement):  # the experience stage before environments
        pad_token_id = parts.tokenizer.pad_token_id
        return ColocatedExperience(cfg, rollout=parts.rollout,
                                   generation=SingleTurnGeneration(parts.rollout, pad_token_id),
                                   reward=parts.reward, train_data=parts.train_data, val_data=parts.val_data, dist=dist,
                                   timer=timer)

    monkeypatch.setattr("rlkit.trainer.rl.build_experience", single_turn_source)
    train(small_run(tiny_model, tmp_path / "before", "trainer.total_steps=3"))

    with_environment = comparable(tmp_path / "environment")
    assert all(record.get("env/turns/mean", 1.0) == 1.0 for record in with_environment)
    assert comparable(tmp_path / "environment", drop=("env/", "val/env/")) == comparable(tmp_path / "before")
    new, old = final_weights(tmp_path / "environment", 3), final_weights(tmp_path / "before", 3)
    assert new.keys() == old.keys() and all(torch.equal(new[name], old[name]) for name in new)


def lookup_run(tiny_model: str, output_dir: Path, *extra: str) -> list[str]:
    return [f"model.path={tiny_model}", f"trainer.output_dir={output_dir}", "trainer.progress_bar=false",
            "trainer.loggers=[jsonl]", f"environment.name={LOOKUP}", "reward.name=environment",
            "rollout.max_turns=2", "rollout.max_new_tokens=8", "rollout.max_total_tokens=32", *extra]


def test_the_tiny_model_learns_to_call_the_tool(tiny_model, tmp_path):
    """Calling the tool (writing '?') is worth 0.5: from about 1 sample in 25 the model gets to call it always."""
    train(lookup_run(tiny_model, tmp_path, "trainer.total_steps=14", "trainer.test_freq=14", "data.max_val_samples=8"))
    records = read_metrics(tmp_path)
    steps = [record for record in records if record["step"] > 0]
    first, last = steps[:2], steps[-2:]
    assert max(record["env/tool_call_rate"] for record in first) < 0.2
    assert min(record["env/tool_call_rate"] for record in last) > 0.8
    assert min(r["reward/mean"] for r in last) > max(r["reward/mean"] for r in first) + 0.3
    before, after = records[0], records[-1]
    assert before["val/env/tool_call_rate"] == 0.0 and after["val/env/tool_call_rate"] == 1.0
    assert after["val/env/turns/mean"] == 2.0  # the tool answered, the model answered again
    assert all(math.isfinite(record["pg_loss"]) for record in steps)


def test_a_multi_turn_run_resumes_exactly(tiny_model, tmp_path):
    common = ["data.train_batch_size=4", "algorithm.mini_batch_size=4", "rollout.n=4", "trainer.test_freq=2",
              "trainer.save_freq=2", "data.max_val_samples=4"]
    full, part = tmp_path / "full", tmp_path / "part"
    train(lookup_run(tiny_model, full, *common, "trainer.total_steps=4"))
    train(lookup_run(tiny_model, part, *common, "trainer.total_steps=2"))
    train(lookup_run(tiny_model, part, *common, "trainer.total_steps=4"))
    assert comparable(full) == comparable(part)
    new, old = final_weights(full, 4), final_weights(part, 4)
    assert all(torch.equal(new[name], old[name]) for name in new)


def test_the_tool_environment_trains(tiny_model, tmp_path):
    last = train(small_run(tiny_model, tmp_path, "environment.name=tools", "environment.tools=[calculator,python]",
                           "environment.tool_options={python: {timeout_s: 5}}", "rollout.max_turns=3",
                           "rollout.max_total_tokens=40", "reward.name=letters", "data.train_batch_size=4",
                           "algorithm.mini_batch_size=4", "rollout.n=2", "trainer.total_steps=1",
                           "data.max_val_samples=2"))
    for key in ("env/turns/mean", "env/tool_calls/mean", "env/tool_error_rate", "val/env/tool_call_rate", "pg_loss"):
        assert math.isfinite(last[key]), key
