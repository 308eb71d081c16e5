"""Build a validated config from a YAML file, then flags, then dotted overrides (`trainer.total_steps=10`).

Errors name the file, key or override and suggest the closest valid key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

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
        raise ConfigError(f"config file {path} must hold a mapping of sections (model:, data:, ...), not a list or value")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML: numbers, booleans, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' is not of the form key.path=value (for example trainer.total_steps=10)")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def build_config(
    model_cls: type[ConfigT],
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: dict[str, Any] | None = None,
) -> ConfigT:
    """The config of `model_cls` from a YAML file, then flags ({dotted.key: value}), then overrides."""
    tree: dict[str, Any] = read_yaml(config_file) if config_file else {}
    for dotted, value in (flags or {}).items():
        if value is not None:
            set_path(tree, dotted.split("."), value)
    for override in overrides:
        keys, value = parse_override(override)
        set_path(tree, keys, value)
    tree = merge_onto_defaults(model_cls().model_dump(mode="json", by_alias=True), tree)
    return validate(model_cls, tree, source=str(config_file) if config_file else "the command line")


def merge_onto_defaults(defaults: Any, given: Any) -> Any:
    """`given` laid over the defaults, section by section.

    Without this, setting one key of a section whose default is a customised instance (the embedded run's
    learning rate, say) would rebuild that section from the class defaults and silently drop the rest. A
    union section given another `name` (engine, rollout) starts from nothing but what was given.
    """
    if not isinstance(defaults, dict) or not isinstance(given, dict):
        return given
    if "name" in given and given["name"] != defaults.get("name", given["name"]):
        return given
    merged = dict(defaults)
    for key, value in given.items():
        merged[key] = merge_onto_defaults(defaults.get(key), value) if key in defaults else value
    return merged


def validate(model_cls: type[ConfigT], tree: dict[str, Any], source: str) -> ConfigT:
    try:
        return model_cls.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, model_cls, tree, source)) from None


def format_validation_error(error: ValidationError, model_cls: type[BaseModel], tree: dict, source: str) -> str:
    lines = []
    for item in error.errors():
        location = [str(part) for part in item["loc"] if not _is_union_tag(part, model_cls)]
        dotted = ".".join(location)
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(model_cls, tree, location[:-1])
            close = difflib.get_close_matches(location[-1], valid, n=1)
            hint = f"; did you mean '{'.'.join(location[:-1] + [close[0]])}'?" if close else ""
            lines.append(f"unknown key '{dotted}'{hint} (valid here: {', '.join(sorted(valid))})")
        elif dotted:
            lines.append(f"{dotted}: {_clean(item['msg'])} (got {item.get('input')!r})")
        else:
            lines.append(_clean(item["msg"]))
    return f"invalid config ({source}):\n  " + "\n  ".join(lines)


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ")


def _is_union_tag(part: Any, model_cls: type[BaseModel]) -> bool:
    # pydantic puts the discriminated union's tag ('fsdp2', 'plugin') into error locations.
    return part in ("fsdp2", "deepspeed", "plugin", "hf", "vllm", "sglang") and part not in model_cls.model_fields


def _valid_keys(model_cls: type[BaseModel], tree: dict, path: list[str]) -> list[str]:
    """Field names (by alias) of the section at `path`, following the discriminated unions."""
    from rlkit.config.sections import section_model

    model = section_model(model_cls, tree, path)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]
