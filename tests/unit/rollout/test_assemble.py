"""completions_to_batch on hand-built completions; the expected tensors are written out in full."""

from __future__ import annotations

import pytest
import torch

from rlkit.rollout.assemble import completions_to_batch
from rlkit.rollout.base import Completion

PAD = 0


def two_completions(logprobs=True):
    return [
        # prompt [5, 6] (2 tokens), response [7, 8, 9] (3 tokens, ends with EOS 9)
        Completion([5, 6], [7, 8, 9], [-0.1, -0.2, -0.3] if logprobs else None, "stop", "x y"),
        # prompt [4, 5, 6] (3 tokens), response [3] (1 token, hit the length limit in the test's terms)
        Completion([4, 5, 6], [3], [-0.5] if logprobs else None, "length", "z"),
    ]


def test_hand_computed_batch():
    batch = completions_to_batch(
        two_completions(),
        pad_token_id=PAD,
        max_prompt_length=4,  # P = 4: prompts left-padded by 2 and 1
        max_response_length=3,  # T = 3: responses right-padded by 0 and 2
        group_index=[0, 1],
        meta={"data_source": ["a", "b"], "prompt_text": ["p0", "p1"]},
    )
    #                          |  prompt (P=4)  | response (T=3)
    assert batch["input_ids"].tolist() == [[0, 0, 5, 6, 7, 8, 9],
                                           [0, 4, 5, 6, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1, 1, 1, 1],
                                                [0, 1, 1, 1, 1, 0, 0]]
    # cumsum(mask) - 1 = [-1,-1,0,1,2,3,4] and [-1,0,1,2,3,3,3], clipped at 0
    assert batch["position_ids"].tolist() == [[0, 0, 0, 1, 2, 3, 4],
                                              [0, 0, 1, 2, 3, 3, 3]]
    assert batch["response_mask"].tolist() == [[1.0, 1.0, 1.0],
                                               [1.0, 0.0, 0.0]]
    assert batch["response_mask"].dtype == torch.float32
    torch.testing.assert_close(batch["rollout_logprobs"], torch.tensor([[-0.1, -0.2, -0.3],
                                                                       [-0.5, 0.0, 0.0]]))
    assert batch.prompt_width == 4 and batch.response_width == 3
    assert batch.meta == {
        "data_source": ["a", "b"],
        "prompt_text": ["p0", "p1"],
        "group_index": [0, 1],
        "response_text": ["x y", "z"],
        "finish_reason": ["stop", "length"],
        "response_length": [3, 1],
    }


def test_rollout_logprobs_only_when_every_completion_has_them():
    completions = two_completions()
    completions[1].logprobs = None
    batch = completions_to_batch(completions, pad_token_id=PAD, max_prompt_length=3, max_response_length=3,
                                 group_index=[0, 0], meta={})
    assert "rollout_logprobs" not in batch
    assert batch["input_ids"].shape == (2, 6)


def test_never_truncates():
    with pytest.raises(AssertionError, match="prompt of 3 tokens > width 2"):
        completions_to_batch(two_completions(), pad_token_id=PAD, max_prompt_length=2, max_response_length=3,
                             group_index=[0, 1], meta={})
    with pytest.raises(AssertionError, match="response of 3 tokens > width 2"):
        completions_to_batch(two_completions(), pad_token_id=PAD, max_prompt_length=3, max_response_length=2,
                             group_index=[0, 1], meta={})


def test_meta_is_copied_not_mutated():
    meta = {"data_source": ["a", "b"]}
    batch = completions_to_batch(two_completions(), pad_token_id=PAD, max_prompt_length=3, max_response_length=3,
                                 group_index=[0, 1], meta=meta)
    assert meta == {"data_source": ["a", "b"]}
    batch.meta["data_source"].append("c")
    assert meta == {"data_source": ["a", "b"]}


def test_split_and_select_keep_rows_together():
    batch = completions_to_batch(two_completions(), pad_token_id=PAD, max_prompt_length=3, max_response_length=3,
                                 group_index=[0, 1], meta={})
    second = batch.select([1])
    assert second["input_ids"].tolist() == [[4, 5, 6, 3, 0, 0]]
    assert second["response_length"] == [1]
