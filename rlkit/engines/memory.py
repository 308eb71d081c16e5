"""How much GPU memory an engine's passes take, estimated from the model's config: what the token budget of
`engine.max_tokens_per_micro_batch: auto` is computed from (rlkit.trainer.speed, docs/speed_defaults.md).

Units are bytes. h hidden size, h_q = heads x head size, i MLP width, n_L layers, V vocabulary, b bytes of the
compute dtype (2 for bf16), C = engine.logprob_chunk_size.

What autograd keeps for backward, per token, in a Hugging Face decoder layer (read off transformers' Llama/Qwen2
code and checked against torch's saved-tensor hooks: tests/unit/engines/test_memory.py):
- each RMSNorm (two a layer): its input upcast to fp32 (4h), the normalised values cast back (b h), and the
  output scaled by its weight, which the next projection keeps (b h): (4 + 2b) h;
- attention: the rotated queries and keys, the values and the attention output, at most b h_q each (keys and
  values are h_kv wide unless the attention repeats them for grouped-query heads, as it does with a padding
  mask), plus the kernel's fp32 log-sum-exp per head; with a padding mask also a (longest)-wide mask row;
- the SwiGLU MLP: the gate and up projections, the activation and the product fed to down_proj: 4 b i.
Compiled layers (engine.torch_compile) keep less: inductor's partitioner recomputes cheap elementwise work in
backward instead of keeping it, so each norm keeps its input and its output in the compute dtype (2 b h, and the
fp32 reciprocal RMS) and the MLP its gate, up and product (3 b i); the attention keeps the same. On SmolLM2-135M
that is 18,476 bytes a layer against eager's 26,156, and 0.55 MiB a token in all, which is what the compiled
passes took on an H200 (docs/speed_defaults.md; inductor's choice checked on CPU in test_memory.py).
Outside the layers: the final norm, the scored positions' hidden states (rlkit.engines.logprobs keeps them, not
their logits, for each chunk), rotary cos/sin and a few fp32 numbers per token for the loss.

Backward then holds one layer's gradients besides what is kept, hence n_L + 1 layers. With activation
checkpointing a layer keeps only its input (b h) and is recomputed, with its gradients, one at a time. The
logits of one chunk, recomputed in backward, are a transient of C x V elements of at most 26 bytes each (bf16
logits, fp32 copies for log-softmax, exp and entropy, their gradients), whatever the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlkit.config.schema import LoraConfig

LOGIT_ELEMENT_BYTES = 26  # per logit of one chunk in backward: see the module docstring
LOSS_BYTES_PER_TOKEN = 64  # labels (int64) and the loss's fp32 per-token tensors
# Per trainable parameter, what the first update allocates after the run starts: fp32 gradients (4) and AdamW's
# two fp32 moments (8), created at the first backward and step; DeepSpeed creates its moments at build, so this
# counts them twice there (on the safe side).
PENDING_BYTES_PER_TRAINABLE = 12
GATHERED_BYTES_PER_PARAMETER = 2  # the compute-dtype copy of the weights a sharded pass gathers


@dataclass(frozen=True)
class ModelFacts:
    """What the estimates and the speed rules read from a model's config (one model: actor, critic or reference).

    trainable_parameters: those the optimizer updates (LoRA: the adapters'). packing_blocker: why the packed
    attention (rlkit.engines.varlen_attention) cannot serve this model, or None when it can.
    """

    num_parameters: int
    trainable_parameters: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    packing_blocker: str | None = None

    @staticmethod
    def of(model_path: str, *, trust_remote_code: bool = False, lora: LoraConfig | None = None) -> ModelFacts:
        """Read from the config of the model folder; the model is built on the meta device (no weights)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_path, local_files_only=True, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        num_parameters = sum(parameter.numel() for parameter in model.parameters())
        trainable = num_parameters if lora is None else lora_parameters(model, lora)
        return ModelFacts.of_config(config.get_text_config(), num_parameters, trainable,
                                    supports_attention_interface=bool(getattr(model, "_supports_attention_backend",
                                                                              False)))

    @staticmethod
    def of_config(config: Any, num_parameters: int, trainable_parameters: int, *,
                  supports_attention_interface: bool) -> ModelFacts:
        hidden, heads = config.hidden_size, config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        return ModelFacts(
            num_parameters=num_parameters, trainable_parameters=trainable_parameters, hidden_size=hidden,
            num_layers=config.num_hidden_layers,
            intermediate_size=getattr(config, "intermediate_size", None) or 4 * hidden,
            num_heads=heads, num_kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
            vocab_size=config.vocab_size,
            packing_blocker=packing_blocker(config, head_dim, supports_attention_interface),
        )


def packing_blocker(config: Any, head_dim: int, supports_attention_interface: bool) -> str | None:
    """Why engine.pack_sequences cannot run this model on the flash varlen kernel, or None."""
    if not supports_attention_interface:
        return "its attention does not go through transformers' AttentionInterface"
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True) \
            or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "it uses sliding-window attention, which the packed attention does not implement"
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "it soft-caps its attention logits, which the packed attention does not implement"
    if head_dim % 8 or head_dim > 256:
        return f"its head size {head_dim} is not one the flash kernel takes (a multiple of 8, at most 256)"
    return None


