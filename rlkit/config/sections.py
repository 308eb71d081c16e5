"""Walk config models: find the section at a dotted path, and render the config reference (docs/config.md)."""

from __future__ import annotations

import functools
import json
import operator
import re
import types
import typing
from typing import Any, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every BaseModel class inside an annotation (X, X | None, Annotated[Union[...], ...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
        return found
    return []


def _pick(models: list[type[BaseModel]], subtree: Any) -> type[BaseModel] | None:
    """The union member a subtree selects by its `name` (the last member is the plugin fallback)."""
    if len(models) <= 1:
        return models[0] if models else None
    name = subtree.get("name") if isinstance(subtree, dict) else None
    for model in models:
        field = model.model_fields.get("name")
        if field is not None and name is None and field.default is not None:
            return model  # no name given: the union's default member comes first
        if field is not None and field.default == name:
            return model
    return models[-1]


def section_model(root: type[BaseModel], tree: Any, path: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for key in path:
        if model is None:
            return None
        field = _field_by_key(model, key)
        if field is None:
            return None
        tree = tree.get(key, {}) if isinstance(tree, dict) else {}
        model = _pick(_models_in(field.annotation), tree)
    return model


def _field_by_key(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


# ---------------------------------------------------------------------------------------------
# config reference
# ---------------------------------------------------------------------------------------------
def _without_metadata(annotation: Any) -> Any:
    """The annotation with Annotated's metadata dropped at every level (validators are no part of the type)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _without_metadata(args[0])
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, (_without_metadata(arg) for arg in args))
    if origin is list:
        return list[_without_metadata(args[0])]
    return annotation


def _type_name(annotation: Any) -> str:
    annotation = _without_metadata(annotation)
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    for noise in ("typing.", "<class '", "'>"):
        text = text.replace(noise, "")
    text = re.sub(r"rlkit\.config\.\w+\.", "", text)
    return text


def _default_text(value: Any) -> str:
    return "(section)" if isinstance(value, BaseModel) else json.dumps(value, default=str)


def reference_rows(model: type[BaseModel], prefix: str = "", instance: BaseModel | None = None
                   ) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every leaf field, sections expanded in order.

    Defaults are read from `instance` where one is given, since a section's default may be a customised
    instance (the embedded run's learning rate) rather than the class defaults.
    """
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        default = getattr(instance, name) if instance is not None else field.get_default(call_default_factory=True)
        members = _models_in(field.annotation)
        if len(members) > 1 and all("name" in member.model_fields for member in members):
            for member in members:
                tag = member.model_fields["name"].default
                label = f"{key}[name={tag}]" if isinstance(tag, str) else f"{key}[name=<plugin>]"
                member_default = default if isinstance(default, member) and type(default) is member else None
                rows.extend(reference_rows(member, label + ".", member_default))
        elif members:
            rows.extend(reference_rows(members[0], key + ".", default if isinstance(default, BaseModel) else None))
        else:
            rows.append((key, _type_name(field.annotation), _default_text(default), field.description or ""))
    return rows


def render_reference(title: str, model: type[BaseModel]) -> str:
    lines = [
        f"## {title}",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key, type_name, default, description in reference_rows(model):
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - markdown table cells
        lines.append(f"| `{key}` | `{cell(type_name)}` | `{cell(default)}` | {cell(description)} |")
    return "\n".join(lines) + "\n"
