"""Where the compiled update's host time may go, without the profiler (whose own overhead hid it before).

Run on a GPU from the repository root: `python scripts/gpu/host_overhead.py [--update] [--optimizer] [--compile]`.
Prints one JSON line per measurement:

- `attention`: seconds a call of torch's public `varlen_attn` (the custom op rlkit's packed attention calls)
  takes on the host, enqueue only and to completion, forward and forward + backward, against the aten flash
  kernel it wraps called directly; the packed shape of issue 17's workload on SmolLM2-135M (128 sequences of
  128 + up to 256 tokens, 9 query heads, 64 wide).
- `update`, `logprob` (with --update; --compile for the compiled layers, --model for real weights): FSDP2's packed
  update and log-prob pass on a model of SmolLM2-135M's shape (random weights unless --model), every decoder
  layer its own FSDP unit against the whole model as one unit (`engine.fsdp2.units` layers / model), the same
  batch; both engines in one process, taking turns --repeats rounds (AB, BA, ...); medians and the median ratio.
- `optimizer_step`, `update_by_optimizer` (with --optimizer): the engine's optimizer step alone, and the whole
  update, with AdamW fused (as rlkit builds it) against foreach, on one engine (one unit), taking turns.
- `update_batching`, `logprob_batching` (with --batching): the update and the log-prob pass with prompts shared
  (`engine.share_prompts`) against whole rows under --budget tokens a micro-batch, whole rows in one micro-batch,
  and shared prompts in two, on 32 prompts x 8 samples; four engines (one unit) taking turns.
- `update_transfers`, `logprob_transfers` (with --transfers): the update and the log-prob pass with the copies to
  the GPU as rlkit makes them (pinned, no stream sync) against torch's plain `.to(device)`, one engine, taking turns.
- `weights` (with --update): streaming the weights a sync reads (`full_weights`), copying each local tensor as one
  rank now does against gathering each with `DTensor.full_tensor()`, taking turns the same way.
"""

from __future__ import annotations

import argparse
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


def fsdp2_setup(*, compiled: bool, model_path: str | None, group: int = 1):
    """(build(units, **engine options), gradients(engine), step(engine), logprob_pass(engine), real_weights): FSDP2
    engines and the calls timed on them, on the workload's batch (`group` rows a prompt). The calls take
    `micro_batch_size` (default 128), which a token budget (`max_tokens_per_micro_batch`) overrides."""
    import argparse as _argparse

    from engine_passes import synthetic_batch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from rlkit.config.loading import validate
    from rlkit.config.schema import AlgorithmConfig, EngineConfig, OptimConfig
    from rlkit.distributed import DistInfo
    from rlkit.engines.base import EngineSpec
    from rlkit.registry import TRAIN_ENGINES
    from rlkit.trainer.losses import GlobalCounts, actor_loss_fn

    real_weights = model_path is not None
    if model_path is None:
        model_path = str(Path(tempfile.mkdtemp()) / "smollm2-shape")
        LlamaForCausalLM(LlamaConfig(
            hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
            vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5,
        )).save_pretrained(model_path)
    batch = synthetic_batch(_argparse.Namespace(seqs=256, prompt_len=128, response_len=256, ragged=True, group=group),
                            vocab_size=AutoConfig.from_pretrained(model_path).vocab_size)
    counts = GlobalCounts(*GlobalCounts.of_local(batch))
    loss_fn = actor_loss_fn(AlgorithmConfig(use_kl_loss=True), "token-mean", 256, counts)

    def build(units: str, **options):
        section = validate(EngineConfig, {"name": "fsdp2", "pack_sequences": True, "torch_compile": compiled,
                                          "max_tokens_per_micro_batch": None, "fsdp2": {"units": units}, **options},
                           source=units)
        return TRAIN_ENGINES.get("fsdp2")(section, section.options, EngineSpec(
            role="actor", model_path=model_path, optim=OptimConfig(lr=1e-7)), DistInfo(device="cuda:0"))

    def gradients(engine, micro_batch_size: int = 128) -> None:
        engine.forward_backward(batch, loss_fn, micro_batch_size=micro_batch_size, entropy_grad=False)

    def step(engine, micro_batch_size: int = 128) -> None:
        gradients(engine, micro_batch_size)
        engine.optimizer_step()

    def logprob_pass(engine, micro_batch_size: int = 128) -> None:
        engine.compute_logprobs(batch, micro_batch_size=micro_batch_size)

    return build, gradients, step, logprob_pass, real_weights


