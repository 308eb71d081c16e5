"""Atomic, verifiable checkpoints.

A checkpoint is a directory `checkpoints/step_NNNNNNNN/` written first under a temporary name and renamed
into place only when complete, with a manifest (every file's size and sha256) written last. Loading
checks the manifest; `latest()` skips incomplete or corrupted checkpoints so a resumed run falls back to
the previous good one. Old checkpoints are deleted only after the new one is in place.

A process killed at any moment (even during a save) leaves the previous checkpoints whole: an interrupted
save is only a `.tmp_step_*` directory, which `latest()` never considers and the next save removes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from rlkit.distributed import all_reduce_max, broadcast_object
from rlkit.errors import CheckpointError, ConfigError

MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"  # the step, kind, world size and the run's own state (rlkit.trainer.shell)
_OUT_OF_SPACE_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), "os error 28", "os error 122")
_NEARLY_FULL_BYTES = 64 * 2**20
PREFIX = "step_"
log = logging.getLogger(__name__)


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, step: int) -> None:
    """List every file's size and sha256 in `directory`/manifest.json, after flushing the files to disk:
    the manifest is written last, so its presence means the rest is complete."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    for path in files:
        _fsync_file(path)
    entries = {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"step": step, "files": entries}, indent=1))
    _fsync_file(tmp)
    os.replace(tmp, directory / MANIFEST)


def out_of_space(error: BaseException, directory: Path) -> bool:
    """Whether a failed write failed for want of disk space. Writers report it differently: OSError ENOSPC
    (Python), an "os error 28" message (safetensors), an opaque RuntimeError (torch.save), so a failure while
    the disk is nearly full counts as well."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(text in str(error) for text in _OUT_OF_SPACE_TEXTS):
        return True
    try:
        return shutil.disk_usage(directory).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(directory: Path) -> None:
    """Raise CheckpointError naming the first missing, truncated or corrupted file."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {directory} is incomplete: it has no {MANIFEST} (was it interrupted?)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {directory}: {MANIFEST} is corrupted") from None
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory} is missing {name}")
        if path.stat().st_size != expected["size"]:
            raise CheckpointError(
                f"checkpoint {directory}: {name} has {path.stat().st_size} bytes, the manifest says "
                f"{expected['size']} (truncated)"
            )
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"checkpoint {directory}: {name} does not match its sha256 (corrupted)")


class CheckpointManager:
    """Saves and finds checkpoints under `root` (output_dir/checkpoints). Collective: every rank calls."""

    def __init__(self, root: Path, keep_last: int, is_main: bool):
        self.root = root
        self.keep_last = keep_last
        self.is_main = is_main

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Call `write(tmp_dir)` on every rank, then publish the directory atomically on rank 0.

        A full disk (on any rank) ends the save on every rank with a CheckpointError that says so and where;
        the unfinished directory is removed and the earlier checkpoints stay as they were.
        """
        final = self.root / step_dir_name(step)
        tmp = self.root / f".tmp_{step_dir_name(step)}"
        with self._out_of_space_is_an_error(step, tmp):
            if self.is_main:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
        with self._out_of_space_is_an_error(step, tmp):
            write(tmp)
        with self._out_of_space_is_an_error(step, tmp):
            if self.is_main:
                write_manifest(tmp, step)
                if final.exists():  # re-saving the same step: move the old one aside, then drop it
                    stale = self.root / f".stale_{step_dir_name(step)}"
                    os.replace(final, stale)
                    os.replace(tmp, final)
                    shutil.rmtree(stale)
                else:
                    os.replace(tmp, final)
                self._fsync_dir(self.root)
                self._prune()
        return final

    @contextmanager
    def _out_of_space_is_an_error(self, step: int, tmp: Path) -> Iterator[None]:
        """Run one part of a save on every rank, then agree (a collective) on whether any rank ran out of space."""
        full: Exception | None = None
        try:
            yield
        except Exception as error:
            if not out_of_space(error, self.root):
                raise
            full = error
        if all_reduce_max(1.0 if full else 0.0) == 0.0:
            return
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space the unfinished save took
        earlier = self.complete_checkpoints()
        kept = f"the earlier checkpoint {earlier[-1]} is intact" if earlier else "there is no earlier checkpoint"
        if full is None:
            where = f"on another rank, under {tmp}"
        else:
            where = f"writing {getattr(full, 'filename', None) or tmp} ({type(full).__name__}: {full})"
        raise CheckpointError(
            f"the disk is full: saving the checkpoint of step {step} failed {where}; {kept}. Free space on the disk "
            f"of {self.root} (or lower trainer.keep_last), then run the same command again to resume"
        ) from full

    def complete_checkpoints(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))

    def latest(self) -> Path | None:
        """The newest checkpoint that verifies; broken ones are reported and skipped. None when there are no
        checkpoints; a CheckpointError (naming the newest one's bad file) when there are some but none verifies,
        since starting afresh would silently throw the run's progress away."""
        found, problem = None, None
        if self.is_main:
            for candidate in reversed(self.complete_checkpoints()):
                try:
                    verify(candidate)
                    found = str(candidate)
                    break
                except CheckpointError as error:
                    log.warning("skipping %s: %s", candidate.name, error)
                    problem = problem or str(error)
        found, problem = broadcast_object((found, problem))
        if found is None and problem is not None:
            raise CheckpointError(
                f"no checkpoint in {self.root} is complete: {problem}; move the broken checkpoints away to start "
                "over, or give a good one with trainer.resume=PATH"
            )
        return Path(found) if found else None

    def _prune(self) -> None:
        for old in self.complete_checkpoints()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for pattern in (".tmp_*", ".stale_*"):  # what a save interrupted by a crash left behind
            for leftover in self.root.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def resume_point(resume: str, checkpoints: CheckpointManager, output_dir: Path) -> Path | None:
    """The checkpoint `trainer.resume` asks for: 'auto' the newest good one in output_dir (None: start fresh),
    'disable' none, or a path: a checkpoint directory, or a run's output directory (its newest good one)."""
    if resume == "disable":
        if checkpoints.complete_checkpoints():
            raise ConfigError(
                f"trainer.output_dir={output_dir} already holds checkpoints and trainer.resume=disable; "
                "set trainer.resume=auto to continue, or choose a new trainer.output_dir"
            )
        return None
    if resume == "auto":
        return checkpoints.latest()
    path = Path(resume).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"trainer.resume={resume}: no such checkpoint directory; give a checkpoint "
            "(OUTPUT_DIR/checkpoints/step_N), 'auto' or 'disable'"
        )
    if not path.is_dir():
        raise CheckpointError(
            f"trainer.resume={resume} is a file; give a checkpoint directory (OUTPUT_DIR/checkpoints/step_N)"
        )
    if (path / "checkpoints").is_dir() and not (path / MANIFEST).exists():
        found = CheckpointManager(path / "checkpoints", checkpoints.keep_last, checkpoints.is_main).latest()
        if found is None:
            raise CheckpointError(f"trainer.resume={resume}: {path / 'checkpoints'} holds no checkpoint")
        return found
    try:
        verify(path)
    except CheckpointError as error:
        raise CheckpointError(
            f"trainer.resume={resume}: {error}; give another checkpoint, or trainer.resume=auto to use the newest "
            "good one in trainer.output_dir"
        ) from None
    return path
