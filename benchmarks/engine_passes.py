"""Time a training engine's passes alone, without a rollout: the log-prob pass and the update.

`rlkit bench` measures whole GRPO steps; this script isolates the training side, so that engine switches
(micro-batch size, activation checkpointing, log-prob chunking, padding removal, ...) can be compared on
one model in one process, each in a few seconds. The batch is synthetic: `--seqs` sequences of
`--prompt-len` + `--response-len` random tokens (no padding unless `--ragged`; `--group N`: every N consecutive
sequences share a prompt, as a GRPO group's samples do, for `share_prompts`), GRPO's PPO-clip loss with a KL
term, random advantages.

    python benchmarks/engine_passes.py --shape 1.5b --seqs 256 --prompt-len 128 --response-len 256 \
        --setting base: --setting mb32:micro_batch_size=32 \
        --setting ckpt:gradient_checkpointing=true --profile base --out bench_passes

`--engine deepspeed` times the DeepSpeed engine instead of FSDP2 (one process; settings such as
`zero2:deepspeed.zero_stage=2`). Two kinds of keys reach past the config there, to find where ZeRO's time goes:
`ds.KEY=VALUE` sets KEY of the `zero_optimization` block rlkit builds (`ds.overlap_comm=false`,
`ds.stage3_prefetch_bucket_size=2e8`, `ds.stage3_param_persistence_threshold=100000` for DeepSpeed's default),
and `leaf_layers=false` leaves ZeRO-3 hooking every submodule instead of gathering per decoder layer.
A setting is NAME:key=value,key=value; keys are those of a run's `engine.`
section (`rlkit config docs`: shared ones such as `torch_compile`, the engine's own in its block such as
`deepspeed.zero_stage`) plus `micro_batch_size` (sequences per micro-batch, 16 by default) and `entropy_grad`
(false by default, as in training without an entropy bonus; true: the entropy's backward runs). Per setting it prints
and writes to OUT/passes.json: median seconds of the log-prob pass and of the update (forward, backward and
optimizer step) over --repeats runs after one warm-up, training tokens/s, MFU (6 x parameters x tokens per
update second, against --peak-tflops) and peak memory. `--profile NAME` also writes the torch profiler's
table of one update of that setting (the top CUDA kernels, then operations and ranges by host time) and the share of
wall time the GPU was busy.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import traceback
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from rlkit.batch import Batch
from rlkit.bench.shapes import count_parameters
from rlkit.bench.workload import ensure_model
from rlkit.config.loading import parse_override, set_path, validate
from rlkit.config.schema import AlgorithmConfig, EngineConfig, OptimConfig
from rlkit.distributed import DistInfo
from rlkit.engines.base import EngineSpec
from rlkit.errors import ConfigError
from rlkit.registry import TRAIN_ENGINES
from rlkit.trainer.losses import GlobalCounts, actor_loss_fn


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = ensure_model(args.shape, out / "cache") if args.model is None else Path(args.model)
    from transformers import AutoConfig

    num_params = count_parameters(AutoConfig.from_pretrained(model_path))
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    batch = synthetic_batch(args, vocab_size=AutoConfig.from_pretrained(model_path).vocab_size)
    tokens = int(batch["attention_mask"].sum())
    results = []
    for name, fields in args.setting:
        try:
            result = measure(name, dict(fields), model_path, batch, device, args, num_params, tokens, out)
        except Exception as error:  # one failing setting should not cost the others' numbers
            result = {"setting": name, "error": f"{type(error).__name__}: {error}"[:2000]}
            traceback.print_exc()
        gc.collect()  # the engine of the setting, before the next one is built
        if device != "cpu":
            torch.cuda.empty_cache()
        print(json.dumps(result), flush=True)
        results.append(result)
    (out / "passes.json").write_text(json.dumps({"shape": args.shape, "model": str(model_path), "seqs": args.seqs,
                                                 "prompt_len": args.prompt_len, "response_len": args.response_len,
                                                 "device": torch.cuda.get_device_name(0) if device != "cpu" else "cpu",
                                                 "results": results}, indent=1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="0.5b")
    parser.add_argument("--engine", default="fsdp2", choices=TRAIN_ENGINES.names())
    parser.add_argument("--model", default=None, help="a Hugging Face folder instead of --shape")
    parser.add_argument("--seqs", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--response-len", type=int, default=256)
    parser.add_argument("--ragged", action="store_true", help="responses of random lengths 1..response-len")
    parser.add_argument("--group", type=int, default=1, help="consecutive sequences that share a prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--setting", action="append", type=parse_setting, required=True)
    parser.add_argument("--profile", default=None, help="a setting name to profile")
    parser.add_argument("--out", default="bench_passes")
    return parser.parse_args()


def parse_setting(text: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """NAME:key=value,... with values read as YAML, as `rlkit train` overrides are (2, true, null)."""
    name, _, pairs = text.partition(":")
    try:
        fields = tuple((".".join(keys), value) for keys, value in map(parse_override, filter(None, pairs.split(","))))
    except ConfigError as error:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: {error}") from None
    if not name:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: expected NAME:key=value,key=value")
    return name, fields


def synthetic_batch(args: argparse.Namespace, *, vocab_size: int) -> Batch:
    """B = seqs rows of P prompt + T response tokens, right-padded responses when --ragged."""
    generator = torch.Generator().manual_seed(0)
    B, P, T = args.seqs, args.prompt_len, args.response_len
    input_ids = torch.randint(0, vocab_size, (B, P + T), generator=generator)
    input_ids[:, :P] = input_ids[torch.arange(B) // args.group * args.group, :P]  # each group on its first prompt
    lengths = torch.randint(1, T + 1, (B,), generator=generator) if args.ragged else torch.full((B,), T)
    response_mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    attention_mask = torch.cat([torch.ones(B, P, dtype=torch.long), response_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    logprobs = -torch.rand(B, T, generator=generator)
    return Batch({"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "response_mask": response_mask, "old_logprobs": logprobs, "ref_logprobs": logprobs.clone(),
                  "advantages": torch.randn(B, 1, generator=generator).expand(B, T).clone()})


def measure(name: str, fields: dict[str, str], model_path: Path, batch: Batch, device: str,
            args: argparse.Namespace, num_params: int, tokens: int, out: Path) -> dict:
    micro_batch_size = int(fields.pop("micro_batch_size", 16))
    # as the trainer runs it with the default algorithm.entropy_coeff=0: the entropy is only reported
    entropy_grad = bool(fields.pop("entropy_grad", False))
    zero_patch = {key.removeprefix("ds."): fields.pop(key) for key in list(fields) if key.startswith("ds.")}
    leaf_layers = bool(fields.pop("leaf_layers", True))
    engine_class = TRAIN_ENGINES.get(args.engine)  # imports DeepSpeed only when asked for
    section: dict[str, Any] = {"name": args.engine}
    for dotted, value in fields.items():
        set_path(section, dotted.split("."), value)
    config = validate(EngineConfig, section, source=f"--setting {name}")
    with deepspeed_patched(args.engine, zero_patch, leaf_layers):
        engine = engine_class(config, config.options,
                              EngineSpec(role="actor", model_path=str(model_path), optim=OptimConfig(lr=1e-7)),
                              DistInfo(device=device))
    if zero_patch or not leaf_layers:
        fields = {**fields, **{f"ds.{key}": value for key, value in zero_patch.items()}, "leaf_layers": leaf_layers}
    algorithm = AlgorithmConfig(use_kl_loss=True)
    counts = GlobalCounts(*GlobalCounts.of_local(batch))
    loss_fn = actor_loss_fn(algorithm, "token-mean", args.response_len, counts)

    def logprob_pass() -> None:
        engine.compute_logprobs(batch, micro_batch_size=micro_batch_size)

    def update() -> None:
        engine.forward_backward(batch, loss_fn, micro_batch_size=micro_batch_size, entropy_grad=entropy_grad)
        engine.optimizer_step()

    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    logprob_seconds = timed(logprob_pass, args.repeats, device)
    update_seconds = timed(update, args.repeats, device)
    result = {"setting": name, "engine": args.engine, "fields": fields, "micro_batch_size": micro_batch_size,
              "entropy_grad": entropy_grad, "logprob_s": logprob_seconds, "update_s": update_seconds,
              "train_tokens_per_s": tokens / update_seconds,
              "mfu": 6 * num_params * tokens / update_seconds / (args.peak_tflops * 1e12) if device != "cpu" else None,
              "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device != "cpu" else None}
    if args.profile == name:
        result["gpu_busy"] = profile(update, out / f"profile_{name}.txt", device)
    return result


@contextlib.contextmanager
def deepspeed_patched(engine: str, zero_patch: dict[str, Any], leaf_layers: bool) -> Iterator[None]:
    """While the engine is built: `zero_patch` merged into the zero_optimization block of its DeepSpeed config,
    and with leaf_layers=false no per-decoder-layer gathering (DeepSpeed's per-submodule hooks)."""
    if not zero_patch and leaf_layers:
        yield
        return
    if engine != "deepspeed":
        raise ConfigError("ds.KEY and leaf_layers settings apply to --engine deepspeed only")
    from rlkit.engines.deepspeed import engine as ds_engine

    build, gather = ds_engine.build_ds_config, ds_engine.gather_per_decoder_layer

    def patched_build(*args, **kwargs):
        config = build(*args, **kwargs)
        config["zero_optimization"].update(zero_patch)
        return config

    ds_engine.build_ds_config = patched_build
    if not leaf_layers:
        ds_engine.gather_per_decoder_layer = lambda scorer: None
    try:
        yield
    finally:
        ds_engine.build_ds_config, ds_engine.gather_per_decoder_layer = build, gather


def timed(fn, repeats: int, device: str) -> float:
    """Median wall seconds of `fn` over `repeats` runs after one warm-up."""
    seconds = []
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def synchronize(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def profile(fn, path: Path, device: str) -> float | None:
    """Write the profiler's kernel table of one `fn` call; return the GPU's busy share of its wall time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device != "cpu" else [])
    synchronize(device)
    start = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        fn()
        synchronize(device)
    wall = time.perf_counter() - start
    sort_by = "self_cuda_time_total" if device != "cpu" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=40, max_name_column_width=80)
    # where the host's time goes (FSDP's hooks, compiled regions, the optimizer show up as ranges)
    host_table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=50, max_name_column_width=80)
    busy = None
    if device != "cpu":
        kernel_us = sum(event.self_device_time_total for event in prof.key_averages()
                        if event.device_type == torch.autograd.DeviceType.CUDA)
        busy = kernel_us / 1e6 / wall
    path.write_text(f"wall {wall:.3f} s, GPU busy {busy}\n{table}\n\nby host time:\n{host_table}\n")
    return busy


if __name__ == "__main__":
    main()
