"""`rlkit export CHECKPOINT OUT [--merge-lora]`: a Hugging Face folder from an rlkit checkpoint."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--merge-lora", is_flag=True,
              help="Write merged weights for a LoRA run (the adapter goes to OUT/adapter).")
def export_command(checkpoint: Path, out: Path, merge_lora: bool) -> None:
    """Write OUT (safetensors, config, tokenizer) that AutoModelForCausalLM.from_pretrained loads."""
    from rlkit.export import export_checkpoint

    written = export_checkpoint(checkpoint, out, merge_lora=merge_lora)
    click.echo(f"exported {checkpoint} -> {written}")
