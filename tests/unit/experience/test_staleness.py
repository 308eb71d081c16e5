"""Version bookkeeping with hand-built versions: ages, the groups too old to train, and dropping them."""

import torch

from rlkit.batch import Batch
from rlkit.experience.staleness import drop_stale, response_ages, stale_groups


def batch_of(versions, groups):
    return Batch({"response_mask": torch.ones(len(versions), 2)},
                 {"policy_version": list(versions), "group_index": list(groups)})


def test_an_age_is_the_versions_between_the_sampler_and_the_update():
    # The update of step 5 starts from version 4: responses of versions 4, 3 and 1 are 0, 1 and 3 versions old.
    assert response_ages([4, 3, 1], current=4) == [0, 1, 3]


def test_a_group_is_stale_when_any_of_its_responses_is_older_than_allowed():
    versions = [4, 4, 2, 3, 1, 1]
    groups = [0, 0, 1, 1, 2, 2]  # group 1 mixes a response of age 2 with one of age 1
    assert stale_groups(versions, groups, current=4, max_age=1) == {1, 2}
    assert stale_groups(versions, groups, current=4, max_age=3) == set()
    assert stale_groups(versions, groups, current=4, max_age=0) == {1, 2}


def test_drop_stale_removes_whole_groups_and_counts_the_responses():
    batch = batch_of([4, 4, 2, 3, 1, 1], [0, 0, 1, 1, 2, 2])
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    kept, kept_scores, dropped = drop_stale(batch, scores, current=4, max_age=1)
    assert kept["group_index"] == [0, 0] and kept["policy_version"] == [4, 4]
    assert kept_scores.tolist() == [0.0, 1.0] and dropped == 4
    same, same_scores, none = drop_stale(batch, scores, current=4, max_age=3)
    assert same is batch and torch.equal(same_scores, scores) and none == 0
