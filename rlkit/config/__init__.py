"""Typed configuration: the pydantic models of a run and how they are built from YAML, flags and overrides."""

from rlkit.config.loading import build_config, parse_override, read_yaml
from rlkit.config.schema import (
    AlgorithmConfig,
    CriticConfig,
    DataConfig,
    DeepSpeedConfig,
    FSDP2Config,
    HFRolloutConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    RewardConfig,
    RunConfig,
    SGLangRolloutConfig,
    TrainerConfig,
    VLLMRolloutConfig,
)

__all__ = [
    "AlgorithmConfig",
    "CriticConfig",
    "DataConfig",
    "DeepSpeedConfig",
    "FSDP2Config",
    "HFRolloutConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardConfig",
    "RunConfig",
    "SGLangRolloutConfig",
    "TrainerConfig",
    "VLLMRolloutConfig",
    "build_config",
    "parse_override",
    "read_yaml",
]
