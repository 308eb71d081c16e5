"""Which weights `rlkit generate` and `rlkit eval` sample from: MODEL_OR_CHECKPOINT resolved to a Policy.

MODEL is any of
  * a Hugging Face folder (an `rlkit export` or `rlkit model import` output, a downloaded model) or a hub id
    in the local cache;
  * an rlkit checkpoint, `OUTPUT_DIR/checkpoints/step_N` of `rlkit train` or `rlkit sft` (it has actor/ and
    config.yaml): the run's engine is rebuilt on this process and loads it, so every engine's format and LoRA
    runs (merged on the fly) work alike;
  * a run's output directory (it has checkpoints/): its latest good checkpoint;
  * `builtin:tiny`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class Policy:
    """Where generation takes its weights from: a HF folder, plus full weights to load over it (checkpoints:
    a generator over the rebuilt training engine, which it keeps alive until it is dropped).

    `data_settings` are the run's prompt rendering (data.prompt_format, data.system_prompt) for a checkpoint,
    so that it is evaluated on prompts rendered as it was trained on; empty for a folder.
    """

    model_path: str
    tokenizer_path: str
    trust_remote_code: bool = False
    weights: Iterator[Any] | None = None
    description: str = ""
    data_settings: dict[str, Any] = field(default_factory=dict)


def resolve_policy(model: str, dist: Any) -> Policy:
    """A Policy for MODEL (see the module docstring); errors say what MODEL should be."""
    from rlkit.config.schema import TrainerConfig
    from rlkit.errors import CheckpointError
    from rlkit.trainer.checkpoint import CheckpointManager
    from rlkit.trainer.components import resolve_model_path

    path = Path(model).expanduser()
    if (path / "checkpoints").is_dir() and not (path / "config.json").is_file():
        latest = CheckpointManager(path / "checkpoints", keep_last=1, is_main=True).latest()
        if latest is None:
            raise CheckpointError(f"{path}/checkpoints holds no complete checkpoint to generate with")
        path = latest
    if (path / "actor").is_dir() and (path / "config.yaml").is_file():
        return checkpoint_policy(path, dist)
    if model.startswith("builtin:"):
        model = resolve_model_path(model, Path(TrainerConfig().output_dir))
    return Policy(model, model, description=f"model {model}")


def checkpoint_policy(checkpoint: Path, dist: Any) -> Policy:
    """The policy of an rlkit checkpoint: its run's engine, rebuilt here, loads actor/ and streams full weights
    (LoRA merged) into the rollout model, whatever format the engine writes."""
    from rlkit.config.kinds import model_for_file
    from rlkit.config.loading import load_saved_config
    from rlkit.engines.base import EngineSpec
    from rlkit.trainer.checkpoint import verify
    from rlkit.trainer.components import build_engine, resolve_model_path

    verify(checkpoint)
    config_file = checkpoint / "config.yaml"
    cfg = load_saved_config(model_for_file(str(config_file)), config_file)
    # builtin:tiny is rebuilt (deterministically) where the run kept it: OUTPUT_DIR/checkpoints/step_N
    model_path = resolve_model_path(cfg.model.path, checkpoint.parent.parent)
    engine = build_engine(cfg, EngineSpec(role="actor", model_path=model_path, optim=cfg.optim, lora=cfg.model.lora,
                                          trust_remote_code=cfg.model.trust_remote_code, seed=cfg.trainer.seed), dist)
    engine.load(checkpoint / "actor")
    tokenizer_dir = checkpoint / "tokenizer"
    return Policy(
        model_path,
        str(tokenizer_dir) if tokenizer_dir.is_dir() else cfg.model.tokenizer_path or model_path,
        cfg.model.trust_remote_code,
        weights=engine.full_weights(),
        description=f"checkpoint {checkpoint} (base {model_path}{', LoRA merged' if cfg.model.lora else ''})",
        data_settings={"prompt_format": cfg.data.prompt_format, "system_prompt": cfg.data.system_prompt},
    )
