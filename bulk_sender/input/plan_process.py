"""Planning a large campaign in a second process, so the sending loop keeps its core.

Turning rows into requests (reading the CSV, checking phone numbers, deduplicating, building
bodies) costs about as much CPU as sending them. In one process that work shares the GIL with
the event loop and the journal's thread; in a child process it runs on another core.

The child is ``python -P -m bulk_sender.input.plan_process FD`` (``-P``: nothing is
imported from the working directory), started early (its imports overlap the parent's
journal work) and given one :class:`PlanJob` on its stdin once the resume state is known.
It runs the very same :func:`~bulk_sender.input.plan_inline.resumed_plan` as planning inline
does (it loads the dedupe seed from the journal itself) and streams what it yields back over
its end of a socket pair (``FD``; its stdout goes to stderr, so nothing printed can get into
the stream) as length-prefixed pickle frames::

    ("hello", PROTOCOL)                              first: the right program is talking
    ("batch", [(record tuple, body or None, content key), ...], LoadStats)
    ("end", LoadStats)
    ("input_error", path, reason, line, LoadStats)   the file broke part-way: exit 2
    ("journal_error", message)                       the dedupe seed could not be read: exit 3
    ("crash", traceback text)                        a bug in the child: exit 70

A child that ends without its end frame is a crash (exit 70), unless SIGKILL ended it: the
out-of-memory killer, which is not a bug (:class:`PlannerKilledError`, exit 3; the runner
writes the results of what was sent first).

The socket holds little, so the child runs at most a few batches ahead of the sender and
memory stays constant. The child ignores SIGINT, SIGTERM and SIGHUP and has its own session:
a Ctrl-C, a signal to the process group or to every process of the job reaches the parent,
which decides; the child never stops half-way on its own. When the parent goes (it ends, or
dies), the child's next write fails and it exits.
"""

from __future__ import annotations

import signal

# First, before the imports below take their time: the parent decides when planning stops.
if __name__ == "__main__":
    for _signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(_signum, signal.SIG_IGN)

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import resource
import socket
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulk_sender.config import CampaignSettings, SendingSettings
from bulk_sender.errors import (
    InputFileError,
    PlannerCrashedError,
    PlannerKilledError,
    UsageError,
)
from bulk_sender.input.campaign import Campaign, LoadStats, Planned
from bulk_sender.input.plan_inline import resumed_plan
from bulk_sender.input.table import Table
from bulk_sender.model import Record
from bulk_sender.record.journal import JournalError, ResumeState

__all__ = [
    "PLAN_IN_PROCESS_ROWS",
    "PlanJob",
    "PlanProcess",
    "PlannerCrashedError",
    "start_planner",
]

log = logging.getLogger("bulk_sender")

#: From this many data rows on, ``send`` plans in a second process (when it has two cores):
#: below it, the child's start-up (about 0.3 s of CPU) costs more than it saves.
PLAN_IN_PROCESS_ROWS = 20_000

_FRAME = struct.Struct("!I")
_MAX_FRAME = 1 << 28  # far above any batch: a size beyond it is not a frame of ours
PROTOCOL = 2
_FIRST_BATCH = 64  # small, so the first request leaves early
_BATCH = 1024


@dataclass(frozen=True, slots=True)
class PlanJob:
    """Everything the child needs to plan what the parent would have planned itself."""

    table: Table
    settings: CampaignSettings
    journal: Path | None  # the dedupe seed is read from here, by the child; None: a dry run
    resume: ResumeState = field(default_factory=ResumeState)  # its seed not loaded
    bodies: bool = True  # False: a dry run's plan (one example body; see Campaign.plan)

    @classmethod
    def of(cls, campaign: Campaign, state: ResumeState, journal: Path) -> PlanJob:
        """The job for ``campaign`` resumed from ``state``, whose seed is in ``journal``."""
        return cls(table=campaign.table, settings=campaign.settings, journal=journal, resume=state)

    @classmethod
    def dry_run(cls, campaign: Campaign) -> PlanJob:
        """A dry run's job: every row, no journal, bodies left out."""
        return cls(table=campaign.table, settings=campaign.settings, journal=None, bodies=False)


def command() -> list[str]:
    """How the child is started: the interpreter running this very process, without ``''``
    (the working directory) on its path."""
    return [sys.executable, "-P", "-m", "bulk_sender.input.plan_process"]


