"""Model shapes for `rlkit bench --shape`: Qwen2.5 architectures with random weights, and parameter counts.

The shapes copy the published Qwen2.5 configs (hidden size, layers, heads, KV heads, MLP width, vocabulary,
tied embeddings), so timings and memory match the real model of that size; only the weights are random.
`tiny` is rlkit's built-in tiny model (rlkit.models.tiny), for CPU runs and CI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TINY = "tiny"


@dataclass(frozen=True)
class Shape:
    """A Qwen2 architecture. `name` is the --shape value; `vocab_size` is the model's embedding rows."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool

    def config(self, *, eos_token_id: int, pad_token_id: int):
        """The transformers Qwen2Config of this shape (bf16 on disk, Qwen2.5's rope and norm settings)."""
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            tie_word_embeddings=self.tie_word_embeddings,
            max_position_embeddings=32768,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            dtype="bfloat16",
            architectures=["Qwen2ForCausalLM"],  # SGLang picks its model class from this list
        )


SHAPES: dict[str, Shape] = {
    "0.5b": Shape("0.5b", 896, 24, 14, 2, 4864, 151936, tie_word_embeddings=True),
    "1.5b": Shape("1.5b", 1536, 28, 12, 2, 8960, 151936, tie_word_embeddings=True),
    "7b": Shape("7b", 3584, 28, 28, 4, 18944, 152064, tie_word_embeddings=False),
}
SHAPE_NAMES = (TINY, *SHAPES)


def meta_model(config, *, trust_remote_code: bool = False) -> torch.nn.Module:
    """The causal LM of `config` on the meta device: shapes and names, no memory, no initialisation."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def count_parameters(config, *, trust_remote_code: bool = False) -> int:
    """Parameters of the causal LM of `config`, tied embeddings counted once (built on the meta device)."""
    return sum(parameter.numel() for parameter in meta_model(config, trust_remote_code=trust_remote_code).parameters())
