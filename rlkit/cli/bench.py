"""`rlkit bench --engine fsdp2,deepspeed --rollout hf,vllm,sglang [--shape 0.5b | --model PATH] [--data FILE]
[--nproc N] [--placement colocated,split:0,split:1] [key=value ...]`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rlkit.bench.shapes import SHAPE_NAMES

SYNTHETIC_PROMPT_LEN = 256
DATA_PROMPT_LEN = 1024


def _names(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise click.BadParameter("give at least one name, comma-separated")
    return names


@click.command("bench", context_settings={"ignore_unknown_options": True})
@click.argument("overrides", nargs=-1)
@click.option("--engine", "engines", default="fsdp2", show_default=True,
              help="Training engines, comma-separated (fsdp2, deepspeed, or plugins).")
@click.option("--rollout", "rollouts", default="hf", show_default=True,
              help="Rollout engines, comma-separated (hf, vllm, sglang, or plugins).")
@click.option("--shape", type=click.Choice(SHAPE_NAMES), default=None,
              help="Random weights in a Qwen2.5 shape, or the built-in tiny model (default: tiny).")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="A Hugging Face model folder to benchmark instead of a --shape.")
@click.option("--data", "data_file", type=click.Path(path_type=Path), default=None,
              help="A prompt file (.parquet/.jsonl, e.g. from `rlkit data gsm8k`) instead of synthetic prompts: "
                   "each step takes the next --prompts of its prompts, responses end at EOS, its own reward.")
@click.option("--prompts", type=click.IntRange(min=1), default=32, show_default=True, help="Prompts per step.")
@click.option("--n", type=click.IntRange(min=2), default=8, show_default=True, help="Responses per prompt.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=None,
              help=f"Tokens in every prompt ({SYNTHETIC_PROMPT_LEN}); with --data, the longest prompt kept "
                   f"({DATA_PROMPT_LEN}).")
@click.option("--response-len", type=click.IntRange(min=1), default=256, show_default=True,
              help="Tokens in every response (rollout.ignore_eos); with --data, the most new tokens.")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Measured steps (medians are over these).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Steps run first and left out of the medians.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (GPUs) per pairing; more than 1 runs each pairing under torchrun.")
@click.option("--placement", "placements", default="colocated", show_default=True,
              help="Placements, comma-separated: colocated, or split:K (the last rank only rolls out, K versions "
                   "ahead at most; needs --nproc 2 or more). Each pairing runs once per placement.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also time vLLM alone generating the same prompts with the same sampling settings, and SGLang "
                   "alone when a pairing rolls out with SGLang (each needs its package and a CUDA GPU, else it is "
                   "listed as skipped).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench_out"), show_default=True,
              help="Folder for bench.json, bench.png, the runs and the cached model.")
def bench_command(overrides: tuple[str, ...], engines: str, rollouts: str, shape: str | None, model: Path | None,
                  data_file: Path | None, prompts: int, n: int, prompt_len: int | None, response_len: int, steps: int,
                  warmup: int, nproc: int, placements: str, baseline: bool, out: Path) -> None:
    """Time a GRPO workload for every engine x rollout pairing (x placement), and vLLM alone on the same prompts.

    Each pairing runs `rlkit train` in its own process for WARMUP + STEPS steps and reports median seconds per
    phase, rollout and training tokens/s, MFU and peak GPU memory. Pairings that cannot run here (a missing
    package, no CUDA for vllm/sglang) are listed as skipped. Overrides such as
    algorithm.micro_batch_size_per_device=4 apply to every pairing. Then an in-process vLLM engine alone
    generates each step's prompts (with and without log-probs), and each step is shown as a multiple of that;
    with an SGLang pairing, an SGLang engine alone does too, and each generate phase is also shown as a multiple
    of its own engine alone.
    Writes OUT/bench.json and OUT/bench.png.
    """
    from rlkit.bench.report import plot_phases, print_table, write_json
    from rlkit.bench.runner import BenchRequest, run_bench
    from rlkit.bench.workload import Workload
    from rlkit.cli.args import split_config_args

    if shape is not None and model is not None:
        raise click.UsageError("give --shape or --model, not both")
    config_file, overrides_list = split_config_args(overrides)
    if config_file is not None:
        raise click.UsageError(f"'{config_file}' is not an override key.path=value; rlkit bench takes no config file")
    if prompts % nproc:
        raise click.BadParameter(f"{prompts} prompts do not split over {nproc} processes", param_hint="--prompts")
    placement_names = _names(placements)
    if nproc == 1 and any(name != "colocated" for name in placement_names):
        raise click.BadParameter("a split placement needs --nproc 2 or more (one rank trains, one rolls out)",
                                 param_hint="--placement")
    request = BenchRequest(
        engines=_names(engines), rollouts=_names(rollouts),
        workload=Workload(num_prompts=prompts, n=n, response_len=response_len, steps=steps, warmup=warmup,
                          prompt_len=prompt_len or (SYNTHETIC_PROMPT_LEN if data_file is None else DATA_PROMPT_LEN),
                          data_file=data_file),
        out=out, shape=None if model is not None else shape or "tiny", model=model, nproc=nproc,
        overrides=tuple(overrides_list), baseline=baseline, placements=placement_names,
    )
    result = run_bench(request)
    print_table(result)
    json_path = write_json(result, out / "bench.json")
    try:
        written = f"{json_path} and {plot_phases(result, out / 'bench.png')}"
    except ImportError:  # matplotlib is a dependency, but a hand-assembled GPU environment may lack it
        written = f"{json_path} (no PNG: matplotlib is not installed)"
    click.echo(f"wrote {written}")
    failed = [p.name for p in result.pairings if p.status == "failed"]
    if failed:
        click.echo(f"failed: {', '.join(failed)} (see their bench.log)", err=True)
        sys.exit(1)
