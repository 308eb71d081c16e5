"""The base of every config section, and the check that a plugin named in a config is registered."""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict

from rlkit.config.auto import AUTO, Choice, Facts

# A file or folder path from a config: a leading ~ is the user's home folder (a shell does that on the command
# line, not inside `key=~/path` or a YAML file). Names that are not paths (builtin:tiny, hub ids) pass unchanged.
LocalPath = Annotated[str, AfterValidator(os.path.expanduser)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, and a built config is never changed (runtime
    values such as the world size are passed as arguments; a changed copy is `model_copy(update=...)`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The section's options that accept `auto`, each with what `auto` stands for where no run resolved it
    # (rlkit.config.auto).
    FIXED_DEFAULTS: ClassVar[dict[str, Any]] = {}

    def resolve_auto(self, **resolved: Any) -> Section:
        """A copy whose `auto` options hold the values in `resolved` (a run's, rlkit.trainer.speed), the others
        their FIXED_DEFAULTS; options given a value keep it. The section itself is never changed."""
        unknown = set(resolved) - set(self.FIXED_DEFAULTS)
        assert not unknown, f"{type(self).__name__} has no auto option {sorted(unknown)}"
        update = {name: resolved.get(name, fixed) for name, fixed in self.FIXED_DEFAULTS.items()
                  if getattr(self, name) == AUTO}
        return self.model_copy(update=update) if update else self

    def choose_auto(self, facts: Facts) -> dict[str, Choice]:
        """A backend's options block resolves its own `auto` options here (the shared ones are resolved by
        rlkit.trainer.speed): {option: Choice} for each of FIXED_DEFAULTS. The base has none."""
        return {}


def check_registered(registry_name: str, name: str) -> str:
    """A plugin's name must be registered (entry point) or a reference the registry can import later."""
    from rlkit import registry
    from rlkit.registry import is_reference

    known = getattr(registry, registry_name)
    if name not in known and not is_reference(name):
        raise ValueError(known.unknown_message(name))
    return name
