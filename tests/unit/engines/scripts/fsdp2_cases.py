"""Shared cases of the FSDP2 engine tests, and the world-size-2 run.

Imported by the pytest files (world size 1, in process) and run as a script under
`torchrun --nproc_per_node=2 fsdp2_cases.py MODEL_DIR OUT_DIR` (world size 2): rank 0 writes what it
measured to OUT_DIR/results.pt and the pytest side compares it with the world-size-1 numbers.
Every check of the world-2 run happens in this one launch, since process start-up dominates.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from rlkit.batch import Batch
from rlkit.distributed import all_gather_objects, all_reduce_sum
from rlkit.config.schema import FSDP2Config, LoraConfig, OptimConfig
from rlkit.engines.base import DistInfo, EngineSpec, ModelOutput
from rlkit.engines.fsdp2 import FSDP2Engine

GLOBAL_BATCH = 8
MICRO_BATCH = 2
PROMPT_WIDTH, RESPONSE_WIDTH = 5, 6
LORA = LoraConfig(rank=4, alpha=8.0, target_modules="all-linear")


def make_batch(vocab_size: int, *, num_seqs: int = GLOBAL_BATCH, seed: int = 0) -> Batch:
    """A rollout-shaped batch: prompts left-padded to P, responses right-padded to T, random advantages."""
    generator = torch.Generator().manual_seed(seed)
    P, T = PROMPT_WIDTH, RESPONSE_WIDTH
    input_ids = torch.randint(4, vocab_size, (num_seqs, P + T), generator=generator)
    attention_mask = torch.ones(num_seqs, P + T, dtype=torch.long)
    prompt_lengths = torch.randint(2, P + 1, (num_seqs,), generator=generator)
    response_lengths = torch.randint(1, T + 1, (num_seqs,), generator=generator)
    for row in range(num_seqs):
        attention_mask[row, : P - prompt_lengths[row]] = 0
        attention_mask[row, P + response_lengths[row] :] = 0
    input_ids[attention_mask == 0] = 3  # the tiny tokenizer's <|pad|>
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return Batch(
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "response_mask": attention_mask[:, P:].float(),
            "advantages": torch.randn(num_seqs, T, generator=generator),
            "returns": torch.randn(num_seqs, T, generator=generator),
        }
    )


def policy_loss(num_tokens: float, entropy_coeff: float = 0.01):
    """A GRPO-like loss: -A * ratio - c * entropy, summed over tokens and divided by the *global* token count."""

    def loss_fn(output: ModelOutput, micro: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        ratio = torch.exp(output.logprobs - micro["old_logprobs"])
        per_token = -micro["advantages"] * ratio - entropy_coeff * output.entropy
        loss = (per_token * micro["response_mask"]).sum() / num_tokens
        return loss, {"loss": loss.item()}

    return loss_fn


def value_loss(num_tokens: float):
    def loss_fn(output: ModelOutput, micro: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss = 0.5 * ((output.values - micro["returns"]) ** 2 * micro["response_mask"]).sum() / num_tokens
        return loss, {"vf_loss": loss.item()}

    return loss_fn


def build_engine(model_dir: str, role: str = "actor", dist: DistInfo = DistInfo(), **config) -> FSDP2Engine:
    lora = config.pop("lora", None)
    optim = None if role == "ref" else OptimConfig(lr=1e-2, grad_clip=1.0, warmup_steps=1, scheduler="cosine")
    spec = EngineSpec(role=role, model_path=model_dir, optim=optim, lora=lora, total_optimizer_steps=10)
    return FSDP2Engine(FSDP2Config(logprob_chunk_size=7, **config), spec, dist)


def policy_step(engine: FSDP2Engine, batch: Batch, dist: DistInfo) -> dict[str, float]:
    """One optimizer step on this rank's share of the global batch; returns the global loss and grad norm."""
    num_tokens = batch["response_mask"].sum().item()
    local = batch.shard(dist.rank, dist.world_size)
    local["old_logprobs"] = engine.compute_logprobs(local, micro_batch_size=MICRO_BATCH).logprobs
    metrics = engine.forward_backward(local, policy_loss(num_tokens), micro_batch_size=MICRO_BATCH)
    return {"loss": all_reduce_sum(metrics["loss"], device=dist.device), **engine.optimizer_step()}


