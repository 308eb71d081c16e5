"""agg_loss modes, global-count sharding, and masked statistics: hand-computed values."""

import pytest
import torch

from rlkit.algorithms.aggregation import LOSS_AGG_MODES, agg_loss, masked_mean, masked_whiten

# row 0: a masked token in the middle and one at the end; row 2: no valid token at all
LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
# row sums: 1 + 3 = 4 over 2 tokens; 5 + 6 + 7 + 8 = 26 over 4 tokens; row 2 is ignored


def test_token_mean():
    # (4 + 26) / 6 valid tokens = 5.0
    assert agg_loss(LOSS_MAT, MASK, "token-mean").item() == pytest.approx(5.0)


def test_seq_mean_token_sum_skips_empty_sequences():
    # (4 + 26) / 2 sequences with a valid token = 15.0
    assert agg_loss(LOSS_MAT, MASK, "seq-mean-token-sum").item() == pytest.approx(15.0)


def test_seq_mean_token_mean():
    # (4 / 2 + 26 / 4) / 2 = (2 + 6.5) / 2 = 4.25
    assert agg_loss(LOSS_MAT, MASK, "seq-mean-token-mean").item() == pytest.approx(4.25)


def test_seq_mean_token_sum_norm_divides_by_width_or_norm_length():
    # 15.0 / T = 15 / 4 = 3.75; with norm_length 10: 15 / 10 = 1.5
    assert agg_loss(LOSS_MAT, MASK, "seq-mean-token-sum-norm").item() == pytest.approx(3.75)
    assert agg_loss(LOSS_MAT, MASK, "seq-mean-token-sum-norm", norm_length=10).item() == pytest.approx(1.5)


def test_global_counts_replace_local_ones():
    # token-mean: 30 / 12 = 2.5; seq-mean-token-mean: 8.5 / 5 = 1.7
    assert agg_loss(LOSS_MAT, MASK, "token-mean", num_tokens=12).item() == pytest.approx(2.5)
    assert agg_loss(LOSS_MAT, MASK, "seq-mean-token-mean", num_seqs=5).item() == pytest.approx(1.7)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_empty_mask_gives_zero(mode):
    assert agg_loss(LOSS_MAT, torch.zeros_like(MASK), mode).item() == 0.0


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match="token-mean.*seq-mean-token-sum-norm"):
        agg_loss(LOSS_MAT, MASK, "sum")


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_shards_with_global_counts_sum_to_the_whole(mode):
    generator = torch.Generator().manual_seed(0)
    loss_mat = torch.randn(6, 5, generator=generator)
    mask = (torch.rand(6, 5, generator=generator) > 0.4).float()
    mask[3] = 0.0  # a sequence with no valid token
    num_tokens = mask.sum().item()
    num_seqs = (mask.sum(-1) > 0).sum().item()

    whole = agg_loss(loss_mat, mask, mode)
    shards = [slice(0, 2), slice(2, 6)]  # unequal shards, as after dynamic batching
    summed = sum(
        agg_loss(loss_mat[rows], mask[rows], mode, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=5)
        for rows in shards
    )
    torch.testing.assert_close(summed, whole)


def test_masked_mean():
    # (1 + 3) / 2 = 2.0
    assert masked_mean(torch.tensor([1.0, 100.0, 3.0]), torch.tensor([1.0, 0.0, 1.0])).item() == 2.0


def test_masked_whiten_uses_unbiased_variance_and_zeroes_masked_tokens():
    values = torch.tensor([[1.0, 50.0, 2.0, 3.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    # mean = (1 + 2 + 3) / 3 = 2; unbiased var = (1 + 0 + 1) / (3 - 1) = 1; std = sqrt(1 + 1e-8)
    expected = torch.tensor([[-1.0, 0.0, 0.0, 1.0]]) / (1 + 1e-8) ** 0.5
    torch.testing.assert_close(masked_whiten(values, mask), expected)


def test_masked_whiten_of_one_token_is_zero():
    # one valid token: no variance (taken as 0) and x - mean = 0
    out = masked_whiten(torch.tensor([[4.0, 7.0]]), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(out, torch.zeros(1, 2))
