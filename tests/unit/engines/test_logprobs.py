"""Chunked log-probs and entropy equal a plain log-softmax over the full logits, values and gradients."""

import pytest
import torch

from rlkit.engines.logprobs import logprobs_from_hidden

B, T, H, V = 3, 5, 8, 11


def reference(hidden_BTH, head, labels_BT, temperature):
    logp_BTV = torch.log_softmax(head(hidden_BTH).float() / temperature, dim=-1)
    logprobs = logp_BTV.gather(-1, labels_BT.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_BTV.exp() * logp_BTV).sum(-1)
    return logprobs, entropy


@pytest.mark.parametrize("chunk_size", [1, 4, T, 2 * B * T])  # smaller than T, T, larger than all tokens
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_equals_full_log_softmax(chunk_size, temperature):
    torch.manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(B, T, H, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    weights = torch.randn(B, T)  # a loss that weights every token differently

    logprobs, entropy = logprobs_from_hidden(
        hidden, head, labels, chunk_size=chunk_size, temperature=temperature, with_entropy=True
    )
    expected_logprobs, expected_entropy = reference(hidden, head, labels, temperature)
    torch.testing.assert_close(logprobs, expected_logprobs, rtol=0, atol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy, rtol=0, atol=1e-6)
    assert logprobs.shape == (B, T) and logprobs.dtype == torch.float32

    # gradients through the checkpointed chunks match those of the full computation
    grads = torch.autograd.grad(((logprobs + 0.1 * entropy) * weights).sum(), [hidden, head.weight])
    expected_loss = ((expected_logprobs + 0.1 * expected_entropy) * weights).sum()
    expected = torch.autograd.grad(expected_loss, [hidden, head.weight])
    for grad, expected_grad in zip(grads, expected):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-6)


def test_bf16_head_gives_fp32_outputs_and_entropy_is_optional():
    head = torch.nn.Linear(H, V, bias=False).to(torch.bfloat16)
    hidden = torch.randn(B, T, H, dtype=torch.bfloat16)
    logprobs, entropy = logprobs_from_hidden(hidden, head, torch.zeros(B, T, dtype=torch.long), chunk_size=4)
    assert logprobs.dtype == torch.float32 and entropy is None
    assert (logprobs <= 0).all()


def test_uniform_logits_give_log_v_entropy():
    head = torch.nn.Linear(H, V, bias=False)
    torch.nn.init.zeros_(head.weight)  # all logits 0: p = 1/V, log p = -log V, entropy = log V
    logprobs, entropy = logprobs_from_hidden(
        torch.randn(B, T, H), head, torch.zeros(B, T, dtype=torch.long), chunk_size=2, with_entropy=True
    )
    log_v = torch.log(torch.tensor(float(V)))
    torch.testing.assert_close(logprobs, torch.full((B, T), -log_v))
    torch.testing.assert_close(entropy, torch.full((B, T), log_v))


@pytest.mark.parametrize("chunk_size", [4, 2 * B * T])
def test_metric_only_entropy_is_detached_and_leaves_logprob_gradients_alone(chunk_size):
    torch.manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(B, T, H, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    weights = torch.randn(B, T)

    logprobs, entropy = logprobs_from_hidden(
        hidden, head, labels, chunk_size=chunk_size, with_entropy=True, entropy_grad=False
    )
    expected_logprobs, expected_entropy = reference(hidden, head, labels, 1.0)
    assert not entropy.requires_grad and logprobs.requires_grad
    torch.testing.assert_close(entropy, expected_entropy.detach(), rtol=0, atol=1e-6)
    grads = torch.autograd.grad((logprobs * weights).sum(), [hidden, head.weight])
    expected = torch.autograd.grad((expected_logprobs * weights).sum(), [hidden, head.weight])
    for grad, expected_grad in zip(grads, expected):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-6)
