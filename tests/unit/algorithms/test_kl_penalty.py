"""KL estimators, KL controllers and the in-reward KL penalty."""

import math

import pytest
import torch

from rlkit.algorithms import AdaptiveKLController, FixedKLController, apply_kl_in_reward, kl_penalty

LOGPROB = torch.tensor([[-1.0, -2.0]])
REF_LOGPROB = torch.tensor([[-1.5, -1.0]])
# logprob - ref = 0.5, -1.0; ref - logprob = -0.5, 1.0


@pytest.mark.parametrize(
    "kinds, expected",
    [
        (("k1", "kl"), [0.5, -1.0]),
        (("abs",), [0.5, 1.0]),
        (("k2", "mse"), [0.125, 0.5]),  # 0.5 * 0.25, 0.5 * 1
        # exp(-0.5) + 0.5 - 1 = 0.106531; exp(1) - 1 - 1 = 0.718282
        (("k3", "low_var_kl"), [math.exp(-0.5) - 0.5, math.exp(1.0) - 2.0]),
    ],
)
def test_kl_kinds(kinds, expected):
    for kind in kinds:
        torch.testing.assert_close(kl_penalty(LOGPROB, REF_LOGPROB, kind), torch.tensor([expected]))


def test_k3_is_clamped():
    # d = ref - logprob = 30 -> 20: exp(20) - 21 -> clamped to 10; d = -30 -> -20: exp(-20) + 19 ~ 19 -> 10
    out = kl_penalty(torch.tensor([-40.0, -1.0]), torch.tensor([-10.0, -31.0]), "k3")
    torch.testing.assert_close(out, torch.tensor([10.0, 10.0]))


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(ValueError, match="k1.*low_var_kl.*abs"):
        kl_penalty(LOGPROB, REF_LOGPROB, "k4")


def test_adaptive_kl_controller():
    controller = AdaptiveKLController(init_kl_coef=0.1, target_kl=6.0, horizon=10000)
    controller.update(current_kl=9.0, n_steps=256)
    # error = clip(9 / 6 - 1 = 0.5, -0.2, 0.2) = 0.2; coef = 0.1 * (1 + 0.2 * 256 / 10000) = 0.100512
    assert controller.value == pytest.approx(0.100512)
    controller.update(current_kl=5.4, n_steps=1000)
    # error = 5.4 / 6 - 1 = -0.1; coef = 0.100512 * (1 - 0.1 * 1000 / 10000) = 0.100512 * 0.99 = 0.09950688
    assert controller.value == pytest.approx(0.09950688)

    restored = AdaptiveKLController(init_kl_coef=1.0, target_kl=6.0, horizon=10000)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value


def test_adaptive_kl_controller_refuses_nonpositive_target():
    with pytest.raises(ValueError, match="target_kl"):
        AdaptiveKLController(init_kl_coef=0.1, target_kl=0.0, horizon=10000)


def test_fixed_kl_controller():
    controller = FixedKLController(kl_coef=0.05)
    controller.update(current_kl=100.0, n_steps=256)
    assert controller.value == 0.05
    restored = FixedKLController(kl_coef=0.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == 0.05


def test_apply_kl_in_reward():
    scores = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    logprob = torch.tensor([[0.1, 0.2, 0.3], [0.4, -0.2, 5.0]])  # ref = 0, so k1 = logprob; 5.0 is pad
    rewards, mean_kl = apply_kl_in_reward(scores, logprob, torch.zeros(2, 3), mask, kl_coef=0.5, kind="k1")
    # scores - 0.5 * kl * mask: 0 - 0.05, 0 - 0.1, 1 - 0.15 | 0 - 0.2, 2 + 0.1, 0 (pad)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.1, 0.85], [-0.2, 2.1, 0.0]]))
    # sequence means: (0.1 + 0.2 + 0.3) / 3 = 0.2 and (0.4 - 0.2) / 2 = 0.1; their mean 0.15
    assert mean_kl == pytest.approx(0.15)
