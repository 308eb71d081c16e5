"""`rlkit generate MODEL (--prompt TEXT ... | --data FILE) [--reward NAME] [--n N] ...`: sample and score.

MODEL is a Hugging Face folder, an rlkit checkpoint or run directory, or `builtin:tiny`
(rlkit.evaluation.policy). Generation runs through the HF rollout engine on one process, with the sampling
options `rlkit train` has; `rlkit eval` measures a whole data file with any rollout engine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click


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
    from rlkit.evaluation.policy import resolve_policy
    from rlkit.evaluation.prompts import read_prompts, score_responses
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
        scores, extras = (score_responses(reward_manager, owners, [c.text for c in completions]) if reward_manager
                          else (None, {}))
        click.echo(f"# {policy.description}")
        print_completions(records, completions, num_samples, scores)
        if scores is not None:
            click.echo(summary_line(reward, scores, extras))
        if output is not None:
            write_jsonl(output, owners, completions, scores, extras)
    finally:
        if reward_manager is not None:
            reward_manager.close()  # its worker process ends with the command, not at interpreter exit
        if not group_was_there:
            destroy()


# ---------------------------------------------------------------------------------------------
# scores, output
# ---------------------------------------------------------------------------------------------
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
