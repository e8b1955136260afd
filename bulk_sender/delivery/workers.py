"""``receive --workers N``: several receiver processes on one port, each with its own store writer.

The parent binds the port first (``SO_REUSEPORT``, not listening: it learns a port 0's number
and reserves it), then starts ``N`` workers (``multiprocessing``'s spawn: fresh interpreters,
no state forked from a running loop). Each worker is a whole receiver (:func:`.receiver.serve`)
listening on the same port with ``SO_REUSEPORT``, so the kernel spreads connections over them;
each opens the store itself and group-commits its own batches (SQLite serialises the writers of
one WAL file across processes). Every guarantee is per worker, hence for all of them: a
callback is answered 200 only once committed, and a kill -9 of any process loses nothing
answered 200.

* The parent prints the ready line once every worker listens. A worker that cannot start (the
  store, the ledger) stops the others and the parent exits with that worker's code and line.
* SIGTERM or SIGINT to the parent: it passes SIGTERM on; each worker stops as a single receiver
  does (finishes its requests in flight, closes the store); the parent exits 0 once all have.
* A worker that dies while serving (kill -9, out of memory) is logged and started again; the
  connections it held are reset and their senders retry (nothing they were not answered 200
  for was acknowledged).
* If the parent itself dies (kill -9), each worker sees its pipe to the parent close and stops
  as on SIGTERM, so no worker outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Final

from bulk_sender.errors import BulkSenderError, ExitCode, StoreError, UsageError, exit_code_of

__all__ = ["MOST_WORKERS", "WorkerSpec", "default_workers", "reserve_port", "supervise"]

log = logging.getLogger("bulk_sender")

#: ``--workers`` at most; the default is the cores this process may run on, up to this.
MOST_WORKERS: Final = 16
_DEFAULT_MOST: Final = 4


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs to run a receiver: it reads the config (and secret) itself."""

    config: str
    host: str
    port: int
    shared_port: bool = False  #: listen with SO_REUSEPORT (set for every worker)


#: Runs one receiver in a worker: (spec, ready callback, stop event) -> None; raises
#: BulkSenderError if it cannot start. Picklable (a module-level function).
WorkerMain = Callable[[WorkerSpec, Callable[[str], None], asyncio.Event], Awaitable[None]]


def default_workers() -> int:
    """The cores this process may run on, at most 4 (1 where that cannot be known)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _DEFAULT_MOST))


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT; UsageError if taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


def supervise(spec: WorkerSpec, count: int, main: WorkerMain, ready: Callable[[str], None]) -> int:
    """Run ``count`` workers on ``spec``'s port until SIGTERM/SIGINT; the exit code."""
    with reserve_port(spec.host, spec.port) as sock:
        spec = replace(spec, port=sock.getsockname()[1], shared_port=True)
        return asyncio.run(_Supervisor(spec, count, main).run(ready))


