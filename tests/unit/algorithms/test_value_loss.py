"""The clipped value loss on a hand-computed batch."""

import pytest
import torch

from rlkit.algorithms import value_loss

# row 0: tokens a, (masked), b; row 1: token c, then pad. eps = 0.2
VALUES = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # critic at rollout time
VPREDS = torch.tensor([[1.5, 100.0, 1.5], [0.1, 100.0, 100.0]])
RETURNS = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# a: clip(1.5, 0.8, 1.2) = 1.2; (1.5 - 2)^2 = 0.25, (1.2 - 2)^2 = 0.64 -> 0.64 (clipped term larger)
# b: clipped 1.2;            (1.5 - 1)^2 = 0.25, (1.2 - 1)^2 = 0.04 -> 0.25
# c: 0.1 is inside [-0.2, 0.2]: (0.1 - 0.5)^2 = 0.16 both -> 0.16


def test_value_loss_token_mean():
    loss, clipfrac = value_loss(VPREDS, RETURNS, VALUES, MASK, cliprange_value=0.2)
    # 0.5 * (0.64 + 0.25 + 0.16) / 3 = 0.5 * 1.05 / 3 = 0.175
    assert loss.item() == pytest.approx(0.175, rel=1e-5)
    assert clipfrac == pytest.approx(1 / 3)


def test_value_loss_seq_mean_token_sum():
    loss, _ = value_loss(VPREDS, RETURNS, VALUES, MASK, cliprange_value=0.2, loss_agg_mode="seq-mean-token-sum")
    # rows: 0.64 + 0.25 = 0.89 and 0.16; 0.5 * (0.89 + 0.16) / 2 = 0.2625
    assert loss.item() == pytest.approx(0.2625, rel=1e-5)


def test_value_loss_shards_with_global_count():
    loss, _ = value_loss(VPREDS, RETURNS, VALUES, MASK)
    shard_losses = [value_loss(VPREDS[r], RETURNS[r], VALUES[r], MASK[r], num_tokens=3)[0] for r in ([0], [1])]
    # 0.5 * 0.89 / 3 + 0.5 * 0.16 / 3 = 0.175
    torch.testing.assert_close(sum(shard_losses), loss)
