"""Rollout and reward: prompts in, a scored Batch out (and validation, which is the same without training)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rlkit.algorithms.sampling import keep_groups_with_signal
from rlkit.batch import Batch
from rlkit.engines.base import TrainEngine
from rlkit.rewards.base import RewardManager, RewardSample
from rlkit.rollout.assemble import completions_to_batch
from rlkit.rollout.base import Completion, RolloutEngine, SamplingParams


@dataclass
class PromptItem:
    """One prompt of the step; `group` is its position in the global batch, shared by its n responses."""

    group: int
    prompt_ids: list[int]
    prompt_text: str
    data_source: str
    ground_truth: object
    extra_info: dict


def sync_weights(rollout: RolloutEngine, actor: TrainEngine, device: str) -> None:
    """Wake the rollout engine and stream the actor's current weights into it.

    On CUDA the training phases' freed blocks go back to the driver first: PyTorch's caching allocator
    keeps them reserved, and vLLM (its own allocator) and SGLang (another process) could not take their
    memory back from under it; without this a larger micro-batch ran out of memory in vLLM's wake_up.
    """
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    rollout.wake_up()
    rollout.update_weights(actor.full_weights())


def generate(rollout: RolloutEngine, prompts: Sequence[PromptItem], params: SamplingParams,
             pad_token_id: int) -> Batch:
    """Generate params.n responses per prompt and assemble them (response width = max_new_tokens)."""
    completions: list[Completion] = rollout.generate([p.prompt_ids for p in prompts], params)
    owners = [prompt for prompt in prompts for _ in range(params.n)]
    return completions_to_batch(
        completions,
        pad_token_id=pad_token_id,
        max_prompt_length=max(len(p.prompt_ids) for p in prompts),
        max_response_length=params.max_new_tokens,
        group_index=[p.group for p in owners],
        meta={
            "prompt_text": [p.prompt_text for p in owners],
            "data_source": [p.data_source for p in owners],
            "ground_truth": [p.ground_truth for p in owners],
            "extra_info": [p.extra_info for p in owners],
        },
    )


def score(batch: Batch, reward: RewardManager) -> tuple[torch.Tensor, dict[str, list[float]], dict[str, float]]:
    """(B,) scores, per-sample extras (such as acc) and reward metrics (extras averaged, failures counted)."""
    samples = [
        RewardSample(index=i, data_source=batch["data_source"][i], prompt=batch["prompt_text"][i],
                     response=batch["response_text"][i], ground_truth=batch["ground_truth"][i],
                     extra_info=batch["extra_info"][i])
        for i in range(len(batch))
    ]
    output = reward(samples)
    scores = torch.tensor(output.scores, dtype=torch.float32)
    # An extra that only some rewards report is NaN for the other samples: average what is there.
    metrics = {f"reward_extra/{name}": float(torch.tensor(values, dtype=torch.float32).nanmean())
               for name, values in output.extras.items() if values}
    metrics["reward/failures"] = float(output.num_failures)
    return scores, output.extras, metrics


def drop_groups_without_signal(batch: Batch, scores: torch.Tensor) -> tuple[Batch, torch.Tensor]:
    """DAPO dynamic sampling: keep only groups whose responses did not all score the same."""
    keep = keep_groups_with_signal(scores, batch["group_index"])
    indices = torch.nonzero(keep).flatten()
    return batch.select(indices), scores[indices]


def summarize(scores: list[float], lengths: list[int], finish_reasons: list[str], prefix: str = "") -> dict[str, float]:
    """Reward and length statistics of a whole (already gathered) batch."""
    scores_t = torch.tensor(scores, dtype=torch.float32)
    lengths_t = torch.tensor(lengths, dtype=torch.float32)
    return {
        f"{prefix}reward/mean": float(scores_t.mean()),
        f"{prefix}reward/std": float(scores_t.std()) if len(scores) > 1 else 0.0,
        f"{prefix}reward/max": float(scores_t.max()),
        f"{prefix}reward/min": float(scores_t.min()),
        f"{prefix}response_length/mean": float(lengths_t.mean()),
        f"{prefix}response_length/max": float(lengths_t.max()),
        f"{prefix}response_length/clip_ratio": sum(r == "length" for r in finish_reasons) / len(finish_reasons),
    }
