"""`rlkit validate CONFIG...`, `rlkit config show [CONFIG] [overrides]`, `rlkit config docs`."""

from __future__ import annotations

import sys

import click
import yaml

from rlkit.cli.args import split_config_args
from rlkit.errors import ConfigError, RlkitError

COMMAND_OF_KIND = {"train": "rlkit train", "sft": "rlkit sft"}
KIND_NAMES = {"train": "an RL", "sft": "an SFT"}


def config_models() -> dict[str, type]:
    """The kinds of config file, by the command that reads them."""
    from rlkit.config.schema import RunConfig

    models: dict[str, type] = {"train": RunConfig}
    try:
        from rlkit.config.sft import SFTConfig

        models["sft"] = SFTConfig
    except ImportError:
        pass
    return models


def model_for_file(path: str) -> type:
    """SFT recipes say `kind: sft` or live in files named sft*; everything else is an RL run."""
    from rlkit.config.loading import read_yaml

    tree = read_yaml(path)
    models = config_models()
    kind = tree.get("kind") if isinstance(tree.get("kind"), str) else None
    if kind is None and "sft" in path.rsplit("/", 1)[-1] and "sft" in models:
        kind = "sft"
    return models.get(kind or "train", models["train"])


def build_for_command(kind: str, config_file: str | None, overrides: list[str], flags: dict) -> object:
    """The config of `rlkit train` (kind 'train') or `rlkit sft` ('sft'). A config file of the other kind is an
    error that names the command it belongs to."""
    from rlkit.config import build_config
    from rlkit.config.loading import read_yaml, validate

    models = config_models()
    try:
        return build_config(models[kind], config_file, overrides, flags)
    except ConfigError:
        if config_file is None:
            raise
        tree = read_yaml(config_file)
        for other, model in models.items():
            if other == kind:
                continue
            try:
                validate(model, tree, source=config_file)
            except ConfigError:
                continue
            raise ConfigError(
                f"{config_file} is {KIND_NAMES[other]} config, not {KIND_NAMES[kind]} one: run it with "
                f"`{COMMAND_OF_KIND[other]} {config_file}`"
            ) from None
        raise


@click.command("validate")
@click.argument("configs", nargs=-1, required=True)
def validate_command(configs: tuple[str, ...]) -> None:
    """Check config files; prints OK or the errors of each, exits 2 if any is invalid.

    An RL config's named components (advantage estimator, policy loss, rewards) must resolve, and every
    data_source in its data files (those present here) must have a reward.
    """
    from rlkit.config import build_config
    from rlkit.config.schema import RunConfig

    failed = 0
    for path in configs:
        try:
            cfg = build_config(model_for_file(path), path)
            note = ""
            if isinstance(cfg, RunConfig):
                from rlkit.trainer.preflight import check_components, check_data_files

                check_components(cfg)
                missing = check_data_files(cfg)
                note = f"  (not here, data sources not checked: {', '.join(missing)})" if missing else ""
            click.echo(f"OK    {path}{note}")
        except RlkitError as error:
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
