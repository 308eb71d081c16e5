"""`rlkit data ...`: prepare prompt files in verl's parquet schema.

Bad input raises an RlkitError (DataError); the main CLI prints it in one line and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from rlkit.data.convert import convert_to_verl
from rlkit.data.gsm8k import convert_gsm8k


@click.group("data")
def data_group() -> None:
    """Prepare prompt datasets (verl's parquet schema)."""


@data_group.command("gsm8k")
@click.option(
    "--input",
    "input_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder with GSM8K's train.jsonl and/or test.jsonl ({question, answer} rows).",
)
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to write train.parquet / test.parquet into.",
)
def gsm8k_command(input_dir: Path, output_dir: Path) -> None:
    """Convert GSM8K jsonl into verl-schema parquet (data_source openai/gsm8k)."""
    for split, (num_rows, path) in convert_gsm8k(input_dir, output_dir).items():
        click.echo(f"wrote {num_rows} {split} rows to {path}")


@data_group.command("convert")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A .jsonl, .json (list of records) or .parquet file.",
)
@click.option(
    "--output", "output_path", required=True, type=click.Path(path_type=Path), help="The .parquet file to write."
)
@click.option("--prompt-key", required=True, help="Key of the prompt text in each record.")
@click.option("--answer-key", required=True, help="Key of the ground-truth answer in each record.")
@click.option("--data-source", default=None, help="data_source of every row; default: the input file's stem.")
@click.option(
    "--template",
    default=None,
    help="Prompt template with a {prompt} placeholder, e.g. '{prompt} Put the answer in \\boxed{}.'",
)
def convert_command(
    input_path: Path,
    output_path: Path,
    prompt_key: str,
    answer_key: str,
    data_source: str | None,
    template: str | None,
) -> None:
    """Map the keys of any record file into verl's parquet schema."""
    num_rows = convert_to_verl(input_path, output_path, prompt_key, answer_key, data_source, template)
    click.echo(f"wrote {num_rows} rows to {output_path}")
