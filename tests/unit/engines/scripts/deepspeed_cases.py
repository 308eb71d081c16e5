"""Shared cases of the DeepSpeed engine tests, and their world-size-2 checks.

Imported by tests/unit/engines/test_deepspeed_engine.py (world size 1, in process) and by
deepspeed_world2.py, whose one torchrun launch runs `world2_checks` at world size 2. Batches, losses,
steps and measurements are every engine's (engine_cases.py), so both engines are measured the same way.
Importing this module stops DeepSpeed from compiling its shared-memory comm op on CPU (30-45 s on a cold
cache; gloo does the same job in tests).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from engine_cases import LORA, actor_results, critic_results, engine_configs, engine_spec, lora_results, make_batch

from rlkit.engines.deepspeed.options import DeepSpeedOptions
from rlkit.distributed import DistInfo


def skip_shm_op_build() -> None:
    """Replace DeepSpeed's CPU shared-memory comm op builder before any process group wraps it. The module
    must be taken from sys.modules: `import deepspeed.comm.torch` resolves to the real torch package."""
    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


skip_shm_op_build()


def build_ds_engine(model_dir: str, stage: int = 3, role: str = "actor", dist: DistInfo = DistInfo(), **config):
    """A DeepSpeedEngine with the tests' spec (engine_cases.engine_spec), as the FSDP2 cases build theirs."""
    from rlkit.engines.deepspeed import DeepSpeedEngine

    spec = engine_spec(model_dir, role, config.pop("lora", None))
    return DeepSpeedEngine(*engine_configs(DeepSpeedOptions, zero_stage=stage, logprob_chunk_size=7, **config), spec,
                           dist)


# -- the world-size-2 checks (run by deepspeed_world2.py) ----------------------------------------------
def world2_checks(model_dir: str, dist: DistInfo, scratch: Path) -> dict[str, object]:
    """At world size 2: ZeRO-3 weights, step, resume into ZeRO-1 and export; a ZeRO-2 critic; ZeRO-3 LoRA.
    Collective; the returned measurements are complete on rank 0."""
    from transformers import AutoModelForCausalLM

    batch = make_batch(vocab_size=AutoModelForCausalLM.from_pretrained(model_dir).config.vocab_size)

    # ZeRO-3 actor: gathered initial weights, one step, exact resume into ZeRO-1 (another partitioning), export
    actor = build_ds_engine(model_dir, 3, dist=dist)
    results = actor_results(actor, lambda: build_ds_engine(model_dir, 1, dist=dist), batch, dist, scratch)
    del actor
    # ZeRO-2 critic: values and one value-loss step
    critic = build_ds_engine(model_dir, 2, role="critic", dist=dist)
    results.update(critic_results(critic, batch, dist))
    del critic
    # ZeRO-3 LoRA: one step, merged full weights vs peft's merge_and_unload of the exported adapter
    lora_actor = build_ds_engine(model_dir, 3, dist=dist, lora=LORA)
    results.update(lora_results(lora_actor, model_dir, batch, dist, scratch / "lora_export"))
    return results
