"""The DeepSpeed training engine (ZeRO stages 1, 2 and 3); needs `pip install 'rlkit[deepspeed]'`."""

from rlkit.engines.deepspeed.engine import DeepSpeedEngine

__all__ = ["DeepSpeedEngine"]
