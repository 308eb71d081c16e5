"""Estimators and policy losses by name: unknown names, duplicates, and plugins from files and entry points."""

import importlib.metadata
import inspect
import textwrap

import pytest
import torch

from rlkit.algorithms import compute_advantages, register_adv_estimator
from rlkit.algorithms.advantages import AdvantageEstimator, grpo
from rlkit.algorithms.policy_losses import loss_agg_mode_for, policy_loss, ppo_loss, register_policy_loss
from rlkit.errors import PluginError
from rlkit.registry import ADV_ESTIMATORS, POLICY_LOSSES

REWARDS = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])

PLUGIN_SOURCE = """
    from rlkit.algorithms.advantages import AdvantageEstimator


    def my_estimator(inputs, gamma, lam):
        # twice the token rewards on response tokens
        advantages = 2 * inputs.token_level_rewards * inputs.response_mask
        return advantages, advantages


    def _needs_critic(inputs, gamma, lam):
        return inputs.values, inputs.values


    critic_estimator = AdvantageEstimator(_needs_critic, needs_values=True)
"""


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "myest.py"
    path.write_text(textwrap.dedent(PLUGIN_SOURCE))
    return path


def test_unknown_estimator_lists_the_known_ones():
    with pytest.raises(PluginError, match=r"unknown advantage estimator 'grpoo'.*Known: .*gae.*grpo"):
        compute_advantages("grpoo", REWARDS, MASK)


def test_registering_a_taken_name_is_refused():
    with pytest.raises(PluginError, match="'grpo' is registered twice"):
        register_adv_estimator("grpo")(grpo)
    with pytest.raises(PluginError, match="'ppo' is registered twice"):
        POLICY_LOSSES.register("ppo", ppo_loss)


def test_bare_function_from_a_file_reference(plugin_file):
    advantages, returns = compute_advantages(f"{plugin_file}:my_estimator", REWARDS, MASK)
    # 2 * [[0, 1, 0], [0, 0, 2]]
    torch.testing.assert_close(advantages, torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]))
    torch.testing.assert_close(returns, advantages)


def test_estimator_object_from_a_file_reference_keeps_its_requirements(plugin_file):
    with pytest.raises(ValueError, match="needs `values`"):
        compute_advantages(f"{plugin_file}:critic_estimator", REWARDS, MASK)
    values = torch.full_like(REWARDS, 0.5)
    advantages, _ = compute_advantages(f"{plugin_file}:critic_estimator", REWARDS, MASK, values=values)
    torch.testing.assert_close(advantages, values)


def test_plain_function_registered_in_code():
    def last_token_reward(inputs, gamma, lam):
        advantages = inputs.token_level_rewards.sum(-1, keepdim=True) * inputs.response_mask
        return advantages, advantages

    ADV_ESTIMATORS.register("test_plain_function", last_token_reward)
    try:
        advantages, _ = compute_advantages("test_plain_function", REWARDS, MASK)
        # scores 1 and 2 on every response token
        torch.testing.assert_close(advantages, torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0]]))
    finally:
        ADV_ESTIMATORS.unregister("test_plain_function")


def test_decorator_registers_an_estimator_that_lists_as_code():
    @register_adv_estimator("test_decorated", aliases=("test_decorated_alias",), needs_groups=True)
    def decorated(inputs, gamma, lam):
        return inputs.token_level_rewards, inputs.token_level_rewards

    try:
        estimator = ADV_ESTIMATORS.get("test_decorated_alias")
        assert isinstance(estimator, AdvantageEstimator) and estimator.fn is decorated and estimator.needs_groups
        entry = next(e for e in ADV_ESTIMATORS.entries() if e.name == "test_decorated")
        # the registry shows the plugin's function, not the AdvantageEstimator wrapper
        assert entry.source == "code" and entry.target.endswith("<locals>.decorated")
        with pytest.raises(ValueError, match="'test_decorated' needs `group_index`"):
            compute_advantages("test_decorated", REWARDS, MASK)
    finally:
        ADV_ESTIMATORS.unregister("test_decorated")
        ADV_ESTIMATORS.unregister("test_decorated_alias")


def test_estimator_from_an_entry_point(plugin_file, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_file.parent))
    entry_point = importlib.metadata.EntryPoint(
        name="test_entry_point_estimator", value="myest:my_estimator", group="rlkit.advantage_estimators"
    )
    real_entry_points = importlib.metadata.entry_points

    def fake_entry_points(group=None, **kwargs):
        if group == "rlkit.advantage_estimators":
            return [entry_point]
        return real_entry_points(group=group, **kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    ADV_ESTIMATORS.reload_entry_points()
    try:
        advantages, _ = compute_advantages("test_entry_point_estimator", REWARDS, MASK)
        torch.testing.assert_close(advantages, torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]))
    finally:
        ADV_ESTIMATORS.unregister("test_entry_point_estimator")


def test_built_in_policy_losses_share_one_signature():
    assert POLICY_LOSSES.get("vanilla") is POLICY_LOSSES.get("ppo") is ppo_loss is policy_loss
    reference = inspect.signature(ppo_loss).parameters
    for name in ("gspo", "cispo"):
        parameters = inspect.signature(POLICY_LOSSES.get(name)).parameters
        assert [(p.name, p.kind) for p in parameters.values()] == [(p.name, p.kind) for p in reference.values()]
    assert POLICY_LOSSES.get("gspo").default_loss_agg_mode == "seq-mean-token-mean"
    assert POLICY_LOSSES.get("cispo").default_loss_agg_mode == "token-mean"


@pytest.mark.parametrize("configured, policy_loss, estimator, expected", [
    (None, "ppo", "grpo", "token-mean"),  # ppo declares nothing: the estimator's
    (None, "ppo", "drgrpo", "seq-mean-token-sum-norm"),
    (None, "gspo", "grpo", "seq-mean-token-mean"),  # the loss's declared mode wins over the estimator's
    (None, "gspo", "drgrpo", "seq-mean-token-mean"),
    (None, "cispo", "drgrpo", "token-mean"),
    ("seq-mean-token-sum", "gspo", "drgrpo", "seq-mean-token-sum"),  # the config wins over both
])
def test_loss_agg_mode_precedence(configured, policy_loss, estimator, expected):
    assert loss_agg_mode_for(configured, policy_loss=policy_loss, adv_estimator=estimator) == expected


def test_a_plugin_loss_without_a_declared_mode_takes_the_estimators(tmp_path):
    plugin = tmp_path / "bare_loss.py"
    plugin.write_text("def my_loss(*args, **kwargs):\n    raise AssertionError('not called')\n")
    assert loss_agg_mode_for(None, policy_loss=f"{plugin}:my_loss", adv_estimator="drgrpo") == "seq-mean-token-sum-norm"
    assert POLICY_LOSSES.get("ppo").default_loss_agg_mode is None


def test_a_declared_mode_must_exist():
    with pytest.raises(ValueError, match="'seq-mean' is not one of token-mean"):
        register_policy_loss("test_bad_mode", default_loss_agg_mode="seq-mean")
    assert "test_bad_mode" not in POLICY_LOSSES.names()


def test_the_trainer_uses_the_gspo_aggregation():
    from rlkit.config import RunConfig, build_config
    from rlkit.trainer.components import loss_agg_mode

    assert loss_agg_mode(build_config(RunConfig, None, ["algorithm.policy_loss=gspo"])) == "seq-mean-token-mean"
    assert loss_agg_mode(build_config(RunConfig, None, ["algorithm.adv_estimator=drgrpo"])) == "seq-mean-token-sum-norm"