def update(rounds: int, *, compiled: bool, model_path: str | None) -> None:
    from rlkit.engines.fsdp2 import state

    build, _, step, logprob_pass, real_weights = fsdp2_setup(compiled=compiled, model_path=model_path)
    # Both engines live in one process and take turns, round by round, in the order AB then BA: a machine that
    # drifts (every earlier session's later processes ran slower) weighs on both alike.
    engines = {"layers": build("layers"), "model": build("model")}
    for engine in engines.values():
        step(engine)
        logprob_pass(engine)
    for measure, call in (("update", step), ("logprob", logprob_pass)):
        times = interleaved({units: (lambda engine=engine: call(engine)) for units, engine in engines.items()}, rounds)
        print(json.dumps({"measure": measure, "compiled": compiled, "real_weights": real_weights,
                          **summary(times, "layers", "model")}), flush=True)

    gather_copy = state.materialize

    def gathered(tensor):  # what every rank did before one rank copied its local tensor
        tensor = tensor.detach()
        return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor

    def stream(materialize):
        def run() -> None:
            state.materialize = materialize
            list(engines["model"].full_weights())
            state.materialize = gather_copy
        return run

    times = interleaved({"full_tensor": stream(gathered), "local_copy": stream(gather_copy)}, rounds)
    print(json.dumps({"measure": "weights", **summary(times, "full_tensor", "local_copy")}), flush=True)


def optimizer(rounds: int, *, compiled: bool, model_path: str | None) -> None:
    """`optimizer_step` alone (gradients made outside the clock, then the norm, AdamW and zeroing to completion),
    with AdamW fused as rlkit builds it against foreach over the same parameters, then the whole update with each;
    one engine (one unit), the two optimizers taking turns."""
    build, gradients, step, _, real_weights = fsdp2_setup(compiled=compiled, model_path=model_path)
    engine = build("model")
    fused = engine.optimizer
    params = [param for group in fused.param_groups for param in group["params"]]
    settings = {key: fused.defaults[key] for key in ("lr", "betas", "eps", "weight_decay")}
    optimizers = {"foreach": torch.optim.AdamW(params, **settings, foreach=True), "fused": fused}

    def use(name: str) -> None:
        engine.optimizer = engine.scheduler.optimizer = optimizers[name]

    def update_with(name: str):
        return lambda: (use(name), step(engine))

    for name in optimizers:  # the first steps compile and create each optimizer's state
        update_with(name)()
    alone: dict[str, list[float]] = {name: [] for name in optimizers}
    names = list(optimizers)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            use(name)
            gradients(engine)
            alone[name].append(seconds(engine.optimizer_step, 1, sync=True))
    print(json.dumps({"measure": "optimizer_step", "compiled": compiled, "real_weights": real_weights,
                      **summary(alone, "foreach", "fused")}), flush=True)
    times = interleaved({name: update_with(name) for name in optimizers}, rounds)
    print(json.dumps({"measure": "update_by_optimizer", "compiled": compiled, "real_weights": real_weights,
                      **summary(times, "foreach", "fused")}), flush=True)


