"""A scripted tool environment that the embedded tiny model learns on a CPU in about a minute.

The prompts are the built-in letters task ("repeat the letter a"). In its first turn the model may call a
lookup tool by writing the word `call`; the environment then answers with a tool message, "the letter is a",
and scores the model's second turn as the letters reward does (the fraction of its first 8 non-space characters
that are the letter). A first turn without a call ends the conversation with nothing. Rewards come from the
environment (`reward.name=environment`), so the reward rises as the model learns to call the tool.

    rlkit train data.val_files=[] environment.name=examples/environments/letter_lookup.py:LetterLookup \
        reward.name=environment rollout.max_turns=2 trainer.total_steps=40
"""

from __future__ import annotations

from rlkit.environments import Sample, Step
from rlkit.rewards.letters import compute_score as letters_score
from rlkit.trajectory import ToolCall


class LetterLookup:
    """One conversation: a call of the lookup tool, then the answer.

    Args:
        call_reward: the reward of a turn that calls the tool (the answer's score comes on top).
    """

    def __init__(self, call_reward: float = 0.5):
        self.call_reward = call_reward

    def reset(self, sample: Sample) -> None:
        self.letter = sample.ground_truth
        self.turn = 0
        return None  # start from the dataset's prompt as it is

    def step(self, model_text: str) -> Step:
        self.turn += 1
        if self.turn > 1:
            return Step(reward=letters_score("letters", model_text, self.letter)["score"], done=True)
        if "?" not in model_text:
            return Step(done=True)
        result = f"the letter is {self.letter}"
        return Step(observation=[{"role": "tool", "content": result}], reward=self.call_reward,
                    tool_calls=[ToolCall("lookup", {}, result)])
