"""Errors a user can cause and fix. The CLI turns these into one line and exit code 2."""


class RlkitError(Exception):
    """A mistake in the user's input (config, flag, data file, plugin, path).

    The message names the file, row, key or flag and says what to do. The CLI prints it without a
    traceback (``--debug`` shows one) and exits with code 2.
    """


class ConfigError(RlkitError):
    """A config file, flag or override is invalid."""


class DataError(RlkitError):
    """A data file is missing, unreadable, or has a bad row."""


class PluginError(RlkitError):
    """A named component (engine, estimator, reward, ...) cannot be found or loaded."""


class RewardError(RlkitError):
    """A reward function failed on a sample; the message names the sample and the plugin."""


class CheckpointError(RlkitError):
    """A checkpoint is missing, incomplete or corrupted."""


class RunStopped(Exception):
    """A run that stopped on request (a preemption signal, Ctrl-C) and can be resumed.

    Not a mistake: the CLI prints the message (where it stopped, how to resume) without ``error:`` and exits
    with ``exit_code``: PREEMPTED_EXIT_CODE after a preemption signal, 130 after Ctrl-C
    (rlkit.trainer.preemption).
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
