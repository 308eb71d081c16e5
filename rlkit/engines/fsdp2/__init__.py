"""The FSDP2 training engine (torch.distributed.fsdp.fully_shard).

`options` (its config block, `engine.fsdp2`) imports without torch's distributed machinery; the engine
itself is imported on first use of `FSDP2Engine`.
"""

from typing import Any

__all__ = ["FSDP2Engine"]


def __getattr__(name: str) -> Any:
    if name == "FSDP2Engine":
        from rlkit.engines.fsdp2.engine import FSDP2Engine

        return FSDP2Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
