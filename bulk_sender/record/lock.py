"""One run at a time per results file: an exclusive ``flock`` on ``<results>.lock``.

The kernel releases a ``flock`` when its process dies, however it dies, so a lock left by a
killed run is never stale: the next run simply gets it, and is told which process held it
before. The lock file holds the holder's PID while it runs (``1234``), and ``1234 stopping``
once it has been asked to stop, so a refused run can name the holder and tell a run that is
about to end from one that is busy. A clean exit empties it, so a PID found by a run that
gets the lock means a run was killed.

A run that finds the lock held by a run that is stopping waits for it, up to a bound (a
stopping run ends within its grace period plus the time to write its results); a run that
finds it held by a run that is sending exits at once with
:class:`~bulk_sender.errors.AlreadyRunningError` (exit 75: busy, try again later).

The lock file is opened with ``O_NOFOLLOW``: a symbolic link planted at its name is refused,
never followed (truncating it would empty whatever file it points at).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bulk_sender.errors import AlreadyRunningError, UsageError

__all__ = ["Holder", "RunLock", "acquire_lock", "lock_path", "try_lock"]

log = logging.getLogger("bulk_sender")

_STOPPING = "stopping"
_POLL_SECONDS = 0.1
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def lock_path(results: Path) -> Path:
    """The lock file guarding the results file ``results``."""
    return results.with_name(results.name + ".lock")


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock we could not take: its PID (if it wrote one) and whether it is stopping."""

    pid: int | None
    stopping: bool

    def describe(self) -> str:
        """``process 1234``, or ``another process`` when the lock file names none."""
        return f"process {self.pid}" if self.pid else "another process"


class RunLock:
    """The lock of one run, held from :func:`try_lock` until :meth:`release`."""

    def __init__(self, path: Path, fd: int, previous: int | None) -> None:
        self.path = path
        self._fd: int | None = fd
        #: The PID a killed earlier holder left in the lock file, if any.
        self.previous = previous

    def __repr__(self) -> str:
        return f"RunLock(path={str(self.path)!r}, held={self._fd is not None})"

    def mark_stopping(self) -> None:
        """Tell a run that finds the lock held that this one is on its way out (best effort:
        a run that cannot say so still stops, and the other run exits 75 instead of waiting)."""
        with contextlib.suppress(OSError):
            self._write(f"{os.getpid()} {_STOPPING}\n")

    def release(self) -> None:
        """Empty the lock file (a clean exit leaves no PID: only a crash does) and unlock it."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def _write(self, content: str) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, content.encode("ascii"), 0)


def try_lock(results: Path) -> RunLock | Holder:
    """Take the lock for ``results`` if it is free; otherwise say who holds it."""
    path = lock_path(results)
    fd = _open(path)
    try:
        pid, stopping = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return Holder(pid=pid, stopping=stopping)
        lock = RunLock(path, fd, pid if pid != os.getpid() else None)
        lock._write(f"{os.getpid()}\n")
    except BaseException:
        os.close(fd)
        raise
    return lock


async def acquire_lock(
    results: Path, *, wait: float, give_up: Callable[[], str | None] = lambda: None
) -> RunLock:
    """Take the lock for ``results``, waiting up to ``wait`` seconds for a holder that is stopping.

    ``give_up`` is asked between tries; a reason it returns (a stop request) ends the wait.
    Raises :class:`AlreadyRunningError` for a holder that is sending, or still there when the
    wait ends.
    """
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while True:
        got = try_lock(results)
        if isinstance(got, RunLock):
            if deadline is not None:
                log.info("bulk_sender.lock_acquired", extra={"event": "bulk_sender.lock_acquired"})
            return got
        if not got.stopping:
            raise AlreadyRunningError(_busy_message(results, got), pid=got.pid)
        if deadline is None:
            deadline = loop.time() + wait
            _log_waiting(results, got, wait)
        reason = give_up()
        if reason is not None or loop.time() >= deadline:
            raise AlreadyRunningError(
                _still_stopping_message(results, got, wait, reason), pid=got.pid
            )
        await asyncio.sleep(_POLL_SECONDS)


def _open(path: Path) -> int:
    """Open the lock file, never through a symbolic link, and only if it is a plain file."""
    try:
        fd = os.open(path, _FLAGS, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"the lock file {path} is a symbolic link; bulk-sender does not follow it (it "
                "would empty the file it points at): remove the link and run again"
            ) from None
        raise UsageError(f"cannot open the lock file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"the lock file {path} is not a regular file: remove it and run again")
    return fd


def _read(fd: int) -> tuple[int | None, bool]:
    """The PID in the lock file, and whether it says its run is stopping."""
    words = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, words[1:2] == [_STOPPING]


def _busy_message(results: Path, holder: Holder) -> str:
    return (
        f"{holder.describe()} is already sending to {results} (lock {lock_path(results)}); "
        "nothing was sent. Run the same command again when it has finished, or stop it first"
    )


def _still_stopping_message(results: Path, holder: Holder, wait: float, why: str | None) -> str:
    waited = why or f"after waiting {wait:g} s"
    return (
        f"{holder.describe()} is stopping but still holds {lock_path(results)} {waited}; "
        "nothing was sent. Run the same command again in a moment"
    )


def _log_waiting(results: Path, holder: Holder, wait: float) -> None:
    log.warning(
        "bulk_sender.lock_wait",
        extra={
            "event": "bulk_sender.lock_wait",
            "holder_pid": holder.pid,
            "wait_seconds": wait,
            "hint": f"{holder.describe()} is stopping; this run starts when it has written "
            f"its results to {results}",
        },
    )