def critic_step(engine: FSDP2Engine, batch: Batch, dist: DistInfo) -> dict[str, float]:
    num_tokens = batch["response_mask"].sum().item()
    local = batch.shard(dist.rank, dist.world_size)
    metrics = engine.forward_backward(local, value_loss(num_tokens), micro_batch_size=MICRO_BATCH)
    return {"vf_loss": all_reduce_sum(metrics["vf_loss"], device=dist.device), **engine.optimizer_step()}


def weights(engine: FSDP2Engine) -> dict[str, torch.Tensor]:
    return {name: tensor.clone().cpu() for name, tensor in engine.full_weights()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert list(a) == list(b), f"names differ: {sorted(set(a) ^ set(b))}"
    return max((a[name].float() - b[name].float()).abs().max().item() for name in a)


# -- the world-size-2 run ------------------------------------------------------------------------------
def main(model_dir: str, out_dir: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlkit.distributed import broadcast_object, destroy, init_distributed

    dist = init_distributed("cpu")
    batch = make_batch(vocab_size=AutoModelForCausalLM.from_pretrained(model_dir).config.vocab_size)
    scratch = Path(broadcast_object(tempfile.mkdtemp(prefix="rlkit-fsdp2-") if dist.is_main else None))
    results: dict[str, object] = {}

    # the actor: initial weights, one GRPO-like step, exact resume, export
    actor = build_engine(model_dir, dist=dist)
    results["init_weights"] = weights(actor)
    results["policy_step"] = policy_step(actor, batch, dist)
    results["policy_weights"] = weights(actor)
    actor.save(scratch / "checkpoint")
    resumed = build_engine(model_dir, dist=dist)
    resumed.load(scratch / "checkpoint")
    policy_step(actor, batch, dist)
    policy_step(resumed, batch, dist)
    actor_weights = weights(actor)
    results["resume_difference"] = max_difference(actor_weights, weights(resumed))
    actor.export_hf(scratch / "export")
    if dist.is_main:
        exported = AutoModelForCausalLM.from_pretrained(scratch / "export").state_dict()
        results["export_difference"] = max_difference(actor_weights, weights_of(exported))
    del actor, resumed

    # the critic: initial values and one value-loss step
    critic = build_engine(model_dir, role="critic", dist=dist)
    local_values = critic.compute_values(batch.shard(dist.rank, dist.world_size), micro_batch_size=MICRO_BATCH)
    results["values"] = torch.cat(all_gather_objects(local_values))
    results["critic_step"] = critic_step(critic, batch, dist)
    results["critic_weights"] = weights(critic)
    del critic

    # LoRA: one step, then merged full weights vs peft's merge_and_unload of the exported adapter
    lora_actor = build_engine(model_dir, dist=dist, lora=LORA)
    results["lora_step"] = policy_step(lora_actor, batch, dist)
    results["lora_weights"] = weights(lora_actor)
    lora_actor.export_hf(scratch / "lora_export")
    if dist.is_main:
        base = AutoModelForCausalLM.from_pretrained(model_dir)
        merged = PeftModel.from_pretrained(base, scratch / "lora_export" / "adapter").merge_and_unload()
        results["lora_merge_difference"] = max_difference(results["lora_weights"], weights_of(merged.state_dict()))
        exported = AutoModelForCausalLM.from_pretrained(scratch / "lora_export").state_dict()
        results["lora_export_difference"] = max_difference(results["lora_weights"], weights_of(exported))
        torch.save(results, Path(out_dir) / "results.pt")
    destroy()


def weights_of(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state_dict.items()}


if __name__ == "__main__":
    main(*sys.argv[1:3])
