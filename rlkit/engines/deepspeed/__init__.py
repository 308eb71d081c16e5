"""The DeepSpeed training engine (ZeRO stages 1, 2 and 3); needs `pip install 'rlkit[deepspeed]'`.

`options` (its config block, `engine.deepspeed`) imports without DeepSpeed; the engine itself is imported
on first use of `DeepSpeedEngine`.
"""

from typing import Any

__all__ = ["DeepSpeedEngine"]


def __getattr__(name: str) -> Any:
    if name == "DeepSpeedEngine":
        from rlkit.engines.deepspeed.engine import DeepSpeedEngine

        return DeepSpeedEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
