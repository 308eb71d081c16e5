"""Prompts to sample from (a data file or --prompt texts) and the rewards of their responses, read and scored
exactly as `rlkit train` reads and scores them."""

from __future__ import annotations

from typing import Any

from rlkit.data.prompts import PromptRecord
from rlkit.rewards.base import RewardManager, RewardSample


def read_prompts(
    prompts: tuple[str, ...], data_file: str | None, tokenizer: Any, *, ground_truth: str | None = None,
    limit: int | None = None, prompt_key: str = "prompt", answer_key: str = "answer", prompt_format: str = "auto",
    system_prompt: str | None = None,
) -> list[PromptRecord]:
    """PromptRecords of the --prompt texts or the --data file (its answers are the ground truths), rendered as
    `rlkit train` renders prompts; every prompt is kept whatever its length."""
    from rlkit.config.schema import DataConfig
    from rlkit.data.prompts import load_prompt_dataset
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


def score_responses(
    manager: RewardManager, records: list[PromptRecord], responses: list[str]
) -> tuple[list[float], dict[str, list[float]]]:
    """Scores and extras (acc, ...; NaN where a reward has none) of each response; records[i] owns responses[i]."""
    samples = [
        RewardSample(index, record.data_source, record.prompt_text, response, record.ground_truth, record.extra_info)
        for index, (record, response) in enumerate(zip(records, responses, strict=True))
    ]
    output = manager(samples)
    return output.scores, output.extras
