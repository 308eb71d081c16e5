"""Registers the built-in tools in TOOLS; the registry imports this module on its first lookup."""

from __future__ import annotations

from rlkit.registry import TOOLS
from rlkit.tools.calculator import calculator
from rlkit.tools.python import python

TOOLS.register("calculator", calculator)
TOOLS.register("python", python)
