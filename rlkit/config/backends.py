"""Sections that select a backend by name (`engine`, `rollout`): shared options, and one block per backend.

Options every backend of a kind reads are the section's own fields (`rollout.n`, `engine.precision`). The
options of one backend live in a block named after it (`rollout.vllm.gpu_memory_utilization`,
`engine.deepspeed.zero_stage`), typed by the options class of that backend's registry entry
(rlkit.registry.Backend), so that this module knows no backend by name. A recipe may carry a block for every
backend: swapping `name` keeps each backend's tuned options; every block present is validated; only the
selected one is used (`section.options`).

A dump (`model_dump`) holds the selected backend's block, filled with its defaults; with the serialization
context {"all_blocks": True}, the block of every registered backend.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from rlkit.config.base import Section, check_registered
from rlkit.errors import PluginError

ALL_BLOCKS = "all_blocks"  # serialization context key: dump every registered backend's block


class BackendSection(Section):
    """Base of `engine` and `rollout`: subclasses declare `name` (with its default) and the shared options."""

    registry_name: ClassVar[str]  # the attribute of rlkit.registry that holds these backends
    section_key: ClassVar[str]  # where the section sits in a run config, for messages

    name: str
    _blocks: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    # -- what the trainer reads -------------------------------------------------------------------
    @property
    def options(self) -> Any:
        """The selected backend's options block (its defaults when none was given); None when it takes none."""
        return self.block(self.name)

    def block(self, name: str) -> Any:
        """The options block of backend `name`: as given, else that backend's defaults (None: it takes none)."""
        if name in self._blocks:
            return self._blocks[name]
        options_class = self.registry().options_class(name)
        return None if options_class is None else options_class()

    def __eq__(self, other: object) -> bool:
        # A block given with its defaults is the same config as no block: a dump (which writes the selected
        # block out) reads back equal.
        if type(other) is not type(self):
            return NotImplemented
        names = set(self._blocks) | set(other._blocks)
        return self.__dict__ == other.__dict__ and all(self.block(name) == other.block(name) for name in names)

    __hash__ = None  # type: ignore[assignment]  # mutable, as every section

    @classmethod
    def registry(cls) -> Any:
        from rlkit import registry

        return getattr(registry, cls.registry_name)

    @classmethod
    def block_model(cls, name: str) -> type[BaseModel] | None:
        """The options class of the block `name`, or None (not a backend, or one without options)."""
        if name in cls.model_fields or name not in cls.registry():
            return None
        try:
            return cls.registry().options_class(name)
        except PluginError:
            return None

    @classmethod
    def documented_backends(cls) -> list[tuple[str, type[BaseModel]]]:
        """(name, options class) of the built-in backends, for the config reference."""
        found = []
        for entry in cls.registry().entries():
            if entry.source == "built-in" and entry.backend is not None and entry.backend.options is not None:
                found.append((entry.name, cls.registry().options_class(entry.name)))
        return found

    # -- validation -------------------------------------------------------------------------------
    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return check_registered(cls.registry_name, name)

    @model_validator(mode="wrap")
    @classmethod
    def _validate_blocks(cls, data: Any, handler: ModelWrapValidatorHandler) -> BackendSection:
        """Split the given keys into shared options and backend blocks; validate every block with its backend's
        options class. Errors of the shared options and of every block come back together."""
        if not isinstance(data, dict):
            return handler(data)
        fields = {field.alias or key for key, field in cls.model_fields.items()} | set(cls.model_fields)
        selected = data.get("name", cls.model_fields["name"].default)
        shared: dict[str, Any] = {}
        blocks: dict[str, BaseModel] = {}
        errors: list[dict[str, Any]] = []
        for key, value in data.items():
            if key in fields:
                shared[key] = value
            elif cls._is_block_key(key, selected):
                block, block_errors = cls._validate_block(key, value)
                errors += block_errors
                if block is not None:
                    blocks[key] = block
            elif (moved := cls._moved_option(key, selected)) is not None:
                errors.append(_custom("moved_key", moved, (key,), value))
            else:
                shared[key] = value  # pydantic reports it as an unknown key
        section = None
        try:
            section = handler(shared)
        except ValidationError as error:
            errors = [*error.errors(), *errors]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, [_details(item) for item in errors])
        section._blocks = blocks
        return section

    @classmethod
    def _is_block_key(cls, key: str, selected: Any) -> bool:
        from rlkit.registry import is_reference

        return key == selected or is_reference(key) or key in cls.registry()

    @classmethod
    def _validate_block(cls, key: str, value: Any) -> tuple[BaseModel | None, list[dict[str, Any]]]:
        where = f"{cls.section_key}.{key}"
        try:
            options_class = cls.registry().options_class(key)
        except PluginError as error:
            return None, [_custom("plugin_error", str(error), (key,), value)]
        if options_class is None:
            return None, [_custom("no_options", f"the {cls.registry().kind} '{key}' takes no options (its registry "
                                  f"entry declares no options block); remove {where}", (key,), value)]
        if value is not None and not isinstance(value, dict):
            return None, [_custom("block_type", f"{where} is the {key} options block and must be a mapping "
                                  f"({where}.OPTION=value)", (key,), value)]
        try:
            return options_class.model_validate(value or {}), []
        except ValidationError as error:
            return None, [{**item, "loc": (key, *item["loc"])} for item in error.errors()]

    @classmethod
    def _moved_option(cls, key: str, selected: Any) -> str | None:
        """For a key that is an option of some backend's block (the flat layout before blocks): where it lives."""
        if key == "options":
            return (f"a backend's options now live in its own block: write {cls.section_key}.<name>.OPTION "
                    f"({cls.section_key}.{selected}.OPTION for the selected one)")
        owners = []
        for entry in cls.registry().entries():  # backends whose entry says what they are: no plugin is imported
            if entry.backend is None or entry.backend.options is None:
                continue
            try:
                options_class = cls.registry().options_class(entry.name)
            except PluginError:
                continue  # a plugin whose options cannot be imported here says nothing about this key
            if key in options_class.model_fields:
                owners.append(entry.name)
        if not owners:
            return None
        owners.sort(key=lambda owner: owner != selected)  # the selected backend's block first
        places = " or ".join(f"{cls.section_key}.{owner}.{key}" for owner in owners)
        whose = f"the {owners[0]} {cls.registry().kind}" if len(owners) == 1 else \
            f"the {' and '.join(owners)} {cls.registry().kind}s"
        return (f"'{key}' is an option of {whose}, kept in a block of its own so that recipes survive a swap of "
                f"{cls.section_key}.name: write {places}")

    @classmethod
    def upgrade_flat(cls, section: dict[str, Any]) -> dict[str, Any]:
        """A section saved before blocks existed (checkpoints' config.yaml): the selected backend's options,
        written flat beside the shared ones (or, for a plugin, under `options`), moved into its block."""
        fields = {field.alias or key for key, field in cls.model_fields.items()}
        name = section.get("name", cls.model_fields["name"].default)
        try:
            options_class = cls.registry().options_class(name)
        except PluginError:
            return section
        own = set(options_class.model_fields) if options_class is not None else set()
        upgraded = {key: value for key, value in section.items() if key not in own or key in fields}
        block = {key: value for key, value in section.items() if key in own and key not in fields}
        block.update(upgraded.pop("options", None) or {})
        if block:
            upgraded[name] = {**block, **(upgraded.get(name) or {})}
        return upgraded

    # -- dumping ----------------------------------------------------------------------------------
    @model_serializer(mode="wrap")
    def _dump_with_blocks(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        every = bool(info.context and info.context.get(ALL_BLOCKS))
        names = [self.name]
        if every:
            names += [name for name in (*self.registry().names(), *self._blocks) if name not in names]
        for name in names:
            try:
                block = self.block(name)
            except PluginError:
                if name == self.name:
                    raise
                continue  # --all: a plugin that cannot be imported here has no block to show
            if block is not None:
                data[name] = block.model_dump(mode=info.mode, by_alias=info.by_alias)
        return data


def _custom(kind: str, message: str, loc: tuple, value: Any) -> dict[str, Any]:
    return {"type": PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}")), "loc": loc,
            "input": value}


def _details(item: dict[str, Any]) -> InitErrorDetails:
    """An error from `.errors()` (or built here) as the details ValidationError.from_exception_data takes."""
    kind = item["type"]
    if isinstance(kind, str) and "ctx" not in item and kind not in _PLAIN_TYPES:
        kind = PydanticCustomError(kind, item["msg"].replace("{", "{{").replace("}", "}}"))
    details: dict[str, Any] = {"type": kind, "loc": item["loc"], "input": item.get("input")}
    if "ctx" in item:
        details["ctx"] = item["ctx"]
    return InitErrorDetails(**details)  # type: ignore[typeddict-item]


# Error types pydantic-core rebuilds from their name alone (no context needed).
_PLAIN_TYPES = {"extra_forbidden", "missing", "int_parsing", "float_parsing", "bool_parsing", "string_type",
                "int_type", "float_type", "bool_type", "dict_type", "list_type", "tuple_type", "none_required",
                "model_type", "int_from_float", "finite_number"}