class PlanProcess:
    """The parent's end: start the child, give it its job, stream its plan into ``stats``.

    Raises :class:`OSError` if the child cannot be started at all.
    """

    def __init__(self, argv: Sequence[str] | None = None) -> None:
        self._sock, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [*(argv or command()), str(theirs.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            self._sock.close()
            raise
        finally:
            theirs.close()
        self._feeder: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def __enter__(self) -> PlanProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def give(self, job: PlanJob) -> None:
        """Send the job without waiting for the child to be ready to read it."""
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        stdin = self._proc.stdin
        assert stdin is not None

        def feed() -> None:
            with contextlib.suppress(OSError), stdin:  # the child died: its stdout says so
                stdin.write(data)

        self._feeder = threading.Thread(target=feed, name="planner-job", daemon=True)
        self._feeder.start()

    async def plan(self, stats: LoadStats) -> AsyncGenerator[list[Planned], None]:
        """The child's plan in batches; ``stats`` is kept up to date as batches arrive.

        Raises :class:`InputFileError` where the inline plan would have, and
        :class:`PlannerCrashedError` if the child fails or ends without finishing.
        """
        reader, writer = await asyncio.open_connection(sock=self._sock, limit=1 << 20)
        try:
            hello = await self._next_frame(reader)
            if hello != ("hello", PROTOCOL):
                raise PlannerCrashedError(f"the planning process said {hello!r} first")
            while True:
                frame = await self._next_frame(reader)
                kind = frame[0]
                if kind == "batch":
                    _copy_stats(frame[2], stats)
                    make = Record._make
                    yield [
                        Planned(make(record), body, content) for record, body, content in frame[1]
                    ]
                elif kind == "end":
                    _copy_stats(frame[1], stats)
                    return
                elif kind == "input_error":
                    _copy_stats(frame[4], stats)
                    raise InputFileError(frame[1], frame[2], line=frame[3])
                elif kind == "journal_error":
                    raise JournalError(frame[1])
                else:
                    raise PlannerCrashedError(f"the planning process failed:\n{frame[1]}")
        finally:
            writer.close()

    async def _next_frame(self, reader: asyncio.StreamReader) -> tuple[Any, ...]:
        try:
            (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
            if size > _MAX_FRAME:
                raise PlannerCrashedError(f"the planning process sent a {size}-byte frame")
            frame: tuple[Any, ...] = pickle.loads(await reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _ended_early(self.pid, await asyncio.to_thread(self._exit_code)) from None
        return frame

    def _exit_code(self) -> int | None:
        try:
            return self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """End the child (it is done by now, unless the run ended early) and reap it."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._feeder is not None:
            self._feeder.join()
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._sock.close()


def _ended_early(pid: int, code: int | None) -> PlannerCrashedError:
    """What to say of a child that ended without its end frame (``code``: its exit status).

    SIGKILL is what the kernel's out-of-memory killer sends (``kill -9`` too): not a bug, so
    one line, exit 3, and the run's results are written. Any other end may be one (exit 70).
    """
    if code != -signal.SIGKILL:
        died = f"exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                died = f"killed by {signal.Signals(-code).name}"
        return PlannerCrashedError(
            f"the planning process ended before the end of the campaign ({died})"
        )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024  # Linux: KiB
    return PlannerKilledError(
        f"the planning process (pid {pid}) was killed by SIGKILL, most likely by the kernel's "
        f"out-of-memory killer (it had used up to {peak:,} MiB; dmesg or journalctl -k says "
        "'Out of memory: Killed process'). What was sent is recorded and the results are "
        "written: rows not reached are not_sent. Give the job more memory, then run the same "
        "command again to send the rest"
    )


def _plan_in_process(sending: SendingSettings, rows: int) -> bool:
    """Whether to plan in a second process: as configured, or (``auto``) for a large campaign
    on a machine with a core to spare for it."""
    if sending.planner != "auto":
        return sending.planner == "process"
    return rows >= PLAN_IN_PROCESS_ROWS and _cores() > 1 and bool(sys.executable)


def start_planner(sending: SendingSettings, rows: int) -> PlanProcess | None:
    """The planning process, if this run uses one; ``auto`` plans inline if it cannot start."""
    if not _plan_in_process(sending, rows):
        return None
    try:
        return PlanProcess()
    except OSError as exc:
        if sending.planner == "process":
            raise UsageError(
                f'[sending] planner = "process": cannot start the planning process ({exc}); '
                'set it to "inline" or "auto"'
            ) from None
        log.warning(
            "bulk_sender.planning_inline",
            extra={"event": "bulk_sender.planning_inline", "reason": str(exc)},
        )
        return None


_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # "max 100000", or "<quota> <period>" (docker --cpus)


def _cores() -> float:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    with contextlib.suppress(OSError, ValueError):
        quota, period = _CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    return cores


def _copy_stats(source: LoadStats, target: LoadStats) -> None:
    for f in dataclasses.fields(LoadStats):
        setattr(target, f.name, getattr(source, f.name))


# -- the child ---------------------------------------------------------------------------------


def _frames(job: PlanJob) -> Iterator[tuple[Any, ...]]:
    """What the child sends: the plan in batches, then how it ended."""
    yield ("hello", PROTOCOL)
    campaign = Campaign(job.table, job.settings)
    batch: list[tuple[tuple[object, ...], bytes | None, int]] = []
    size = _FIRST_BATCH
    if job.journal is None:
        plan = campaign.plan(job.resume, bodies=job.bodies)
    else:
        plan = resumed_plan(campaign, job.resume, job.journal)
    try:
        for item in plan:
            batch.append((tuple(item.record), item.body, item.content))
            if len(batch) >= size:
                yield ("batch", batch, campaign.stats)
                batch, size = [], _BATCH
    except InputFileError as exc:
        if batch:
            yield ("batch", batch, campaign.stats)
        yield ("input_error", str(exc.path), exc.reason, exc.line, campaign.stats)
        return
    except JournalError as exc:
        yield ("journal_error", str(exc))
        return
    if batch:
        yield ("batch", batch, campaign.stats)
    yield ("end", campaign.stats)


def _send(out: socket.socket, frame: tuple[Any, ...]) -> None:
    data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    out.sendall(_FRAME.pack(len(data)) + data)


def main(argv: Sequence[str] | None = None) -> int:
    """The child: read one job from stdin, stream its plan to the socket named in ``argv``."""
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print goes to stderr
    args = sys.argv[1:] if argv is None else argv
    with socket.socket(fileno=int(args[0])) as out:
        try:
            job: PlanJob = pickle.load(sys.stdin.buffer)
        except Exception:  # the parent is gone, or died while it was sending the job
            return 1
        try:
            for frame in _frames(job):
                _send(out, frame)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError | ConnectionResetError):
                return 0  # the parent is gone, or stopped reading: nobody needs the rest
            _crashed(out)
        except Exception:  # a bug: the parent reports it
            _crashed(out)
    return 0


def _crashed(out: socket.socket) -> None:
    with contextlib.suppress(OSError):
        _send(out, ("crash", traceback.format_exc()))


if __name__ == "__main__":
    sys.exit(main())
