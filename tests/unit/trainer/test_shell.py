"""The trainer shell's contract with a run kind: the methods a subclass must define are abstract, so a run kind
that forgets one fails when it is built, not halfway through a run."""

import pytest

from rlkit.trainer.rl import RLTrainer
from rlkit.trainer.sft import SFTTrainer
from rlkit.trainer.shell import TrainerShell

REQUIRED = {"setup", "train_one_step", "has_validation", "validate", "save_engines", "load_engines"}


def test_a_run_kind_must_define_its_steps_validation_and_engine_checkpoints():
    assert TrainerShell.__abstractmethods__ == REQUIRED
    assert not RLTrainer.__abstractmethods__ and not SFTTrainer.__abstractmethods__


def test_a_run_kind_missing_one_cannot_be_built():
    class NoValidation(TrainerShell):  # every required method but `validate`
        kind, command = "rl", "rlkit train"

        def setup(self): ...
        def train_one_step(self): ...
        def has_validation(self): ...
        def save_engines(self, directory): ...
        def load_engines(self, directory): ...

    with pytest.raises(TypeError, match="validate"):
        NoValidation(cfg=None, dist=None)  # refused before __init__ reads either
