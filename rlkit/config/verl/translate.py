"""Translating a config's layers (file, flags, overrides): each verl key through its rule, the keys a backend
reads through the backends' registry entries, one log line per key, every refusal in one error."""

from __future__ import annotations

import logging
from typing import Any

from rlkit.config.tree import Assignment, set_path
from rlkit.config.verl.backends import rollout_engines, train_engines
from rlkit.config.verl.rules import RULES, VERL_SECTIONS
from rlkit.config.verl.translation import MISSING, Context, Rule, Translation, Unsupported, interpolation_free
from rlkit.errors import ConfigError

log = logging.getLogger("rlkit.config.verl")


def backend_keys() -> dict[str, list[str]]:
    """{verl key: rlkit block keys}: every backend block that has the option."""
    found: dict[str, list[str]] = {}
    for section, registry in (("engine", train_engines()), ("rollout", rollout_engines())):
        for entry in registry.entries():
            if entry.backend is None:
                continue
            for verl_key, option in entry.backend.verl_options.items():
                found.setdefault(verl_key, []).append(f"{section}.{entry.name}.{option}")
    return found


def backend_rule(targets: list[str], verl_key: str) -> Rule:
    def rule(value: Any, context: Context) -> Translation:
        if value is None:
            return Translation(note="null: nothing to set")
        assignments = []
        for target in targets:
            # several verl switches may name one option (FSDP2 offloads parameters and optimizer together)
            siblings = [key for key, keys in backend_keys().items() if target in keys and key != verl_key]
            combined = value
            if isinstance(value, bool):
                combined = value or any(context.get(key) is True for key in siblings)
            assignments.append((target, combined))
        return Translation(assignments)

    return interpolation_free(rule)


def rule_for(dotted: str) -> Rule | None:
    if dotted in RULES:
        return RULES[dotted]
    targets = backend_keys().get(dotted)
    return backend_rule(targets, dotted) if targets else None


def is_verl_section(dotted: str) -> bool:
    return dotted.split(".", 1)[0] in VERL_SECTIONS


# -- translating layers -------------------------------------------------------------------------------
def translate_layers(
    file_tree: dict[str, Any], flags: list[Assignment], overrides: list[Assignment], source: str | None = None
) -> tuple[dict[str, Any], list[Assignment], list[Assignment]]:
    """The three layers of a config with their verl keys translated (and logged), in rlkit's layout.

    Raises ConfigError listing every verl key rlkit cannot honour, with what to do instead.
    """
    context_tree: dict[str, Any] = _copy(file_tree)
    for keys, value in [*flags, *overrides]:
        set_path(context_tree, keys, value)
    context = Context(context_tree)
    problems: list[str] = []
    lines: list[str] = []
    file_tree = _translate_tree(file_tree, context, problems, lines, where=source or "the config file")
    flags = _translate_assignments(flags, context, problems, lines)
    overrides = _translate_assignments(overrides, context, problems, lines)
    if problems:
        raise ConfigError("verl settings rlkit cannot honour:\n  " + "\n  ".join(problems))
    for line in lines:
        log.info("%s", line)
    return file_tree, flags, overrides


def _translate_assignments(assignments: list[Assignment], context: Context, problems: list[str],
                           lines: list[str]) -> list[Assignment]:
    translated: list[Assignment] = []
    for keys, value in assignments:
        result = _translate_one(".".join(keys), value, context, problems, lines)
        translated += [(keys, value)] if result is None else [(target.split("."), v) for target, v in result]
    return translated


def _translate_tree(tree: dict[str, Any], context: Context, problems: list[str], lines: list[str],
                    where: str) -> dict[str, Any]:
    rlkit_tree: dict[str, Any] = {}
    assignments: list[tuple[str, Any]] = []
    for keys, value in _leaves(tree):
        result = _translate_one(".".join(keys), value, context, problems, lines)
        if result is None:
            set_path(rlkit_tree, keys, value)
        else:
            assignments += result
    for target, value in assignments:
        existing = Context(rlkit_tree).get(target, MISSING)
        if existing is not MISSING and existing != value:
            problems.append(f"{where} sets {target}={existing!r} and, through a verl key, {target}={value!r}; keep one")
        set_path(rlkit_tree, target.split("."), value)
    return rlkit_tree


def _translate_one(dotted: str, value: Any, context: Context, problems: list[str],
                   lines: list[str]) -> list[tuple[str, Any]] | None:
    """The rlkit assignments of one key, or None when the key is rlkit's own (left as it is)."""
    if dotted.rsplit(".", 1)[-1] == "_target_":
        return []  # verl's class paths for its dataclasses: structure, not a setting
    rule = rule_for(dotted)
    if rule is None:
        if not is_verl_section(dotted):
            return None
        if value is None or value == {} or value == []:
            return []  # an unset verl option
        problems.append(f"{dotted}={value!r}: rlkit has no equivalent; remove it (docs/verl.md lists the verl keys "
                        "rlkit translates)")
        return []
    try:
        translation = rule(value, context)
    except Unsupported as error:
        problems.append(f"{dotted}={value!r}: {error}")
        return []
    if translation is None:
        return None
    lines.append(_line(dotted, value, translation))
    return translation.assignments


def _line(dotted: str, value: Any, translation: Translation) -> str:
    targets = ", ".join(key if new == value else f"{key}={_text(new)}" for key, new in translation.assignments)
    head = f"verl key {dotted} -> {targets}" if targets else f"verl key {dotted}={_text(value)}: nothing to set"
    if not targets and translation.note:
        return f"verl key {dotted}={_text(value)}: {translation.note}"
    return f"{head} ({translation.note})" if translation.note else head


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    """(key path, value) of a YAML tree, stopping at the keys a rule reads whole (a logger list, kwargs)."""
    found = []
    for key, value in tree.items():
        keys = (*prefix, str(key))
        if isinstance(value, dict) and value and rule_for(".".join(keys)) is None:
            found += _leaves(value, keys)
        else:
            found.append((list(keys), value))
    return found


def _copy(tree: Any) -> Any:
    return {key: _copy(value) for key, value in tree.items()} if isinstance(tree, dict) else tree
