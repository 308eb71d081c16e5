"""Export an rlkit checkpoint (RL or SFT) to a Hugging Face folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rlkit.config.loading import read_yaml
from rlkit.engines.base import DistInfo, EngineSpec
from rlkit.errors import CheckpointError, RlkitError
from rlkit.trainer.checkpoint import verify


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or a run's output directory (its latest checkpoint)."""
    if (path / "checkpoints").is_dir():
        steps = sorted(p for p in (path / "checkpoints").iterdir() if p.name.startswith("step_"))
        if not steps:
            raise CheckpointError(f"{path} has no checkpoints under {path / 'checkpoints'}")
        path = steps[-1]
    if not (path / "config.yaml").is_file() or not (path / "actor").is_dir():
        raise CheckpointError(f"{path} is not an rlkit checkpoint (it needs config.yaml and actor/)")
    verify(path)
    return path


def export_checkpoint(checkpoint: Path, out: Path, *, merge_lora: bool = False) -> Path:
    from rlkit.cli.configs import config_models
    from rlkit.config.loading import validate
    from rlkit.trainer.components import resolve_model_path
    from rlkit.registry import TRAIN_ENGINES

    checkpoint = resolve_checkpoint(checkpoint)
    if out.exists() and any(out.iterdir()):
        raise RlkitError(f"export target {out} exists and is not empty; choose a new directory")
    tree = read_yaml(checkpoint / "config.yaml")
    model_cls = config_models()["sft" if tree.get("kind") == "sft" else "train"]
    cfg = validate(model_cls, tree, source=str(checkpoint / "config.yaml"))
    if cfg.model.lora is not None and not merge_lora:
        raise RlkitError(
            f"{checkpoint} was trained with LoRA: pass --merge-lora to write merged weights (the adapter is "
            "written to OUT/adapter as well)"
        )
    model_path = resolve_model_path(cfg.model.path, Path(cfg.trainer.output_dir))
    spec = EngineSpec(role="actor", model_path=model_path, optim=cfg.optim, lora=cfg.model.lora,
                      trust_remote_code=cfg.model.trust_remote_code)
    # Export runs in one process on the CPU: engines accept world size 1 without a process group.
    engine_config = cfg.engine.model_copy(update={"precision": "fp32"})
    engine = TRAIN_ENGINES.get(cfg.engine.name)(engine_config, spec, DistInfo())
    engine.load(checkpoint / "actor")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    engine.export_hf(tmp)
    tokenizer_dir = checkpoint / "tokenizer"
    if tokenizer_dir.is_dir():
        for file in tokenizer_dir.iterdir():
            shutil.copy2(file, tmp / file.name)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out
