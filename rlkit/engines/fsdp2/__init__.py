"""The FSDP2 training engine (torch.distributed.fsdp.fully_shard)."""

from rlkit.engines.fsdp2.engine import FSDP2Engine

__all__ = ["FSDP2Engine"]
