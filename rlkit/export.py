"""Export an rlkit checkpoint (RL or SFT) to a Hugging Face folder.

Writes only OUT, staged in a new sibling directory `.OUT.<random>.tmp` and renamed into place (a fresh name each
time: a `.OUT.tmp` someone else made is never touched). A run on `builtin:tiny` rebuilds
the tiny base model where the run kept it (RUN_DIR/builtin_tiny) when it is there, else in a temporary
directory that is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rlkit.config.loading import read_yaml
from rlkit.distributed import DistInfo
from rlkit.engines.base import EngineSpec
from rlkit.errors import CheckpointError, RlkitError
from rlkit.trainer.checkpoint import CheckpointManager, verify


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or a run's output directory (its latest checkpoint)."""
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory or a run's output directory")
    if (path / "checkpoints").is_dir():
        latest = CheckpointManager(path / "checkpoints", keep_last=1, is_main=True).latest()  # the newest good one
        if latest is None:
            raise CheckpointError(f"{path} has no checkpoints under {path / 'checkpoints'}")
        path = latest
    if not (path / "config.yaml").is_file() or not (path / "actor").is_dir():
        raise CheckpointError(f"{path} is not an rlkit checkpoint (it needs config.yaml and actor/)")
    verify(path)
    return path


def export_checkpoint(checkpoint: Path, out: Path, *, merge_lora: bool = False) -> Path:
    from rlkit.config.kinds import config_models
    from rlkit.config.loading import load_saved_config
    from rlkit.trainer.components import resolve_model_path
    from rlkit.registry import TRAIN_ENGINES

    checkpoint = resolve_checkpoint(checkpoint)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RlkitError(f"export target {out} exists and is not an empty directory; choose a new directory")
    tree = read_yaml(checkpoint / "config.yaml")
    model_cls = config_models()["sft" if tree.get("kind") == "sft" else "train"]
    cfg = load_saved_config(model_cls, checkpoint / "config.yaml")
    if cfg.model.lora is not None and not merge_lora:
        raise RlkitError(
            f"{checkpoint} was trained with LoRA: pass --merge-lora to write merged weights (the adapter is "
            "written to OUT/adapter as well)"
        )
    run_dir = checkpoint.parent.parent  # OUTPUT_DIR/checkpoints/step_N
    with tempfile.TemporaryDirectory(prefix="rlkit-export-") as scratch:
        base_dir = run_dir if (run_dir / "builtin_tiny").is_dir() else Path(scratch)
        model_path = resolve_model_path(cfg.model.path, base_dir)
        spec = EngineSpec(role="actor", model_path=model_path, optim=cfg.optim, lora=cfg.model.lora,
                          trust_remote_code=cfg.model.trust_remote_code)
        # Export runs in one process on the CPU: engines accept world size 1 without a process group.
        engine_config = cfg.engine.model_copy(update={"precision": "fp32"})
        engine = TRAIN_ENGINES.get(cfg.engine.name)(engine_config, cfg.engine.options, spec, DistInfo())
        engine.load(checkpoint / "actor")
        tmp = _new_staging_dir(out)
        try:
            engine.export_hf(tmp)
            tokenizer_dir = checkpoint / "tokenizer"
            if tokenizer_dir.is_dir():
                for file in tokenizer_dir.iterdir():
                    shutil.copy2(file, tmp / file.name)
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing half-written
            raise
    return out


def _new_staging_dir(out: Path) -> Path:
    """A new, uniquely named sibling of `out` with the permissions a plain mkdir would give it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp
