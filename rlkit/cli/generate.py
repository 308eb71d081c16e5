"""`rlkit generate MODEL (--prompt TEXT ... | --data FILE) [--reward NAME] [--n N] ...`: sample and score.

MODEL is any of
  * a Hugging Face folder (an `rlkit export` output, a downloaded model) or a hub id in the local cache;
  * an rlkit checkpoint, `OUTPUT_DIR/checkpoints/step_N` of `rlkit train` or `rlkit sft` (it has actor/ and
    config.yaml): the run's engine is rebuilt on this process and loads it, so every engine's format and LoRA
    runs (merged on the fly) work alike;
  * a run's output directory (it has checkpoints/): its latest good checkpoint;
  * `builtin:tiny`.
Generation runs through the HF rollout engine on one process, with the sampling options `rlkit train` has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import click


@dataclass
class Policy:
    """Where generation takes its weights from: a HF folder, plus full weights to load over it (checkpoints:
    a generator over the rebuilt training engine, which it keeps alive until it is dropped)."""

    model_path: str
    tokenizer_path: str
    trust_remote_code: bool = False
    weights: Iterator[Any] | None = None
    description: str = ""


@click.command("generate")
@click.argument("model")
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeat the flag for several).")
@click.option("--data", "data_file", help="A prompt file as `rlkit train` reads it (.jsonl/.json/.parquet, flat "
              "or verl schema, or builtin:<task>); its answers are the rewards' ground truth.")
@click.option("--reward", help="Score every completion: a registered reward (letters, gsm8k, math, ...), "
              "'module:attr', 'file.py:attr', or 'auto' (by data_source).")
@click.option("--ground-truth", help="The ground truth the reward compares --prompt completions with.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 is greedy.")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--n", "num_samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Completions per prompt.")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts of --data.")
@click.option("--prompt-key", default="prompt", show_default=True, help="--data: key of the prompt (flat schema).")
@click.option("--answer-key", default="answer", show_default=True, help="--data: key of the answer (flat schema).")
@click.option("--prompt-format", type=click.Choice(["auto", "chat", "raw"]), default="auto", show_default=True,
              help="'chat' applies the tokenizer's chat template; 'auto' does when it has one.")
@click.option("--system-prompt", help="System message before every chat prompt.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Prompts per generate call (memory knob).")
@click.option("--seed", type=int, default=1, show_default=True, help="Sampling seed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every completion (and its score) to this .jsonl file.")
def generate_command(
    model: str, prompts: tuple[str, ...], data_file: str | None, reward: str | None, ground_truth: str | None,
    max_new_tokens: int, temperature: float, top_p: float, num_samples: int, limit: int | None, prompt_key: str,
    answer_key: str, prompt_format: str, system_prompt: str | None, batch_size: int | None, seed: int, device: str,
    output: Path | None,
) -> None:
    """Generate completions with MODEL (a Hugging Face folder, an rlkit checkpoint or run directory, or
    builtin:tiny) and print them; with --reward, score them and print the mean."""
    import torch.distributed

    from rlkit.config.schema import RewardConfig, RolloutConfig
    from rlkit.distributed import destroy, init_distributed
    from rlkit.errors import ConfigError
    from rlkit.models.loading import load_tokenizer
    from rlkit.rewards.loading import build_reward_manager
    from rlkit.rollout.base import SamplingParams
    from rlkit.rollout.hf import HFRollout
    from rlkit.rollout.hf_options import HFOptions

    if bool(prompts) == bool(data_file):
        raise ConfigError("give either --prompt TEXT (one or more) or --data FILE")
    reward_manager = build_reward_manager(RewardConfig(name=reward)) if reward else None  # fail before loading
    # a checkpoint's engine starts a 1-rank process group; one that was there before (a caller's) stays
    group_was_there = torch.distributed.is_initialized()
    dist = init_distributed(device)
    try:
        policy = resolve_policy(model, dist)
        tokenizer = load_tokenizer(policy.tokenizer_path, trust_remote_code=policy.trust_remote_code)
        records = read_prompts(prompts, data_file, tokenizer, ground_truth=ground_truth, limit=limit,
                               prompt_key=prompt_key, answer_key=answer_key, prompt_format=prompt_format,
                               system_prompt=system_prompt)
        rollout = HFRollout(RolloutConfig(), HFOptions(batch_size=batch_size), policy.model_path, tokenizer, dist,
                            seed=seed, trust_remote_code=policy.trust_remote_code)
        if policy.weights is not None:
            rollout.update_weights(policy.weights)
            policy.weights = None  # frees the training engine before generating
        params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        completions = rollout.generate([record.prompt_ids for record in records], params)
        owners = [record for record in records for _ in range(num_samples)]
        scores, extras = (score(reward_manager, owners, [c.text for c in completions]) if reward_manager
                          else (None, {}))
        click.echo(f"# {policy.description}")
        print_completions(records, completions, num_samples, scores)
        if scores is not None:
            click.echo(summary_line(reward, scores, extras))
        if output is not None:
            write_jsonl(output, owners, completions, scores, extras)
    finally:
        if not group_was_there:
            destroy()


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
def resolve_policy(model: str, dist: Any) -> Policy:
    """A Policy for MODEL (see the module docstring); errors say what MODEL should be."""
    from rlkit.config.schema import TrainerConfig
    from rlkit.errors import CheckpointError
    from rlkit.trainer.checkpoint import CheckpointManager
    from rlkit.trainer.components import resolve_model_path

    path = Path(model).expanduser()
    if (path / "checkpoints").is_dir() and not (path / "config.json").is_file():
        latest = CheckpointManager(path / "checkpoints", keep_last=1, is_main=True).latest()
        if latest is None:
            raise CheckpointError(f"{path}/checkpoints holds no complete checkpoint to generate with")
        path = latest
    if (path / "actor").is_dir() and (path / "config.yaml").is_file():
        return checkpoint_policy(path, dist)
    if model.startswith("builtin:"):
        model = resolve_model_path(model, Path(TrainerConfig().output_dir))
    return Policy(model, model, description=f"model {model}")


def checkpoint_policy(checkpoint: Path, dist: Any) -> Policy:
    """The policy of an rlkit checkpoint: its run's engine, rebuilt here, loads actor/ and streams full weights
    (LoRA merged) into the rollout model, whatever format the engine writes."""
    from rlkit.config.kinds import model_for_file
    from rlkit.config.loading import load_saved_config
    from rlkit.engines.base import EngineSpec
    from rlkit.trainer.checkpoint import verify
    from rlkit.trainer.components import build_engine, resolve_model_path

    verify(checkpoint)
    config_file = checkpoint / "config.yaml"
    cfg = load_saved_config(model_for_file(str(config_file)), config_file)
    # builtin:tiny is rebuilt (deterministically) where the run kept it: OUTPUT_DIR/checkpoints/step_N
    model_path = resolve_model_path(cfg.model.path, checkpoint.parent.parent)
    engine = build_engine(cfg, EngineSpec(role="actor", model_path=model_path, optim=cfg.optim, lora=cfg.model.lora,
                                          trust_remote_code=cfg.model.trust_remote_code, seed=cfg.trainer.seed), dist)
    engine.load(checkpoint / "actor")
    tokenizer_dir = checkpoint / "tokenizer"
    return Policy(
        model_path,
        str(tokenizer_dir) if tokenizer_dir.is_dir() else cfg.model.tokenizer_path or model_path,
        cfg.model.trust_remote_code,
        weights=engine.full_weights(),
        description=f"checkpoint {checkpoint} (base {model_path}{', LoRA merged' if cfg.model.lora else ''})",
    )


# ---------------------------------------------------------------------------------------------
# prompts, scores, output
# ---------------------------------------------------------------------------------------------
def read_prompts(
    prompts: tuple[str, ...], data_file: str | None, tokenizer: Any, *, ground_truth: str | None, limit: int | None,
    prompt_key: str, answer_key: str, prompt_format: str, system_prompt: str | None,
) -> list[Any]:
    """PromptRecords of the --prompt texts or the --data file, rendered as `rlkit train` renders prompts."""
    from rlkit.config.schema import DataConfig
    from rlkit.data.prompts import PromptRecord, load_prompt_dataset
    from rlkit.data.templates import encode_prompts, render_prompt, resolve_prompt_format

    if data_file is not None:
        cfg = DataConfig(train_files=[data_file], val_files=[], prompt_key=prompt_key, answer_key=answer_key,
                         prompt_format=prompt_format, system_prompt=system_prompt, max_prompt_length=10**9,
                         filter_overlong_prompts=False)
        return list(load_prompt_dataset([data_file], cfg, tokenizer, max_samples=limit))
    resolved = resolve_prompt_format(prompt_format, tokenizer)
    texts = [render_prompt(prompt, tokenizer, resolved, system_prompt) for prompt in prompts]
    return [PromptRecord(ids, text, "prompt", ground_truth, {}, index)
            for index, (text, ids) in enumerate(zip(texts, encode_prompts(texts, tokenizer, resolved), strict=True))]


def score(manager: Any, records: list[Any], responses: list[str]) -> tuple[list[float], dict[str, list[float]]]:
    """Scores (and extras such as acc) of each response under a RewardManager."""
    from rlkit.rewards.base import RewardSample

    samples = [
        RewardSample(index, record.data_source, record.prompt_text, response, record.ground_truth, record.extra_info)
        for index, (record, response) in enumerate(zip(records, responses, strict=True))
    ]
    output = manager(samples)
    return output.scores, output.extras


def print_completions(records: list[Any], completions: list[Any], num_samples: int, scores: list[float] | None) -> None:
    for index, record in enumerate(records):
        click.echo(f"\n=== prompt {index}" + (f" (ground truth: {record.ground_truth})"
                                                 if record.ground_truth is not None else ""))
        click.echo(_indent(record.prompt_text.rstrip("\n")))
        for sample in range(num_samples):
            position = index * num_samples + sample
            completion = completions[position]
            label = f"--- sample {sample}" + (f" [score {scores[position]:.3f}]" if scores is not None else "")
            click.echo(f"{label} ({len(completion.response_ids)} tokens, {completion.finish_reason})")
            click.echo(_indent(completion.text))


def summary_line(reward: str, scores: list[float], extras: dict[str, list[float]]) -> str:
    parts = [f"\nreward {reward}: mean {sum(scores) / len(scores):.4f} over {len(scores)} completions"]
    for name, values in extras.items():
        finite = [value for value in values if not math.isnan(value)]
        if finite:
            parts.append(f"{name} {sum(finite) / len(finite):.4f}")
    return " | ".join(parts)


def write_jsonl(path: Path, records: list[Any], completions: list[Any], scores: list[float] | None,
                extras: dict[str, list[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for position, (record, completion) in enumerate(zip(records, completions, strict=True)):
            row = {"prompt_index": record.index, "prompt": record.prompt_text, "response": completion.text,
                   "finish_reason": completion.finish_reason, "ground_truth": record.ground_truth}
            if scores is not None:
                row["score"] = scores[position]
                row.update({name: values[position] for name, values in extras.items()
                            if not math.isnan(values[position])})
            handle.write(json.dumps(row, default=str) + "\n")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.split("\n"))
