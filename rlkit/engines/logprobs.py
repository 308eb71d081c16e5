"""Token log-probs and entropy from final hidden states, a chunk of tokens at a time.

Shape legend: B sequences, T response tokens, H hidden size, V vocabulary, N = B * T, C chunk size.

The LM head is applied to `chunk_size` tokens at a time and only that chunk's logits are cast to fp32,
so fp32 logits of the whole batch times the vocabulary never exist. When gradients are needed each chunk
runs under activation checkpointing: autograd keeps the chunk's hidden states, not its (C, V) logits,
and recomputes them in backward. Otherwise the saved log-softmax of every chunk would add up to the full
(N, V) fp32 tensor anyway. Engine-agnostic: the FSDP2 and DeepSpeed engines both call it.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def logprobs_from_hidden(
    hidden_BTH: Tensor,
    lm_head: Callable[[Tensor], Tensor],
    labels_BT: Tensor,
    *,
    chunk_size: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    compiled: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-prob of each label and (optionally) the entropy of each next-token distribution.

    Args:
        hidden_BTH: (B, T, H) final hidden states at the positions that predict the labels.
        lm_head: maps (C, H) hidden states to (C, V) logits (the model's output embedding).
        labels_BT: (B, T) long, the tokens whose log-probs are wanted.
        chunk_size: tokens per chunk (the memory knob).
        temperature: logits are divided by it before the softmax when it is > 0.
        with_entropy: also return the entropy (it comes out of the same chunks).
        entropy_grad: whether the entropy takes part in autograd; False when it is only a metric, which
            spares its backward (several passes over fp32 (C, V) tensors per chunk).
        compiled: run each chunk's arithmetic after the LM head through torch.compile, which fuses the cast,
            log-softmax, gather and entropy into a few kernels instead of a pass over (C, V) for each.

    Returns:
        (logprobs_BT, entropy_BT or None), fp32.
    """
    B, T, H = hidden_BTH.shape
    hidden_NH = hidden_BTH.reshape(B * T, H)
    labels_N = labels_BT.reshape(B * T)
    needs_grad = torch.is_grad_enabled() and hidden_BTH.requires_grad

    score_logits = _compiled_score_logits() if compiled else _score_logits

    def score(hidden_CH: Tensor, labels_C: Tensor) -> tuple[Tensor, Tensor]:
        return score_logits(lm_head(hidden_CH), labels_C, temperature, with_entropy, entropy_grad)

    logprobs, entropies = [], []
    for start in range(0, B * T, chunk_size):
        chunk = (hidden_NH[start : start + chunk_size], labels_N[start : start + chunk_size])
        logprobs_C, entropy_C = checkpoint(score, *chunk, use_reentrant=False) if needs_grad else score(*chunk)
        logprobs.append(logprobs_C)
        entropies.append(entropy_C)
    logprobs_BT = torch.cat(logprobs).reshape(B, T) if logprobs else hidden_NH.new_zeros(B, T, dtype=torch.float32)
    if not with_entropy:
        return logprobs_BT, None
    return logprobs_BT, torch.cat(entropies).reshape(B, T) if entropies else torch.zeros_like(logprobs_BT)


def _score_logits(
    logits_CV: Tensor, labels_C: Tensor, temperature: float, with_entropy: bool, entropy_grad: bool
) -> tuple[Tensor, Tensor]:
    logits_CV = logits_CV.float()
    if temperature > 0 and temperature != 1.0:  # dividing by 1 would cost a pass over (C, V) each way
        logits_CV = logits_CV / temperature
    logp_CV = torch.log_softmax(logits_CV, dim=-1)
    logprobs_C = logp_CV.gather(-1, labels_C.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:  # checkpoint needs tensors back, so an unwanted entropy is an empty placeholder
        return logprobs_C, logprobs_C.new_empty(0)
    # Without grad the entropy saves nothing for backward, so checkpoint's recomputation (which stops once
    # every saved tensor is back) does not redo it either.
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy_C = -(logp_CV.exp() * logp_CV).sum(-1)
    return logprobs_C, entropy_C


@functools.cache
def _compiled_score_logits() -> Callable:
    return torch.compile(_score_logits)
