"""actor_loss_fn with algorithm.old_logprobs_from_update: the update's own log-probs, detached, are the old ones."""

import pytest
import torch

from rlkit.batch import Batch
from rlkit.config.schema import AlgorithmConfig
from rlkit.engines.base import ModelOutput
from rlkit.trainer.losses import GlobalCounts, actor_loss_fn

# Two responses, T = 3. Row 0: A = +1, its last token is padding. Row 1: A = -2. Five valid tokens.
LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.5, -2.5]])
ADVANTAGES = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
COUNTS = GlobalCounts(num_tokens=5.0, num_seqs=2.0)


def loss_and_grad(cfg: AlgorithmConfig, tensors: dict) -> tuple[float, torch.Tensor, dict]:
    logprobs = LOGPROBS.clone().requires_grad_(True)
    batch = Batch({"response_mask": MASK, "advantages": ADVANTAGES, **tensors})
    loss, metrics = actor_loss_fn(cfg, "token-mean", 3, COUNTS)(ModelOutput(logprobs=logprobs), batch)
    loss.backward()
    return loss.item(), logprobs.grad, metrics


@pytest.mark.parametrize("policy_loss", ["ppo", "gspo", "cispo"])
def test_logprobs_from_the_update_give_the_gradient_of_a_separate_old_pass(policy_loss):
    from_update = AlgorithmConfig(policy_loss=policy_loss, old_logprobs_from_update=True)
    loss, grad, metrics = loss_and_grad(from_update, {})  # no old_logprobs in the batch: none are needed
    separate_loss, separate_grad, _ = loss_and_grad(
        AlgorithmConfig(policy_loss=policy_loss), {"old_logprobs": LOGPROBS.clone()})
    assert loss == pytest.approx(separate_loss, abs=1e-7)
    torch.testing.assert_close(grad, separate_grad, rtol=0, atol=1e-7)
    assert metrics["pg_clipfrac"] == 0.0 and metrics["ppo_kl"] == 0.0


def test_ppo_at_ratio_one_by_hand():
    loss, grad, _ = loss_and_grad(AlgorithmConfig(old_logprobs_from_update=True), {})
    # Every ratio is exactly 1, inside the clip range: each token's loss is -A, token-mean over 5 tokens:
    # (-1 - 1 + 2 + 2 + 2) / 5 = 0.8. No dual clip: for A = -2 the loss 2 is below -A * clip_ratio_c = 6.
    assert loss == pytest.approx(0.8)
    # max(-A r, -A clip(r)) ties at r = 1: torch splits the gradient in halves, and both halves are -A (clip
    # passes the gradient inside its range), so each valid token gets -A / 5: -0.2 in row 0, 0.4 in row 1.
    torch.testing.assert_close(grad, torch.tensor([[-0.2, -0.2, 0.0], [0.4, 0.4, 0.4]]))


def test_the_metrics_of_the_skipped_pass_come_from_the_update():
    ref = LOGPROBS - 0.1  # the policy is 0.1 nats above the reference on every token
    rollout = LOGPROBS + torch.tensor([[0.01, -0.03, 9.0], [0.0, 0.02, -0.04]])  # 9.0 sits on padding
    _, _, metrics = loss_and_grad(AlgorithmConfig(old_logprobs_from_update=True, use_kl_loss=True),
                                  {"ref_logprobs": ref, "rollout_logprobs": rollout})
    assert metrics["kl"] == pytest.approx(0.1)  # old - ref, token mean
    # |diff| over the 5 valid tokens: (0.01 + 0.03 + 0 + 0.02 + 0.04) / 5 = 0.02
    assert metrics["rollout/logprob_abs_diff"] == pytest.approx(0.02)
