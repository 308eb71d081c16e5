"""The FSDP2 engine's test builder, and its world-size-2 run.

Imported by the pytest files (world size 1, in process) and run as a script under
`torchrun --nproc_per_node=2 fsdp2_cases.py MODEL_DIR OUT_DIR` (world size 2): rank 0 writes what it
measured to OUT_DIR/results.pt and the pytest side compares it with the world-size-1 numbers.
Every check of the world-2 run happens in this one launch, since process start-up dominates. The batch,
losses, steps and measurements are every engine's (engine_cases.py).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from engine_cases import (
    LORA,
    actor_results,
    critic_results,
    engine_configs,
    engine_spec,
    lora_results,
    make_batch,
    policy_step,
    weights,
)

from rlkit.distributed import DistInfo
from rlkit.engines.fsdp2 import FSDP2Engine
from rlkit.engines.fsdp2.options import FSDP2Options


def build_engine(model_dir: str, role: str = "actor", dist: DistInfo = DistInfo(), **config) -> FSDP2Engine:
    spec = engine_spec(model_dir, role, config.pop("lora", None))
    return FSDP2Engine(*engine_configs(FSDP2Options, logprob_chunk_size=7, **config), spec, dist)


# -- the world-size-2 run ------------------------------------------------------------------------------
def main(model_dir: str, out_dir: str) -> None:
    from transformers import AutoModelForCausalLM

    from rlkit.distributed import broadcast_object, destroy, init_distributed

    dist = init_distributed("cpu")
    batch = make_batch(vocab_size=AutoModelForCausalLM.from_pretrained(model_dir).config.vocab_size)
    scratch = Path(broadcast_object(tempfile.mkdtemp(prefix="rlkit-fsdp2-") if dist.is_main else None))

    # the actor: initial weights, one GRPO-like step, exact resume, export
    actor = build_engine(model_dir, dist=dist)
    results = actor_results(actor, lambda: build_engine(model_dir, dist=dist), batch, dist, scratch)
    del actor
    # the whole model as one FSDP unit (engine.fsdp2.units=model): one step, against world size 1 per layer
    whole = build_engine(model_dir, dist=dist, units="model")
    results["model_unit_step"] = policy_step(whole, batch, dist)
    results["model_unit_weights"] = weights(whole)
    del whole
    # the critic: initial values and one value-loss step
    critic = build_engine(model_dir, role="critic", dist=dist)
    results.update(critic_results(critic, batch, dist))
    del critic
    # LoRA: one step, then merged full weights vs peft's merge_and_unload of the exported adapter
    lora_actor = build_engine(model_dir, dist=dist, lora=LORA)
    results.update(lora_results(lora_actor, model_dir, batch, dist, scratch / "lora_export"))
    if dist.is_main:
        torch.save(results, Path(out_dir) / "results.pt")
    destroy()


if __name__ == "__main__":
    main(*sys.argv[1:3])
