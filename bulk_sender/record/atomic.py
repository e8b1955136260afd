"""Every file bulk-sender writes for the operator is written here: whole, or not at all.

:func:`atomic_write` gives a file object on a new temporary file in the target's directory;
when the block ends without an error the file is synced to disk, renamed over the target and
the directory is synced, so the rename itself survives a crash. A reader, or a run that dies
half-way, sees the old file or the new one, never a mix, and an error leaves the old file as
it was and no temporary file behind.

The temporary file gets a random name and is created exclusively (``O_EXCL``: an existing
file or planted symlink of that name is never opened) with mode 0666, so the kernel applies the
umask (and a directory's default ACL) exactly as for any file the user creates. tempfile's
``mkstemp`` would make it 0600, and reading the umask to correct that means changing it for
the whole process for a moment, while other threads may be creating files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO, overload

__all__ = ["atomic_write"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC  # O_EXCL: a symlink is not followed
_NAME_TRIES = 100


@overload
def atomic_write(
    path: Path, *, encoding: None = None
) -> contextlib.AbstractContextManager[BinaryIO]: ...
@overload
def atomic_write(
    path: Path, *, encoding: str, newline: str = "", errors: str = "strict"
) -> contextlib.AbstractContextManager[TextIO]: ...
def atomic_write(
    path: Path, *, encoding: str | None = None, newline: str = "", errors: str = "strict"
) -> contextlib.AbstractContextManager[IO[Any]]:
    """Replace ``path`` with what the block writes: bytes, or text in ``encoding``.

    ``newline`` and ``errors`` are passed to :func:`open` for text ("" writes line ends as
    given, as the csv module wants). Raises what the block raised, or the ``OSError`` of a
    failed write.
    """
    return _atomic(path, encoding, newline, errors)


@contextlib.contextmanager
def _atomic(path: Path, encoding: str | None, newline: str, errors: str) -> Iterator[IO[Any]]:
    fd, temp = _create_beside(path)
    try:
        handle: IO[Any] = (
            os.fdopen(fd, "wb")
            if encoding is None
            else os.fdopen(fd, "w", encoding=encoding, newline=newline, errors=errors)
        )
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty, exclusively created file in ``path``'s directory: its descriptor and path."""
    for _ in range(_NAME_TRIES):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp, _FLAGS, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(
        errno.EEXIST, f"no free temporary name beside {path} after {_NAME_TRIES} tries"
    )


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a file system that cannot sync one is let be."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
