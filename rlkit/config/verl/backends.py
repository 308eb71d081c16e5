"""The backends by their verl names, from their registry entries (rlkit.registry.Backend.verl_names and
verl_options). The registry is imported when a rule runs, not when the translation is imported."""

from __future__ import annotations

from typing import Any

from rlkit.config.verl.translation import Unsupported


def train_engines() -> Any:
    from rlkit.registry import TRAIN_ENGINES

    return TRAIN_ENGINES


def rollout_engines() -> Any:
    from rlkit.registry import ROLLOUT_ENGINES

    return ROLLOUT_ENGINES


def backend_for(registry: Any, verl_name: Any, kind: str, flag: str) -> str:
    for entry in registry.entries():
        if entry.backend is not None and verl_name in entry.backend.verl_names:
            return entry.name
    names = ", ".join(f"{entry.name} (verl {'/'.join(entry.backend.verl_names)})" for entry in registry.entries()
                      if entry.backend is not None and entry.backend.verl_names)
    raise Unsupported(f"rlkit has no {kind} for verl's {verl_name!r}; choose one of {names} with {flag}")
