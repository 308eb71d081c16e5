"""Causal attention over packed rows, as a transformers attention function (engine.pack_sequences).

Shape legend: N packed tokens, S sequences, Hq query heads, Hkv key/value heads, D head dimension.

A packed forward runs the decoder on one row (1, N) that holds S sequences back to back; `cu_seq_lens`
(S + 1,) int32 gives where each starts (0, n_0, n_0 + n_1, ..., N). Every token attends causally within its
own sequence and never across a boundary. transformers hands the attention function whatever extra keyword
arguments the model's forward received, so the packed forward passes the flash-attention names
`cu_seq_lens_q/_k` and `max_length_q/_k` (`varlen_kwargs`).

Two kernels compute the same thing:
- on CUDA in fp16/bf16, `torch.nn.attention.varlen.varlen_attn` (PyTorch's flash-attention varlen kernel; no
  flash-attn package needed);
- elsewhere (CPU, fp32, a torch without varlen_attn), `scaled_dot_product_attention` once per sequence: exact
  and slow, so that everything runs and is tested on CPU.

Under torch.compile (engine.torch_compile) the flash kernel is traced into each decoder layer's graph (it is a
custom op; the longest length becomes a dynamic int), so a layer compiles to one graph. Only the per-sequence
fallback, which reads the boundaries on the host, stays outside. How to call this torch's kernel is worked out
once, before any tracing (`flash_kernel`).

Shared prompts (engine.share_prompts, rlkit.engines.packing): a sequence's keys may be longer than its queries.
The key sequences are gathered from the packed row by `rlkit_key_index` (the prompt's positions, then the
response's own), their bounds in `cu_seq_lens_k`; each query attends causally to the end of its key sequence
(the last query sees every key), so a response sees its whole prompt and its own earlier tokens. That is the
flash kernel's causal rule for a query sequence shorter than its keys (aligned at the bottom right).

The model's causal-mask builder returns no mask for an implementation it has no mask function for, which
is what a packed forward needs (the forward passes attention_mask=None too). Read in transformers 5.17 and
5.23, which agree on all of it: AttentionInterface.register, set_attn_implementation taking a registered
name, that early return of the mask builders, and Qwen2/Llama passing their forward's kwargs down to here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlkit.errors import ConfigError

ATTENTION_NAME = "rlkit_varlen"  # no "flash" or "sdpa" in it: transformers special-cases those names


def use_varlen_attention(hf_model: nn.Module) -> None:
    """Switch a Hugging Face model (every submodel sharing its config) to the packed attention, for good."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, varlen_attention_forward)
    hf_model.set_attn_implementation(ATTENTION_NAME)
    flash_kernel()  # resolved here, outside torch.compile's tracing
    # set_attn_implementation only warns for a model whose attention does not go through AttentionInterface;
    # such a model would attend across the packed sequences
    if hf_model.config._attn_implementation != ATTENTION_NAME:
        raise ConfigError(
            f"engine.pack_sequences: model {hf_model.config.name_or_path} ({type(hf_model).__name__}) cannot take a "
            "custom attention function (transformers' AttentionInterface); turn engine.pack_sequences off"
        )


def varlen_kwargs(cu_seq_lens: Tensor, max_length: int, *, key_seq_lens: Tensor | None = None,
                  max_key_length: int | None = None, key_index: Tensor | None = None) -> dict[str, Tensor | int]:
    """The keyword arguments that carry the sequence boundaries through a Hugging Face model's forward; with
    shared prompts also the key sequences' bounds and the packed positions they gather (module docstring)."""
    kwargs: dict[str, Tensor | int] = {
        "cu_seq_lens_q": cu_seq_lens, "max_length_q": max_length,
        "cu_seq_lens_k": cu_seq_lens if key_seq_lens is None else key_seq_lens,
        "max_length_k": max_length if max_key_length is None else max_key_length}
    if key_index is not None:
        kwargs["rlkit_key_index"] = key_index
    return kwargs


