"""Generation and scoring: prompts in, a scored Batch out, and the weight push that precedes them.

A `Generation` turns prompts into a Batch of responses; `SingleTurnGeneration` asks the rollout engine for
one response per sample. A multi-turn rollout (model, tool, model, ...) is another Generation
(rlkit.experience.multi_turn): it returns the same layout, with `response_mask` 1 only on the model's own tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from rlkit.batch import Batch
from rlkit.experience.base import WeightsFn
from rlkit.rewards.base import RewardManager, RewardSample
from rlkit.rollout.assemble import completions_to_batch
from rlkit.rollout.base import Completion, RolloutEngine, SamplingParams


@dataclass
class PromptItem:
    """One prompt of the step; `group` is its position in the global batch, shared by its n responses.
    `messages`: the prompt as chat messages (None for raw text), for environments that render it afresh."""

    group: int
    prompt_ids: list[int]
    prompt_text: str
    data_source: str
    ground_truth: object
    extra_info: dict
    messages: list[dict] | None = None


class Generation(Protocol):
    def __call__(self, prompts: Sequence[PromptItem], params: SamplingParams) -> Batch:
        """params.n responses per prompt, prompt-major: a Batch of len(prompts) * params.n rows with the
        rlkit.batch layout (response width: the generation's budget, params.max_new_tokens for one turn) and the
        prompts' meta."""
        ...


class SingleTurnGeneration:
    """One response per sample: the prompt's tokens go to the rollout engine, its completions are assembled."""

    def __init__(self, rollout: RolloutEngine, pad_token_id: int):
        self.rollout = rollout
        self.pad_token_id = pad_token_id

    def __call__(self, prompts: Sequence[PromptItem], params: SamplingParams) -> Batch:
        completions: list[Completion] = self.rollout.generate([p.prompt_ids for p in prompts], params)
        return assemble_responses(completions, [prompt for prompt in prompts for _ in range(params.n)],
                                  pad_token_id=self.pad_token_id,
                                  max_prompt_length=max(len(p.prompt_ids) for p in prompts),
                                  max_response_length=params.max_new_tokens)


def assemble_responses(completions: Sequence[Completion], owners: Sequence[PromptItem], *, pad_token_id: int,
                       max_prompt_length: int, max_response_length: int,
                       prompt_texts: Sequence[str] | None = None) -> Batch:
    """The Batch of `completions` (B, prompt-major) with what every Generation's batch carries of its prompts:
    `owners` (B) is the prompt each completion answers, which gives the group index and the meta lists
    prompt_text, data_source, ground_truth and extra_info. `prompt_texts` (B): the prompts as the model saw them
    where they were rendered afresh (an environment's reset); by default the owners' own. Widths as in
    rlkit.rollout.assemble.completions_to_batch."""
    return completions_to_batch(
        completions,
        pad_token_id=pad_token_id,
        max_prompt_length=max_prompt_length,
        max_response_length=max_response_length,
        group_index=[owner.group for owner in owners],
        meta={
            "prompt_text": list(prompt_texts) if prompt_texts is not None else [owner.prompt_text for owner in owners],
            "data_source": [owner.data_source for owner in owners],
            "ground_truth": [owner.ground_truth for owner in owners],
            "extra_info": [owner.extra_info for owner in owners],
        },
    )


def sync_weights(rollout: RolloutEngine | None, weights: WeightsFn, device: str, *, release_cache: bool = True
                 ) -> None:
    """Wake the rollout engine and stream the policy's weights into it.

    On CUDA the training phases' freed blocks go back to the driver first (`release_cache`, for an engine that
    slept): PyTorch's caching allocator keeps them reserved, and vLLM (its own allocator) and SGLang (another
    process) could not take their memory back from under it; without this a larger micro-batch ran out of
    memory in vLLM's wake_up. An engine that stayed awake holds its memory still, and the trainer keeps its
    blocks for the next step.
    A rank without an engine (its engine group's runs from the first rank) still walks the weights: producing
    them is a collective of the training ranks.
    """
    if rollout is None:
        for _ in weights():
            pass
        return
    if release_cache and device.startswith("cuda"):
        torch.cuda.empty_cache()
    rollout.wake_up()
    rollout.update_weights(weights())


def score(batch: Batch, reward: RewardManager) -> tuple[torch.Tensor, dict[str, list[float]], dict[str, float]]:
    """(B,) scores, per-sample extras (such as acc) and reward metrics (extras averaged, failures counted)."""
    trajectories = batch.get("trajectory") or [None] * len(batch)
    samples = [
        RewardSample(index=i, data_source=batch["data_source"][i], prompt=batch["prompt_text"][i],
                     response=batch["response_text"][i], ground_truth=batch["ground_truth"][i],
                     extra_info=batch["extra_info"][i], trajectory=trajectories[i])
        for i in range(len(batch))
    ]
    output = reward(samples)
    scores = torch.tensor(output.scores, dtype=torch.float32)
    # An extra that only some rewards report is NaN for the other samples: average what is there.
    metrics = {f"reward_extra/{name}": float(torch.tensor(values, dtype=torch.float32).nanmean())
               for name, values in output.extras.items() if values}
    metrics["reward/failures"] = float(output.num_failures)
    return scores, output.extras, metrics
