"""The FSDP2 engine's GPU paths, which the CPU suite cannot reach: bf16 mixed precision, NCCL, cpu_offload,
offload()/onload(), offload_ref, gradient checkpointing and LoRA in bf16.

Run by hand on a GPU machine (it is not collected by pytest):
    python tests/unit/engines/scripts/fsdp2_gpu_check.py OUT.json                       # world size 1
    torchrun --standalone --nproc_per_node=2 tests/unit/engines/scripts/fsdp2_gpu_check.py OUT.json
Rank 0 writes the measurements to OUT.json; a failed check raises.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from engine_cases import LORA, MICRO_BATCH, make_batch, max_difference, policy_step, weights
from fsdp2_cases import build_engine

from rlkit.distributed import broadcast_object, destroy, init_distributed
from rlkit.models.tiny import ensure_tiny_model


def main(out_file: str) -> None:
    dist = init_distributed("cuda")
    model_dir = str(ensure_tiny_model(Path(tempfile.gettempdir()) / "rlkit-gpu-check"))  # every rank races to build
    scratch = Path(broadcast_object(tempfile.mkdtemp(prefix="rlkit-gpu-") if dist.is_main else None))
    batch = make_batch(vocab_size=320)
    results: dict[str, object] = {"world_size": dist.world_size, "torch": torch.__version__}

    # bf16 ("auto" on cuda): fp32 master weights, a bf16 reference with the actor's log-probs
    actor = build_engine(model_dir, dist=dist)
    ref = build_engine(model_dir, role="ref", dist=dist, offload_ref=True)
    local = batch.shard(dist.rank, dist.world_size)
    actor_logprobs = actor.compute_logprobs(local, micro_batch_size=MICRO_BATCH).logprobs
    ref_logprobs = ref.compute_logprobs(local, micro_batch_size=MICRO_BATCH).logprobs
    assert actor_logprobs.device.type == "cpu" and actor_logprobs.dtype == torch.float32
    results["ref_equals_actor"] = bool(torch.equal(actor_logprobs, ref_logprobs))
    results["ref_param_device_after_pass"] = next(ref.scorer.parameters()).device.type
    results["master_dtypes"] = sorted({str(t.dtype) for _, t in actor.full_weights()})
    results["steps"] = [policy_step(actor, batch, dist) for _ in range(2)]
    results["bf16_weights"] = {name: t.float().sum().item() for name, t in list(weights(actor).items())[:3]}

    # save -> load -> one more identical step
    actor.save(scratch / "checkpoint")
    resumed = build_engine(model_dir, dist=dist)
    resumed.load(scratch / "checkpoint")
    policy_step(actor, batch, dist)
    policy_step(resumed, batch, dist)
    results["resume_difference"] = max_difference(weights(actor), weights(resumed))
    actor.export_hf(scratch / "export")
    del resumed

    # offload() frees the device; onload() brings everything back and training goes on
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    actor.offload()
    results["memory_before_offload"], results["memory_after_offload"] = before, torch.cuda.memory_allocated()
    actor.onload()
    results["step_after_onload"] = policy_step(actor, batch, dist)
    del actor, ref

    # cpu_offload: shards, gradients and optimizer state on CPU
    offloaded = build_engine(model_dir, dist=dist, cpu_offload=True)
    results["cpu_offload_param_device"] = next(offloaded.scorer.parameters()).device.type
    results["cpu_offload_step"] = policy_step(offloaded, batch, dist)
    results["cpu_offload_weights_device"] = next(offloaded.full_weights())[1].device.type
    offloaded.save(scratch / "offloaded")
    reloaded = build_engine(model_dir, dist=dist, cpu_offload=True)
    reloaded.load(scratch / "offloaded")
    policy_step(offloaded, batch, dist)
    policy_step(reloaded, batch, dist)
    results["cpu_offload_resume_difference"] = max_difference(weights(offloaded), weights(reloaded))
    del offloaded, reloaded

    # gradient checkpointing and LoRA in bf16
    checkpointed = build_engine(model_dir, dist=dist, gradient_checkpointing=True)
    plain = build_engine(model_dir, dist=dist)
    results["checkpointing_loss"] = [policy_step(engine, batch, dist)["loss"] for engine in (checkpointed, plain)]
    results["checkpointing_difference"] = max_difference(weights(checkpointed), weights(plain))
    del checkpointed, plain
    lora = build_engine(model_dir, dist=dist, lora=LORA)
    results["lora_step"] = policy_step(lora, batch, dist)
    base = lora.compute_logprobs(local, micro_batch_size=MICRO_BATCH, base_model=True).logprobs
    results["lora_base_equals_actor_init"] = bool(torch.equal(base, actor_logprobs))
    lora.export_hf(scratch / "lora_export")
    if dist.is_main:
        results["lora_adapter_files"] = sorted(p.name for p in (scratch / "lora_export" / "adapter").iterdir())

    if dist.is_main:
        Path(out_file).write_text(json.dumps(results, indent=1))
    destroy()


if __name__ == "__main__":
    main(sys.argv[1])
