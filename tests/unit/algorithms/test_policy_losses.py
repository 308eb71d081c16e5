"""PPO (dual clip), GSPO and CISPO on hand-computed batches, gradients included."""

import math

import pytest
import torch

from rlkit.algorithms import LOSS_AGG_MODES, policy_loss
from rlkit.registry import POLICY_LOSSES

# Two responses, T = 3. Row 0: A = +1, token 1 masked (middle). Row 1: A = -1, token 2 is pad.
ADVANTAGES = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
MASK = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
RATIOS = torch.tensor([[1.5, 0.5, 1.1], [0.5, 5.0, 1.0]])  # exp(logprob - old_logprob)


def logprobs_with_ratios(ratios, logprob):
    """old_logprob such that exp(logprob - old_logprob) = ratios; logprob is a leaf that needs grad."""
    logprob = logprob.clone().requires_grad_(True)
    return logprob.detach() - ratios.log(), logprob


def test_ppo_clip_and_dual_clip():
    old, new = logprobs_with_ratios(RATIOS, torch.full((2, 3), -1.0))
    loss, metrics = policy_loss(old, new, ADVANTAGES, MASK, clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0)
    # row 0, r = 1.5, A = 1: max(-1.5, -1 * clip(1.5) = -1.2) = -1.2          (clipped)
    # row 0, r = 1.1:        max(-1.1, -1.1) = -1.1
    # row 1, r = 0.5, A = -1: max(0.5, clip(0.5) = 0.8) = 0.8; min(0.8, 3) = 0.8  (clipped)
    # row 1, r = 5:          max(5, 1.2) = 5; dual clip: min(5, 3 * 1) = 3     (dual-clipped)
    # token-mean: (-1.2 - 1.1 + 0.8 + 3) / 4 = 1.5 / 4 = 0.375
    assert loss.item() == pytest.approx(0.375, rel=1e-5)
    assert metrics["pg_clipfrac"] == pytest.approx(2 / 4)
    assert metrics["pg_clipfrac_lower"] == pytest.approx(1 / 4)
    # ppo_kl = mean(old - logprob) = -(log 1.5 + log 1.1 + log 0.5 + log 5) / 4 = -log(4.125) / 4
    assert metrics["ppo_kl"] == pytest.approx(-math.log(4.125) / 4, rel=1e-5)
    # detached 0-dim tensors, read by the engine once a mini-batch (rlkit.engines.passes.read_metrics)
    assert all(value.dim() == 0 and not value.requires_grad for value in metrics.values())

    loss.backward()
    # only the unclipped token (row 0, r = 1.1) has a gradient: d(-A * r)/d logprob / 4 tokens = -1.1 / 4
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, 0.0, -0.275], [0.0, 0.0, 0.0]]))


def test_ppo_clip_higher_and_seq_mean_token_sum():
    old, new = logprobs_with_ratios(RATIOS, torch.full((2, 3), -1.0))
    loss, _ = policy_loss(
        old, new, ADVANTAGES, MASK, clip_ratio_low=0.2, clip_ratio_high=0.28, loss_agg_mode="seq-mean-token-sum"
    )
    # row 0: r = 1.5 clipped at 1.28 -> -1.28; r = 1.1 -> -1.1; sum -2.38
    # row 1: 0.8 + 3 = 3.8 (as above); seq-mean: (-2.38 + 3.8) / 2 = 0.71
    assert loss.item() == pytest.approx(0.71, rel=1e-5)


def test_ppo_refuses_a_dual_clip_bound_of_one_or_less():
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip_ratio_c=1.0)


