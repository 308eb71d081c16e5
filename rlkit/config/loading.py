"""Build a validated config from a YAML file, then flags, then dotted overrides (`trainer.total_steps=10`).

Errors name the file, key or override and suggest the valid key: a renamed concept through the alias table
(rlkit.config.aliases), else the closest spelling. A config model that accepts verl's keys
(`accepts_verl_keys`) has them translated first (rlkit.config.verl).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rlkit.config.tree import Assignment, set_path
from rlkit.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (model:, data:, ...), "
                          "not a list or value")
    check_key_value_spacing(data, [], f"config file {path}")
    return data


def parse_override(text: str) -> Assignment:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML: numbers, booleans, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' is not of the form key.path=value (for example trainer.total_steps=10)")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    check_key_value_spacing(value, key.split("."), f"override '{text}'")
    return key.split("."), value


def check_key_value_spacing(value: Any, path: list[str], source: str) -> None:
    """`{method:flexible}` is YAML for one key named 'method:flexible' with no value: say so, where it happened,
    instead of letting the section that receives it report a strange key."""
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(key, str) and ":" in key and child is None and not key.endswith(":"):
                name, _, rest = key.partition(":")
                where = ".".join(path) or "the top level"
                raise ConfigError(
                    f"{source}: '{key}' under {where} is one key without a value, because YAML needs a space after "
                    f"the colon of key: value; write {{{name}: {rest}}}"
                )
            check_key_value_spacing(child, [*path, str(key)], source)
    elif isinstance(value, list):
        for item in value:
            check_key_value_spacing(item, path, source)


def build_config(
    model_cls: type[ConfigT],
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: dict[str, Any] | None = None,
) -> ConfigT:
    """The config of `model_cls` from a YAML file, then flags ({dotted.key: value}), then overrides."""
    tree = given_tree(model_cls, config_file, overrides, flags)
    return complete(model_cls, tree, source=str(config_file) if config_file else "the command line")


def complete(model_cls: type[ConfigT], tree: dict[str, Any], source: str) -> ConfigT:
    """The validated config of the keys in `tree`, the rest from the defaults."""
    return validate(model_cls, merge_trees(customised_defaults(model_cls()), tree), source)


def given_tree(
    model_cls: type[BaseModel],
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the file, the flags and the overrides set, in that order of precedence, as one tree in rlkit's
    layout (verl's keys translated where the model accepts them); nothing of the defaults."""
    file_tree: dict[str, Any] = read_yaml(config_file) if config_file else {}
    flag_assignments = [(dotted.split("."), value) for dotted, value in (flags or {}).items() if value is not None]
    override_assignments = [parse_override(override) for override in overrides]
    if getattr(model_cls, "accepts_verl_keys", False):
        from rlkit.config.verl import translate_layers

        file_tree, flag_assignments, override_assignments = translate_layers(
            file_tree, flag_assignments, override_assignments, source=str(config_file) if config_file else None
        )
    tree = file_tree
    for keys, value in [*flag_assignments, *override_assignments]:
        set_path(tree, keys, value)
    return tree


def customised_defaults(instance: BaseModel) -> dict[str, Any]:
    """The values of a default config that differ from its sections' class defaults (the embedded run's
    learning rate, say), as a tree to lay the given keys over.

    Pydantic completes a section given in part from its class, which would drop such values; merging only
    these (not every default) also lets a validator see which keys a config really set (trainer.total_epochs
    replacing the default total_steps).
    """
    baseline = type(instance)()
    tree: dict[str, Any] = {}
    for name, field in type(instance).model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            inner = customised_defaults(value)  # against the section's own class defaults
            if inner:
                tree[field.alias or name] = inner
        elif value != getattr(baseline, name):
            tree[field.alias or name] = _dump(value)
    return tree


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, tuple):
        return list(value)
    return value


def merge_trees(base: Any, given: Any) -> Any:
    """`given` laid over `base`, mapping by mapping."""
    if not isinstance(base, dict) or not isinstance(given, dict):
        return given
    merged = dict(base)
    for key, value in given.items():
        merged[key] = merge_trees(base.get(key), value) if key in base else value
    return merged


def load_saved_config(model_cls: type[ConfigT], path: str | Path) -> ConfigT:
    """The config a run saved with its checkpoint (config.yaml), also one written by an older rlkit."""
    return complete(model_cls, upgrade_saved_config(model_cls, read_yaml(path)), source=str(path))


def upgrade_saved_config(model_cls: type[BaseModel], tree: dict[str, Any]) -> dict[str, Any]:
    """An older rlkit's dump in today's layout: backend options flat in `engine`/`rollout` move into their
    blocks; `total_epochs` beside a `total_steps` (which then won) is dropped."""
    from rlkit.config.backends import BackendSection
    from rlkit.config.sections import child_model

    upgraded = dict(tree)
    for key, section in tree.items():
        model = child_model(model_cls, key)
        if isinstance(section, dict) and model is not None and issubclass(model, BackendSection):
            upgraded[key] = model.upgrade_flat(section)
    trainer = upgraded.get("trainer")
    if isinstance(trainer, dict) and trainer.get("total_steps") is not None and trainer.get("total_epochs") is not None:
        upgraded["trainer"] = {key: value for key, value in trainer.items() if key != "total_epochs"}
    return upgraded


def validate(model_cls: type[ConfigT], tree: dict[str, Any], source: str) -> ConfigT:
    try:
        return model_cls.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, model_cls, tree, source)) from None


def format_validation_error(error: ValidationError, model_cls: type[BaseModel], tree: dict, source: str) -> str:
    from rlkit.config.sections import section_keys

    lines = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        dotted = ".".join(location)
        if item["type"] == "extra_forbidden":
            valid = section_keys(model_cls, location[:-1])
            lines.append(f"unknown key '{dotted}'{_did_you_mean(model_cls, location, valid)} "
                         f"(valid here: {', '.join(sorted(valid))})")
        elif item["type"] in ("moved_key", "no_options", "block_type", "plugin_error"):
            lines.append(f"{dotted}: {item['msg']}")
        elif dotted and isinstance(item.get("input"), dict):  # a rule across a section's keys
            lines.append(f"{dotted}: {_clean(item['msg'])}")
        elif dotted:
            lines.append(f"{dotted}: {_clean(item['msg'])} (got {item.get('input')!r})")
        else:
            lines.append(_clean(item["msg"]))
    return f"invalid config ({source}):\n  " + "\n  ".join(lines)


def _did_you_mean(model_cls: type[BaseModel], location: list[str], valid: list[str]) -> str:
    """A renamed concept from the alias table when it names a key of this config, else the closest spelling."""
    from rlkit.config.aliases import ALIASES
    from rlkit.config.sections import is_valid_key

    dotted = ".".join(location)
    renamed = [key for key in ALIASES.get(dotted, ()) if is_valid_key(model_cls, key.split("."))]
    if renamed:
        return f"; did you mean {' or '.join(repr(key) for key in renamed)}?"
    close = difflib.get_close_matches(location[-1], valid, n=1)
    return f"; did you mean '{'.'.join(location[:-1] + [close[0]])}'?" if close else ""


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ")
