"""The metric sinks of build_logger: the wandb sink against a stand-in wandb module (wandb itself is an
optional extra and needs an account or offline mode), and its error when wandb is missing."""

import sys
import types

import pytest

from rlkit.errors import ConfigError
from rlkit.trainer.metrics import build_logger


class FakeRun:
    def __init__(self):
        self.logged, self.finished = [], False

    def log(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def finish(self):
        self.finished = True


def test_wandb_sink_starts_a_run_logs_each_step_and_finishes(monkeypatch, tmp_path):
    runs = []

    def init(project, name, config):
        runs.append((project, name, config, FakeRun()))
        return runs[-1][3]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    logger = build_logger(["wandb"], tmp_path, is_main=True, total_steps=2, start_step=0, progress_bar=False,
                          project="proj", name="exp", config={"optim": {"lr": 1e-6}})
    logger.log(1, {"reward/mean": 0.5})
    logger.log(2, {"reward/mean": 0.75, "val/reward/mean": 1.0})
    logger.close()
    (project, name, config, run), = runs
    assert (project, name, config) == ("proj", "exp", {"optim": {"lr": 1e-6}})
    assert [step for step, _ in run.logged] == [1, 2] and run.logged[1][1]["val/reward/mean"] == 1.0
    assert run.finished


def test_only_rank_0_starts_a_wandb_run(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **_: pytest.fail("init on rank 1")))
    build_logger(["wandb"], tmp_path, is_main=False, total_steps=1, start_step=0, progress_bar=False).close()


def test_wandb_missing_is_a_config_error_that_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb then raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'rlkit\[wandb\]'"):
        build_logger(["wandb"], tmp_path, is_main=True, total_steps=1, start_step=0, progress_bar=False)
