"""Typed configuration: the pydantic models of a run and how they are built from YAML, flags and overrides."""

from rlkit.config.loading import build_config, parse_override, read_yaml
from rlkit.config.schema import (
    AlgorithmConfig,
    CriticConfig,
    DataConfig,
    EngineConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    RewardConfig,
    RolloutConfig,
    RunConfig,
    TrainerConfig,
)

__all__ = [
    "AlgorithmConfig",
    "CriticConfig",
    "DataConfig",
    "EngineConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardConfig",
    "RolloutConfig",
    "RunConfig",
    "TrainerConfig",
    "build_config",
    "parse_override",
    "read_yaml",
]
