"""Shared cases of the DeepSpeed engine tests, and their world-size-2 checks.

Imported by tests/unit/engines/test_deepspeed_engine.py (world size 1, in process) and by
deepspeed_world2.py, whose one torchrun launch runs `world2_checks` at world size 2. Batches, losses and
steps are the FSDP2 cases' (fsdp2_cases.py), so both engines are measured the same way. Importing this
module stops DeepSpeed from compiling its shared-memory comm op on CPU (30-45 s on a cold cache; gloo does
the same job in tests).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from fsdp2_cases import LORA, MICRO_BATCH, critic_step, make_batch, max_difference, policy_step, weights

from rlkit.config.schema import DeepSpeedConfig, OptimConfig
from rlkit.engines.base import DistInfo, EngineSpec

__all__ = ["LORA", "MICRO_BATCH", "build_ds_engine", "critic_step", "make_batch", "max_difference", "policy_step",
           "skip_shm_op_build", "weights"]


def skip_shm_op_build() -> None:
    """Replace DeepSpeed's CPU shared-memory comm op builder before any process group wraps it. The module
    must be taken from sys.modules: `import deepspeed.comm.torch` resolves to the real torch package."""
    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


skip_shm_op_build()


def build_ds_engine(model_dir: str, stage: int = 3, role: str = "actor", dist: DistInfo = DistInfo(), **config):
    """A DeepSpeedEngine with the FSDP2 cases' optimizer (lr 1e-2, clip 1.0, 1 warm-up step, cosine over 10)."""
    from rlkit.engines.deepspeed import DeepSpeedEngine

    lora = config.pop("lora", None)
    optim = None if role == "ref" else OptimConfig(lr=1e-2, grad_clip=1.0, warmup_steps=1, scheduler="cosine")
    spec = EngineSpec(role=role, model_path=model_dir, optim=optim, lora=lora, total_optimizer_steps=10)
    return DeepSpeedEngine(DeepSpeedConfig(zero_stage=stage, logprob_chunk_size=7, **config), spec, dist)


# -- the world-size-2 checks (run by deepspeed_world2.py) ----------------------------------------------
def world2_checks(model_dir: str, dist: DistInfo, scratch: Path) -> dict[str, object]:
    """At world size 2: ZeRO-3 weights, step, resume into ZeRO-1 and export; a ZeRO-2 critic; ZeRO-3 LoRA.
    Collective; the returned measurements are complete on rank 0."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlkit.distributed import all_gather_objects

    batch = make_batch(vocab_size=AutoModelForCausalLM.from_pretrained(model_dir).config.vocab_size)
    results: dict[str, object] = {}

    # ZeRO-3 actor: gathered initial weights, one step, exact resume into ZeRO-1 (another partitioning), export
    actor = build_ds_engine(model_dir, 3, dist=dist)
    results["init_weights"] = weights(actor)
    results["policy_step"] = policy_step(actor, batch, dist)
    results["policy_weights"] = weights(actor)
    actor.save(scratch / "checkpoint")
    resumed = build_ds_engine(model_dir, 1, dist=dist)
    resumed.load(scratch / "checkpoint")
    results["load_difference"] = max_difference(weights(resumed), results["policy_weights"])
    results["resumed_steps"] = (policy_step(actor, batch, dist), policy_step(resumed, batch, dist))
    actor_weights = weights(actor)
    results["resume_difference"] = max_difference(actor_weights, weights(resumed))
    actor.export_hf(scratch / "export")
    if dist.is_main:
        exported = AutoModelForCausalLM.from_pretrained(scratch / "export").state_dict()
        results["export_difference"] = max_difference(actor_weights, dict(exported))
    del actor, resumed

    # ZeRO-2 critic: values and one value-loss step
    critic = build_ds_engine(model_dir, 2, role="critic", dist=dist)
    local_values = critic.compute_values(batch.shard(dist.rank, dist.world_size), micro_batch_size=MICRO_BATCH)
    results["values"] = torch.cat(all_gather_objects(local_values))
    results["critic_step"] = critic_step(critic, batch, dist)
    results["critic_weights"] = weights(critic)
    del critic

    # ZeRO-3 LoRA: one step, merged full weights vs peft's merge_and_unload of the exported adapter
    lora_actor = build_ds_engine(model_dir, 3, dist=dist, lora=LORA)
    results["lora_step"] = policy_step(lora_actor, batch, dist)
    results["lora_weights"] = weights(lora_actor)
    lora_actor.export_hf(scratch / "lora_export")
    if dist.is_main:
        base = AutoModelForCausalLM.from_pretrained(model_dir)
        merged = PeftModel.from_pretrained(base, scratch / "lora_export" / "adapter").merge_and_unload()
        results["lora_merge_difference"] = max_difference(results["lora_weights"], dict(merged.state_dict()))
    return results
