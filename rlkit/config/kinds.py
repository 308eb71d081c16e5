"""The kinds of config file (an RL run, an SFT run) and how a file says which it is."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rlkit.config.loading import read_yaml
from rlkit.config.schema import RunConfig
from rlkit.config.sft import SFTConfig


def config_models() -> dict[str, type[BaseModel]]:
    """The config model of each kind, by the command that reads it."""
    return {"train": RunConfig, "sft": SFTConfig}


def model_for_file(path: str | Path) -> type[BaseModel]:
    """SFT recipes say `kind: sft` or live in files named sft*; everything else is an RL run."""
    tree = read_yaml(path)
    kind = tree.get("kind") if isinstance(tree.get("kind"), str) else None
    if kind is None and "sft" in Path(path).name:
        kind = "sft"
    return config_models().get(kind or "train", RunConfig)
