"""A run's output directory: checked, created and locked before anything is written there, cleaned up after a
failed setup by removing only what this run created, and given back when the run ends.

* :meth:`OutputDir.open` checks `trainer.output_dir` (a directory or creatable, writable, names the filesystem
  allows), creates it and takes its lock (rlkit.trainer.lock) on rank 0; every rank raises the same error.
* :meth:`OutputDir.setup` wraps the setup (model, data, plugins, checkpoint). If it fails, rank 0 removes what
  this run created and nothing else: the run's own entries (RUN_ENTRIES) that were not there when it took the
  lock, the lock file when it made it, and the directory and parents it made, each only once empty. Whatever
  another program wrote meanwhile (into `trainer.output_dir=.`, say, or a shared runs folder) stays.
* :meth:`OutputDir.running` wraps the training loop and notes how it ended; :meth:`OutputDir.release`, the last
  thing a run does when it closes, records that in the lock file and gives the lock back.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlkit.distributed import DistInfo, raise_on_every_rank
from rlkit.errors import ConfigError, RunStopped
from rlkit.trainer.lock import OutputDirLock

# What a run writes in its output directory (docs/reliability.md, "Where rlkit writes").
RUN_ENTRIES = ("builtin_tiny", "checkpoints", "metrics.jsonl", "tensorboard")
_NAME_MAX = 255  # the longest file name most filesystems allow (ext4, xfs, btrfs, NFS)


class OutputDir:
    """The output directory of one run, locked by it (on rank 0) from `open` until the run ends."""

    def __init__(self, path: Path, is_main: bool):
        self.path = path
        self.is_main = is_main
        self.lock: OutputDirLock | None = None
        self._made_dirs: list[Path] = []  # directories this run created, deepest first
        self._new_entries: list[Path] = []  # RUN_ENTRIES absent when the lock was taken
        self.end_state = "failed"  # what the lock file records at the end: a run that never finished failed

    @classmethod
    def open(cls, output_dir: str | Path, dist: DistInfo, command: str) -> OutputDir:
        """Check, create and lock `output_dir`; `command` ("rlkit train") names the run to a second one."""
        directory = cls(Path(output_dir).expanduser(), dist.is_main)
        check_output_dir(directory.path)
        raise_on_every_rank(lambda: directory._create_and_lock(command), is_main=dist.is_main)
        return directory

    @property
    def previous_state(self) -> str | None:
        """How the last run in this directory ended ('finished', 'failed', 'stopped'; 'running' when it was
        killed), None when no run left a lock file here. Rank 0 only."""
        return self.lock.previous.state if self.lock and self.lock.previous else None

    @contextmanager
    def setup(self) -> Iterator[None]:
        """If the block raises, remove what this run created and give the lock back as it was."""
        try:
            yield
        except BaseException:
            if self.is_main:
                self._remove_created()
            raise

    def release(self) -> None:
        """Record how the run ended (see `running`) in the lock file and give the lock back."""
        if self.lock is not None:
            self.lock.release(self.end_state)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Note how the block (the training loop) ended: finished, stopped (RunStopped) or failed."""
        try:
            yield
            self.end_state = "finished"
        except RunStopped:
            self.end_state = "stopped"
            raise

    # -- helpers ----------------------------------------------------------------------------------
    def _create_and_lock(self, command: str) -> None:
        missing = [path for path in (self.path, *self.path.parents) if not path.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"trainer.output_dir={self.path} cannot be created: {error.strerror}") from None
        self._made_dirs = missing
        self.lock = OutputDirLock(self.path, command)
        try:
            self.lock.acquire()
        except BaseException:
            self._remove_made_dirs()
            raise
        self._new_entries = [self.path / name for name in RUN_ENTRIES if not (self.path / name).exists()]

    def _remove_created(self) -> None:
        for entry in self._new_entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.abandon()
        self._remove_made_dirs()

    def _remove_made_dirs(self) -> None:
        for directory in self._made_dirs:
            try:
                directory.rmdir()  # only when empty: anything another program put there stays
            except OSError:
                return


def check_output_dir(directory: Path) -> None:
    """trainer.output_dir must be a writable directory, or creatable: no file in its place or on its path, and
    no name longer than the filesystem allows."""
    for part in directory.parts:
        if len(os.fsencode(part)) > _NAME_MAX:
            raise ConfigError(
                f"trainer.output_dir: the name '{part[:40]}...' is {len(os.fsencode(part))} bytes long, more than "
                f"the {_NAME_MAX} a file name may have; choose a shorter trainer.output_dir"
            )
    for existing in (directory, *directory.parents):
        try:
            if not existing.exists():
                continue
        except OSError as error:
            if error.errno == errno.ENAMETOOLONG:
                raise ConfigError(f"trainer.output_dir={directory} is too long a path; choose a shorter one") from None
            raise
        if not existing.is_dir():
            where = "is a file" if existing == directory else f"cannot be created: {existing} is a file"
            raise ConfigError(f"trainer.output_dir={directory} {where}; set trainer.output_dir to a directory path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"trainer.output_dir={directory}: {existing} is not writable; choose a directory you can write to"
            )
        return
