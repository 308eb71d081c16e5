"""Outcome scores onto tokens: the last token the model sampled, wherever environment tokens sit."""

import torch

from rlkit.trainer.prepare import scores_on_last_token


def test_a_score_lands_on_the_last_model_token():
    response_mask = torch.tensor([
        [1.0, 1.0, 1.0, 0.0, 0.0],  # one turn: its last token is column 2
        [1.0, 0.0, 0.0, 1.0, 0.0],  # model, tool message, model: column 3, not sum(mask) - 1 = 1
        [0.0, 0.0, 0.0, 0.0, 0.0],  # no token: no score
        [1.0, 1.0, 0.0, 1.0, 1.0],  # the last column
    ])
    scores = torch.tensor([0.5, 1.0, 7.0, -1.0])
    expected = torch.zeros(4, 5)
    expected[0, 2], expected[1, 3], expected[3, 4] = 0.5, 1.0, -1.0
    assert torch.equal(scores_on_last_token(scores, response_mask), expected)
