"""Generation with an environment: the model writes, the environment answers, the model writes again.

Every sample is a conversation with its own environment (rlkit.environments). All live conversations advance
together: one `generate` call per turn over the rollout engine's ordinary interface (token ids in, completions
out: hf, vllm, sglang alike), then every environment steps on its turn's text (in threads: tools may wait on
processes), and a conversation leaves the batch when its environment is done, rollout.max_turns is reached or
its token budget (rollout.max_total_tokens) has no room for another turn. Each turn is also limited by
rollout.max_new_tokens; a turn cut by the budget ends its conversation ('length').

The batch has the layout of a single response (rlkit.batch): the prompt, then the whole conversation as the
response part, `response_mask` 1 only on the model's own tokens (0 on the environment's messages and the chat
template's tokens around them), `rollout_logprobs` lined up with it (0 elsewhere). The meta list `trajectory`
holds each conversation as text for rewards; `response_text` is the final turn's text.

With the single-turn environment this is exactly one generate call of `params.n` samples per prompt, as
SingleTurnGeneration makes: the same batch, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch

from rlkit.batch import Batch
from rlkit.environments import ChatRenderer, Environment, EnvironmentFactory, Sample, Step
from rlkit.errors import PluginError, RlkitError
from rlkit.experience.conversation import Conversation
from rlkit.experience.generation import PromptItem
from rlkit.rollout.assemble import completions_to_batch
from rlkit.rollout.base import Completion, RolloutEngine, SamplingParams
from rlkit.trajectory import Trajectory


class MultiTurnGeneration:
    """A Generation whose samples are conversations with an environment.

    Args:
        rollout: the rollout engine.
        tokenizer: decodes cut turns; its chat template renders what environments say.
        pad_token_id: pads the batch.
        new_environment: makes one environment per conversation (rlkit.environments.environment_factory).
        max_turns: model turns per conversation at most.
        max_total_tokens: the token budget after the prompt; None: params.max_new_tokens x max_turns. It is the
            response width of the batches.
        num_workers: environments stepping at once.
    """

    def __init__(self, rollout: RolloutEngine, tokenizer: Any, pad_token_id: int, new_environment: EnvironmentFactory,
                 *, max_turns: int = 1, max_total_tokens: int | None = None, num_workers: int = 8):
        self.rollout = rollout
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        self.new_environment = new_environment
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens
        self.num_workers = num_workers
        self._renderer: ChatRenderer | None = None

    def __call__(self, prompts: Sequence[PromptItem], params: SamplingParams) -> Batch:
        budget = self.max_total_tokens or params.max_new_tokens * self.max_turns
        owners = [prompt for prompt in prompts for _ in range(params.n)]
        conversations = self._start(owners, budget)
        self._first_turn(conversations, len(prompts), params)
        while live := [conversation for conversation in conversations if not conversation.ended]:
            self._answer(live)
            live = [conversation for conversation in live if not conversation.ended]
            if not live:
                break
            completions = self.rollout.generate([conversation.ids for conversation in live],
                                                dataclasses.replace(params, n=1))
            for conversation, completion in zip(live, completions, strict=True):
                conversation.add_model_turn(completion, self._decode)
        return self._assemble(conversations, owners, budget)

    # -- the steps of a conversation --------------------------------------------------------------
    def _start(self, owners: list[PromptItem], budget: int) -> list[Conversation]:
        """A new environment per sample, reset on its prompt: the conversation starts from the messages it
        returns (rendered here), or from the prompt's tokens."""
        environments = [self.new_environment() for _ in owners]
        samples = [Sample(prompt.messages, prompt.prompt_text, prompt.data_source, prompt.ground_truth,
                          prompt.extra_info) for prompt in owners]
        starts = self._in_workers(lambda environment, sample: environment.reset(sample),
                                  list(zip(environments, samples)), [p.prompt_text for p in owners], "reset")
        conversations = []
        rendered: dict[str, tuple[str, list[int]]] = {}  # the n samples of a prompt usually start alike
        for environment, prompt, messages in zip(environments, owners, starts):
            trajectory = Trajectory(prompt=messages if messages is not None else prompt.messages)
            if messages is None:
                text, ids = prompt.prompt_text, list(prompt.prompt_ids)
            else:
                tools = getattr(environment, "tools", None)
                key = json.dumps([messages, tools], sort_keys=True, default=repr)
                if key not in rendered:
                    rendered[key] = self.renderer.prompt(messages, tools)
                text, ids = rendered[key][0], list(rendered[key][1])
            conversations.append(Conversation(environment, text, ids, budget, trajectory))
        return conversations

    def _first_turn(self, conversations: list[Conversation], num_prompts: int, params: SamplingParams) -> None:
        """The n conversations of a prompt that start alike share one request of n samples (as without an
        environment); otherwise every conversation is its own request."""
        n = params.n
        groups = [conversations[i * n:(i + 1) * n] for i in range(num_prompts)]
        if all(len({tuple(c.prompt_ids) for c in group}) == 1 for group in groups):
            completions = self.rollout.generate([group[0].prompt_ids for group in groups], params)
        else:
            completions = self.rollout.generate([c.prompt_ids for c in conversations], dataclasses.replace(params, n=1))
        for conversation, completion in zip(conversations, completions, strict=True):
            conversation.add_model_turn(completion, self._decode)

    def _answer(self, live: list[Conversation]) -> None:
        """Every live environment steps on its conversation's last turn; its messages are appended, or the
        conversation ends (done, max_turns, or no room for the messages and one more token)."""
        steps = self._in_workers(lambda environment, text: environment.step(text),
                                 [(c.environment, c.trajectory.final_text) for c in live],
                                 [c.prompt_text for c in live], "a turn")
        for conversation, step in zip(live, steps):
            if not isinstance(step, Step):
                raise PluginError(f"the environment's step returned a {type(step).__name__}; it must return an "
                                  "rlkit.environments.Step")
            turn = conversation.trajectory.turns[-1]
            turn.reward, turn.info, turn.tool_calls = float(step.reward), dict(step.info), list(step.tool_calls)
            if step.done:
                conversation.end("done")
            elif conversation.num_turns >= self.max_turns:
                conversation.end("max_turns")
            else:
                ids = self.renderer.after_turn_ids(step.observation, conversation.response_ids[-1])
                if len(ids) + 1 > conversation.room:
                    conversation.finish_reason = "length"
                    conversation.end("budget")
                else:
                    conversation.add_environment_turn(step.observation, ids)

    def _in_workers(self, call: Callable[[Environment, Any], Any], jobs: list[tuple[Environment, Any]],
                    prompts: list[str], what: str) -> list[Any]:
        """`call(environment, argument)` for every job, in `num_workers` threads (tools may wait on processes);
        results in order. An environment that raises stops the run with a message naming `what` and the prompt."""
        def run(index: int) -> Any:
            try:
                return call(*jobs[index])
            except RlkitError:
                raise
            except Exception as error:
                raise PluginError(f"the environment failed on {what} of the prompt {prompts[index][:80]!r}: "
                                  f"{type(error).__name__}: {error}") from error

        if self.num_workers == 1 or len(jobs) <= 1:
            return [run(index) for index in range(len(jobs))]
        with ThreadPoolExecutor(max_workers=min(self.num_workers, len(jobs)), thread_name_prefix="rlkit-env") as pool:
            return list(pool.map(run, range(len(jobs))))

    # -- the batch --------------------------------------------------------------------------------
    def _assemble(self, conversations: list[Conversation], owners: list[PromptItem], budget: int) -> Batch:
        completions: list[Completion] = [conversation.as_completion() for conversation in conversations]
        batch = completions_to_batch(
            completions,
            pad_token_id=self.pad_token_id,
            max_prompt_length=max(len(conversation.prompt_ids) for conversation in conversations),
            max_response_length=budget,
            group_index=[owner.group for owner in owners],
            meta={
                "prompt_text": [conversation.prompt_text for conversation in conversations],
                "data_source": [owner.data_source for owner in owners],
                "ground_truth": [owner.ground_truth for owner in owners],
                "extra_info": [owner.extra_info for owner in owners],
            },
        )
        response_mask_BT = torch.zeros((len(conversations), budget), dtype=torch.float32)
        for row, conversation in enumerate(conversations):
            response_mask_BT[row, : len(conversation.model_mask)] = torch.tensor(conversation.model_mask,
                                                                                 dtype=torch.float32)
        batch["response_mask"] = response_mask_BT
        batch["trajectory"] = [conversation.trajectory for conversation in conversations]
        return batch

    @property
    def renderer(self) -> ChatRenderer:
        if self._renderer is None:
            self._renderer = ChatRenderer(self.tokenizer)
        return self._renderer

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
