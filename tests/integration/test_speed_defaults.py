"""Speed options at `auto` (rlkit.trainer.speed) in whole runs: the header names what every option resolved to,
a run with every option at `auto` is the run with those values forced, and the config keeps `auto`."""

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import small_run
from rlkit.config import RunConfig, build_config
from rlkit.config.sft import SFTConfig
from rlkit.distributed import DistInfo
from rlkit.trainer.rl import RLTrainer
from rlkit.trainer.sft import SFTTrainer
from rlkit.trainer.speed import parse_header_line

SPEED_KEYS = {"engine.pack_sequences", "engine.share_prompts", "engine.torch_compile",
              "engine.max_tokens_per_micro_batch", "engine.gradient_checkpointing", "rollout.sleep",
              "rollout.return_logprobs", "algorithm.old_logprobs_from_update", "engine.fsdp2.units"}
# What only the clock and the allocator decide.
UNTIMED = ("time/", "throughput/", "memory/")


def run(trainer_class, cfg, caplog) -> tuple[dict[str, dict], list[dict]]:
    """The run's resolved speed options (from its header) and its metrics.jsonl records."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rlkit.trainer.speed"):
        trainer_class(cfg, DistInfo()).fit()
    settings = dict(item for item in map(parse_header_line, caplog.messages) if item is not None)
    lines = (Path(cfg.trainer.output_dir) / "metrics.jsonl").read_text().splitlines()
    records = [{key: value for key, value in json.loads(line).items() if not key.startswith(UNTIMED)}
               for line in lines]
    return settings, records


def forcing(settings: dict[str, dict]) -> list[str]:
    """Overrides that set every option to the value the header says it resolved to."""
    return [f"{key}={json.dumps(item['value'])}" for key, item in settings.items()]


def test_an_all_auto_rl_run_is_the_run_with_the_resolved_values_forced(tiny_model, tmp_path, caplog):
    # A KL loss (the reference pass) and a critic-free GRPO step, validated at the end.
    extra = ("algorithm.use_kl_loss=true", "trainer.val_before_train=false")
    auto_settings, auto_records = run(
        RLTrainer, build_config(RunConfig, None, small_run(tiny_model, tmp_path / "auto", *extra)), caplog)
    assert set(auto_settings) == SPEED_KEYS
    assert all(item["source"] == "auto" and item["reason"] == "CPU, the fixed default"
               for item in auto_settings.values())
    forced_cfg = build_config(RunConfig, None, small_run(tiny_model, tmp_path / "set", *extra,
                                                         *forcing(auto_settings)))
    forced_settings, forced_records = run(RLTrainer, forced_cfg, caplog)
    assert {key: item["value"] for key, item in forced_settings.items()} == \
        {key: item["value"] for key, item in auto_settings.items()}
    assert all(item["source"] == "set" for item in forced_settings.values())
    assert len(auto_records) == 2 and "rollout/logprob_abs_diff" in auto_records[0]
    assert auto_records == forced_records  # every metric, bit for bit


def test_an_all_auto_sft_run_is_the_run_with_the_resolved_values_forced(tiny_model, tmp_path, caplog):
    def sft(name: str, *overrides: str) -> SFTConfig:
        return build_config(SFTConfig, None, [
            f"model.path={tiny_model}", f"trainer.output_dir={tmp_path / name}", "trainer.total_steps=2",
            "trainer.loggers=[jsonl]", "trainer.progress_bar=false", "data.train_batch_size=8",
            "data.micro_batch_size_per_device=4", "data.max_val_samples=4", *overrides])

    auto_settings, auto_records = run(SFTTrainer, sft("auto"), caplog)
    assert set(auto_settings) == {key for key in SPEED_KEYS if key.startswith("engine.")}
    forced_settings, forced_records = run(SFTTrainer, sft("set", *forcing(auto_settings)), caplog)
    assert all(item["source"] == "set" for item in forced_settings.values())
    assert auto_records == forced_records and len(auto_records) == 3  # validation before training, 2 steps


@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
def test_config_show_prints_auto(engine):
    from rlkit.cli.main import cli

    result = CliRunner().invoke(cli, ["config", "show", "--engine", engine])
    assert result.exit_code == 0, result.output
    shown = result.output
    for option in ("gradient_checkpointing", "torch_compile", "pack_sequences", "share_prompts",
                   "max_tokens_per_micro_batch", "return_logprobs", "old_logprobs_from_update"):
        assert f"{option}: auto" in shown, option
    assert ("zero_stage: auto" in shown) == (engine == "deepspeed")
