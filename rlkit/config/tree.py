"""A config tree (nested dicts, as YAML gives it) and the assignments that edit it, shared by the loaders of
rlkit's own keys and of verl's."""

from __future__ import annotations

from typing import Any

Assignment = tuple[list[str], Any]  # (["trainer", "total_steps"], 10)


def set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    """tree[keys[0]][keys[1]]... = value, making (or replacing non-dict values with) the sections on the way."""
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value
