"""Short SFT runs on the tiny model, shared by the in-process tests and the world-size-2 launch.

Run as `torchrun --standalone --nproc_per_node=2 sft_runs.py MODEL_DIR OUT_DIR [ENGINE]`: every world-2 run
happens in this one launch (process start-up dominates), each writing its own output directory under
OUT_DIR; the pytest side reads their metrics and checkpoints and compares them with world-size-1 runs.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from rlkit.config.loading import build_config
from rlkit.config.sft import SFTConfig
from rlkit.distributed import DistInfo
from rlkit.trainer.sft import SFTTrainer

LORA = ("model.lora.rank=4", "model.lora.alpha=8", "optim.lr=2e-2")
COMPARED = ("loss", "val/loss", "grad_norm", "lr", "entropy", "tokens/trained")


class Interrupted(Exception):
    """Stands in for a crash in the middle of a run."""


def sft_config(model_dir: str, output_dir: Path | str, *overrides: str, engine: str = "fsdp2") -> SFTConfig:
    """The built-in letters demonstrations on the tiny model: global batch 8 in micro-batches of 2."""
    base = [
        f"model.path={model_dir}", f"trainer.output_dir={output_dir}", f"engine.name={engine}",
        "data.train_batch_size=8", "data.micro_batch_size_per_device=2", "data.max_val_samples=5",
        "optim.lr=5e-3", "trainer.total_steps=3", "trainer.test_freq=1", "trainer.loggers=[jsonl]",
        "trainer.progress_bar=false", "trainer.val_before_train=true",
    ]
    if engine == "deepspeed":
        base += ["engine.deepspeed.zero_stage=2"]
        skip_shm_op_build()
    return build_config(SFTConfig, None, base + list(overrides))


def skip_shm_op_build() -> None:
    """DeepSpeed compiles a CPU shared-memory comm op (30-45 s when cold) that gloo tests do not need. Replaced
    in the module object, taken from sys.modules: `import deepspeed.comm.torch` resolves to the real torch."""
    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def run(cfg: SFTConfig, dist: DistInfo, *, crash_at_step: int | None = None) -> SFTTrainer:
    """Fit; with crash_at_step, raise Interrupted when that step would start (checkpoints before it stay)."""
    trainer = SFTTrainer(cfg, dist)
    if crash_at_step is not None:
        step = trainer.train_step

        def crashing_step(indices):
            if trainer.step == crash_at_step:
                raise Interrupted
            return step(indices)

        trainer.train_step = crashing_step
        try:
            trainer.fit()
        except Interrupted:
            trainer.logger.close()
            return trainer
        raise AssertionError(f"the run ended before step {crash_at_step}")
    trainer.fit()
    return trainer


def run_resumed(cfg: SFTConfig, dist: DistInfo, crash_at_step: int) -> SFTTrainer:
    """Crash at `crash_at_step`, then start again with trainer.resume=auto."""
    run(cfg, dist, crash_at_step=crash_at_step)
    return run(cfg, dist)


def read_metrics(output_dir: Path | str) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def compared(metrics: list[dict]) -> list[dict]:
    """The metrics that must not depend on timing: per step, the COMPARED keys present."""
    return [{"step": m["step"], **{k: m[k] for k in COMPARED if k in m}} for m in metrics]


def checkpoint_weights(output_dir: Path | str, step: int) -> dict[str, torch.Tensor]:
    return load_file(Path(output_dir) / "checkpoints" / f"step_{step:08d}" / "actor" / "model.safetensors")


def main(model_dir: str, out_dir: str, engine: str) -> None:
    from rlkit.distributed import destroy, init_distributed

    dist = init_distributed("cpu")
    out = Path(out_dir)
    try:
        run(sft_config(model_dir, out / "full", engine=engine), dist)
        run(sft_config(model_dir, out / "lora", *LORA, engine=engine), dist)
        # LoRA dropout: each rank's RNG state must come back for the resumed run to match
        resume = ["trainer.total_steps=4", "trainer.save_freq=2", *LORA, "model.lora.dropout=0.2"]
        run(sft_config(model_dir, out / "straight", *resume, engine=engine), dist)
        run_resumed(sft_config(model_dir, out / "resumed", *resume, engine=engine), dist, crash_at_step=3)
    finally:
        destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "fsdp2")
