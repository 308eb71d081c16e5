"""Engine parity: three GRPO-like optimizer steps under FSDP2 and DeepSpeed ZeRO-1, 2 and 3.

Every engine gets the same tiny model, seed, fp32 precision, optimizer (AdamW, lr 1e-2, warm-up then
cosine, gradient clipping at 1.0 set explicitly: DeepSpeed would clip at 1.0 by itself, FSDP2 not at all)
and the same fixed synthetic batch (rollout-shaped, with old log-probs and advantages). The loss is rlkit's
actor loss (`rlkit.trainer.losses.actor_loss_fn`, AlgorithmConfig defaults: PPO clip, GRPO's token-mean)
normalised by counts over the global batch, so the summed loss does not depend on the world size.

Imported by test_engine_parity.py (world size 1, in process) and run as
`torchrun --nproc_per_node=2 parity_run.py MODEL_DIR OUT_DIR` (world size 2: every engine, one launch);
rank 0 writes the measurements to OUT_DIR/results.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from deepspeed_cases import skip_shm_op_build
from engine_cases import MICRO_BATCH, RESPONSE_WIDTH, hf_logprobs, make_batch

from rlkit.algorithms.advantages import estimator_for
from rlkit.batch import Batch
from rlkit.config.schema import AlgorithmConfig, EngineConfig, OptimConfig
from rlkit.distributed import all_reduce_sum
from rlkit.distributed import DistInfo
from rlkit.engines.base import EngineSpec
from rlkit.trainer.losses import GlobalCounts, actor_loss_fn

ENGINES = ("fsdp2", "zero1", "zero2", "zero3")
NUM_STEPS = 3
OPTIM = OptimConfig(lr=1e-2, weight_decay=0.01, grad_clip=1.0, warmup_steps=1, scheduler="cosine")
# an RL fine-tuning rate: each step moves a weight by about 5e-6, far less than a bf16 rounding step, so under
# bf16 compute only fp32 master weights that keep the loaded values let the steps reach the forward
SMALL_LR_OPTIM = OptimConfig(lr=5e-6, weight_decay=0.01, grad_clip=1.0, warmup_steps=0, scheduler="constant")
SMALL_LR_STEPS = 6

skip_shm_op_build()


def parity_batch(model_dir: str) -> Batch:
    """engine_cases' batch plus old log-probs: the initial model's own, shifted by seeded noise, so that the
    first ratios are not all 1 and PPO's clipping is active on some tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    batch = make_batch(model.config.vocab_size)
    logprobs_BT, _ = hf_logprobs(model, batch)
    noise_BT = 0.1 * torch.randn(logprobs_BT.shape, generator=torch.Generator().manual_seed(1))
    batch["old_logprobs"] = logprobs_BT + noise_BT
    return batch


def build(name: str, model_dir: str, dist: DistInfo, precision: str = "fp32", optim: OptimConfig = OPTIM,
          num_steps: int = NUM_STEPS):
    spec = EngineSpec(role="actor", model_path=model_dir, optim=optim, total_optimizer_steps=num_steps, seed=1)
    if name == "fsdp2":
        from rlkit.engines.fsdp2 import FSDP2Engine

        from rlkit.engines.fsdp2.options import FSDP2Options

        return FSDP2Engine(EngineConfig(precision=precision), FSDP2Options(), spec, dist)
    from rlkit.engines.deepspeed import DeepSpeedEngine

    from rlkit.engines.deepspeed.options import DeepSpeedOptions

    return DeepSpeedEngine(EngineConfig(precision=precision), DeepSpeedOptions(zero_stage=int(name[-1])), spec,
                           dist)


def grpo_steps(engine, batch: Batch, dist: DistInfo, num_steps: int = NUM_STEPS) -> dict[str, list[float]]:
    """`num_steps` optimizer steps on this rank's share; returns the global loss and grad norm of each."""
    cfg = AlgorithmConfig()
    # counts over the global batch (every rank holds all of it here), as the trainer all-reduces them
    counts = GlobalCounts(*GlobalCounts.of_local(batch))
    loss_fn = actor_loss_fn(cfg, estimator_for(cfg.adv_estimator).default_loss_agg_mode, RESPONSE_WIDTH, counts)
    local = batch.shard(dist.rank, dist.world_size)
    losses, grad_norms = [], []
    for _ in range(num_steps):
        metrics = engine.forward_backward(local, loss_fn, micro_batch_size=MICRO_BATCH)
        grad_norms.append(engine.optimizer_step()["grad_norm"])
        losses.append(all_reduce_sum(metrics["actor_loss"], device=dist.device))
    return {"loss": losses, "grad_norm": grad_norms}


def run_all(
    model_dir: str, dist: DistInfo, precision: str = "fp32", optim: OptimConfig = OPTIM, num_steps: int = NUM_STEPS
) -> dict[str, dict[str, list[float]]]:
    batch = parity_batch(model_dir)
    results = {}
    for name in ENGINES:
        engine = build(name, model_dir, dist, precision, optim, num_steps)
        results[name] = grpo_steps(engine, batch, dist, num_steps)
        del engine
    return results


def main(model_dir: str, out_dir: str) -> None:
    from rlkit.distributed import destroy, init_distributed

    dist = init_distributed("cpu")
    results = run_all(model_dir, dist)
    if dist.is_main:
        (Path(out_dir) / "results.json").write_text(json.dumps(results, indent=1))
    destroy()


if __name__ == "__main__":
    main(*sys.argv[1:3])
