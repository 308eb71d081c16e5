"""Why the trainer's passes ran slower next to SGLang than next to vLLM (issue 17, 1b): the same FSDP2 log-prob
pass and update (benchmarks/engine_passes.py's synthetic batch, the given model) timed in one process
  1. alone, before any SGLang engine exists (so: this process's transformers, see the printed version);
  2. next to an sglang.Engine that generated and then released its memory, as the trainer leaves it between
     rollouts, with SGLang's default idle loop (sleep_on_idle=False);
  3. the same with sleep_on_idle=True (what rlkit's rollout now passes);
  4. next to an engine that stays awake (no memory saver, nothing released: rollout.sleep=false).
Before the first engine and after each one starts it also prints what changed in this process's global state
(torch's backend flags and thread count, the GIL switch interval, environment variables, torch functions
replaced): a setting SGLang changes in the trainer's process would slow its passes whatever the engine does.
For 2 and 3 it also prints the CPU share of SGLang's child processes over 3 s while idle (a spinning scheduler
shows ~100%), that of this process's own threads while its main thread sleeps (a thread SGLang left running in
the trainer's process, polling, would take the GIL from the trainer's kernel launches: ~0 when nothing runs), and
SGLang's own generate time on the data's prompts with and without return_logprob.

usage: python3 scripts/gpu/sglang_contention.py --model DIR --data FILE.parquet [--prompts 32] [--n 8]
       [--max-tokens 256] [--seqs 256]
Writes one JSON line per measurement (and $OUT/sglang_contention.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch

from rlkit.config.schema import DataConfig
from rlkit.rollout.sglang_options import SGLangOptions
from rlkit.data import load_prompt_dataset
from rlkit.distributed import DistInfo
from rlkit.models.loading import load_tokenizer
from rlkit.rollout import sglang_args
from rlkit.rollout.base import SamplingParams

REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def engine_passes_module():
    spec = importlib.util.spec_from_file_location("engine_passes", REPO / "benchmarks" / "engine_passes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_passes(passes, label: str, args: argparse.Namespace) -> dict:
    """FSDP2 actor, default settings (16 sequences per micro-batch): median log-prob pass and update."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model)
    ns = argparse.Namespace(seqs=args.seqs, prompt_len=128, response_len=256, ragged=False, repeats=3,
                            peak_tflops=989.0, profile=None, engine="fsdp2")
    batch = passes.synthetic_batch(ns, vocab_size=config.vocab_size)
    tokens = int(batch["attention_mask"].sum())
    result = passes.measure(label, {}, Path(args.model), batch, "cuda:0", ns,
                            passes.count_parameters(config), tokens, Path("/tmp"))
    torch.cuda.empty_cache()
    return {"measurement": label, "logprob_s": round(result["logprob_s"], 4), "update_s": round(result["update_s"], 4)}


def children_cpu_share(seconds: float = 3.0) -> dict[str, float]:
    """CPU share (1.0 = one core) of each child process of this process over `seconds`, by its name."""
    def ticks() -> dict[int, tuple[str, int]]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == os.getpid():  # ppid
                found[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))  # utime + stime
        return found

    before = ticks()
    time.sleep(seconds)
    after = ticks()
    return {f"{name}:{pid}": round((used - before[pid][1]) / CLOCK_TICKS / seconds, 2)
            for pid, (name, used) in after.items() if pid in before}


def own_cpu_share(seconds: float = 3.0) -> dict[str, Any]:
    """CPU share of this process (all its threads) while the main thread sleeps, and its live threads."""
    before = time.process_time()
    time.sleep(seconds)
    return {"cpu_share": round((time.process_time() - before) / seconds, 3),
            "threads": sorted(thread.name for thread in threading.enumerate())}


PATCHABLE = ("torch", "torch.nn.functional", "torch.Tensor", "torch.distributed", "torch.cuda",
             "torch.multiprocessing.reductions", "torch.nn.modules.module")


