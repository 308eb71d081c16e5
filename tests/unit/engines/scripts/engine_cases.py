"""What every engine's tests share: the batch, the losses, one optimizer step, weight comparisons, and the
measurements of the world-size-2 runs.

Imported by the pytest files (world size 1, in process) and by the torchrun scripts (fsdp2_cases.py,
deepspeed_world2.py), so both engines are measured the same way. Engine-specific builders live in
fsdp2_cases.py and deepspeed_cases.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from rlkit.batch import Batch
from rlkit.config.schema import EngineConfig, LoraConfig, OptimConfig
from rlkit.distributed import all_gather_objects, all_reduce_sum
from rlkit.distributed import DistInfo
from rlkit.engines.base import EngineSpec, ModelOutput

GLOBAL_BATCH = 8
MICRO_BATCH = 2
PROMPT_WIDTH, RESPONSE_WIDTH = 5, 6
LORA = LoraConfig(rank=4, alpha=8.0, target_modules="all-linear")


def engine_configs(options_class: type, **settings) -> tuple[EngineConfig, object]:
    """The shared engine section and an engine's own block (of `options_class`) from one set of settings."""
    own = {key: value for key, value in settings.items() if key in options_class.model_fields}
    shared = {key: value for key, value in settings.items() if key not in own}
    return EngineConfig(**shared), options_class(**own)


def engine_spec(model_dir: str, role: str, lora: LoraConfig | None) -> EngineSpec:
    """The tests' spec: AdamW at lr 1e-2, clip 1.0, 1 warm-up step, cosine over 10 (none for the reference)."""
    optim = None if role == "ref" else OptimConfig(lr=1e-2, grad_clip=1.0, warmup_steps=1, scheduler="cosine")
    return EngineSpec(role=role, model_path=model_dir, optim=optim, lora=lora, total_optimizer_steps=10)


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


def hf_logprobs(model, batch: Batch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropy (B, T) of the response tokens from the full logits of an unsharded model."""
    P = PROMPT_WIDTH
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
    logp = torch.log_softmax(logits[:, P - 1 : -1].float() / temperature, dim=-1)
    logprobs = logp.gather(-1, batch["input_ids"][:, P:, None]).squeeze(-1)
    return logprobs, -(logp.exp() * logp).sum(-1)


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


def policy_step(engine, batch: Batch, dist: DistInfo) -> dict[str, float]:
    """One optimizer step on this rank's share of the global batch; returns the global loss and grad norm."""
    num_tokens = batch["response_mask"].sum().item()
    local = batch.shard(dist.rank, dist.world_size)
    local["old_logprobs"] = engine.compute_logprobs(local, micro_batch_size=MICRO_BATCH).logprobs
    metrics = engine.forward_backward(local, policy_loss(num_tokens), micro_batch_size=MICRO_BATCH)
    return {"loss": all_reduce_sum(metrics["loss"], device=dist.device), **engine.optimizer_step()}


def critic_step(engine, batch: Batch, dist: DistInfo) -> dict[str, float]:
    num_tokens = batch["response_mask"].sum().item()
    local = batch.shard(dist.rank, dist.world_size)
    metrics = engine.forward_backward(local, value_loss(num_tokens), micro_batch_size=MICRO_BATCH)
    return {"vf_loss": all_reduce_sum(metrics["vf_loss"], device=dist.device), **engine.optimizer_step()}


def weights(engine) -> dict[str, torch.Tensor]:
    return {name: tensor.clone().cpu() for name, tensor in engine.full_weights()}


def weights_of(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state_dict.items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert list(a) == list(b), f"names differ: {sorted(set(a) ^ set(b))}"
    return max((a[name].float() - b[name].float()).abs().max().item() for name in a)


# -- measurements of the world-size-2 runs (collective; complete on rank 0) ----------------------------
def actor_results(actor, build_resumed: Callable, batch: Batch, dist: DistInfo, scratch: Path) -> dict[str, object]:
    """Gathered initial weights, one step, a resume from its checkpoint into `build_resumed()` and one more
    step of both, then an export of the actor."""
    from transformers import AutoModelForCausalLM

    results: dict[str, object] = {"init_weights": weights(actor), "policy_step": policy_step(actor, batch, dist)}
    results["policy_weights"] = weights(actor)
    actor.save(scratch / "checkpoint")
    resumed = build_resumed()
    resumed.load(scratch / "checkpoint")
    results["load_difference"] = max_difference(weights(resumed), results["policy_weights"])
    results["resumed_steps"] = (policy_step(actor, batch, dist), policy_step(resumed, batch, dist))
    actor_weights = weights(actor)
    results["resume_difference"] = max_difference(actor_weights, weights(resumed))
    actor.export_hf(scratch / "export")
    if dist.is_main:
        exported = AutoModelForCausalLM.from_pretrained(scratch / "export").state_dict()
        results["export_difference"] = max_difference(actor_weights, weights_of(exported))
    return results


def critic_results(critic, batch: Batch, dist: DistInfo) -> dict[str, object]:
    """The critic's initial values of the whole batch, one value-loss step and the weights after it."""
    local_values = critic.compute_values(batch.shard(dist.rank, dist.world_size), micro_batch_size=MICRO_BATCH)
    return {
        "values": torch.cat(all_gather_objects(local_values)),
        "critic_step": critic_step(critic, batch, dist),
        "critic_weights": weights(critic),
    }


def lora_results(lora_actor, model_dir: str, batch: Batch, dist: DistInfo, export_dir: Path) -> dict[str, object]:
    """One LoRA step, then the merged full weights against peft's merge_and_unload of the exported adapter
    and against the exported merged model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    results: dict[str, object] = {"lora_step": policy_step(lora_actor, batch, dist)}
    results["lora_weights"] = weights(lora_actor)
    lora_actor.export_hf(export_dir)
    if dist.is_main:
        base = AutoModelForCausalLM.from_pretrained(model_dir)
        merged = PeftModel.from_pretrained(base, export_dir / "adapter").merge_and_unload()
        results["lora_merge_difference"] = max_difference(results["lora_weights"], weights_of(merged.state_dict()))
        exported = AutoModelForCausalLM.from_pretrained(export_dir).state_dict()
        results["lora_export_difference"] = max_difference(results["lora_weights"], weights_of(exported))
    return results
