"""`rlkit model import FILE.gguf OUT`: a Hugging Face folder from a GGUF file (llama.cpp, ollama)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("model")
def model_group() -> None:
    """Bring models into rlkit."""


@model_group.command("import")
@click.argument("gguf_file", metavar="FILE.gguf", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def import_command(gguf_file: Path, out: Path) -> None:
    """Write OUT, a Hugging Face folder (bf16 safetensors, config, generation config, tokenizer and chat
    template) that rlkit train/sft/generate/eval, vLLM and SGLang load, from a GGUF file. Needs
    `pip install 'rlkit[gguf]'`; OUT must not exist or be empty."""
    from rlkit.models.gguf import import_gguf

    imported = import_gguf(gguf_file, out)
    click.echo(f"imported {gguf_file} -> {imported.path}: {imported.model_class} ({imported.architecture}), "
               f"{imported.num_parameters:,} parameters, vocabulary {imported.vocab_size:,}, bf16, "
               f"{imported.seconds:.0f} s")
