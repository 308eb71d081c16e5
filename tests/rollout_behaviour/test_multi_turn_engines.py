"""Multi-turn generation (rlkit.experience.MultiTurnGeneration) over every rollout engine, through its ordinary
`generate`: three-turn conversations with environment messages between the turns, every live conversation in
one generate call per turn. The rollout log-probs line up with the model's tokens: at every token the model
sampled they agree with a plain fp32 forward of the whole conversation (within the engine's tolerance of the
behaviour suite), and they are 0 on the environment's tokens.

hf runs on CPU; hf on cuda, vllm and sglang are marked `gpu` (one engine per pytest process: `-k vllm`).
"""

from __future__ import annotations

import copy

import torch
from test_rollout_behaviour import CASES, checkpoint, subject  # noqa: F401  (fixtures)

from rlkit.environments import Step
from rlkit.experience import MultiTurnGeneration, PromptItem
from rlkit.rollout.base import Completion, SamplingParams
from rlkit.rollout.behaviour import reference_logprobs

TEMPLATE = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")
TURN_TOKENS = 12


class Relay:
    """Answers the first two turns with a tool message and ends the conversation at the third."""

    def __init__(self):
        self.turns = 0

    def reset(self, sample):
        return None

    def step(self, model_text):
        self.turns += 1
        if self.turns == 3:
            return Step(done=True)
        return Step([{"role": "tool", "content": f"result number {self.turns}"}])


def test_conversations_on_the_engine_line_up_with_a_forward_of_the_whole_sequence(subject):
    engine, reference = subject
    tokenizer = copy.deepcopy(reference.tokenizer)
    tokenizer.chat_template = TEMPLATE
    prompts = [PromptItem(group, ids, tokenizer.decode(ids), "test", None, {})
               for group, ids in enumerate(reference.prompts)]
    generation = MultiTurnGeneration(engine, tokenizer, tokenizer.pad_token_id, Relay, max_turns=3,
                                     max_total_tokens=3 * TURN_TOKENS + 64)  # the glue is ~22 tokens
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=TURN_TOKENS, logprobs=True)
    engine.wake_up()
    batch = generation(prompts, params)

    assert all(t.num_turns == 3 and t.ended_by == "done" for t in batch["trajectory"])
    P = batch.prompt_width
    model = reference.model
    errors = []
    for row in range(len(batch)):
        real = batch["attention_mask"][row].bool()
        prompt = batch["input_ids"][row, :P][real[:P]].tolist()
        response = batch["input_ids"][row, P:][real[P:]].tolist()
        (expected,) = reference_logprobs(model, [Completion(prompt, response, None, "stop")], params.temperature)
        mask = batch["response_mask"][row, : len(response)].bool()
        rollout = batch["rollout_logprobs"][row, : len(response)]
        assert mask.sum() < len(response)  # the environment's tokens sit between the turns
        assert torch.all(rollout[~mask] == 0) and torch.all(batch["rollout_logprobs"][row, len(response):] == 0)
        errors.append((rollout[mask] - expected.cpu()[mask]).abs())
    errors = torch.cat(errors)
    assert errors.max() <= reference.logprob_max_error and errors.mean() <= reference.logprob_mean_error, (
        float(errors.max()), float(errors.mean()))
