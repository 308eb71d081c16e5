"""The generic registry: duplicates, unknown names, lazy built-ins, references and entry points."""

import subprocess
import sys

import pytest

from rlkit.errors import PluginError
from rlkit.registry import ALL_REGISTRIES, ROLLOUT_ENGINES, TRAIN_ENGINES, Registry, load_object


def test_register_and_get():
    registry = Registry("widget", "rlkit.test_widgets")
    registry.register("one", lambda: 1, aliases=["uno"])
    assert registry.get("one")() == 1 and registry.get("uno")() == 1
    with pytest.raises(PluginError, match="registered twice"):
        registry.register("one", lambda: 2)


def test_unknown_name_lists_known_and_suggests():
    registry = Registry("widget", "rlkit.test_widgets")
    registry.register("alpha", object())
    registry.register("beta", object())
    with pytest.raises(PluginError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\? Known: alpha, beta"):
        registry.get("alpah")


def test_lazy_builtins_are_not_imported_until_selected():
    # A fresh interpreter: other tests in this process may import deepspeed on purpose.
    probe = (
        "import sys, rlkit, rlkit.config, rlkit.trainer.rl\n"
        "from rlkit.registry import ALL_REGISTRIES\n"
        "[registry.names() for registry in ALL_REGISTRIES.values()]\n"
        "print(sorted(m for m in ('vllm', 'deepspeed', 'sglang') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert "fsdp2" in TRAIN_ENGINES and "vllm" in ROLLOUT_ENGINES


def test_missing_dependency_says_how_to_install():
    registry = Registry("engine", "rlkit.test_engines")
    registry.register_lazy("heavy", "nonexistent_pkg_xyz.engine:Engine", requires=["nonexistent_pkg_xyz"])
    with pytest.raises(PluginError, match=r"pip install 'rlkit\[heavy\]'"):
        registry.get("heavy")
    assert registry.entries()[0].missing == ["nonexistent_pkg_xyz"]


def test_file_and_module_references(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text("def thing():\n    return 42\n")
    assert load_object(f"{plugin}:thing")() == 42
    assert load_object("os.path:join")("a", "b") == "a/b"
    with pytest.raises(PluginError, match="has no attribute 'nope'"):
        load_object(f"{plugin}:nope")
    with pytest.raises(PluginError, match="does not exist"):
        load_object(f"{tmp_path}/missing.py:thing")
    with pytest.raises(PluginError, match="cannot import module"):
        load_object("no_such_module_abc:thing")


def test_entry_points_are_discovered(tmp_path, monkeypatch):
    package = tmp_path / "widgetplug"
    package.mkdir()
    (package / "__init__.py").write_text("def make():\n    return 'made'\n")
    dist_info = tmp_path / "widgetplug-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: widgetplug\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[rlkit.test_widgets]\nmaker = widgetplug:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("widget", "rlkit.test_widgets")
    assert registry.get("maker")() == "made"
    (entry,) = registry.entries()
    assert entry.source == "entry point (widgetplug)"


def test_all_registries_list_their_builtins():
    names = {group: registry.names() for group, registry in ALL_REGISTRIES.items()}
    assert {"fsdp2", "deepspeed"} <= set(names["engines"])
    assert {"hf", "vllm", "sglang"} <= set(names["rollouts"])
    assert ({"gae", "grpo", "drgrpo", "reinforce", "reinforce_plus_plus", "rloo", "remax"}
            <= set(names["advantage_estimators"]))
    assert {"ppo", "gspo", "cispo"} <= set(names["policy_losses"])
