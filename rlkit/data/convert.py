"""Convert any .jsonl/.json/.parquet prompt file into verl's parquet schema (`rlkit data convert`).

A verl record is ``{data_source, prompt: [{role: user, content}], ability, reward_model: {style: rule,
ground_truth}, extra_info}``; rlkit reads it with ``data.schema: verl`` (or auto), and so does verl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlkit.data.records import read_rows, write_parquet
from rlkit.errors import DataError

PROMPT_PLACEHOLDER = "{prompt}"


def verl_record(
    prompt_text: str, ground_truth: Any, data_source: str, extra_info: dict[str, Any], ability: str | None = None
) -> dict[str, Any]:
    """One row of verl's schema, the prompt as a single user message."""
    record: dict[str, Any] = {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": prompt_text}],
    }
    if ability is not None:
        record["ability"] = ability
    record["reward_model"] = {"style": "rule", "ground_truth": ground_truth}
    record["extra_info"] = extra_info
    return record


def convert_to_verl(
    input_path: str | Path,
    output_path: str | Path,
    prompt_key: str,
    answer_key: str,
    data_source: str | None = None,
    template: str | None = None,
) -> int:
    """Write ``input_path``'s records to ``output_path`` (.parquet) in verl's schema; returns the row count.

    The prompt is ``row[prompt_key]`` put into ``template`` at ``{prompt}`` (as is without a template);
    the ground truth is ``row[answer_key]``; data_source defaults to the input file's stem.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix != ".parquet":
        raise DataError(f"output {output_path} must end in .parquet (verl's schema is stored as parquet)")
    if template is not None and PROMPT_PLACEHOLDER not in template:
        raise DataError(f"--template {template!r} has no {PROMPT_PLACEHOLDER} placeholder for the prompt text")
    rows = read_rows(input_path)
    if not rows:
        raise DataError(f"data file {input_path} has no records")
    source = data_source or input_path.stem
    records = []
    for index, row in enumerate(rows):
        text = row.require(prompt_key, "pass --prompt-key with the key that holds the prompt")
        if not isinstance(text, str):
            raise DataError(
                f"{row.location}: '{prompt_key}' is a {type(text).__name__}, not text; pick another --prompt-key"
            )
        # str.replace, not str.format: templates often hold braces of their own (\boxed{}).
        prompt_text = template.replace(PROMPT_PLACEHOLDER, text) if template is not None else text
        answer = row.require(answer_key, "pass --answer-key with the key that holds the answer")
        records.append(verl_record(prompt_text, answer, source, {"index": index}))
    write_parquet(records, output_path)
    return len(records)
