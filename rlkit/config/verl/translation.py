"""What a verl key becomes (Translation), what a rule may read (Context), and the generic rules: a rename, a
note, a value rlkit's behaviour already has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MISSING = object()
# verl's sections of the policy's model, actor, rollout and reference
MODEL = "actor_rollout_ref.model."
ACTOR = "actor_rollout_ref.actor."
ROLLOUT = "actor_rollout_ref.rollout."
REF = "actor_rollout_ref.ref."


class Unsupported(Exception):
    """A verl setting rlkit cannot honour; the message says what to do instead."""


@dataclass
class Translation:
    """What one verl key becomes: rlkit assignments (dotted key -> value) and a note for its log line."""

    assignments: list[tuple[str, Any]] = field(default_factory=list)
    note: str = ""


@dataclass
class Context:
    """Every layer's keys merged (file, flags, overrides), for rules that depend on another key."""

    tree: dict[str, Any]

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.tree
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    def given(self, dotted: str) -> bool:
        return self.get(dotted, MISSING) is not MISSING and self.get(dotted) is not None


Rule = Callable[[Any, Context], "Translation | None"]  # None: not a verl use of a path rlkit shares


# -- rule makers ------------------------------------------------------------------------------------
def rename(target: str, convert: Callable[[Any], Any] | None = None, note: str = "") -> Rule:
    def rule(value: Any, context: Context) -> Translation:
        if value is None:
            return Translation(note="null: nothing to set")
        return Translation([(target, convert(value) if convert else value)], note)

    return rule


def no_effect(note: str) -> Rule:
    return lambda value, context: Translation(note=note)


def accepted(*values: Any, advice: str) -> Rule:
    """A verl option whose given value is what rlkit does anyway; any other value is unsupported."""

    def rule(value: Any, context: Context) -> Translation:
        if value in values:
            return Translation(note="what rlkit does: nothing to set")
        raise Unsupported(advice)

    return rule


def interpolation_free(rule: Rule) -> Rule:
    def checked(value: Any, context: Context) -> Translation | None:
        if isinstance(value, str) and "${" in value:
            raise Unsupported("an OmegaConf interpolation, which rlkit does not resolve: write the value itself")
        return rule(value, context)

    return checked


