"""Loading Hugging Face models and tokenizers from local folders, LoRA wrapping, and the embedded tiny model."""

from rlkit.models.loading import load_causal_lm, load_critic, load_tokenizer
from rlkit.models.tiny import build_tiny_model, ensure_tiny_model

__all__ = [
    "build_tiny_model",
    "ensure_tiny_model",
    "load_causal_lm",
    "load_critic",
    "load_tokenizer",
]
