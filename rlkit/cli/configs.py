"""`rlkit validate CONFIG...`, `rlkit config show [CONFIG] [overrides]`, `rlkit config from-verl [YAML] [overrides]`,
`rlkit config docs`."""

from __future__ import annotations

import sys

import click
import yaml

from rlkit.cli.args import split_config_args
from rlkit.config.kinds import config_models, model_for_file
from rlkit.errors import ConfigError, RlkitError

COMMAND_OF_KIND = {"train": "rlkit train", "sft": "rlkit sft"}
KIND_NAMES = {"train": "an RL", "sft": "an SFT"}


def build_for_command(kind: str, config_file: str | None, overrides: list[str], flags: dict) -> object:
    """The config of `rlkit train` (kind 'train') or `rlkit sft` ('sft'). A config file of the other kind is an
    error that names the command it belongs to."""
    from rlkit.config import build_config

    models = config_models()
    try:
        return build_config(models[kind], config_file, overrides, flags)
    except ConfigError:
        if config_file is None:
            raise
        for other, model in models.items():
            if other == kind:
                continue
            try:
                build_config(model, config_file)  # the file alone, read as the other kind would read it
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
@click.option("--kind", type=click.Choice(["train", "sft"]), default=None,
              help="Which config (default: from the file).")
@click.option("--engine", help="Training engine (sets engine.name).")
@click.option("--rollout", help="Rollout engine (sets rollout.name; RL runs only).")
@click.option("--all", "all_blocks", is_flag=True,
              help="Show the options block of every registered engine and rollout, not only the selected ones.")
def show_command(args: tuple[str, ...], kind: str | None, engine: str | None, rollout: str | None,
                 all_blocks: bool) -> None:
    """Print the resolved config (defaults, then CONFIG, then the flags, then overrides) as YAML, with the
    selected engine's and rollout's options blocks."""
    from rlkit.config import build_config
    from rlkit.config.backends import ALL_BLOCKS

    config_file, overrides = split_config_args(args)
    model = (config_models()[kind] if kind
             else (model_for_file(config_file) if config_file else config_models()["train"]))
    if rollout is not None and "rollout" not in model.model_fields:
        raise ConfigError(f"--rollout {rollout}: {config_file or 'this config'} is an SFT run, which runs no "
                          "rollout engine; drop --rollout")
    cfg = build_config(model, config_file, overrides, {"engine.name": engine, "rollout.name": rollout})
    dump = cfg.model_dump(mode="json", by_alias=True, context={ALL_BLOCKS: all_blocks})
    click.echo(yaml.safe_dump(dump, sort_keys=False), nl=False)


@config_group.command("from-verl")
@click.argument("args", nargs=-1)
def from_verl_command(args: tuple[str, ...]) -> None:
    """Print the rlkit YAML equivalent to a verl config: a YAML in verl's layout and/or verl's overrides
    (actor_rollout_ref.actor.optim.lr=1e-6 ...). Each translated key is logged; the result is validated.
    `rlkit train` accepts the same arguments directly (docs/verl.md)."""
    from rlkit.config.loading import complete, given_tree
    from rlkit.config.schema import RunConfig

    config_file, overrides = split_config_args(args)
    tree = given_tree(RunConfig, config_file, overrides)
    complete(RunConfig, tree, source=config_file or "the command line")  # fails here on anything rlkit rejects
    click.echo("# rlkit config translated from verl's by `rlkit config from-verl`; unset keys take rlkit's defaults")
    click.echo(yaml.safe_dump(tree, sort_keys=False), nl=False)


@config_group.command("docs")
def docs_command() -> None:
    """Print the config reference (docs/config.md) rendered from the field descriptions."""
    from rlkit.config.reference import render_config_reference

    click.echo(render_config_reference(), nl=False)
