"""MultiTurnGeneration against a scripted rollout engine and scripted environments, on the tiny tokenizer: the
batch of a two-turn conversation built by hand (tokens, masks, log-probs), conversations leaving the batch,
the turn and token budgets, the tool environment end to end, and the single-turn environment giving exactly
SingleTurnGeneration's batch (scripted, and sampled by the HF rollout on the tiny model)."""

from __future__ import annotations

import pytest
import torch

from rlkit.config.environment import EnvironmentConfig
from rlkit.environments import Sample, SingleTurnEnvironment, Step, environment_factory
from rlkit.errors import PluginError
from rlkit.experience import MultiTurnGeneration, PromptItem, SingleTurnGeneration
from rlkit.experience.statistics import conversation_counts, summarize_conversations
from rlkit.rollout.base import Completion, SamplingParams

PARAMS = SamplingParams(n=1, temperature=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class ScriptedRollout:
    """Answers a sequence with the next scripted turn of its conversation: `turns[key][k]` is turn k's text, where
    key is the sequence's first token and k counts the assistant headers before the last one (each turn starts
    after one). Every token's log-prob is -0.5; records the prompts of each generate call."""

    def __init__(self, tokenizer, turns: dict[int, list[str]]):
        self.tokenizer = tokenizer
        self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.header = encode(tokenizer, "<|im_start|>assistant\n")
        self.turns = turns
        self.calls: list[list[list[int]]] = []

    def generate(self, prompts, params):
        self.calls.append([list(prompt) for prompt in prompts])
        completions = []
        for prompt in prompts:
            turn = self.turns[prompt[0]][self.headers_in(list(prompt)) - 1]
            ids = encode(self.tokenizer, turn)[: params.max_new_tokens - 1] + [self.eos]
            for _ in range(params.n):
                completions.append(Completion(list(prompt), ids, [-0.5] * len(ids), "stop",
                                              self.tokenizer.decode(ids, skip_special_tokens=True)))
        return completions

    def headers_in(self, ids: list[int]) -> int:
        width = len(self.header)
        return sum(ids[start:start + width] == self.header for start in range(len(ids)))


class ToolThenAnswer:
    """Turn 1 gets a tool message back (reward 0.25); turn 2 ends the conversation (reward 1)."""

    def __init__(self):
        self.turns = 0

    def reset(self, sample: Sample):
        return None

    def step(self, model_text: str) -> Step:
        self.turns += 1
        if self.turns == 1:
            return Step([{"role": "tool", "content": "ok"}], reward=0.25)
        return Step(reward=1.0, done=True, info={"answer": model_text})


class Endless:
    """Never done: every turn is answered with the same tool message."""

    def reset(self, sample):
        return None

    def step(self, model_text):
        return Step([{"role": "tool", "content": "more"}])


def prompt_item(tokenizer, group: int, text: str) -> PromptItem:
    messages = [{"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return PromptItem(group, encode(tokenizer, rendered), rendered, "test", "gt", {}, messages)


def generation(rollout, tokenizer, environment, **options) -> MultiTurnGeneration:
    return MultiTurnGeneration(rollout, tokenizer, tokenizer.pad_token_id, environment, **options)


def test_a_two_turn_conversation_is_laid_out_as_built_by_hand(tokenizer):
    prompt = prompt_item(tokenizer, 0, "repeat the letter a")
    rollout = ScriptedRollout(tokenizer, {prompt.prompt_ids[0]: ["a a", "b"]})
    batch = generation(rollout, tokenizer, ToolThenAnswer, max_turns=4, max_total_tokens=40)([prompt], PARAMS)

    eos, pad = rollout.eos, tokenizer.pad_token_id
    turn1 = encode(tokenizer, "a a") + [eos]
    between = encode(tokenizer, "\n<|im_start|>tool\nok<|im_end|>\n<|im_start|>assistant\n")  # the ChatML glue
    turn2 = encode(tokenizer, "b") + [eos]
    response = turn1 + between + turn2
    P, T = len(prompt.prompt_ids), 40
    assert batch.prompt_width == P and batch.response_width == T
    assert batch["input_ids"][0].tolist() == prompt.prompt_ids + response + [pad] * (T - len(response))
    assert batch["attention_mask"][0].tolist() == [1] * (P + len(response)) + [0] * (T - len(response))
    mask = [1] * len(turn1) + [0] * len(between) + [1] * len(turn2) + [0] * (T - len(response))
    assert batch["response_mask"][0].tolist() == mask
    assert batch["rollout_logprobs"][0].tolist() == [-0.5 * m for m in mask]  # model tokens only
    # turn 2 continued the whole sequence exactly: no token of turn 1 re-tokenized
    assert rollout.calls == [[prompt.prompt_ids], [prompt.prompt_ids + turn1 + between]]

    (trajectory,) = batch["trajectory"]
    assert [turn.text for turn in trajectory.turns] == ["a a", "b"]
    assert [turn.reward for turn in trajectory.turns] == [0.25, 1.0] and trajectory.environment_reward == 1.25
    assert trajectory.turns[0].observation == [{"role": "tool", "content": "ok"}]
    assert trajectory.turns[1].info == {"answer": "b"} and trajectory.ended_by == "done"
    assert batch["response_text"] == ["b"] and batch["finish_reason"] == ["stop"]
    assert trajectory.messages()[-3:] == [{"role": "assistant", "content": "a a"}, {"role": "tool", "content": "ok"},
                                          {"role": "assistant", "content": "b"}]


def test_finished_conversations_leave_the_batch_and_the_turn_limit_holds(tokenizer):
    prompts = [prompt_item(tokenizer, i, f"repeat the letter {letter}") for i, letter in enumerate("abc")]
    rollout = ScriptedRollout(tokenizer, {p.prompt_ids[0]: ["x"] * 5 for p in prompts})

    class DoneForFirst:  # the conversations of prompt 0 end after turn 1; the others never end
        def reset(self, sample):
            self.first = sample.prompt_text.endswith("a<|im_end|>\n<|im_start|>assistant\n")
            return None

        def step(self, model_text):
            return Step(done=True) if self.first else Step([{"role": "tool", "content": "go on"}])

    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=4)
    batch = generation(rollout, tokenizer, DoneForFirst, max_turns=3, max_total_tokens=60)(prompts, params)
    # turn 1: one request of n=2 per prompt; then the 4 live conversations, then again (3 turns at most)
    assert [len(call) for call in rollout.calls] == [3, 4, 4]
    assert [t.num_turns for t in batch["trajectory"]] == [1, 1, 3, 3, 3, 3]
    assert [t.ended_by for t in batch["trajectory"]] == ["done"] * 2 + ["max_turns"] * 4
    assert batch["group_index"] == [0, 0, 1, 1, 2, 2]
    counts = conversation_counts(batch)
    assert summarize_conversations(counts)["env/turns/mean"] == pytest.approx((1 + 1 + 3 * 4) / 6)


def test_the_token_budget_cuts_a_turn_and_ends_the_conversation(tokenizer):
    prompt = prompt_item(tokenizer, 0, "hello")
    rollout = ScriptedRollout(tokenizer, {prompt.prompt_ids[0]: ["a b c d e"] * 4})
    turn = encode(tokenizer, "a b c d e") + [rollout.eos]
    between = encode(tokenizer, "\n<|im_start|>tool\nmore<|im_end|>\n<|im_start|>assistant\n")
    budget = 2 * len(turn) + len(between) - 2  # the second turn is cut two tokens short
    batch = generation(rollout, tokenizer, Endless, max_turns=5, max_total_tokens=budget)([prompt], PARAMS)
    (trajectory,) = batch["trajectory"]
    assert trajectory.num_turns == 2 and trajectory.ended_by == "budget"
    assert batch["finish_reason"] == ["length"]
    assert batch["response_mask"][0].tolist() == [1] * len(turn) + [0] * len(between) + [1] * (len(turn) - 2)
    assert batch["attention_mask"][0].sum() == len(prompt.prompt_ids) + budget
    assert trajectory.final_text == tokenizer.decode(turn[:-2], skip_special_tokens=True)

    # no room for the environment's messages and one more token: the conversation ends before them
    short = generation(rollout, tokenizer, Endless, max_turns=5, max_total_tokens=len(turn) + len(between))
    (trajectory,) = short([prompt], PARAMS)["trajectory"]
    assert trajectory.num_turns == 1 and trajectory.ended_by == "budget" and trajectory.turns[0].observation == []


def test_the_tool_environment_runs_the_calculator_between_turns(tokenizer):
    config = EnvironmentConfig(name="tools", tools=["calculator"])
    prompt = prompt_item(tokenizer, 0, "what is 6 times 7?")
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>'
    rollout = ScriptedRollout(tokenizer, {})
    new_environment = environment_factory(config, tokenizer)
    # the tool environment renders the prompt afresh, with the tool instructions in a system message
    start = new_environment().reset(Sample(prompt.messages, prompt.prompt_text, "test", "42", {}))
    first_token = encode(tokenizer, tokenizer.apply_chat_template(start, tokenize=False,
                                                                  add_generation_prompt=True))[0]
    rollout.turns = {first_token: [call, "the answer is 42"]}
    params = SamplingParams(n=1, max_new_tokens=100)  # the call is 73 tokens of the tiny tokenizer
    batch = generation(rollout, tokenizer, new_environment, max_turns=3, max_total_tokens=300)([prompt], params)

    (trajectory,) = batch["trajectory"]
    assert trajectory.prompt[0]["role"] == "system" and "<tool_call>" in trajectory.prompt[0]["content"]
    assert [c.name for c in trajectory.tool_calls] == ["calculator"] and trajectory.tool_calls[0].result == "42"
    assert trajectory.turns[0].observation == [{"role": "tool", "name": "calculator", "content": "42"}]
    assert trajectory.ended_by == "done" and batch["response_text"] == ["the answer is 42"]
    assert "<|im_start|>tool\n42<|im_end|>" in tokenizer.decode(batch["input_ids"][0])
    assert batch["prompt_text"][0].startswith("<|im_start|>system\nYou can call tools.")
    assert summarize_conversations(conversation_counts(batch)) == {
        "env/turns/mean": 2.0, "env/tool_calls/mean": 1.0, "env/tool_call_rate": 1.0, "env/tool_error_rate": 0.0}


def test_an_environment_that_fails_stops_the_run_naming_it(tokenizer):
    class Broken(SingleTurnEnvironment):
        def step(self, model_text):
            raise KeyError("oops")

    class BrokenReset(SingleTurnEnvironment):
        def reset(self, sample):
            raise ValueError("no such task")

    prompt = prompt_item(tokenizer, 0, "hello")
    rollout = ScriptedRollout(tokenizer, {prompt.prompt_ids[0]: ["x"]})
    params = SamplingParams(n=3, max_new_tokens=4)  # three conversations: their environments step in threads
    with pytest.raises(PluginError, match="the environment failed on a turn of the prompt .*hello.*KeyError: 'oops'"):
        generation(rollout, tokenizer, Broken)([prompt], params)
    with pytest.raises(PluginError, match="the environment failed on reset of the prompt .*ValueError: no such task"):
        generation(rollout, tokenizer, BrokenReset)([prompt], params)


def assert_same_batch(single, multi) -> None:
    assert single.tensors.keys() == multi.tensors.keys()
    for name, tensor in single.tensors.items():
        assert tensor.dtype == multi[name].dtype and torch.equal(tensor, multi[name]), name
    for name, values in single.meta.items():
        assert values == multi[name], name


def test_the_single_turn_environment_is_single_turn_generation_exactly(tokenizer):
    prompts = [prompt_item(tokenizer, i, text) for i, text in enumerate(["hello there", "repeat the letter b"])]
    script = {p.prompt_ids[0]: ["a b c"] for p in prompts}
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    single = SingleTurnGeneration(ScriptedRollout(tokenizer, script), tokenizer.pad_token_id)(prompts, params)
    rollout = ScriptedRollout(tokenizer, script)
    multi = generation(rollout, tokenizer, SingleTurnEnvironment)(prompts, params)
    assert_same_batch(single, multi)
    assert len(rollout.calls) == 1 and all(t.ended_by == "done" for t in multi["trajectory"])


def test_the_single_turn_environment_samples_what_single_turn_generation_samples(tiny_model, tokenizer):
    """Bit for bit, on the HF rollout engine sampling the tiny model (the default run's path)."""
    from rlkit.config.rollouts import RolloutConfig
    from rlkit.distributed import DistInfo
    from rlkit.rollout.hf import HFRollout
    from rlkit.rollout.hf_options import HFOptions

    def engine():
        return HFRollout(RolloutConfig(), HFOptions(), tiny_model, tokenizer, DistInfo(), seed=7)

    prompts = [prompt_item(tokenizer, i, f"repeat the letter {letter}") for i, letter in enumerate("abcd")]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10)
    single = SingleTurnGeneration(engine(), tokenizer.pad_token_id)(prompts, params)
    multi = generation(engine(), tokenizer, environment_factory(EnvironmentConfig(), tokenizer))(prompts, params)
    assert_same_batch(single, multi)
    assert single["response_mask"].sum() > 0 and "rollout_logprobs" in single
