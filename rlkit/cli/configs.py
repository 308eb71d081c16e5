"""`rlkit validate CONFIG...`, `rlkit config show [CONFIG] [overrides]`, `rlkit config docs`."""

from __future__ import annotations

import sys

import click
import yaml

from rlkit.cli.args import split_config_args
from rlkit.config.kinds import config_models, model_for_file
from rlkit.errors import ConfigError


@click.command("validate")
@click.argument("configs", nargs=-1, required=True)
def validate_command(configs: tuple[str, ...]) -> None:
    """Check config files; prints OK or the errors of each, exits 2 if any is invalid."""
    from rlkit.config import build_config

    failed = 0
    for path in configs:
        try:
            build_config(model_for_file(path), path)
            click.echo(f"OK    {path}")
        except ConfigError as error:
            failed += 1
            click.echo(f"FAIL  {path}: {error}")
    if failed:
        sys.exit(2)


@click.group("config")
def config_group() -> None:
    """Show the resolved config or render the config reference."""


@config_group.command("show")
@click.argument("args", nargs=-1)
@click.option("--kind", type=click.Choice(["train", "sft"]), default=None, help="Which config (default: from the file).")
def show_command(args: tuple[str, ...], kind: str | None) -> None:
    """Print the resolved config (defaults, then CONFIG, then overrides) as YAML."""
    from rlkit.config import build_config

    config_file, overrides = split_config_args(args)
    model = config_models()[kind] if kind else (model_for_file(config_file) if config_file else config_models()["train"])
    cfg = build_config(model, config_file, overrides)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False), nl=False)


@config_group.command("docs")
def docs_command() -> None:
    """Print the config reference (docs/config.md) rendered from the field descriptions."""
    from rlkit.config.reference import render_config_reference

    click.echo(render_config_reference(), nl=False)