def varlen_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    cu_seq_lens_q: Tensor | None = None,
    max_length_q: int | None = None,
    cu_seq_lens_k: Tensor | None = None,
    max_length_k: int | None = None,
    rlkit_key_index: Tensor | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """transformers' attention-function contract: query (1, Hq, N, D), key and value (1, Hkv, N, D) ->
    (output (1, N, Hq, D), no attention weights)."""
    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise RuntimeError(
            f"the '{ATTENTION_NAME}' attention serves packed forwards only (one row and cu_seq_lens_q): "
            "this model was switched to it by engine.pack_sequences"
        )
    if attention_mask is not None:
        raise RuntimeError(f"the '{ATTENTION_NAME}' attention takes no attention mask: the packed forward passes none")
    # what the packed attention does not implement and must not silently leave out
    extras = {"sliding_window": sliding_window, "softcap": kwargs.get("softcap"), "s_aux": kwargs.get("s_aux"),
              "dropout": dropout or None}
    unsupported = [name for name, option in extras.items() if option is not None]
    if unsupported:
        raise ConfigError(f"engine.pack_sequences: this model's attention uses {', '.join(unsupported)}, which the "
                          "packed attention does not implement; turn engine.pack_sequences off")
    if rlkit_key_index is not None:  # shared prompts: each sequence's keys, gathered from the packed row
        key, value = key[:, :, rlkit_key_index], value[:, :, rlkit_key_index]
    output_NHD = varlen_causal_attention(
        query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1),
        cu_seq_lens_q, max_length_q, scale=scaling, key_seq_lens=cu_seq_lens_k, max_key_length=max_length_k,
    )
    return output_NHD.unsqueeze(0), None


def varlen_causal_attention(
    query_NHD: Tensor, key_NHD: Tensor, value_NHD: Tensor, cu_seq_lens: Tensor, max_length: int,
    *, scale: float | None = None, key_seq_lens: Tensor | None = None, max_key_length: int | None = None,
) -> Tensor:
    """Causal attention within each sequence of a packed row: query (N, Hq, D), key and value (N_k, Hkv, D),
    Hq a multiple of Hkv (grouped-query attention) -> (N, Hq, D). Key sequences default to the query
    sequences; one longer than its queries ends where they end (module docstring)."""
    key_seq_lens = cu_seq_lens if key_seq_lens is None else key_seq_lens
    max_key_length = max_length if max_key_length is None else max_key_length
    if flash_supports(query_NHD):
        return flash_varlen(query_NHD, key_NHD, value_NHD, cu_seq_lens, max_length, scale=scale,
                            key_seq_lens=key_seq_lens, max_key_length=max_key_length)
    return per_sequence_sdpa(query_NHD, key_NHD, value_NHD, cu_seq_lens, scale=scale, key_seq_lens=key_seq_lens)


def flash_supports(query_NHD: Tensor) -> bool:
    """Whether PyTorch's flash varlen kernel takes this query: CUDA, fp16/bf16, a head size it has kernels for."""
    head_dim = query_NHD.shape[-1]
    return (
        query_NHD.is_cuda
        and query_NHD.dtype in (torch.float16, torch.bfloat16)
        and head_dim % 8 == 0 and head_dim <= 256
        and flash_kernel() is not None
    )


def flash_varlen(
    query_NHD: Tensor, key_NHD: Tensor, value_NHD: Tensor, cu_seq_lens: Tensor, max_length: int,
    *, scale: float | None = None, key_seq_lens: Tensor | None = None, max_key_length: int | None = None,
) -> Tensor:
    """`torch.nn.attention.varlen.varlen_attn`, causal, across the torch releases that have it."""
    kernel = flash_kernel()
    num_groups = query_NHD.shape[1] // key_NHD.shape[1]
    options = dict(kernel.causal)
    if num_groups > 1 and kernel.takes_gqa:
        options["enable_gqa"] = True
    elif num_groups > 1:  # a release without enable_gqa wants one key/value head per query head
        key_NHD, value_NHD = (x.repeat_interleave(num_groups, dim=1) for x in (key_NHD, value_NHD))
    cu_seq_q = cu_seq_lens.to(torch.int32)
    cu_seq_k = cu_seq_q if key_seq_lens is None or key_seq_lens is cu_seq_lens else key_seq_lens.to(torch.int32)
    return kernel.function(
        query_NHD.contiguous(), key_NHD.contiguous(), value_NHD.contiguous(),
        cu_seq_q, cu_seq_k, max_length, max_length if max_key_length is None else max_key_length, scale=scale,
        **options,
    )


