"""The rollout engines' in-place weight updates: name and shape checks (the buckets they load come from
rlkit.buckets).

- `weight_shapes`: Hugging Face parameter names and shapes of a checkpoint's architecture (meta device).
- `check_weight`: ValueError naming a weight the rollout model lacks or holds in another shape.

Kept free of any engine import (transformers is imported by `weight_shapes` only) so that it runs on CPU.
"""

from __future__ import annotations

import difflib
from typing import Mapping

import torch
from torch import Tensor


def weight_shapes(model_path: str, *, trust_remote_code: bool = False) -> dict[str, tuple[int, ...]]:
    """Hugging Face parameter names and shapes of model_path's architecture (built on the meta device).

    For engines whose own loader cannot be asked (SGLang's `load_weights` skips names it does not know and
    asserts on shapes inside the engine's process). Tied weights appear under both names.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlkit.models.loading import local_folder

    config = AutoConfig.from_pretrained(local_folder(model_path, "model path"), trust_remote_code=trust_remote_code,
                                        local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_weight(name: str, tensor: Tensor, shapes: Mapping[str, tuple[int, ...]], model_path: str) -> None:
    """ValueError naming the weight when the rollout model (from model_path) has no such name or another shape."""
    expected = shapes.get(name)
    if expected is None:
        close = difflib.get_close_matches(name, list(shapes), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(
            f"update_weights: unknown weight '{name}': the rollout model from {model_path} has no such parameter"
            f"{hint}. Weights must use Hugging Face names without wrapper prefixes."
        )
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(
            f"update_weights: weight '{name}' has shape {tuple(tensor.shape)}, but the rollout model's '{name}' has "
            f"shape {tuple(expected)}; the trainer and rollout models differ"
        )
