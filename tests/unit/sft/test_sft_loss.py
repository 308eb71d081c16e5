"""The SFT loss: token-mean NLL over the global batch, as shares that add up over micro-batches and ranks."""

import pytest
import torch

from rlkit.batch import Batch
from rlkit.engines.base import ModelOutput
from rlkit.trainer.sft import sft_loss_fn

LOGPROBS = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
ENTROPY = torch.tensor([[0.5, 1.5, 9.0], [1.0, 9.0, 9.0]])


def share(rows, num_tokens):
    output = ModelOutput(logprobs=LOGPROBS[rows], entropy=ENTROPY[rows])
    return sft_loss_fn(num_tokens)(output, Batch({"response_mask": MASK[rows]}))


def test_token_mean_over_the_trained_tokens():
    loss, metrics = share(slice(0, 2), num_tokens=3)
    # (1 + 2 + 4) / 3 trained tokens; masked -3, -5, -6 do not count
    assert loss.item() == pytest.approx(7 / 3)
    assert metrics["loss"] == pytest.approx(7 / 3)
    assert metrics["entropy"] == pytest.approx((0.5 + 1.5 + 1.0) / 3)


def test_micro_batch_shares_add_up_to_the_global_loss():
    (first, _), (second, _) = share(slice(0, 1), 3), share(slice(1, 2), 3)
    # (1 + 2) / 3 + 4 / 3: the sequence with one token weighs one token, not half the batch
    assert first.item() + second.item() == pytest.approx(7 / 3)


def test_global_count_from_other_ranks_divides_the_local_sum():
    loss, _ = share(slice(0, 2), num_tokens=6)  # another rank holds 3 more tokens
    assert loss.item() == pytest.approx(7 / 6)


def test_the_gradient_is_minus_the_mask_over_the_count():
    logprobs = LOGPROBS.clone().requires_grad_(True)
    loss, _ = sft_loss_fn(3)(ModelOutput(logprobs=logprobs), Batch({"response_mask": MASK}))
    loss.backward()
    assert torch.equal(logprobs.grad, -MASK / 3)
