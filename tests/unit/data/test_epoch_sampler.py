import itertools

import pytest
import torch

from rlkit.data.sampler import EpochSampler
from rlkit.errors import DataError


def take(iterator, count):
    return list(itertools.islice(iterator, count))


def test_epoch_order_is_the_seeded_permutation():
    sampler = EpochSampler(num_items=10, batch_size=4, seed=7, shuffle=True)
    assert sampler.steps_per_epoch == 2  # 10 // 4, the last 2 items dropped
    batches = take(iter(sampler), 4)
    epoch0 = torch.randperm(10, generator=torch.Generator().manual_seed(7)).tolist()
    epoch1 = torch.randperm(10, generator=torch.Generator().manual_seed(8)).tolist()
    assert batches == [epoch0[0:4], epoch0[4:8], epoch1[0:4], epoch1[4:8]]
    assert sampler.state_dict() == {"epoch": 2, "position": 0}


def test_without_shuffle_and_without_drop_last():
    sampler = EpochSampler(num_items=5, batch_size=2, seed=0, shuffle=False, drop_last=False)
    assert sampler.steps_per_epoch == 3  # ceil(5 / 2)
    assert take(iter(sampler), 4) == [[0, 1], [2, 3], [4], [0, 1]]


def test_resume_from_the_middle_yields_the_same_batches():
    reference = EpochSampler(num_items=11, batch_size=3, seed=3)
    iterator = iter(reference)
    take(iterator, 5)  # 3 batches per epoch: stop in the middle of epoch 1
    state = reference.state_dict()
    assert state == {"epoch": 1, "position": 2}
    expected = take(iterator, 7)  # runs across two more epoch boundaries

    resumed = EpochSampler(num_items=11, batch_size=3, seed=3)
    resumed.load_state_dict(state)
    assert take(iter(resumed), 7) == expected


def test_different_seeds_give_different_orders():
    first = take(iter(EpochSampler(100, 10, seed=0)), 1)
    second = take(iter(EpochSampler(100, 10, seed=1)), 1)
    assert first != second


def test_too_few_items_and_bad_state():
    with pytest.raises(DataError, match="3 prompts, fewer than one batch of 4"):
        EpochSampler(num_items=3, batch_size=4, seed=0)
    sampler = EpochSampler(num_items=8, batch_size=4, seed=0)
    with pytest.raises(DataError, match="position 2 is outside an epoch of 2 batches"):
        sampler.load_state_dict({"epoch": 0, "position": 2})
