"""A fast Kaleyra stand-in for the benchmark: answers every POST with Kaleyra's 202 body.

Run as its own process (``python bench/fast_server.py --port 0``); it prints ``PORT <n>`` once
it listens on 127.0.0.1. It is a bare :class:`asyncio.Protocol` speaking just enough HTTP/1.1
(keep-alive, ``Content-Length`` bodies, no pipelining needed) rather than an ``aiohttp.web``
app, because on a two-core machine every cycle the server spends is a cycle taken from the
client being measured; it runs on uvloop when that is importable.

* every ``POST`` is a message: its arrival time (``time.monotonic()``, which is Linux's
  system-wide ``CLOCK_MONOTONIC``, so the bench process can compare it with its own clock) is
  recorded, then after ``--latency`` seconds it is answered ``202 WA202`` with a fresh
  ``message_id``, or ``400 E110`` (low balance) once ``--accept`` messages were accepted;
  ``--latency-after SECONDS:LATENCY`` (repeatable) changes the latency for the messages that
  arrive that many seconds or more after the first one since the last reset;
* ``GET /stats`` answers ``{"requests", "accepted", "body_bytes", "first", "last"}``, plus
  ``"arrivals"`` (every arrival time) with ``GET /stats?arrivals=1``;
* ``GET /reset`` forgets every request so far.

The server stops on SIGTERM or SIGINT, and by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from array import array
from dataclasses import dataclass
from typing import Final, cast

import orjson

__all__ = ["Counters", "HttpProtocol", "LatencySchedule", "main"]

_ACCEPTED_HEAD: Final = b'{"code":"WA202","message":"Request Accepted","data":{"message_id":"A'
_ACCEPTED_TAIL: Final = b'"},"error":{}}'
_LOW_BALANCE: Final = orjson.dumps(
    {
        "code": "E110",
        "message": "Please check your balance, You have a low balance!",
        "data": {},
        "error": {"balance": "0.05"},
    }
)
_REASONS: Final = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 411: b"Length Required"}
_MAX_HEAD: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class LatencySchedule:
    """How long the server waits before answering: ``first``, then each ``later`` in turn.

    ``later`` holds ``(seconds, latency)`` pairs sorted by ``seconds``, counted from the first
    arrival since the last reset: a server that slows down (or speeds up) half-way through a run.
    """

    first: float
    later: tuple[tuple[float, float], ...] = ()

    def at(self, elapsed: float) -> float:
        """The latency of a message that arrives ``elapsed`` seconds after the first one."""
        latency = self.first
        for after, value in self.later:
            if elapsed < after:
                break
            latency = value
        return latency


def _later(text: str) -> tuple[float, float]:
    """``--latency-after`` ``SECONDS:LATENCY``, both in seconds."""
    after, sep, latency = text.partition(":")
    try:
        pair = float(after), float(latency)
    except ValueError:
        pair = (-1.0, -1.0)
    if not sep or min(pair) < 0:
        raise argparse.ArgumentTypeError(f"expected SECONDS:LATENCY, not {text!r}")
    return pair


class Counters:
    """What the server has seen since the last reset."""

    def __init__(self, accept_limit: int | None) -> None:
        self.accept_limit = accept_limit
        self.arrivals: array[float] = array("d")
        self.accepted = 0
        self.body_bytes = 0

    def reset(self) -> None:
        """Forget every request so far."""
        self.arrivals = array("d")
        self.accepted = 0
        self.body_bytes = 0

    def stats(self, *, with_arrivals: bool) -> bytes:
        """The ``/stats`` document."""
        doc: dict[str, object] = {
            "requests": len(self.arrivals),
            "accepted": self.accepted,
            "body_bytes": self.body_bytes,
            "first": self.arrivals[0] if self.arrivals else None,
            "last": self.arrivals[-1] if self.arrivals else None,
        }
        if with_arrivals:
            doc["arrivals"] = self.arrivals.tolist()
        return orjson.dumps(doc)


def _response(status: int, body: bytes) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
        status,
        _REASONS[status],
        len(body),
    )
    return head + body


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse requests as they arrive, answer each in turn."""

    def __init__(self, counters: Counters, latency: LatencySchedule) -> None:
        self._counters = counters
        self._latency = latency
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (request := self._take_request()) is not None:
            self._respond(*request)

    def _take_request(self) -> tuple[bytes, bytes, int] | None:
        """(method, target, body length) of the next complete request, removed from the buffer."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                self._close(_response(400, b'{"error":"header too long"}'))
            return None
        head = bytes(self._buffer[:end]).decode("latin-1")
        request_line, *headers = head.split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        length = 0
        for line in headers:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                self._close(_response(411, b'{"error":"send a Content-Length"}'))
                return None
        if len(self._buffer) < end + 4 + length:
            return None
        del self._buffer[: end + 4 + length]
        return method.encode(), target.encode(), length

    def _respond(self, method: bytes, target: bytes, length: int) -> None:
        counters = self._counters
        if method != b"POST":
            if target.startswith(b"/reset"):
                counters.reset()
                self._write(_response(200, b"{}"))
            else:
                self._write(_response(200, counters.stats(with_arrivals=b"arrivals=1" in target)))
            return
        now = time.monotonic()
        counters.arrivals.append(now)
        counters.body_bytes += length
        if counters.accept_limit is not None and counters.accepted >= counters.accept_limit:
            answer = _response(400, _LOW_BALANCE)
        else:
            counters.accepted += 1
            answer = _response(202, b"%s%x%s" % (_ACCEPTED_HEAD, counters.accepted, _ACCEPTED_TAIL))
        latency = self._latency.at(now - counters.arrivals[0])
        if latency > 0:
            self._loop.call_later(latency, self._write, answer)
        else:
            self._write(answer)

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _close(self, data: bytes) -> None:
        self._write(data)
        if self._transport is not None:
            self._transport.close()


async def serve(
    *, port: int, latency: LatencySchedule, accept_limit: int | None, max_seconds: float
) -> None:
    """Listen on 127.0.0.1 until SIGTERM/SIGINT or ``max_seconds``; print the port."""
    loop = asyncio.get_running_loop()
    counters = Counters(accept_limit)
    server = await loop.create_server(
        lambda: HttpProtocol(counters, latency), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except TimeoutError:
        print("fast_server: --max-seconds reached, stopping", file=sys.stderr)
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--latency-after",
        type=_later,
        action="append",
        default=[],
        metavar="SECONDS:LATENCY",
        help="from SECONDS after the first request on, answer after LATENCY (repeatable)",
    )
    parser.add_argument("--accept", type=int, help="answer E110 after this many accepted messages")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long")
    args = parser.parse_args(argv)
    coro = serve(
        port=args.port,
        latency=LatencySchedule(args.latency, tuple(sorted(args.latency_after))),
        accept_limit=args.accept,
        max_seconds=args.max_seconds,
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
