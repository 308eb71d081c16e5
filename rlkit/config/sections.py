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


def child_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The section model under `key` of `model`: a field's, or a backend block's in an engine/rollout section."""
    from rlkit.config.backends import BackendSection

    field = _field_by_key(model, key)
    if field is not None:
        members = _models_in(field.annotation)
        return members[0] if members else None
    if issubclass(model, BackendSection):
        return model.block_model(key)
    return None


def section_model(root: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The section model at a dotted path of `root` (['engine', 'deepspeed']), or None."""
    model: type[BaseModel] | None = root
    for key in path:
        if model is None:
            return None
        model = child_model(model, key)
    return model


def section_keys(root: type[BaseModel], path: list[str]) -> list[str]:
    """The keys (by alias) valid at `path`: a section's fields and, in an engine/rollout section, its blocks."""
    from rlkit.config.backends import BackendSection

    model = section_model(root, path)
    if model is None:
        return []
    keys = [field.alias or name for name, field in model.model_fields.items()]
    if issubclass(model, BackendSection):
        keys += [name for name in model.registry().names() if name not in keys]
    return keys


def is_valid_key(root: type[BaseModel], path: list[str]) -> bool:
    """True when `path` names a section or a leaf of `root` (blocks included)."""
    return bool(path) and path[-1] in section_keys(root, path[:-1])


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
    return text.replace("NoneType", "None")


def _without_metadata(annotation: Any) -> Any:
    """The annotation with its Annotated[...] wrappers (validators, constraints) left out, also inside unions."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _without_metadata(typing.get_args(annotation)[0])
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(_without_metadata(arg) for arg in args)]
    if origin in (list, set, tuple, dict) and args:  # list[Annotated[str, ...]] reads list[str]
        stripped = tuple(_without_metadata(arg) for arg in args)
        return origin[stripped if len(stripped) > 1 else stripped[0]]
    return annotation


def _default_text(value: Any) -> str:
    return "(section)" if isinstance(value, BaseModel) else json.dumps(value, default=str)


def reference_rows(model: type[BaseModel], prefix: str = "", instance: BaseModel | None = None
                   ) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every leaf field, sections expanded in order; an engine or
    rollout section is followed by the block of each built-in backend.

    Defaults are read from `instance` where one is given, since a section's default may be a customised
    instance (the embedded run's learning rate) rather than the class defaults.
    """
    from rlkit.config.backends import BackendSection

    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        default = getattr(instance, name) if instance is not None else field.get_default(call_default_factory=True)
        members = _models_in(field.annotation)
        if members:
            rows.extend(reference_rows(members[0], key + ".", default if isinstance(default, BaseModel) else None))
        else:
            rows.append((key, _type_name(field.annotation), _default_text(default), field.description or ""))
    if issubclass(model, BackendSection):
        kind = model.registry().kind
        for backend, options in model.documented_backends():
            block = f"{prefix}{backend}"
            rows.append((block, "block", "(section)", f"Options of the {backend} {kind}, read when "
                         f"{prefix}name={backend}; validated whenever present."))
            rows.extend(reference_rows(options, block + "."))
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
