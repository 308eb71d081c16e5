"""The one world-size-2 launch of the DeepSpeed tests (process start-up dominates, so it does everything):
engine parity (parity_run.run_all: FSDP2 and ZeRO-1/2/3, fp32 and bf16 at an RL learning rate) and the
DeepSpeed engine's own checks (deepspeed_cases.world2_checks).

`torchrun --nproc_per_node=2 deepspeed_world2.py MODEL_DIR OUT_DIR`: rank 0 writes OUT_DIR/results.pt
(tensors, numbers and containers: torch.load(weights_only=True) reads it). The tests call
`world2_results(model_dir)`, which launches once per pytest process and caches what came back.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve()


@functools.cache
def world2_results(model_dir: str) -> dict:
    import rlkit

    repo_root = str(Path(rlkit.__file__).parents[1])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT)]
    with tempfile.TemporaryDirectory(prefix="rlkit-ds-world2-") as out_dir:
        run = subprocess.run([*command, model_dir, out_dir], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"torchrun failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
        return torch.load(Path(out_dir) / "results.pt", weights_only=True)


def main(model_dir: str, out_dir: str) -> None:
    from deepspeed_cases import world2_checks
    from parity_run import SMALL_LR_OPTIM, SMALL_LR_STEPS, run_all

    from rlkit.distributed import barrier, broadcast_object, destroy, init_distributed

    dist = init_distributed("cpu")
    results = {"parity": run_all(model_dir, dist),
               "parity_bf16_small_lr": run_all(model_dir, dist, "bf16", SMALL_LR_OPTIM, SMALL_LR_STEPS)}
    with tempfile.TemporaryDirectory(prefix="rlkit-ds-scratch-") as own_scratch:
        scratch = Path(broadcast_object(own_scratch if dist.is_main else None))
        results["deepspeed"] = world2_checks(model_dir, dist, scratch)
        if dist.is_main:
            torch.save(results, Path(out_dir) / "results.pt")
        barrier()  # rank 0's scratch folder goes when every rank is done with it
    destroy()


if __name__ == "__main__":
    main(*sys.argv[1:3])
