"""One run at a time in an output directory: the lock file OUTPUT_DIR/.rlkit.lock.

The file is a line of JSON naming its run: host, pid, command, start time and state (``running``, then
``finished``, ``failed`` or ``stopped``). While a run lives it holds an OS lock (``flock``) on the file, so a
second run finds it taken and stops with one line naming the holder. The file stays after the run with its
final state: a later run reads it to tell a run that finished (whose metrics it must not overwrite) from one
that was interrupted.

A run killed with ``kill -9`` leaves state ``running`` and no OS lock: a run on the same host takes the lock
over with a warning. A ``running`` lock written on another host is never taken over (a shared filesystem
need not pass OS locks between hosts); the message says to delete the file once that run is gone. Where the
filesystem has no ``flock`` at all, the holder's pid decides on its own host.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from rlkit.errors import ConfigError

LOCK_FILE = ".rlkit.lock"
log = logging.getLogger(__name__)

# flock errors that mean "this filesystem does not lock", not "someone holds it".
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class Holder:
    """Who a lock file names, as read from it."""

    host: str = "?"
    pid: int = -1
    command: str = "?"
    started: str = "?"
    state: str = "?"

    @staticmethod
    def parse(text: str) -> Holder | None:
        try:
            fields = json.loads(text)
            return Holder(**{key: fields[key] for key in Holder.__dataclass_fields__ if key in fields})
        except (ValueError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid} on {self.host}, started {self.started})"


class OutputDirLock:
    """The lock of one output directory, held by this process from `acquire` to `release`."""

    def __init__(self, directory: Path, command: str):
        """`command` names the run in messages ("rlkit train")."""
        self.path = Path(directory) / LOCK_FILE
        self.command = command
        self.created = False  # this run made the file (a failed setup removes it again)
        self.previous: Holder | None = None  # the state of the run before this one, if a file was there
        self._previous_text = ""
        self._fd: int | None = None
        self._started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the run that holds it."""
        while True:
            existed = self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os_locked = _try_flock(fd)
                if os_locked is False:
                    raise ConfigError(self._held_message(_read(fd)))
                # An unlinked or replaced file may have been locked just now: only the file at the path counts.
                if os.fstat(fd).st_ino != _inode(self.path):
                    os.close(fd)
                    continue
                text = _read(fd)
                self._check_takeover(Holder.parse(text) if text.strip() else None, os_locked)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self.created, self._previous_text = fd, not existed, text
            self.previous = Holder.parse(text) if text.strip() else None
            self._write(self._holder("running"))
            return

    def release(self, state: str) -> None:
        """Record the run's final state ('finished', 'failed' or 'stopped') and let go."""
        if self._fd is None:
            return
        try:
            self._write(self._holder(state))
        finally:
            self._close()

    def abandon(self) -> None:
        """Undo `acquire` after a failed setup: remove the file this run made, or put back what it held."""
        if self._fd is None:
            return
        try:
            if self.created:
                self.path.unlink(missing_ok=True)
            else:
                self._write(self._previous_text)
        finally:
            self._close()

    # -- helpers ----------------------------------------------------------------------------------
    def _check_takeover(self, holder: Holder | None, os_locked: bool | None) -> None:
        """The file is not OS-locked (or the filesystem cannot say): refuse a live or foreign holder, and warn
        when taking over from a dead one."""
        if holder is None or holder.state != "running":
            return
        if holder.host != socket.gethostname():
            raise ConfigError(
                f"{self._held_message_head(holder)}; rlkit cannot tell from here whether that run still lives. "
                f"If it is gone, delete {self.path} and start again; else choose another trainer.output_dir"
            )
        if os_locked is None and _alive(holder.pid):
            raise ConfigError(self._held_message(json.dumps(holder.__dict__)))
        log.warning("%s was left by %s, which is no longer running (killed?); this run takes the lock over",
                    self.path, holder.describe())

    def _held_message(self, text: str) -> str:
        holder = Holder.parse(text)
        if holder is None:
            return (f"trainer.output_dir={self.path.parent} is in use by another run (it holds {self.path}); "
                    "wait for it to finish or choose another trainer.output_dir")
        return f"{self._held_message_head(holder)}; wait for it to finish or choose another trainer.output_dir"

    def _held_message_head(self, holder: Holder) -> str:
        return f"trainer.output_dir={self.path.parent} is in use by another run: {holder.describe()}"

    def _holder(self, state: str) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                           "started": self._started, "state": state}) + "\n"

    def _write(self, text: str) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)
        os.fsync(self._fd)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops the OS lock


def _try_flock(fd: int) -> bool | None:
    """True: locked. False: another process holds it. None: the filesystem does not lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_LOCKING:
            return None
        raise


def _read(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode(errors="replace")


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
