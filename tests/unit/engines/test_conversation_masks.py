"""Conversations through the engines: a response part with environment tokens between the model's turns
(response_mask 0 on them, attention 1) must be scored in context, and only the model's tokens may count.

A hand-built batch of four conversations goes through the FSDP2 engine with fixed micro-batches, padding
removal, sequence packing and token budgets (and DeepSpeed ZeRO-3 packed): the log-probs of the model's tokens
must equal a plain Hugging Face forward of each whole conversation, and one PPO step's loss and gradient norm
must equal the hand computation, with advantages of 100 planted on the environment's tokens (they must not
count).
"""

from __future__ import annotations

import pytest
import torch
from micro_batching_cases import build
from transformers import AutoModelForCausalLM

from rlkit.batch import Batch
from rlkit.config.schema import AlgorithmConfig
from rlkit.trainer.losses import GlobalCounts, actor_loss_fn

P, T = 4, 12
PAD = 3  # the tiny tokenizer's <|pad|>
# Per row: prompt length, then the response part as runs of (model tokens?, length).
ROWS = [
    (3, [(True, 3), (False, 4), (True, 2)]),  # two turns with a tool message between: 5 model tokens
    (4, [(True, 2), (False, 3), (True, 5)]),  # 7 model tokens
    (2, [(True, 4)]),  # one turn: 4 model tokens
    (1, [(True, 1), (False, 6), (True, 1)]),  # 2 model tokens
]
ADVANTAGES = [1.0, -2.0, 0.5, 3.0]  # per row, on the model's tokens
NUM_MODEL_TOKENS = 5 + 7 + 4 + 2
# PPO at ratio 1 (old log-probs from the update): each model token's loss is -A, token-mean over 18 tokens:
# -(5 * 1 + 7 * (-2) + 4 * 0.5 + 2 * 3) / 18 = -(5 - 14 + 2 + 6) / 18 = 1 / 18
EXPECTED_LOSS = 1 / 18
MODES = {
    "fixed": {},
    "remove_padding": {"remove_padding": True},
    "remove_padding_budget": {"remove_padding": True, "max_tokens_per_micro_batch": 20},
    "packed": {"pack_sequences": True},
    "packed_budget": {"pack_sequences": True, "max_tokens_per_micro_batch": 20},
}


def conversation_batch(vocab_size: int) -> Batch:
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.full((len(ROWS), P + T), PAD)
    attention_mask = torch.zeros(len(ROWS), P + T, dtype=torch.long)
    response_mask = torch.zeros(len(ROWS), T)
    advantages = torch.full((len(ROWS), T), -50.0)  # padding
    for row, ((prompt, runs), advantage) in enumerate(zip(ROWS, ADVANTAGES)):
        length = sum(n for _, n in runs)
        input_ids[row, P - prompt:P + length] = torch.randint(4, vocab_size, (prompt + length,), generator=generator)
        attention_mask[row, P - prompt:P + length] = 1
        column = 0
        for is_model, n in runs:
            response_mask[row, column:column + n] = float(is_model)
            advantages[row, column:column + n] = advantage if is_model else 100.0  # environment tokens: ignored
            column += n
    return Batch({"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0), "response_mask": response_mask,
                  "advantages": advantages})


def reference(model_dir: str, batch: Batch) -> tuple[torch.Tensor, float]:
    """Log-probs (B, T) of every response token from a plain forward of each conversation alone, and the gradient
    norm of the PPO loss at ratio 1 written out: -sum(A * exp(lp - lp.detach()) over model tokens) / 18."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    logprobs = torch.zeros(len(batch), T)
    loss = torch.zeros(())
    for row in range(len(batch)):
        real = batch["attention_mask"][row].bool()
        ids = batch["input_ids"][row][real][None]
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
        prompt = int(real[:P].sum())
        num = ids.shape[1] - prompt
        token_logprobs = logp[prompt - 1:-1].gather(-1, ids[0, prompt:, None]).squeeze(-1)  # (num,)
        logprobs[row, :num] = token_logprobs.detach()
        mask = batch["response_mask"][row, :num]
        ratio = torch.exp(token_logprobs - token_logprobs.detach())
        loss = loss - (ADVANTAGES[row] * ratio * mask).sum() / NUM_MODEL_TOKENS
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
    return logprobs, float(grad_norm)


@pytest.fixture(scope="module")
def expected(tiny_model_dir):
    batch = conversation_batch(AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size)
    return batch, *reference(tiny_model_dir, batch)


def one_step(engine, batch: Batch) -> tuple[torch.Tensor, dict, dict]:
    output = engine.compute_logprobs(batch, micro_batch_size=2)
    loss_fn = actor_loss_fn(AlgorithmConfig(old_logprobs_from_update=True), "token-mean", T,
                            GlobalCounts(float(NUM_MODEL_TOKENS), float(len(batch))))
    metrics = engine.forward_backward(batch, loss_fn, micro_batch_size=2)
    return output.logprobs, metrics, engine.optimizer_step()


def check(engine, expected) -> None:
    batch, ref_logprobs, ref_grad_norm = expected
    logprobs, metrics, step = one_step(engine, batch)
    model_tokens = batch["response_mask"].bool()
    torch.testing.assert_close(logprobs[model_tokens], ref_logprobs[model_tokens], rtol=0, atol=1e-5)
    assert metrics["pg_loss"] == pytest.approx(EXPECTED_LOSS, abs=1e-6)
    assert step["grad_norm"] == pytest.approx(ref_grad_norm, rel=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_fsdp2_scores_conversations_in_context_and_trains_only_model_tokens(tiny_model_dir, expected, mode):
    check(build("fsdp2", tiny_model_dir, "actor", **MODES[mode]), expected)


def test_deepspeed_zero3_packed_too(tiny_model_dir, expected):
    pytest.importorskip("deepspeed")
    check(build("deepspeed", tiny_model_dir, "actor", **MODES["packed_budget"]), expected)


def test_the_environment_tokens_would_change_the_loss_if_they_counted(expected):
    """The check above can fail: with every attended response token in the mask the loss is another number."""
    batch, _, _ = expected
    everything = Batch(dict(batch.tensors))
    everything.tensors["response_mask"] = batch["attention_mask"][:, P:].float()
    logprobs = torch.zeros(len(batch), T)
    loss_fn = actor_loss_fn(AlgorithmConfig(old_logprobs_from_update=True), "token-mean", T,
                            GlobalCounts(float(everything["response_mask"].sum()), float(len(batch))))
    from rlkit.engines.base import ModelOutput

    _, metrics = loss_fn(ModelOutput(logprobs=logprobs), everything)
    assert abs(metrics["pg_loss"] - EXPECTED_LOSS) > 1.0  # the planted 100s
