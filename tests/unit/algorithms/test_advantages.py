"""Every built-in advantage estimator on tiny hand-computed batches, plus group invariants."""

import pytest
import torch

from rlkit.algorithms import compute_advantages
from rlkit.algorithms.advantages import AdvantageEstimator, group_mean_std
from rlkit.algorithms.aggregation import masked_whiten
from rlkit.registry import ADV_ESTIMATORS

EPS = 1e-6  # GRPO's std epsilon

# Four responses, T = 3; outcome reward on each response's last valid token.
# row 0: pad at the end; row 1: a masked token in the middle; row 2: one token; row 3: full.
REWARDS = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
GROUPS = ["a", "a", "a", "b"]
# group a: scores 1, 2, 3 -> mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1
# group b: one response with score 5 -> mean 0, std 1


def test_grpo():
    advantages, returns = compute_advantages("grpo", REWARDS, MASK, group_index=GROUPS)
    # a: (1 - 2) / (1 + 1e-6), (2 - 2) / ..., (3 - 2) / ...; b: (5 - 0) / (1 + 1e-6)
    expected = torch.tensor([[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]]) / (1 + EPS)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected)


def test_drgrpo_and_its_alias():
    # a: 1 - 2, 2 - 2, 3 - 2; b (group of one): 5 - 0
    expected = torch.tensor([[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    for name in ("drgrpo", "dr_grpo"):
        advantages, _ = compute_advantages(name, REWARDS, MASK, group_index=GROUPS)
        torch.testing.assert_close(advantages, expected)
    assert ADV_ESTIMATORS.get("dr_grpo").default_loss_agg_mode == "seq-mean-token-sum-norm"


def test_rloo():
    # n = 3: (score - mean) * 3 / 2 = score - mean of the other two
    # 1 - (2 + 3) / 2 = -1.5; 2 - (1 + 3) / 2 = 0; 3 - (1 + 2) / 2 = 1.5; b (group of one) keeps 5
    advantages, _ = compute_advantages("rloo", REWARDS, MASK, group_index=GROUPS)
    expected = torch.tensor([[-1.5, -1.5, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [5.0, 5.0, 5.0]])
    torch.testing.assert_close(advantages, expected)


def test_reinforce_plus_plus_baseline():
    rewards = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # group a: scores 1, 3 -> centred -1, +1; group b: 0, 0 -> 0, 0
    # valid tokens: -1, -1 | 1, 1 | 0, 0, 0 | 0 -> n = 8, mean 0, unbiased var = 4 / 7
    advantages, returns = compute_advantages(
        "reinforce_plus_plus_baseline", rewards, mask, group_index=["a", "a", "b", "b"]
    )
    scale = 1 / (4 / 7 + 1e-8) ** 0.5  # ~ 1.3229
    expected = torch.tensor([[-1.0, -1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]) * scale
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected)


# REINFORCE family: gamma = 0.5
RTG_REWARDS = torch.tensor([[1.0, 9.0, 2.0, 4.0], [0.0, 1.0, 0.0, 0.0]])
RTG_MASK = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
# row 0 (token 1 masked: its reward 9 is ignored and the return carries over it, undiscounted):
#   G3 = 4; G2 = 2 + 0.5 * 4 = 4; G1 -> 0 (masked); G0 = 1 + 0.5 * G2 = 1 + 2 = 3
# row 1 (padded): G1 = 1; G0 = 0 + 0.5 * 1 = 0.5
RTG = torch.tensor([[3.0, 0.0, 4.0, 4.0], [0.5, 1.0, 0.0, 0.0]])


def test_reinforce_is_the_discounted_return_to_go():
    advantages, returns = compute_advantages("reinforce", RTG_REWARDS, RTG_MASK, gamma=0.5)
    torch.testing.assert_close(advantages, RTG)
    torch.testing.assert_close(returns, RTG)


def test_reinforce_plus_plus_whitens_the_return_to_go():
    advantages, returns = compute_advantages("reinforce_plus_plus", RTG_REWARDS, RTG_MASK, gamma=0.5)
    torch.testing.assert_close(returns, RTG)
    # valid returns 3, 4, 4, 0.5, 1: mean 12.5 / 5 = 2.5
    # deviations 0.5, 1.5, 1.5, -2, -1.5; squares sum 0.25 + 2.25 + 2.25 + 4 + 2.25 = 11; var = 11 / 4 = 2.75
    deviations = torch.tensor([[0.5, 0.0, 1.5, 1.5], [-2.0, -1.5, 0.0, 0.0]])
    torch.testing.assert_close(advantages, deviations / (2.75 + 1e-8) ** 0.5)


def test_remax():
    rewards = torch.tensor([[0.0, 1.0, 9.0, 2.0], [0.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    baselines = torch.tensor([1.5, 0.0])
    # row 0: masked rewards 0, 1, 0, 2 -> reverse cumsum 3, 3, 2, 2 -> times mask 3, 3, 0, 2; minus 1.5
    # row 1: 1, 1, 1, 0; baseline 0
    advantages, returns = compute_advantages("remax", rewards, mask, reward_baselines=baselines)
    torch.testing.assert_close(returns, torch.tensor([[3.0, 3.0, 0.0, 2.0], [1.0, 1.0, 1.0, 0.0]]))
    torch.testing.assert_close(advantages, torch.tensor([[1.5, 1.5, 0.0, 0.5], [1.0, 1.0, 1.0, 0.0]]))


def test_gae_skips_masked_tokens():
    # gamma 0.9, lam 0.5 (gamma * lam = 0.45); token 1 is masked (reward 7, value 9 ignored), token 3 is pad
    rewards = torch.tensor([[0.0, 7.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 9.0, 0.2, 9.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # row 0: t2: delta = 1 + 0.9 * 0 - 0.2 = 0.8, A2 = 0.8
    #        t0: next value is V2 = 0.2: delta = 0 + 0.9 * 0.2 - 0.5 = -0.32, A0 = -0.32 + 0.45 * 0.8 = 0.04
    # row 1: A3 = 1; A2 = 0.45; A1 = 0.45^2 = 0.2025; A0 = 0.45^3 = 0.091125
    raw = torch.tensor([[0.04, 0.0, 0.8, 0.0], [0.091125, 0.2025, 0.45, 1.0]])
    advantages, returns = compute_advantages("gae", rewards, mask, values=values, gamma=0.9, lam=0.5)
    # returns = A + V before whitening: 0.04 + 0.5 = 0.54, 0.8 + 0.2 = 1.0
    torch.testing.assert_close(returns, torch.tensor([[0.54, 0.0, 1.0, 0.0], [0.091125, 0.2025, 0.45, 1.0]]))
    torch.testing.assert_close(advantages, masked_whiten(raw, mask))
    valid = advantages[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.var().item() == pytest.approx(1.0, abs=1e-5)  # unbiased, as in the whitening


def test_gae_with_gamma_lam_one_and_zero_values_is_the_return_to_go():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    mask = torch.ones(1, 3)
    _, returns = compute_advantages("gae", rewards, mask, values=torch.zeros(1, 3))
    # 1 + 0 + 2 = 3; 0 + 2 = 2; 2
    torch.testing.assert_close(returns, torch.tensor([[3.0, 2.0, 2.0]]))


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo"])
def test_group_centred_advantages_sum_to_zero_per_group(name):
    generator = torch.Generator().manual_seed(1)
    rewards = torch.zeros(12, 4)
    rewards[:, -1] = torch.randn(12, generator=generator)
    groups = [f"prompt-{i % 3}" for i in range(12)]  # interleaved groups of 4
    advantages, _ = compute_advantages(name, rewards, torch.ones(12, 4), group_index=groups)
    per_response = advantages[:, 0]
    for label in set(groups):
        members = [i for i, g in enumerate(groups) if g == label]
        assert per_response[members].sum().item() == pytest.approx(0.0, abs=1e-5)


def test_drgrpo_is_grpo_times_group_std_plus_eps():
    generator = torch.Generator().manual_seed(2)
    rewards = torch.randn(8, 3, generator=generator)
    mask = (torch.rand(8, 3, generator=generator) > 0.3).float()
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])  # tensor labels; group 3 is a group of one
    grpo, _ = compute_advantages("grpo", rewards, mask, group_index=groups)
    drgrpo, _ = compute_advantages("drgrpo", rewards, mask, group_index=groups)
    _, std, _ = group_mean_std(rewards.sum(-1), groups)
    torch.testing.assert_close(drgrpo, grpo * (std + EPS).unsqueeze(-1))


def test_group_labels_need_not_be_contiguous_or_strings():
    scores = torch.tensor([1.0, 10.0, 3.0, 30.0])
    mean, std, counts = group_mean_std(scores, [7, "x", 7, "x"])
    # group 7: 1, 3 -> mean 2, std sqrt(2) ; group "x": 10, 30 -> mean 20, std sqrt(200)
    torch.testing.assert_close(mean, torch.tensor([2.0, 20.0, 2.0, 20.0]))
    torch.testing.assert_close(std, torch.tensor([2.0**0.5, 200.0**0.5, 2.0**0.5, 200.0**0.5]))
    torch.testing.assert_close(counts, torch.tensor([2.0, 2.0, 2.0, 2.0]))


def test_outputs_are_zero_on_masked_tokens():
    inputs = dict(group_index=GROUPS, values=torch.ones_like(REWARDS), reward_baselines=torch.ones(4))
    for name in ADV_ESTIMATORS.names():
        advantages, returns = compute_advantages(name, REWARDS, MASK, **inputs)
        assert advantages.shape == returns.shape == REWARDS.shape
        assert (advantages[MASK == 0] == 0).all() and (returns[MASK == 0] == 0).all(), name


@pytest.mark.parametrize(
    "name, missing",
    [("gae", "values"), ("grpo", "group_index"), ("rloo", "group_index"), ("remax", "reward_baselines")],
)
def test_missing_input_names_estimator_and_argument(name, missing):
    with pytest.raises(ValueError, match=rf"'{name}' needs `{missing}`"):
        compute_advantages(name, REWARDS, MASK)


def test_group_index_of_wrong_length_is_refused():
    with pytest.raises(ValueError, match="group_index has 2 entries but the batch has 4"):
        compute_advantages("grpo", REWARDS, MASK, group_index=["a", "b"])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same"):
        compute_advantages("reinforce", REWARDS, MASK[:, :2])


def test_estimator_flags():
    flags = {name: ADV_ESTIMATORS.get(name) for name in ("gae", "grpo", "remax", "reinforce")}
    assert all(isinstance(estimator, AdvantageEstimator) for estimator in flags.values())
    assert flags["gae"].needs_values and not flags["gae"].needs_groups
    assert flags["grpo"].needs_groups and flags["grpo"].default_loss_agg_mode == "token-mean"
    assert flags["remax"].needs_baselines
    assert not (flags["reinforce"].needs_values or flags["reinforce"].needs_groups)