def lora_parameters(model: nn.Module, lora: LoraConfig) -> int:
    """What LoRA adapters add to `model` (rank x (in + out) per adapted linear layer), as peft places them:
    the layers named in target_modules, or every linear layer but the output embedding for 'all-linear'."""
    output = model.get_output_embeddings()
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is output:
            continue
        if lora.target_modules == "all-linear" or name.rpartition(".")[2] in lora.target_modules:
            count += lora.rank * (module.in_features + module.out_features)
    return count


# -- activations ------------------------------------------------------------------------------------------
def layer_bytes_per_token(model: ModelFacts, dtype_bytes: int, *, packed: bool, longest: int,
                          compiled: bool = False) -> int:
    """What autograd keeps per token for one decoder layer (module docstring), eager or compiled by
    torch.compile; `longest` is the padded width, whose attention-mask row an unpacked forward keeps."""
    b, h, h_q = dtype_bytes, model.hidden_size, model.num_heads * model.head_dim
    norms = 2 * 2 * b * h if compiled else 2 * (4 + 2 * b) * h
    attention = 4 * b * h_q + 4 * model.num_heads + (0 if packed else b * longest)
    mlp = (3 if compiled else 4) * b * model.intermediate_size
    return norms + attention + mlp + 8  # + the norms' fp32 reciprocal RMS


def outside_bytes_per_token(model: ModelFacts, dtype_bytes: int) -> int:
    """The final norm, the scored hidden states, rotary cos/sin and the loss's per-token numbers."""
    b, h = dtype_bytes, model.hidden_size
    return (4 + 2 * b) * h + b * h + 2 * b * model.head_dim + LOSS_BYTES_PER_TOKEN


def activation_bytes_per_token(model: ModelFacts, dtype_bytes: int, *, checkpointing: bool, packed: bool,
                               longest: int, compiled: bool = False) -> int:
    """Peak bytes a token of a training micro-batch takes during its forward and backward (module docstring);
    `compiled`: the decoder layers run through torch.compile (engine.torch_compile)."""
    layer = layer_bytes_per_token(model, dtype_bytes, packed=packed, longest=longest, compiled=compiled)
    outside = outside_bytes_per_token(model, dtype_bytes)
    if checkpointing:
        return model.num_layers * dtype_bytes * model.hidden_size + 2 * layer + outside
    return (model.num_layers + 1) * layer + outside


def logits_bytes(chunk_size: int, vocab_size: int) -> int:
    """The transient of one log-prob chunk's logits in backward (rlkit.engines.logprobs)."""
    return LOGIT_ELEMENT_BYTES * chunk_size * vocab_size


def pending_state_bytes(models: list[ModelFacts], world_size: int) -> int:
    """What the trained models' first update still allocates on each rank after the run has started: gradients
    and optimizer moments of the trainable parameters, and the gathered compute-dtype weights, sharded over the
    ranks."""
    total = sum(PENDING_BYTES_PER_TRAINABLE * model.trainable_parameters
                + GATHERED_BYTES_PER_PARAMETER * model.num_parameters for model in models)
    return total // world_size