def test_gspo_uses_one_ratio_per_sequence():
    gspo = POLICY_LOSSES.get("gspo")
    # old_logprob = 0, so logprob is the token log-ratio
    log_ratios = torch.tensor([[0.2, 7.0, 0.0], [0.5, 0.3, 9.0]], requires_grad=True)
    advantages = torch.ones(2, 3)
    loss, metrics = gspo(
        torch.zeros(2, 3), log_ratios, advantages, MASK, clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0,
        loss_agg_mode="seq-mean-token-mean",
    )
    # row 0: s = exp((0.2 + 0.0) / 2) = exp(0.1) = 1.10517, inside [0.8, 1.2]: -1.10517 per token
    # row 1: s = exp((0.5 + 0.3) / 2) = exp(0.4) = 1.49182 > 1.2: max(-1.49182, -1.2) = -1.2 per token (clipped)
    # seq-mean-token-mean: (-1.10517 - 1.2) / 2 = -1.152585
    assert loss.item() == pytest.approx((-math.exp(0.1) - 1.2) / 2, rel=1e-5)
    assert metrics["pg_clipfrac"] == pytest.approx(2 / 4)  # row 1's two tokens
    assert metrics["ppo_kl"] == pytest.approx(-(0.2 + 0.0 + 0.5 + 0.3) / 4, rel=1e-5)
    assert metrics["pg_clipfrac_lower"] == 0.0

    loss.backward()
    # row 0: each valid token gets -A * s / (|y| = 2 tokens * 2 sequences) = -1.10517 / 4; row 1 is clipped
    g = -math.exp(0.1) / 4
    torch.testing.assert_close(log_ratios.grad, torch.tensor([[g, 0.0, g], [0.0, 0.0, 0.0]]))


def test_cispo_clips_the_weight_but_keeps_every_gradient():
    cispo = POLICY_LOSSES.get("cispo")
    ratios = torch.tensor([[1.5, 1.0, 1.0], [0.5, 1.1, 1.0]])
    old, new = logprobs_with_ratios(ratios, torch.tensor([[-1.0, -4.0, -2.0], [-0.5, -3.0, -6.0]]))
    loss, metrics = cispo(
        old, new, ADVANTAGES, MASK, clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0,
        loss_agg_mode="token-mean",
    )
    # weights: clip(1.5) = 1.2, 1.0, clip(0.5) = 0.8, 1.1
    # -w * A * logprob: -1.2 * 1 * -1 = 1.2; -1.0 * 1 * -2 = 2.0; -0.8 * -1 * -0.5 = -0.4; -1.1 * -1 * -3 = -3.3
    # token-mean: (1.2 + 2.0 - 0.4 - 3.3) / 4 = -0.125
    assert loss.item() == pytest.approx(-0.125, rel=1e-5)
    assert metrics["pg_clipfrac"] == pytest.approx(2 / 4)

    loss.backward()
    # d/d logprob = -w * A / 4, the clipped tokens included: -1.2/4, -1/4, 0.8/4, 1.1/4
    torch.testing.assert_close(new.grad, torch.tensor([[-0.3, 0.0, -0.25], [0.2, 0.275, 0.0]]))


@pytest.mark.parametrize("name", ["ppo", "gspo", "cispo"])
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_two_shards_with_global_counts_sum_to_one_shard(name, mode):
    generator = torch.Generator().manual_seed(3)
    old = -torch.rand(6, 5, generator=generator)
    new = old + 0.3 * torch.randn(6, 5, generator=generator)
    advantages = torch.randn(6, 1, generator=generator).expand(6, 5)
    mask = (torch.rand(6, 5, generator=generator) > 0.3).float()
    counts = dict(num_tokens=mask.sum().item(), num_seqs=(mask.sum(-1) > 0).sum().item())
    loss_fn = POLICY_LOSSES.get(name)
    kwargs = dict(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, loss_agg_mode=mode)

    whole, _ = loss_fn(old, new, advantages, mask, **kwargs)
    shards = [slice(0, 4), slice(4, 6)]
    summed = sum(loss_fn(old[s], new[s], advantages[s], mask[s], **kwargs, **counts)[0] for s in shards)
    torch.testing.assert_close(summed, whole)
