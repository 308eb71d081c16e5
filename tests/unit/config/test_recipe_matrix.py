"""Any recipe runs with any backend: every YAML under configs/ x every registered training engine x every
registered rollout engine resolves with `rlkit config show CONFIG --engine E --rollout R`.

Recipes, engines and rollouts are discovered, not listed, so a new recipe or backend joins the matrix by
existing. A backend swap keeps the recipe's tuned options: they sit in blocks the other backend ignores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from helpers import REPO
from rlkit.cli.main import cli
from rlkit.registry import ROLLOUT_ENGINES, TRAIN_ENGINES

RECIPES = sorted((REPO / "configs").rglob("*.yaml"))
ENGINES = TRAIN_ENGINES.names()
ROLLOUTS = ROLLOUT_ENGINES.names()


def show(*args: str):
    return CliRunner().invoke(cli, ["config", "show", *args])


def takes_a_rollout(recipe: Path) -> bool:
    """An RL recipe (its resolved config has a rollout section); an SFT recipe runs no rollout engine."""
    result = show(str(recipe))
    assert result.exit_code == 0, f"{recipe.name}:\n{result.output}"
    return "rollout" in yaml.safe_load(result.output)


def test_the_matrix_has_every_recipe_and_backend():
    assert RECIPES and {"fsdp2", "deepspeed"} <= set(ENGINES) and {"hf", "vllm", "sglang"} <= set(ROLLOUTS)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: str(path.relative_to(REPO / "configs")))
@pytest.mark.parametrize("engine", ENGINES)
def test_every_recipe_resolves_with_every_backend(recipe, engine):
    rollouts = ROLLOUTS if takes_a_rollout(recipe) else [None]
    for rollout in rollouts:
        result = show(str(recipe), "--engine", engine, *(["--rollout", rollout] if rollout else []))
        assert result.exit_code == 0, f"{recipe.name} --engine {engine} --rollout {rollout}:\n{result.output}"
        shown = yaml.safe_load(result.output)
        assert shown["engine"]["name"] == engine and engine in shown["engine"]  # the active block is shown
        if rollout:
            assert shown["rollout"]["name"] == rollout and rollout in shown["rollout"]


def test_a_swap_keeps_the_recipes_own_options():
    recipe = str(REPO / "configs" / "grpo_gsm8k.yaml")
    given = yaml.safe_load(Path(recipe).read_text())["rollout"]["vllm"]["gpu_memory_utilization"]
    swapped = yaml.safe_load(show(recipe, "--rollout", "hf").output)
    assert "vllm" not in swapped["rollout"]  # only the active block is shown...
    back = yaml.safe_load(show(recipe, "--rollout", "hf", "--all").output)
    assert back["rollout"]["vllm"]["gpu_memory_utilization"] == given  # ...the recipe's is still there


def test_an_sft_recipe_has_no_rollout_to_swap():
    sft = next(recipe for recipe in RECIPES if not takes_a_rollout(recipe))
    result = show(str(sft), "--rollout", "hf")
    assert result.exit_code == 2 and "runs no rollout engine; drop --rollout" in result.output