def process_state() -> dict[str, Any]:
    """What a library could change process-wide that the trainer's passes depend on."""
    import operator
    import sys

    state: dict[str, Any] = {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "matmul.allow_bf16_reduced": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "sdp": [torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
                torch.backends.cuda.math_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled()],
        "num_threads": torch.get_num_threads(), "switch_interval": sys.getswitchinterval(),
        "grad_enabled": torch.is_grad_enabled(), "deterministic": torch.are_deterministic_algorithms_enabled(),
        "dynamo.cache_size_limit": torch._dynamo.config.cache_size_limit,
        "inductor": {key: repr(value) for key, value in torch._inductor.config.get_config_copy().items()},
        "env": dict(os.environ),
    }
    for module_name in PATCHABLE:
        module = operator.attrgetter(module_name.partition(".")[2])(torch) if "." in module_name else torch
        state[module_name] = {name: id(value) for name, value in vars(module).items() if callable(value)}
    return state


def state_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The entries of `after` that differ from `before` (nested one level for dicts)."""
    changed: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict):
            diff = sorted(name for name in set(value) | set(old or {}) if (old or {}).get(name) != value.get(name))
            if diff:
                changed[key] = diff if key in PATCHABLE else {name: value.get(name) for name in diff}
        elif value != old:
            changed[key] = [old, value]
    return changed


def time_generate(engine, rows, params: dict, logprob: bool, calls: int = 2) -> float:
    engine.generate(input_ids=rows, sampling_params=params, return_logprob=logprob)  # warm-up (compiles once)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        engine.generate(input_ids=rows, sampling_params=params, return_logprob=logprob)
        seconds.append(time.perf_counter() - start)
    return round(statistics.median(seconds), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seqs", type=int, default=256)
    args = parser.parse_args()
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    import sglang
    import transformers
    from sglang.srt.utils.patch_torch import monkey_patch_torch_reductions

    results = [{"transformers": transformers.__version__, "transformers_file": transformers.__file__,
                "sglang": sglang.__version__}]
    print(json.dumps(results[-1]), flush=True)
    passes = engine_passes_module()
    results.append(time_passes(passes, "alone", args))
    print(json.dumps(results[-1]), flush=True)

    tokenizer = load_tokenizer(args.model)
    data = load_prompt_dataset([args.data], DataConfig(max_prompt_length=1024), tokenizer, max_samples=args.prompts)
    rows = sglang_args.repeat_prompts([record.prompt_ids for record in data], args.n)
    eos = sglang_args.eos_token_ids(tokenizer, args.model)
    params = sglang_args.sampling_params(SamplingParams(n=1, temperature=1.0, max_new_tokens=args.max_tokens), eos)
    monkey_patch_torch_reductions()
    before = process_state()
    for sleep_on_idle, release in ((False, True), (True, True), (True, False)):
        options = SGLangOptions(release_memory=release)
        kwargs = sglang_args.engine_kwargs(options, args.model, dist=DistInfo(device="cuda:0"), seed=1)
        kwargs["sleep_on_idle"] = sleep_on_idle
        with sglang_args.scheduler_environment(os.environ):
            engine = sglang.Engine(**kwargs)
        changes = state_changes(before, process_state())
        generate = {"generate_s": time_generate(engine, rows, params, False),
                    "generate_logprob_s": time_generate(engine, rows, params, True)}
        if release:
            engine.release_memory_occupation(tags=list(sglang_args.MEMORY_TAGS))
        time.sleep(1.0)
        idle_cpu = children_cpu_share()
        idle_own = own_cpu_share()
        label = f"next to sglang, sleep_on_idle={sleep_on_idle}, {'released' if release else 'awake'}"
        row = time_passes(passes, label, args)
        results.append({**row, **generate, "idle_cpu_share": idle_cpu, "idle_own_process": idle_own,
                        "process_state_changed": changes})
        print(json.dumps(results[-1]), flush=True)
        engine.shutdown()
        del engine
        torch.cuda.empty_cache()
    (out / "sglang_contention.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
