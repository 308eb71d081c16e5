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
