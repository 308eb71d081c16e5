"""`rlkit eval MODEL_OR_CHECKPOINT --data FILE [--reward NAME] [--rollout hf|vllm|sglang] [--n K] ...`.

Samples responses to every prompt of a data file with a rollout engine, scores them with a reward, and prints
accuracy (with a 95% Wilson interval), mean reward, pass@k, response length and truncation rate; see
docs/eval.md. The work is in rlkit.evaluation; this file turns flags into its pieces.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command("eval", context_settings={"ignore_unknown_options": True})
@click.argument("model")
@click.argument("overrides", nargs=-1)
@click.option("--data", "data_file", required=True,
              help="Prompt file as `rlkit train` reads it (.jsonl/.json/.parquet, flat or verl schema, or "
              "builtin:<task>); its answers are the rewards' ground truth.")
@click.option("--reward", default="auto", show_default=True,
              help="A registered reward (gsm8k, math, letters, ...), 'module:attr', 'file.py:attr', or 'auto' (the "
              "built-in for each row's data_source). Options: reward.kwargs.NAME=VALUE.")
@click.option("--rollout", "rollout_name", default="hf", show_default=True,
              help="Rollout engine: hf, vllm, sglang or a plugin. Options: rollout.NAME=VALUE.")
@click.option("--n", "num_samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Responses per prompt; with more than one, pass@k is reported.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 is greedy.")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first M prompts.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Prompts per generate call (memory knob); default: all at once.")
@click.option("--prompt-key", default="prompt", show_default=True, help="Key of the prompt (flat schema).")
@click.option("--answer-key", default="answer", show_default=True, help="Key of the answer (flat schema).")
@click.option("--prompt-format", type=click.Choice(["auto", "chat", "raw"]),
              help="As data.prompt_format: 'chat' applies the chat template. Default: the checkpoint's run's "
              "setting, else auto.")
@click.option("--system-prompt", help="As data.system_prompt. Default: the checkpoint's run's setting, else none.")
@click.option("--seed", type=int, default=1, show_default=True, help="Sampling seed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every response (prompt, response, score, correct, length, ...) to this .jsonl file.")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the summary to this .json file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object instead of a sentence.")
def eval_command(
    model: str, overrides: tuple[str, ...], data_file: str, reward: str, rollout_name: str, num_samples: int,
    temperature: float, top_p: float, max_new_tokens: int, limit: int | None, batch_size: int | None,
    prompt_key: str, answer_key: str, prompt_format: str | None, system_prompt: str | None, seed: int, device: str,
    output: Path | None, summary_file: Path | None, as_json: bool,
) -> None:
    """Evaluate MODEL (a Hugging Face folder, an rlkit checkpoint or run directory, or builtin:tiny) on --data:
    accuracy with a 95% interval, mean reward, pass@k, response length, truncation. Settings of the rollout
    and reward sections follow as key=value (rollout.vllm.gpu_memory_utilization=0.3, reward.kwargs.method=flexible)."""
    started = time.perf_counter()
    from rlkit.config.evaluation import SECTIONS, EvalSections
    from rlkit.config.loading import build_config
    from rlkit.data.builtin import is_builtin
    from rlkit.errors import ConfigError, DataError
    from rlkit.registry import ROLLOUT_ENGINES
    from rlkit.rewards.loading import build_reward_manager

    for override in overrides:
        if override.split(".", 1)[0] not in SECTIONS:
            raise ConfigError(f"'{override}': rlkit eval takes settings of the {' and '.join(SECTIONS)} sections "
                              "only (rollout.KEY=VALUE, reward.KEY=VALUE); the rest are flags, see --help")
    flags = {"rollout.name": rollout_name, "rollout.n": num_samples, "rollout.temperature": temperature,
             "rollout.top_p": top_p, "rollout.max_new_tokens": max_new_tokens, "reward.name": reward}
    sections = build_config(EvalSections, None, overrides, flags)
    if not is_builtin(data_file) and not Path(data_file).is_file():
        raise DataError(f"--data {data_file} does not exist; give a .jsonl, .json or .parquet prompt file")
    # Everything that can be wrong with the flags fails here, before a model loads.
    reward_manager = build_reward_manager(sections.reward)
    rollout_cls = ROLLOUT_ENGINES.get(sections.rollout.name)

    try:
        report, description, seconds = _run(
            model, sections, rollout_cls, reward_manager, data_file=data_file, limit=limit, batch_size=batch_size,
            prompt_key=prompt_key, answer_key=answer_key, prompt_format=prompt_format, system_prompt=system_prompt,
            seed=seed, device=device, output=output, started=started,
        )
    finally:
        reward_manager.close()  # its worker process ends with the command, not at interpreter exit
    summary = {"model": description, "data": data_file, "reward": reward, "rollout": sections.rollout.name,
               "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed,
               **report.summary.as_dict(), "generate_seconds": report.generate_seconds, "seconds": seconds}
    if summary_file is not None:
        from rlkit.evaluation.runner import write_atomically

        write_atomically(summary_file, json.dumps(summary, indent=1) + "\n")
    if as_json:
        click.echo(json.dumps(summary))
    else:
        from rlkit.evaluation.runner import summary_line

        click.echo(f"# {description}, {data_file}")
        click.echo(summary_line(report.summary, reward=reward, seconds=seconds))


def _run(model, sections, rollout_cls, reward_manager, *, data_file, limit, batch_size, prompt_key, answer_key,
         prompt_format, system_prompt, seed, device, output, started):
    """Load the policy and its prompts, sample and score; returns (report, model description, seconds)."""
    import torch.distributed

    from rlkit.distributed import destroy, init_distributed
    from rlkit.evaluation.policy import resolve_policy
    from rlkit.evaluation.prompts import read_prompts
    from rlkit.evaluation.runner import evaluate, write_responses
    from rlkit.models.loading import load_tokenizer
    from rlkit.rollout.base import SamplingParams

    group_was_there = torch.distributed.is_initialized()  # a checkpoint's engine may start a 1-rank group
    dist = init_distributed(device)
    rollout = None
    try:
        policy = resolve_policy(model, dist)
        tokenizer = load_tokenizer(policy.tokenizer_path, trust_remote_code=policy.trust_remote_code)
        records = read_prompts((), data_file, tokenizer, limit=limit, prompt_key=prompt_key, answer_key=answer_key,
                               prompt_format=prompt_format or policy.data_settings.get("prompt_format", "auto"),
                               system_prompt=system_prompt or policy.data_settings.get("system_prompt"))
        extra = {"trust_remote_code": True} if policy.trust_remote_code else {}
        rollout = rollout_cls(sections.rollout, sections.rollout.options, policy.model_path, tokenizer, dist, seed=seed,
                              **extra)
        if policy.weights is not None:
            rollout.update_weights(policy.weights)
            policy.weights = None  # frees the training engine before sampling
        r = sections.rollout
        params = SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                max_new_tokens=r.max_new_tokens, stop_token_ids=tuple(r.stop_token_ids),
                                ignore_eos=r.ignore_eos, logprobs=False)
        report = evaluate(rollout, records, reward_manager, params, batch_size=batch_size)
        if output is not None:
            write_responses(output, report.responses)
        return report, policy.description, time.perf_counter() - started
    finally:
        if rollout is not None and hasattr(rollout, "close"):
            rollout.close()
        if not group_was_there:
            destroy()
