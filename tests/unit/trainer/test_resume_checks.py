"""The one-line error of a resume whose run ends before its checkpoint's step: it names the key that set the
run's length, its value at the checkpoint and now, what to set instead, and how to start fresh."""

from types import SimpleNamespace

import pytest
import yaml

from rlkit.errors import ConfigError
from rlkit.trainer.resume_checks import check_total_steps


def checkpoint_with(tmp_path, **trainer):
    checkpoint = tmp_path / "step_00000006"
    checkpoint.mkdir()
    if trainer:
        (checkpoint / "config.yaml").write_text(yaml.safe_dump({"trainer": trainer}))
    return checkpoint


def refusal(trainer, total_steps, step, checkpoint) -> str:
    with pytest.raises(ConfigError) as raised:
        check_total_steps(trainer, total_steps, step, checkpoint)
    message = str(raised.value)
    assert "\n" not in message and message.endswith("or start fresh with trainer.output_dir=<a new directory>")
    return message


def test_a_run_that_reaches_the_checkpoint_resumes(tmp_path):
    check_total_steps(SimpleNamespace(total_steps=6, total_epochs=None), 6, 6, checkpoint_with(tmp_path))


def test_total_steps_names_its_old_and_new_value(tmp_path):
    checkpoint = checkpoint_with(tmp_path, total_steps=10, total_epochs=None)
    message = refusal(SimpleNamespace(total_steps=4, total_epochs=None), 4, 6, checkpoint)
    assert message.startswith(f"trainer.total_steps 10 -> 4 is below step 6 of {checkpoint}, which this run resumes "
                              "from; raise trainer.total_steps above 6 to train on")


def test_a_length_from_the_data_names_total_epochs_and_the_epochs_needed(tmp_path):
    # 2 epochs of 2 steps = 4 steps, below step 6: 6 // 2 + 1 = 4 epochs reach step 8, past the checkpoint
    checkpoint = checkpoint_with(tmp_path, total_steps=None, total_epochs=3)
    message = refusal(SimpleNamespace(total_steps=None, total_epochs=2), 4, 6, checkpoint)
    assert message.startswith(f"trainer.total_epochs 3 -> 2 makes this run 4 steps (2 an epoch), below step 6 of "
                              f"{checkpoint}, which it resumes from; set trainer.total_epochs=4 or more to train on")


def test_a_null_total_epochs_is_shown_as_one_epoch_and_an_unknown_old_value_is_left_out(tmp_path):
    checkpoint = checkpoint_with(tmp_path)  # no config.yaml
    message = refusal(SimpleNamespace(total_steps=None, total_epochs=None), 3, 6, checkpoint)
    assert message.startswith("trainer.total_epochs=null (one epoch) makes this run 3 steps (3 an epoch), below step "
                              f"6 of {checkpoint}, which it resumes from; set trainer.total_epochs=3 or more")
