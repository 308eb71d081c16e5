"""Where the compiled update's host time may go, without the profiler (whose own overhead hid it before).

Run on a GPU from the repository root: `python scripts/gpu/host_overhead.py [--update]`. Prints one JSON line
per measurement:

- `attention`: seconds a call of torch's public `varlen_attn` (the custom op rlkit's packed attention calls)
  takes on the host, enqueue only and to completion, forward and forward + backward, against the aten flash
  kernel it wraps called directly; the packed shape of issue 17's workload on SmolLM2-135M (128 sequences of
  128 + up to 256 tokens, 9 query heads, 64 wide).
- `update` (with --update): FSDP2's eager packed update on a randomly initialised model of SmolLM2-135M's shape,
  every decoder layer its own FSDP unit (what rlkit does) against the whole model as one unit; the same batch.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def seconds(fn, repeats: int, *, sync: bool) -> float:
    """Median seconds of one call; with sync=False only what the host spends to enqueue it."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def attention(repeats: int) -> None:
    from torch.nn.attention.varlen import varlen_attn

    generator = torch.Generator().manual_seed(0)
    lengths = 128 + torch.randint(1, 257, (128,), generator=generator)
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32).cuda()
    tokens, longest = int(lengths.sum()), int(lengths.max())
    q, k, v = (torch.randn(tokens, 9, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(tokens, 9, 64, device="cuda", dtype=torch.bfloat16)

    def public() -> torch.Tensor:
        return varlen_attn(q, k, v, cu, cu, longest, longest, window_size=(-1, 0))

    def direct() -> torch.Tensor:
        return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, longest, longest, 0.0, True, False)[0]

    def backward(call):
        return lambda: call().backward(grad)

    for name, call in (("varlen_attn", public), ("aten_flash", direct)):
        with torch.no_grad():
            call()
        row = {"measure": "attention", "call": name, "tokens": tokens,
               "forward_enqueue_s": seconds(lambda: call(), repeats, sync=False),
               "forward_s": seconds(lambda: call(), repeats, sync=True)}
        if name == "varlen_attn":  # the aten op has no autograd formula for varlen inputs of its own
            row["fwd_bwd_enqueue_s"] = seconds(backward(call), repeats, sync=False)
            row["fwd_bwd_s"] = seconds(backward(call), repeats, sync=True)
        print(json.dumps(row), flush=True)


def update(repeats: int) -> None:
    import argparse as _argparse

    from engine_passes import synthetic_batch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlkit.config.loading import validate
    from rlkit.config.schema import AlgorithmConfig, EngineConfig, OptimConfig
    from rlkit.distributed import DistInfo
    from rlkit.engines.base import EngineSpec
    from rlkit.engines.fsdp2 import parallelize
    from rlkit.registry import TRAIN_ENGINES
    from rlkit.trainer.losses import GlobalCounts, actor_loss_fn

    folder = Path(tempfile.mkdtemp()) / "smollm2-shape"
    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
                         tie_word_embeddings=True, rms_norm_eps=1e-5)
    LlamaForCausalLM(config).save_pretrained(folder)
    batch = synthetic_batch(_argparse.Namespace(seqs=256, prompt_len=128, response_len=256, ragged=True, group=1),
                            vocab_size=config.vocab_size)
    counts = GlobalCounts(*GlobalCounts.of_local(batch))
    loss_fn = actor_loss_fn(AlgorithmConfig(use_kl_loss=True), "token-mean", 256, counts)
    layers = parallelize.decoder_layers
    for units in ("per_layer", "one_unit", "per_layer", "one_unit"):
        parallelize.decoder_layers = layers if units == "per_layer" else (lambda scorer: [])
        section = validate(EngineConfig, {"name": "fsdp2", "pack_sequences": True, "torch_compile": False,
                                          "max_tokens_per_micro_batch": None}, source=units)
        engine = TRAIN_ENGINES.get("fsdp2")(section, section.options, EngineSpec(
            role="actor", model_path=str(folder), optim=OptimConfig(lr=1e-7)), DistInfo(device="cuda:0"))
        print(json.dumps({"measure": "update", "units": units,
                          "update_s": update_seconds(engine, batch, loss_fn, repeats)}), flush=True)
        del engine
        gc.collect()
        torch.cuda.empty_cache()
    parallelize.decoder_layers = layers


def update_seconds(engine, batch, loss_fn, repeats: int) -> float:
    def step() -> None:
        engine.forward_backward(batch, loss_fn, micro_batch_size=128, entropy_grad=False)
        engine.optimizer_step()

    step()
    return seconds(step, repeats, sync=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--update", action="store_true")
    args = parser.parse_args()
    attention(args.repeats)
    if args.update:
        update(max(3, args.repeats // 4))


if __name__ == "__main__":
    main()
