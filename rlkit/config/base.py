"""The base of every config section, and the check that a plugin named in a config is registered."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# A file or folder path from a config: a leading ~ is the user's home folder (a shell does that on the command
# line, not inside `key=~/path` or a YAML file). Names that are not paths (builtin:tiny, hub ids) pass unchanged.
LocalPath = Annotated[str, AfterValidator(os.path.expanduser)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, and a built config is never changed (runtime
    values such as the world size are passed as arguments; a changed copy is `model_copy(update=...)`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_registered(registry_name: str, name: str) -> str:
    """A plugin's name must be registered (entry point) or a reference the registry can import later."""
    from rlkit import registry
    from rlkit.registry import is_reference

    known = getattr(registry, registry_name)
    if name not in known and not is_reference(name):
        raise ValueError(known.unknown_message(name))
    return name
