"""Scoring the response positions of a batch: the modules an engine wraps and shards.

Shape legend: B sequences, P prompt width, T response width, L = P + T, H hidden size; packed: N tokens in
one row, M scored positions.

Response token t sits at position P + t and is predicted from position P - 1 + t, so log-probs read the
hidden states at positions P - 1 .. L - 2. Values are read at the same positions (as verl does): the value
of the state before token t is emitted.

A packed forward (engine.pack_sequences, rlkit.engines.packing) runs the model on one (1, N) row of several
sequences with no attention mask, their boundaries in `cu_seq_lens`, and names the M positions to score in
`score_positions`; each scored token is the one at the next position. Outputs are then (1, M), as if the
packed row were a batch of one sequence with M response tokens. With shared prompts the keys of each sequence
(`key_seq_lens`, `key_index`) go to the attention too, and `score_labels` names the scored tokens.

Each scorer is a small nn.Module holding the Hugging Face (or peft) model as `self.model`, so an engine can
make it the FSDP root and call it; calling submodules of a sharded root directly would skip the root's
unshard. Its state-dict names are the model's with the `model.` prefix (`WRAPPER_PREFIX`).
"""

from __future__ import annotations

from torch import Tensor, nn

from rlkit.engines.logprobs import logprobs_from_hidden
from rlkit.engines.varlen_attention import varlen_kwargs
from rlkit.errors import ConfigError
from rlkit.models.lora import hf_model_of

WRAPPER_PREFIX = "model."


def response_slice(prompt_width: int, response_width: int) -> slice:
    """Positions P - 1 .. P + T - 2: those whose outputs score response tokens 0 .. T - 1."""
    return slice(prompt_width - 1, prompt_width - 1 + response_width)


def at_scoring_positions(outputs_BL: Tensor, response_width: int, score_positions: Tensor | None) -> Tensor:
    """Per-position outputs (B, L, ...) where they score response tokens: (B, T, ...); packed, (1, M, ...)."""
    if score_positions is None:
        prompt_width = outputs_BL.shape[1] - response_width
        return outputs_BL[:, response_slice(prompt_width, response_width)]
    return outputs_BL[:, score_positions]


def scored_tokens(input_ids: Tensor, response_width: int, score_positions: Tensor | None,
                  score_labels: Tensor | None = None) -> Tensor:
    """The tokens those positions score: the response (B, T); packed, the token after each position (1, M),
    or `score_labels` where the packing names them (shared prompts)."""
    if score_labels is not None:
        return score_labels
    if score_positions is None:
        return input_ids[:, input_ids.shape[1] - response_width :]
    return input_ids[:, score_positions + 1]


def packing_kwargs(cu_seq_lens: Tensor | None, max_length: int, key_seq_lens: Tensor | None = None,
                   max_key_length: int | None = None, key_index: Tensor | None = None) -> dict:
    """The model kwargs of a packed forward (none for a padded one)."""
    if cu_seq_lens is None:
        return {}
    return varlen_kwargs(cu_seq_lens, max_length, key_seq_lens=key_seq_lens, max_key_length=max_key_length,
                         key_index=key_index)


def strip_wrapper_prefix(name: str) -> str:
    assert name.startswith(WRAPPER_PREFIX), f"'{name}' is not a scorer parameter"
    return name[len(WRAPPER_PREFIX) :]


class PolicyScorer(nn.Module):
    """A causal LM that returns the log-probs (and entropy) of the response tokens instead of logits.

    It runs the decoder, keeps the hidden states of the T scoring positions and applies the LM head in
    chunks (see rlkit.engines.logprobs), so the (B, L, V) logits are never built.
    """

    def __init__(self, model: nn.Module, *, chunk_size: int, temperature: float, compiled: bool = False):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.temperature = temperature
        self.compiled = compiled  # torch.compile the log-prob/entropy arithmetic of each chunk
        config = hf_model_of(model).config
        for option in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
            if getattr(config, option, None) not in (None, 1, 1.0):
                raise ConfigError(
                    f"model {config.name_or_path} sets {option}: rlkit applies the LM head as a plain linear layer "
                    "when it computes log-probs, so this model's logits would be wrong; use another model"
                )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None, position_ids: Tensor, response_width: int = 0,
        with_entropy: bool = False, cu_seq_lens: Tensor | None = None, max_length: int = 0,
        score_positions: Tensor | None = None, entropy_grad: bool = True, key_seq_lens: Tensor | None = None,
        max_key_length: int | None = None, key_index: Tensor | None = None, score_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(B, L) inputs -> (logprobs (B, T), entropy (B, T) or None), fp32; packed: (1, N) -> (1, M).
        `entropy_grad=False`: the entropy is detached (a metric only), which spares its backward."""
        hf_model = hf_model_of(self.model)
        hidden_BLH = hf_model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
            **packing_kwargs(cu_seq_lens, max_length, key_seq_lens, max_key_length, key_index),
        ).last_hidden_state
        logprobs_BT, entropy_BT = logprobs_from_hidden(
            at_scoring_positions(hidden_BLH, response_width, score_positions),
            hf_model.get_output_embeddings(),
            scored_tokens(input_ids, response_width, score_positions, score_labels),
            chunk_size=self.chunk_size,
            temperature=self.temperature,
            with_entropy=with_entropy,
            entropy_grad=entropy_grad,
            compiled=self.compiled,
        )
        # FSDP hooks the root's outputs for backward and warns about views: return (tiny) copies
        return logprobs_BT.clone(), entropy_BT.clone() if entropy_BT is not None else None


class ValueScorer(nn.Module):
    """A token-classification model with one label whose output at the scoring positions is the value."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None, position_ids: Tensor, response_width: int = 0,
        cu_seq_lens: Tensor | None = None, max_length: int = 0, score_positions: Tensor | None = None,
        key_seq_lens: Tensor | None = None, max_key_length: int | None = None, key_index: Tensor | None = None,
        score_labels: Tensor | None = None,
    ) -> Tensor:
        """(B, L) inputs -> values (B, T), fp32; packed: (1, N) -> (1, M). A value reads no label: score_labels
        is taken and left alone."""
        values_BL1 = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
            **packing_kwargs(cu_seq_lens, max_length, key_seq_lens, max_key_length, key_index),
        ).logits
        values_BT1 = at_scoring_positions(values_BL1, response_width, score_positions)
        # a copy, not a view: FSDP hooks the root's outputs for backward
        return values_BT1[..., 0].float().clone()
