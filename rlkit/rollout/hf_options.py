"""The Hugging Face rollout's own options: the `rollout.hf` block (the shared ones are rlkit.config.rollouts)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rlkit.config.base import Section


class HFOptions(Section):
    batch_size: Annotated[
        int | None, Field(ge=1, description="Prompts per generate call (memory knob); default: all at once.")
    ] = None
