"""Environments by name, file and entry point; every mistake refused before a model loads; `rlkit list`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from helpers import write_reward_distribution
from rlkit.config import RunConfig, build_config
from rlkit.config.environment import EnvironmentConfig
from rlkit.data.prompts import PromptDataset, PromptRecord
from rlkit.environments import SingleTurnEnvironment, ToolEnvironment, environment_factory
from rlkit.errors import ConfigError, PluginError
from rlkit.registry import ENVIRONMENTS
from rlkit.trainer.components import build_environments

PLUGIN = '''
from rlkit.environments import Step


class Countdown:
    """Ends after `turns` model turns; the last one scores 1."""

    def __init__(self, turns: int = 2):
        self.turns = turns

    def reset(self, sample):
        self.left = self.turns
        return None

    def step(self, model_text):
        self.left -= 1
        return Step([{"role": "user", "content": "again"}], reward=float(self.left == 0), done=self.left == 0)


class NoStep:
    def reset(self, sample):
        return None
'''


def test_the_default_is_the_single_turn_environment(tokenizer):
    environment = environment_factory(EnvironmentConfig(), tokenizer)()
    assert isinstance(environment, SingleTurnEnvironment)
    assert environment.reset(None) is None and environment.step("anything").done


def test_a_file_plugin_with_its_kwargs(tokenizer, tmp_path):
    (tmp_path / "countdown.py").write_text(PLUGIN)
    factory = environment_factory(EnvironmentConfig(name=f"{tmp_path}/countdown.py:Countdown", kwargs={"turns": 3}),
                                  tokenizer)
    first, second = factory(), factory()
    assert first is not second and first.turns == 3
    first.reset(None)
    assert [first.step("x").done for _ in range(3)] == [False, False, True]


def test_an_entry_point_environment(tokenizer, tmp_path, monkeypatch):
    write_reward_distribution(tmp_path, "countdown_pkg", PLUGIN, {"countdown": "countdown_pkg:Countdown"},
                              group="rlkit.environments")
    monkeypatch.syspath_prepend(str(tmp_path))
    ENVIRONMENTS.reload_entry_points()
    try:
        assert environment_factory(EnvironmentConfig(name="countdown"), tokenizer)().turns == 2
    finally:
        ENVIRONMENTS.unregister("countdown")


@pytest.mark.parametrize("config, error, message", [
    ({"name": "tools"}, ConfigError, "environment 'tools' has no tools; list them in environment.tools"),
    ({"tools": ["calculator"]}, ConfigError, "environment 'single_turn' takes no tools; use environment.name=tools"),
    ({"name": "tools", "tools": ["calculator"], "kwargs": {"max_calls": 2}}, ConfigError,
     "cannot be made from environment.kwargs .*max_calls"),
    ({"name": "tools", "tools": ["calculator"], "kwargs": {"tokenizer": None}}, ConfigError,
     "sets tokenizer, which rlkit provides"),
    ({"name": "PLUGIN:NoStep"}, PluginError, "made a NoStep, which lacks reset.*and step"),
])
def test_mistakes_are_refused_with_what_to_do(tokenizer, tmp_path, config, error, message):
    (tmp_path / "plugin.py").write_text(PLUGIN)
    if config["name" if "name" in config else "tools"] and config.get("name", "").startswith("PLUGIN"):
        config = {**config, "name": config["name"].replace("PLUGIN", str(tmp_path / "plugin.py"))}
    with pytest.raises(error, match=message):
        environment_factory(EnvironmentConfig(**config), tokenizer)


def test_unknown_names_fail_when_the_config_is_read():
    with pytest.raises(ConfigError, match="unknown environment 'tool'. Did you mean 'tools'"):
        build_config(RunConfig, None, ["environment.name=tool"])
    with pytest.raises(ConfigError, match="unknown tool 'pyhton'"):
        build_config(RunConfig, None, ["environment.name=tools", "environment.tools=[pyhton]"])


def test_the_tool_environment_needs_chat_prompts(tokenizer):
    raw = PromptDataset([PromptRecord([5, 6], "hi", "test", "x", {}, 0, messages=None)])
    cfg = build_config(RunConfig, None, ["environment.name=tools", "environment.tools=[calculator]"])
    assert ToolEnvironment.needs_chat_prompts
    with pytest.raises(ConfigError, match="needs chat prompts, but data.prompt_format gives raw text"):
        build_environments(cfg, tokenizer, raw)


def test_rlkit_list_shows_environments_and_tools():
    from rlkit.cli.main import cli

    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0
    assert "environments (environments; entry point group rlkit.environments):" in result.output
    assert "tools (tools; entry point group rlkit.tools):" in result.output
    for name in ("single_turn", "tools", "calculator", "python"):
        assert f"  {name} " in result.output
