"""`[CONFIG.yaml] [key.path=value ...]`: the positional arguments every config-driven command takes."""

from __future__ import annotations

from rlkit.errors import ConfigError


def split_config_args(args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """The optional leading YAML file, then dotted overrides."""
    for arg in args:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            raise ConfigError(f"unknown option '{name}'; see --help for the options, "
                              "and write settings as key.path=value")
    config_file = None
    overrides = list(args)
    if overrides and "=" not in overrides[0]:
        config_file = overrides.pop(0)
    for arg in overrides:
        if "=" not in arg:
            raise ConfigError(
                f"argument '{arg}' is neither the config file (which comes first) nor an override key.path=value"
            )
    return config_file, overrides
