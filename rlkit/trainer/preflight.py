"""Every component an RL config names, resolved before anything is written or any model loads.

A misspelt `algorithm.policy_loss`, a plugin file that is not there, or a data_source that no reward scores
would otherwise pass and fail at the first update or reward, after the models loaded and the rollout ran.
`rlkit validate` and the trainer both call :func:`check_components`; the data sources are checked by
`rlkit validate` where the data files are at hand and by the trainer as soon as the data is loaded
(rlkit.trainer.components). Resolving a plugin imports it: plugins are trusted code.
"""

from __future__ import annotations

from pathlib import Path

from rlkit.algorithms.advantages import estimator_for
from rlkit.config.schema import RunConfig
from rlkit.data.builtin import is_builtin
from rlkit.data.prompts import read_examples
from rlkit.errors import PluginError
from rlkit.registry import POLICY_LOSSES
from rlkit.rewards.loading import check_data_sources, resolve_rewards


def check_components(cfg: RunConfig) -> None:
    """The advantage estimator, the policy loss and every reward the config can select resolve, and
    reward.kwargs fit them. Raises PluginError naming the key."""
    for key, resolve in (("algorithm.adv_estimator", estimator_for), ("algorithm.policy_loss", POLICY_LOSSES.get)):
        name = getattr(cfg.algorithm, key.split(".")[1])
        try:
            resolve(name)
        except PluginError as error:
            raise PluginError(f"{key}={name}: {error}") from None
    resolve_rewards(cfg.reward)


def check_data_files(cfg: RunConfig) -> list[str]:
    """Check that every data_source in the data files has a reward, reading the files without a tokenizer.
    Returns the files that are not here to read (not checked)."""
    sources: dict[str, str] = {}
    missing: list[str] = []
    for key, files in (("data.train_files", cfg.data.train_files), ("data.val_files", cfg.data.val_files)):
        for name in files:
            if not is_builtin(name) and not Path(name).is_file():
                missing.append(name)
                continue
            for example in read_examples(name, cfg.data):
                sources.setdefault(example.data_source, f"{key}: {example.location}")
    check_data_sources(cfg.reward, sources)
    return missing