# Outside torch.compile (engine.torch_compile): the loop reads the boundaries on the host.
@torch.compiler.disable
def per_sequence_sdpa(
    query_NHD: Tensor, key_NHD: Tensor, value_NHD: Tensor, cu_seq_lens: Tensor, *, scale: float | None = None,
    key_seq_lens: Tensor | None = None,
) -> Tensor:
    """The exact fallback: causal `scaled_dot_product_attention` on each sequence alone (its queries against
    its key sequence, the last query seeing every key)."""
    bounds = cu_seq_lens.tolist()
    key_bounds = bounds if key_seq_lens is None or key_seq_lens is cu_seq_lens else key_seq_lens.tolist()
    num_groups = query_NHD.shape[1] // key_NHD.shape[1]
    outputs = []
    for start, stop, key_start, key_stop in zip(bounds[:-1], bounds[1:], key_bounds[:-1], key_bounds[1:]):
        query_1HqD = query_NHD[start:stop].transpose(0, 1).unsqueeze(0)
        key_1HkD, value_1HkD = (x[key_start:key_stop].transpose(0, 1).unsqueeze(0) for x in (key_NHD, value_NHD))
        num_queries, num_keys = stop - start, key_stop - key_start
        # sdpa's is_causal aligns the first query with the first key; a longer key sequence needs its own mask
        mask_qk = None if num_queries == num_keys else (
            torch.arange(num_keys, device=query_NHD.device)[None, :]
            <= torch.arange(num_queries, device=query_NHD.device)[:, None] + num_keys - num_queries)
        output_1HqD = F.scaled_dot_product_attention(
            query_1HqD, key_1HkD, value_1HkD, attn_mask=mask_qk, is_causal=mask_qk is None, scale=scale,
            enable_gqa=num_groups > 1,
        )
        outputs.append(output_1HqD[0].transpose(0, 1))
    return torch.cat(outputs)


def flash_aligns_keys_at_end(device: torch.device | str) -> bool:
    """Whether this torch's flash kernel, on `device`, lets a query sequence shorter than its keys see them as
    shared prompts need (the last query sees every key), checked once against the exact fallback: 3 queries
    against 5 keys in bf16. Aligned at the start instead, a response would not see the end of its prompt."""
    if "keys_at_end" not in _resolved:
        generator = torch.Generator().manual_seed(0)
        query_NHD, key_NHD, value_NHD = (torch.randn(n, 2, 64, generator=generator) for n in (3, 5, 5))
        cu_seq_q, cu_seq_k = torch.tensor([0, 3], dtype=torch.int32), torch.tensor([0, 5], dtype=torch.int32)
        expected = per_sequence_sdpa(query_NHD, key_NHD, value_NHD, cu_seq_q, key_seq_lens=cu_seq_k)
        on_device = (x.to(device, torch.bfloat16) for x in (query_NHD, key_NHD, value_NHD))
        output = flash_varlen(*on_device, cu_seq_q.to(device), 3, key_seq_lens=cu_seq_k.to(device), max_key_length=5)
        _resolved["keys_at_end"] = bool((output.float().cpu() - expected).abs().max() < 0.05)
    return _resolved["keys_at_end"]


def flash_varlen_available() -> bool:
    """Whether this torch has PyTorch's flash varlen kernel (torch >= 2.10; it runs on CUDA in bf16/fp16)."""
    return flash_kernel() is not None


@dataclass(frozen=True)
class FlashKernel:
    """torch's varlen_attn and how this release asks for causality (torch 2.10: is_causal; 2.11 on:
    window_size=(-1, 0)) and whether it takes enable_gqa."""

    function: Callable
    causal: dict
    takes_gqa: bool


_resolved: dict[str, FlashKernel | None] = {}  # a plain dict: torch.compile reads it without tracing a cache


def flash_kernel() -> FlashKernel | None:
    """This torch's flash varlen kernel, or None (torch < 2.10); worked out on the first call."""
    if "kernel" not in _resolved:
        function = _torch_varlen_attn()
        if function is None:
            _resolved["kernel"] = None
        else:
            parameters = inspect.signature(function).parameters
            causal = {"window_size": (-1, 0)} if "window_size" in parameters else {"is_causal": True}
            _resolved["kernel"] = FlashKernel(function, causal, "enable_gqa" in parameters)
    return _resolved["kernel"]


def _torch_varlen_attn() -> Callable | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10
        return None
    return varlen_attn