def batching(rounds: int, *, compiled: bool, model_path: str | None, budget: int) -> None:
    """The update and the log-prob pass with prompts shared or whole (`engine.share_prompts`), under a budget of
    `budget` tokens (two micro-batches of whole rows on this batch, as the workload's bench runs; one of shared
    prompts, which count once) or in one micro-batch, and shared in two (half the budget), on 256 rows in groups of 8
    on a prompt (32 prompts x 8 samples); four engines (one unit each) taking turns in one process. Dynamo's
    recompile limit is raised so that four engines' shapes cannot push a layer back to eager."""
    torch._dynamo.config.recompile_limit = 64
    build, _, step, logprob_pass, real_weights = fsdp2_setup(compiled=compiled, model_path=model_path, group=8)
    variants = {  # name: (engine options, micro_batch_size, which a budget overrides)
        "whole": ({"max_tokens_per_micro_batch": budget}, 256),
        "shared": ({"max_tokens_per_micro_batch": budget, "share_prompts": True}, 256),
        "whole_one": ({}, 256),
        "shared_two": ({"max_tokens_per_micro_batch": budget // 2, "share_prompts": True}, 256),
    }
    engines = {name: (build("model", **options), size) for name, (options, size) in variants.items()}
    for engine, size in engines.values():  # the first calls compile
        step(engine, size)
        logprob_pass(engine, size)
    for measure, call in (("update", step), ("logprob", logprob_pass)):
        times = interleaved({name: (lambda engine=engine, size=size: call(engine, size))
                             for name, (engine, size) in engines.items()}, rounds)
        for other in ("shared", "whole_one", "shared_two"):
            print(json.dumps({"measure": f"{measure}_batching", "compiled": compiled, "real_weights": real_weights,
                              "budget": budget, **summary({key: times[key] for key in ("whole", other)}, "whole",
                                                          other)}), flush=True)


def transfers(rounds: int, *, compiled: bool, model_path: str | None, budget: int) -> None:
    """The update and the log-prob pass with the passes' copies to the GPU as rlkit makes them (pinned, no stream
    sync: rlkit.batch.to_device) against torch's plain `.to(device)` (a stream sync after each copy), on one engine
    (one unit, micro-batches of `budget` tokens: two on this batch), the two taking turns in one process."""
    import rlkit.batch
    import rlkit.engines.packing
    import rlkit.engines.passes

    build, _, step, logprob_pass, real_weights = fsdp2_setup(compiled=compiled, model_path=model_path, group=8)
    engine = build("model", max_tokens_per_micro_batch=budget)
    modules = (rlkit.batch, rlkit.engines.packing, rlkit.engines.passes)
    pinned = rlkit.batch.to_device

    def blocking(tensor, device):
        return tensor.to(device)

    def with_copies(copy, call):
        def run() -> None:
            for module in modules:
                module.to_device = copy
            try:
                call(engine, 256)
            finally:
                for module in modules:
                    module.to_device = pinned
        return run

    for call in (step, logprob_pass):  # the first calls compile
        call(engine, 256)
    for measure, call in (("update", step), ("logprob", logprob_pass)):
        times = interleaved({"blocking": with_copies(blocking, call), "pinned": with_copies(pinned, call)}, rounds)
        print(json.dumps({"measure": f"{measure}_transfers", "compiled": compiled, "real_weights": real_weights,
                          "budget": budget, **summary(times, "blocking", "pinned")}), flush=True)


def interleaved(calls: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each call to completion, `rounds` times, in the order of `calls`, then reversed, and so on."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            times[name].append(seconds(calls[name], 1, sync=True))
    return times


def summary(times: dict[str, list[float]], before: str, after: str) -> dict:
    """Each call's median seconds, and the median of the per-round ratios after / before."""
    ratios = [b / a for a, b in zip(times[before], times[after])]
    return {**{f"{name}_s": statistics.median(values) for name, values in times.items()},
            f"{after}_over_{before}": statistics.median(ratios), "rounds": len(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--compile", action="store_true", help="the update with engine.torch_compile=true")
    parser.add_argument("--no-attention", action="store_true")
    parser.add_argument("--optimizer", action="store_true", help="AdamW fused against foreach (one unit)")
    parser.add_argument("--batching", action="store_true",
                        help="prompts shared or whole, micro-batches of --budget tokens or one (one unit)")
    parser.add_argument("--transfers", action="store_true",
                        help="copies to the GPU pinned without a sync (as rlkit makes them) against plain .to()")
    parser.add_argument("--budget", type=int, default=54_272,
                        help="the token budget of --batching and --transfers (the bench's)")
    parser.add_argument("--model", help="a Hugging Face folder for --update (default: random SmolLM2-135M shape)")
    args = parser.parse_args()
    if not args.no_attention:
        attention(args.repeats)
    if args.update:
        update(args.repeats, compiled=args.compile, model_path=args.model)
    if args.optimizer:
        optimizer(args.repeats, compiled=args.compile, model_path=args.model)
    if args.batching:
        batching(args.repeats, compiled=args.compile, model_path=args.model, budget=args.budget)
    if args.transfers:
        transfers(args.repeats, compiled=args.compile, model_path=args.model, budget=args.budget)


if __name__ == "__main__":
    main()
