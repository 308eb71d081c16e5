from collections import Counter

import pytest

from rlkit.data.builtin import BUILTIN_TASKS, builtin_examples
from rlkit.errors import DataError


def test_letters_sizes_balance_and_format():
    train = builtin_examples("builtin:letters")
    val = builtin_examples("builtin:letters-val")
    assert len(train) == 200 and len(val) == 20
    assert Counter(example["ground_truth"] for example in train) == {letter: 40 for letter in "abcde"}
    assert Counter(example["ground_truth"] for example in val) == {letter: 4 for letter in "abcde"}
    for example in train + val:
        assert example["prompt"] == f"repeat the letter {example['ground_truth']}"
        assert example["data_source"] == "letters"


def test_letters_are_deterministic_and_val_has_its_own_order():
    assert builtin_examples("builtin:letters") == builtin_examples("builtin:letters")
    train_order = [example["ground_truth"] for example in builtin_examples("builtin:letters")[:20]]
    val_order = [example["ground_truth"] for example in builtin_examples("builtin:letters-val")]
    assert train_order != val_order
    assert set(BUILTIN_TASKS) >= {"letters", "letters-val"}


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown built-in task 'builtin:digits'.*builtin:letters, builtin:letters-val"):
        builtin_examples("builtin:digits")
