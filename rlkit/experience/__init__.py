"""The experience stage: prompts in, scored responses out, and the rollout engine kept on the current policy.

The trainer sees one interface, `ExperienceSource` (next_batch, publish, validate, state_dict, close), and
one product, `Experience` (a Batch of this rank's responses, their scores, their metrics; every response
carries the version of the policy that generated it). `ColocatedExperience` is the synchronous source: the
rollout engine shares each training rank's device and generates the step's batch with the weights of the
step before. How a prompt becomes responses is a `Generation`: `SingleTurnGeneration` asks the rollout
engine for one response per sample; `MultiTurnGeneration` holds a conversation with an environment per sample
(rlkit.environments; one response with the default single-turn environment). See docs/rollout.md and
docs/environments.md.
"""

from rlkit.experience.base import Experience, ExperienceSource, WeightsFn
from rlkit.experience.colocated import ColocatedExperience
from rlkit.experience.generation import Generation, PromptItem, SingleTurnGeneration, score, sync_weights
from rlkit.experience.multi_turn import MultiTurnGeneration

__all__ = [
    "ColocatedExperience",
    "Experience",
    "ExperienceSource",
    "Generation",
    "MultiTurnGeneration",
    "PromptItem",
    "SingleTurnGeneration",
    "WeightsFn",
    "score",
    "sync_weights",
]
