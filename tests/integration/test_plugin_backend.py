"""A plugin backend gets its options block the way the built-ins do: its registry entry (rlkit.registry.Backend)
says what the block holds and which options lower its memory; rlkit validates, shows, passes and names them.

The plugin is a real distribution (an `rlkit.rollouts` entry point): a rollout that generates with the HF
engine a configurable number of prompts at a time, its Backend given as the class's `backend` attribute.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from click.testing import CliRunner

from helpers import small_run, write_reward_distribution
from rlkit.cli.main import cli
from rlkit.config import RunConfig, build_config
from rlkit.errors import ConfigError
from rlkit.registry import ROLLOUT_ENGINES, TRAIN_ENGINES, Backend
from rlkit.trainer.guards import out_of_memory_message

PLUGIN = '''
from typing import Annotated

from pydantic import Field

from rlkit.config.base import Section
from rlkit.registry import Backend
from rlkit.rollout.hf import HFRollout
from rlkit.rollout.hf_options import HFOptions


class ChunkedOptions(Section):
    prompts_per_call: Annotated[int, Field(ge=1, description="Prompts per generate call.")] = 2


class ChunkedRollout(HFRollout):
    backend = Backend(options=ChunkedOptions, memory_knobs=("prompts_per_call",))
    built_with = []

    def __init__(self, config, options, model_path, tokenizer, dist, **kwargs):
        ChunkedRollout.built_with.append(options)
        super().__init__(config, HFOptions(batch_size=options.prompts_per_call), model_path, tokenizer, dist,
                         **kwargs)
'''


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """The `chunked` rollout, installed for this test only."""
    site = tmp_path / "site"
    site.mkdir()
    write_reward_distribution(site, "chunkedroll", PLUGIN, {"chunked": "chunkedroll:ChunkedRollout"},
                              group="rlkit.rollouts")
    monkeypatch.syspath_prepend(str(site))
    ROLLOUT_ENGINES.reload_entry_points()
    yield sys.modules.get("chunkedroll")
    ROLLOUT_ENGINES.unregister("chunked")
    sys.modules.pop("chunkedroll", None)


def show(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["config", "show", *args])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


def test_a_plugin_rollout_reads_its_own_block(chunked):
    shown = show("--rollout", "chunked", "rollout.chunked.prompts_per_call=3")
    assert shown["rollout"]["name"] == "chunked" and shown["rollout"]["chunked"] == {"prompts_per_call": 3}
    assert show("--rollout", "chunked")["rollout"]["chunked"] == {"prompts_per_call": 2}  # its defaults
    everything = show("--all")["rollout"]
    assert {"hf", "vllm", "sglang", "chunked"} <= set(everything)


def test_a_plugin_block_is_validated_whichever_rollout_is_selected(chunked):
    with pytest.raises(ConfigError, match="did you mean 'rollout.chunked.prompts_per_call'"):
        build_config(RunConfig, None, ["rollout.name=chunked", "rollout.chunked.prompts_per_cal=3"])
    with pytest.raises(ConfigError, match="rollout.chunked.prompts_per_call: Input should be greater than or equal"):
        build_config(RunConfig, None, ["rollout.name=hf", "rollout.chunked.prompts_per_call=0"])


def test_a_plugin_rollout_trains_with_its_options_and_names_them_when_memory_runs_out(chunked, tiny_model,
                                                                                     tmp_path):
    output_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--rollout", "chunked",
                                      *small_run(tiny_model, output_dir, "rollout.chunked.prompts_per_call=3")])
    assert result.exit_code == 0, result.output
    rollout_class = ROLLOUT_ENGINES.get("chunked")
    assert rollout_class.built_with[-1].prompts_per_call == 3
    last = json.loads((output_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and "reward/mean" in last

    cfg = build_config(RunConfig, None, ["rollout.name=chunked", "rollout.chunked.prompts_per_call=3"])
    message = out_of_memory_message(MemoryError("CUDA out of memory"), cfg, step=4)
    assert "lower rollout.chunked.prompts_per_call (now 3)" in message


class Bare:
    """A training engine that declares nothing about itself."""


class Described:
    """A rollout engine whose registration says what it is."""


@pytest.fixture
def code_plugins():
    TRAIN_ENGINES.register("bare", Bare)
    ROLLOUT_ENGINES.register("described", Described, backend=Backend(
        options="chunkedroll:ChunkedOptions", needs_gpu=True))
    yield
    TRAIN_ENGINES.unregister("bare")
    ROLLOUT_ENGINES.unregister("described")


def test_a_plugin_without_options_takes_no_block(code_plugins):
    cfg = build_config(RunConfig, None, ["engine.name=bare"])
    assert cfg.engine.options is None
    with pytest.raises(ConfigError, match="engine.bare: the training engine 'bare' takes no options"):
        build_config(RunConfig, None, ["engine.bare.anything=1"])
    message = out_of_memory_message(MemoryError("out of memory"), cfg, step=1)
    assert "lower the bare training engine's memory settings (engine.bare.*)" in message


def test_an_option_written_flat_names_the_plugin_block_it_belongs_to(chunked, code_plugins):
    with pytest.raises(ConfigError, match="'prompts_per_call' is an option of the described rollout engine"):
        build_config(RunConfig, None, ["rollout.prompts_per_call=3"])


def test_bench_skips_a_plugin_that_needs_a_gpu_on_a_cpu_machine(chunked, code_plugins):
    from rlkit.bench.machine import Machine
    from rlkit.bench.runner import skip_reason

    cpu = Machine(None, 0, "cpu", 2)
    assert skip_reason("fsdp2", "described", cpu) == "rollout engine described needs a CUDA GPU"
    assert skip_reason("fsdp2", "chunked", cpu) is None
