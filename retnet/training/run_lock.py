"""One writer per run folder: an exclusive ``flock`` on ``<run>/.lock``, held while a run trains.

Two processes writing one run folder would replace each other's checkpoints, mix files inside one checkpoint
and interleave ``metrics.jsonl``. The lock is an advisory ``fcntl.flock`` on a lock file: the kernel releases it
when the holder's file descriptor closes, which includes the holder dying by SIGKILL, so a crash never leaves
a stale lock behind. The holder writes its PID into the file so that a refused process can name it. Under
``torchrun`` only rank 0 takes the lock; the other ranks learn its outcome through a broadcast, so every rank
fails together rather than some waiting at a barrier.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .distributed import DistInfo, broadcast_object

LOCK_NAME = ".lock"


class RunDirLockedError(RuntimeError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive, non-blocking lock on a run folder (see the module docstring).

    Args:
        run_dir: the run folder (created if missing).

    Raises:
        RunDirLockedError: another process holds the lock (the message names its PID).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirLockedError(
                f"run folder {self.path.parent} is in use by process {holder} (lock {self.path}); "
                "wait for it to finish or pick another run folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (idempotent). The lock file stays; it is harmless without a holder."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def lock_run_dir(run_dir: str | os.PathLike, info: DistInfo) -> Iterator[RunLock | None]:
    """Hold the run folder's lock for the block (rank 0 only; every rank raises if rank 0 could not take it).

    Raises:
        RunDirLockedError: another process holds the lock.
    """
    lock, error = None, None
    if info.is_main:
        try:
            lock = RunLock(run_dir)
        except RunDirLockedError as err:
            error = str(err)
    error = broadcast_object(error)
    if error is not None:
        raise RunDirLockedError(error)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