class _StartFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Supervisor:
    """Starts the workers, restarts one that dies, stops them all on a signal."""

    def __init__(self, spec: WorkerSpec, count: int, main: WorkerMain) -> None:
        self._spec = spec
        self._count = count
        self._main = main
        self._context = multiprocessing.get_context("spawn")
        self._live: dict[int, BaseProcess] = {}
        self._stopping = False
        self._ready = 0
        self._all_ready = asyncio.Event()

    def __repr__(self) -> str:
        return f"_Supervisor(workers={self._count}, live={len(self._live)}, port={self._spec.port})"

    async def run(self, ready: Callable[[str], None]) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        keepers = [asyncio.create_task(self._keep(slot)) for slot in range(self._count)]
        started = asyncio.create_task(self._all_ready.wait())
        await asyncio.wait([started, *keepers], return_when=asyncio.FIRST_COMPLETED)
        if started.done() and not self._stopping:
            ready(f"http://{self._spec.host}:{self._spec.port}")
        outcomes = await asyncio.gather(*keepers, return_exceptions=True)
        started.cancel()
        for outcome in outcomes:
            if isinstance(outcome, _StartFailed):
                if outcome.code:  # 0: cut short by a stop, not a failure
                    raise _error(outcome.code, str(outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
        return next((code for code in outcomes if isinstance(code, int) and code), ExitCode.OK)

    def stop(self) -> None:
        """Stop every worker (SIGTERM: each finishes its requests in flight)."""
        self._stopping = True
        for process in self._live.values():
            if process.is_alive():
                with contextlib.suppress(OSError):
                    process.terminate()

    async def _keep(self, slot: int) -> int:
        """Run worker ``slot``; start it again when it dies, until stopping. Its exit code."""
        first = True
        while True:
            try:
                process, pipe = await asyncio.to_thread(self._start, slot)
            except _StartFailed:
                self.stop()
                raise
            if first:
                first = False
                self._ready += 1
                if self._ready == self._count:
                    self._all_ready.set()
            await asyncio.to_thread(process.join)
            pipe.close()
            self._live.pop(slot, None)
            code = process.exitcode or 0
            if self._stopping:
                return 0 if code < 0 else code
            log.error(
                "bulk_sender.receiver_worker_died",
                extra={"event": "bulk_sender.receiver_worker_died", "worker": slot,
                       "exit_code": code},
            )  # fmt: skip

    def _start(self, slot: int) -> tuple[BaseProcess, Connection]:
        """Start worker ``slot`` and wait until it listens (in a thread: it blocks). The parent's
        end of its pipe stays open while it runs: the worker stops when it closes."""
        if self._stopping:
            raise _StartFailed(0, "stopping")
        pipe, child_end = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker, args=(self._spec, self._main, child_end, _logging_now()),
            name=f"receiver-{slot}",
        )  # fmt: skip
        process.start()
        child_end.close()
        self._live[slot] = process
        wait([pipe, process.sentinel])
        try:
            message = pipe.recv() if pipe.poll() else ("died", None, "")
        except EOFError:
            message = ("died", None, "")
        if message[0] == "ready":
            return process, pipe
        process.join()
        pipe.close()
        if self._stopping:
            raise _StartFailed(0, "stopping")
        code, text = message[1], message[2]
        if message[0] == "died" or code is None:
            code = process.exitcode or ExitCode.INTERNAL
            text = f"a receiver worker exited with code {process.exitcode} before it listened"
        raise _StartFailed(code, text)


def _error(code: int, message: str) -> BulkSenderError:
    if code == ExitCode.USAGE:
        return UsageError(message)
    if code == ExitCode.STOPPED:
        return StoreError(message)
    return BulkSenderError(message)


#: How the parent logs (its handler's formatter and its level), for the workers to do the same.
_Logging = tuple["logging.Formatter | None", int]


def _logging_now() -> _Logging:
    logger = logging.getLogger("bulk_sender")
    return (logger.handlers[0].formatter if logger.handlers else None), logger.level


def _worker(spec: WorkerSpec, main: WorkerMain, parent: Connection, logs: _Logging) -> None:
    """A worker process: one receiver; stops on SIGTERM or when the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent passes a Ctrl-C on as SIGTERM
    handler = logging.StreamHandler(sys.stderr)
    if logs[0] is not None:
        handler.setFormatter(logs[0])
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logs[1])
    try:
        _run_loop(_serve_worker(spec, main, parent))
    except BulkSenderError as exc:
        code = exit_code_of(exc)
        with contextlib.suppress(OSError):
            parent.send(("error", int(code), str(exc)))
        raise SystemExit(code) from None


async def _serve_worker(spec: WorkerSpec, main: WorkerMain, parent: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def parent_gone() -> None:
        loop.remove_reader(parent.fileno())
        stop.set()

    def ready(_url: str) -> None:
        try:
            parent.send(("ready", "", ""))
        except OSError:  # the parent is gone already
            stop.set()
            return
        loop.add_reader(parent.fileno(), parent_gone)

    await main(spec, ready, stop)


def _run_loop(coro: Awaitable[None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    uvloop.run(coro)  # type: ignore[arg-type]
