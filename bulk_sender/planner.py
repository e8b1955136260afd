"""Planning a large campaign in a second process, so the sending loop keeps its core.

Turning rows into requests (reading the CSV, checking phone numbers, deduplicating, building
bodies) costs about as much CPU as sending them. In one process that work shares the GIL with
the event loop and the journal's thread; in a child process it runs on another core.

The child is ``python -m bulk_sender.planner``, started early (its imports overlap the
parent's journal work) and given one :class:`PlanJob` on its stdin once the resume state is
known. It runs the very same :meth:`Campaign.plan` and streams what it yields back on its
stdout as length-prefixed pickle frames, in batches::

    ("batch", [(record tuple, body or None), ...], LoadStats)
    ("end", LoadStats)
    ("input_error", path, reason, line, LoadStats)   the file broke part-way: exit 2
    ("crash", traceback text)                        a bug in the child

A pipe holds little, so the child runs at most a batch or two ahead of the sender and memory
stays constant. The child is in its own session, so a Ctrl-C at the terminal or a signal to
the process group reaches only the parent, which decides; the child never stops half-way on
its own. When the parent goes (it ends, or dies), the child's next write fails and it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bulk_sender.campaign import Campaign, LoadStats, Planned
from bulk_sender.config import CampaignSettings
from bulk_sender.errors import InputFileError
from bulk_sender.journal import Record, ResumeState
from bulk_sender.table import Table

__all__ = ["PLAN_IN_PROCESS_ROWS", "PlanJob", "PlanProcess", "PlannerCrashedError"]

#: From this many data rows on, ``send`` plans in a second process (when it has two cores):
#: below it, the child's start-up (about 0.3 s of CPU) costs more than it saves.
PLAN_IN_PROCESS_ROWS = 20_000

_FRAME = struct.Struct("!I")
_FIRST_BATCH = 64  # small, so the first request leaves early
_BATCH = 1024


class PlannerCrashedError(RuntimeError):
    """The planning process failed or vanished: a bug, or it was killed (out of memory)."""


@dataclass(frozen=True, slots=True)
class PlanJob:
    """Everything the child needs to plan what the parent would have planned itself."""

    table: Table
    settings: CampaignSettings
    journal: Path  # the dedupe seed is read from here, by the child
    rows_done: bytearray = field(default_factory=bytearray)
    parts_done: set[tuple[int, int]] = field(default_factory=set)
    attempts: dict[tuple[int, int], int] = field(default_factory=dict)

    @classmethod
    def of(cls, campaign: Campaign, state: ResumeState, journal: Path) -> PlanJob:
        """The job for ``campaign`` resumed from ``state`` (whose seed was not loaded)."""
        return cls(
            table=campaign.table,
            settings=campaign.settings,
            journal=journal,
            rows_done=state.rows_done,
            parts_done=state.parts_done,
            attempts=state.attempts,
        )


def command() -> list[str]:
    """How the child is started (the interpreter running this very process)."""
    return [sys.executable, "-m", "bulk_sender.planner"]


class PlanProcess:
    """The parent's end: start the child, give it its job, stream its plan into ``stats``."""

    def __init__(self, argv: Sequence[str] | None = None) -> None:
        self._proc = subprocess.Popen(
            list(argv or command()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
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

    async def plan(self, stats: LoadStats) -> AsyncIterator[Sequence[Planned]]:
        """The child's plan in batches; ``stats`` is kept up to date as batches arrive.

        Raises :class:`InputFileError` where the inline plan would have, and
        :class:`PlannerCrashedError` if the child fails or ends without finishing.
        """
        assert self._proc.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        # The transport closes the pipe it is given: give it a copy of the descriptor.
        pipe = os.fdopen(os.dup(self._proc.stdout.fileno()), "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            while True:
                frame = await self._next_frame(reader)
                kind = frame[0]
                if kind == "batch":
                    _copy_stats(frame[2], stats)
                    make = Record._make
                    yield [Planned(make(record), body) for record, body in frame[1]]
                elif kind == "end":
                    _copy_stats(frame[1], stats)
                    return
                elif kind == "input_error":
                    _copy_stats(frame[4], stats)
                    raise InputFileError(frame[1], frame[2], line=frame[3])
                else:
                    raise PlannerCrashedError(f"the planning process failed:\n{frame[1]}")
        finally:
            transport.close()

    async def _next_frame(self, reader: asyncio.StreamReader) -> tuple[Any, ...]:
        try:
            (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
            frame: tuple[Any, ...] = pickle.loads(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            code = await asyncio.to_thread(self._proc.wait)
            raise PlannerCrashedError(
                f"the planning process ended before the end of the campaign (exit code {code})"
            ) from None
        return frame

    def close(self) -> None:
        """End the child (it is done by now, unless the run ended early) and reap it."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._feeder is not None:
            self._feeder.join()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _copy_stats(source: LoadStats, target: LoadStats) -> None:
    for f in dataclasses.fields(LoadStats):
        setattr(target, f.name, getattr(source, f.name))


# -- the child ---------------------------------------------------------------------------------


def _frames(job: PlanJob) -> Iterator[tuple[Any, ...]]:
    """What the child sends: the plan in batches, then how it ended."""
    campaign = Campaign(job.table, job.settings)
    state = ResumeState(rows_done=job.rows_done, parts_done=job.parts_done, attempts=job.attempts)
    if not job.settings.allow_duplicates:
        state.start_seen_loader(job.journal)
    batch: list[tuple[tuple[object, ...], bytes | None]] = []
    size = _FIRST_BATCH
    try:
        for item in campaign.plan(state):
            batch.append((tuple(item.record), item.body))
            if len(batch) >= size:
                yield ("batch", batch, campaign.stats)
                batch, size = [], _BATCH
    except InputFileError as exc:
        if batch:
            yield ("batch", batch, campaign.stats)
        yield ("input_error", str(exc.path), exc.reason, exc.line, campaign.stats)
        return
    if batch:
        yield ("batch", batch, campaign.stats)
    yield ("end", campaign.stats)


def _send(out: IO[bytes], frame: tuple[Any, ...]) -> None:
    data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)))
    out.write(data)


def main() -> int:
    """The child: read one job from stdin, stream its plan to stdout."""
    # Frames go to a private copy of stdout; anything else printing goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        job: PlanJob = pickle.load(sys.stdin.buffer)
        try:
            for frame in _frames(job):
                _send(out, frame)
        except Exception:  # a bug: the parent reports it
            _send(out, ("crash", traceback.format_exc()))
        out.flush()
    except (BrokenPipeError, EOFError):  # the parent is gone, or never sent a job
        return 0
    finally:
        with contextlib.suppress(OSError):
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
