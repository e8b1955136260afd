"""One run at a time per results file: an exclusive ``flock`` on ``<results>.lock``.

The kernel releases a ``flock`` when its process dies, however it dies, so a lock left by a
killed run is never stale: the next run simply gets it, and is told which process held it
before. The lock file holds the holder's PID while it runs, so a refused run can name it; a
clean exit empties it, so a PID found by a run that gets the lock means a run was killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bulk_sender.errors import AlreadyRunningError

__all__ = ["hold_lock", "lock_path"]


def lock_path(results: Path) -> Path:
    """The lock file guarding the results file ``results``."""
    return results.with_name(results.name + ".lock")


@contextlib.contextmanager
def hold_lock(results: Path) -> Iterator[int | None]:
    """Hold the run lock for ``results``; yields the PID of a dead earlier holder, if any."""
    path = lock_path(results)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        previous = _read_pid(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f"process {previous}" if previous else "another process"
            raise AlreadyRunningError(
                f"{holder} is already sending to {results} (lock {path}); wait for it to "
                "finish, or stop it, then run the same command again",
                pid=previous,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield previous if previous != os.getpid() else None
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no PID: only a crash does
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
