"""The HTTP side: a keep-alive pool of HTTP/1.1 connections, and the one place its failures
are translated.

:meth:`KaleyraClient.post` returns the answer's status, ``Retry-After`` and body, or raises
:class:`~bulk_sender.errors.TransportError` whose ``phase`` says whether the request could have
reached Kaleyra: ``"connect"`` while no byte of it was written, ``"after_send"`` from the first
byte on. One call is one request; nothing here ever retries or follows a redirect.

Why not aiohttp's ``ClientSession``: on this project's benchmark machine it spends about 85 us
of CPU per request (a bare aiohttp loop tops out near 10,000 msg/s on one core), which is more
than everything else bulk-sender does per message. The engine sends one kind of request, so this
module writes its fixed head once and parses answers with ``httptools`` (the llhttp parser,
which aiohttp uses too): about 15 us per request. It does what Kaleyra's API needs and no more:
``http``/``https`` (TLS with certificate and host-name checks), keep-alive, ``Content-Length``,
chunked and read-to-close answers, ``gzip``/``deflate`` answers, ``Connection: close``.

Connecting: the host's addresses come from :class:`~bulk_sender.sending.resolver.CachedResolver`
(looked up once a minute, not per connection), and ``aiohappyeyeballs`` (what aiohttp uses)
connects to them with Happy Eyeballs: the next address is tried after 250 ms, alternating
families, so one dead address (a broken IPv6 route) costs a quarter of a second, not a timeout.

A connection is taken before the request is ready to leave: :meth:`KaleyraClient.ready` hands
out an idle one, or opens one (DNS, TCP, TLS), before the engine's rate gates and the row's
``in_flight`` commit, so that the departure gate's pace is the pace at which requests reach
the server; a request that opened its connection after the gate would arrive late, bunched
with later ones. Called again with the lease after the wait at the admission gate, it keeps
the lease if it is still fit and replaces it if not. :meth:`KaleyraClient.post` then writes
the request on it, unless it went stale meanwhile (closed, or idle past ``idle_seconds``):
then it takes another, as a request without a lease does. A lease the engine does not use
(the run stopped, a hold began) goes back with :meth:`KaleyraClient.give_back`; nothing was
written on it. A connection that failed to open fails the request it was opened for, when
that is posted, exactly as if it had failed then (``phase="connect"``).

Timeouts: ``timeout_seconds`` bounds one request whole: connecting (DNS and TLS included),
sending and the answer (the moments between a lease and its request, spent at the rate gates
and on the journal, do not count); it fires at most 0.1 s late. The engine never runs more
requests at once than ``concurrency``, so no request waits for a connection.

A failure is translated in :meth:`KaleyraClient.post` and nowhere else; its ``cause`` tells a
name that does not resolve (``"dns"``) and a certificate that cannot be verified
(``"certificate"``) from other network failures, because those stop a run instead of burning
its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import zlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, cast
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools

from bulk_sender.config import Secret
from bulk_sender.errors import ConfigError, TransportError
from bulk_sender.sending.resolver import CachedResolver

__all__ = [
    "HAPPY_EYEBALLS_DELAY",
    "IDLE_SECONDS",
    "MAX_ANSWER_BYTES",
    "MAX_HEAD_BYTES",
    "Answer",
    "KaleyraClient",
    "Lease",
]

#: A Kaleyra answer is a few hundred bytes; anything past this is not one (and not kept).
MAX_ANSWER_BYTES: Final = 1 << 20
#: The most an answer's status line and headers may take: a head still unfinished after this
#: many bytes is a malformed answer. The parser holds a header until it ends, so without a cap
#: an endless header grows memory without bound (300 MB in 8 s was seen); 64 KiB is as
#: generous as mature clients are (aiohttp allows 8 KiB a header line).
MAX_HEAD_BYTES: Final = 64 << 10
_USER_AGENT: Final = "bulk-sender"
#: How often the pool looks for requests past their deadline (a timeout fires this late at most).
_TICK: Final = 0.1
#: A connection idle longer than this is not reused. Servers close idle keep-alive connections
#: (often after 5 s, some after 2 s); a request written into one the server is closing could
#: not be told from one that reached it, and its row would end ``unknown``. A new connection is
#: cheap; an ``unknown`` row is not.
IDLE_SECONDS: Final = 1.5
#: Happy Eyeballs (RFC 8305): seconds before the next address is tried beside a slow one.
HAPPY_EYEBALLS_DELAY: Final = 0.25


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, reduced to what the classifier needs.

    ``connection`` is the one it came on (the fast client's); :meth:`discard` drops it, for an
    answer found to belong to another request afterwards (a message_id seen twice).
    """

    status: int
    body: bytes
    retry_after: str | None
    connection: _Connection | None = field(default=None, compare=False, repr=False)

    def discard(self) -> None:
        """Close the connection the answer came on: it is out of step with its requests."""
        if self.connection is not None:
            self.connection.close()


class Lease:
    """A connection taken for the next request before it leaves (:meth:`KaleyraClient.ready`):
    the connection, or why it could not be opened, and the seconds spent opening it."""

    __slots__ = ("connection", "failure", "spent")

    def __init__(
        self,
        connection: _Connection | None = None,
        failure: Exception | None = None,
        spent: float = 0.0,
    ) -> None:
        self.connection = connection
        self.failure = failure
        self.spent = spent

    def __repr__(self) -> str:
        return f"Lease(connection={self.connection!r}, failure={self.failure!r})"


class _Broken(Exception):
    """The connection failed while a request was on it; the text is safe to show."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.deadline = float("inf")
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._reset()

    def _reset(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._head = 0  # bytes fed while the head was still incomplete
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the answer does not end at close
        self._retry_after: str | None = None
        self._encoding = b""
        self._keep_alive = False

    # -- used by the client ---------------------------------------------------------------------

    def usable(self) -> bool:
        """Whether an idle connection can take another request."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, head: bytes, body: bytes, deadline: float) -> asyncio.Future[Answer]:
        """Write one whole request; the future gets its answer, or TimeoutError at ``deadline``."""
        assert self.transport is not None and self._waiter is None
        self._reset()
        self.deadline = deadline
        self._waiter = self._loop.create_future()
        self.transport.writelines((head, body))
        return self._waiter

    def expire(self) -> None:
        """The request's time is up: fail it and drop the connection (its answer may still come)."""
        self._settle_failed(TimeoutError())

    def close(self) -> None:
        """Drop the connection at once (an answer still due is not wanted)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def keep_alive(self) -> bool:
        """Whether the last answer left the connection open for another request."""
        return not self.closed and self._keep_alive

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the server switched protocols")
        except httptools.HttpParserError:
            self._fail("the answer was not valid HTTP")
        else:
            if not self._headers_done:  # all of it went to a head that has not ended yet
                self._head += len(data)
                if self._head > MAX_HEAD_BYTES:
                    self._fail(f"the answer's headers were larger than {MAX_HEAD_BYTES} bytes")

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and not self._framed and exc is None:
            self._finish()  # the answer's body ran to a clean close, as HTTP/1.1 allows
        elif self._headers_done:
            self._fail("the answer was cut off")
        else:
            self._fail("the server closed the connection without answering")

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second answer after the one asked for: out of step
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            self._retry_after = value.decode("latin-1").strip()
        elif name == b"content-encoding":
            self._encoding = value.strip().lower()
        elif name in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_ANSWER_BYTES:
            self._fail(f"the answer was larger than {MAX_ANSWER_BYTES} bytes")
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # 1xx: informational, the answer follows
            self._reset()
            return
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once we return
        self._finish()

    # -- settling ------------------------------------------------------------------------------

    def _finish(self) -> None:
        if self._waiter is None or self._waiter.done():
            return
        try:
            body = _decoded(b"".join(self._chunks), self._encoding)
        except _TooLarge:
            self._fail(f"the answer was larger than {MAX_ANSWER_BYTES} bytes once decompressed")
            return
        waiter, self._waiter = self._waiter, None
        waiter.set_result(Answer(self._parser.get_status_code(), body, self._retry_after, self))

    def _fail(self, description: str) -> None:
        self._settle_failed(_Broken(description))

    def _settle_failed(self, error: Exception) -> None:
        """Fail the request on this connection, if one is waiting, and drop the connection."""
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class _TooLarge(Exception):
    """A compressed answer inflates past :data:`MAX_ANSWER_BYTES`."""


def _decoded(body: bytes, encoding: bytes) -> bytes:
    """``body`` without its gzip/deflate coding; as it came if it is not whole (or unknown).

    Raises :class:`_TooLarge` rather than cut an answer short.
    """
    if encoding not in (b"gzip", b"x-gzip", b"deflate") or not body:
        return body
    inflater = zlib.decompressobj(wbits=47 if encoding != b"deflate" else 15)
    try:
        plain = inflater.decompress(body, MAX_ANSWER_BYTES)
    except zlib.error:
        return body
    if inflater.unconsumed_tail:
        raise _TooLarge
    return plain if inflater.eof else body


class KaleyraClient:
    """POSTs catalog-message bodies to one sender's endpoint. Create inside the running loop."""

    def __init__(
        self,
        *,
        url: str,
        api_key: Secret,
        concurrency: int,
        timeout_seconds: float,
        ssl_context: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
        resolver: CachedResolver | None = None,
    ) -> None:
        self.url = url
        self._idle_seconds = idle_seconds
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("[kaleyra] base_url", f"{url!r} is not an http(s) URL")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._timeout = timeout_seconds
        self._max_idle = concurrency
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._leased: set[_Connection] = set()  # taken by ready(), not yet posted on
        self._watchdog: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._resolver = resolver or CachedResolver(self._host, self._port)
        default_port = (parts.scheme == "https" and self._port == 443) or self._port == 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._head = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {host if default_port else f'{host}:{self._port}'}\r\n"
            f"User-Agent: {_USER_AGENT}\r\n"
            "Accept: application/json\r\n"
            "Accept-Encoding: identity\r\n"
            "Content-Type: application/json\r\n"
            f"api-key: {api_key.reveal()}\r\n"
            "Content-Length: "
        ).encode("latin-1")

    def __repr__(self) -> str:
        return f"KaleyraClient(url={self.url!r})"

    async def __aenter__(self) -> KaleyraClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        for conn in [*self._idle, *self._busy, *self._leased]:
            conn.close()
        self._idle.clear()
        self._busy.clear()
        self._leased.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost

    async def ready(self, lease: Lease | None = None) -> Lease:
        """A connection for the next request: ``lease`` if it is still fit (or holds a failure),
        else an idle one, else one opened now. Never raises: a failure to open is kept, and
        raised by the :meth:`post` the lease is for."""
        if lease is not None:
            if lease.failure is not None or self._still_fit(lease):
                return lease
            stale, lease.connection = lease.connection, None
            if stale is not None:  # it went stale while its request waited: never used
                self._leased.discard(stale)
                stale.close()
        conn = self._idle_connection()
        spent = 0.0
        if conn is None:
            started = self._loop.time()
            try:
                conn = await self._opened(started + self._timeout)
            except Exception as exc:  # kept for post, which translates it
                return Lease(failure=exc, spent=self._loop.time() - started)
            spent = self._loop.time() - started
        self._leased.add(conn)
        return Lease(conn, spent=spent)

    def give_back(self, lease: Lease) -> None:
        """Return a lease whose request was not sent (nothing was written on it)."""
        conn, lease.connection = lease.connection, None
        if conn is not None:
            self._leased.discard(conn)
            self._release(conn, reusable=True, fresh=False)

    async def post(self, body: bytes, lease: Lease | None = None) -> Answer:
        """Send one request (on ``lease``'s connection if it is still fit); raise
        :class:`TransportError` when no HTTP answer came back."""
        deadline = self._loop.time() + self._timeout
        phase: Literal["connect", "after_send"] = "connect"
        conn: _Connection | None = None
        answered = False
        try:
            if lease is not None and (conn := self._leased_connection(lease)) is not None:
                deadline -= lease.spent  # its connecting was part of this request's time
            if conn is None:
                conn = self._idle_connection() or await self._opened(deadline)
            phase = "after_send"
            self._busy.add(conn)
            if self._watchdog is None:
                self._watchdog = self._loop.create_task(self._expire(), name="http-deadlines")
            answer = await conn.send(b"%b%d\r\n\r\n" % (self._head, len(body)), body, deadline)
            answered = True
            return answer
        except TimeoutError as exc:
            what = "connect timeout" if phase == "connect" else "read timeout"
            raise TransportError(f"{what}: no answer within timeout_seconds", phase=phase) from exc
        except _Broken as exc:
            raise TransportError(str(exc), phase=phase) from None
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(
                _unverified(exc, f"{self._host}:{self._port}"), phase=phase, cause="certificate"
            ) from None
        except ssl.SSLError as exc:
            reason = exc.reason or "handshake failed"
            raise TransportError(f"TLS error: {reason}", phase=phase) from None
        except socket.gaierror as exc:
            reason = exc.strerror or "no address found"
            raise TransportError(
                f"cannot resolve {self._host}: {reason}", phase=phase, cause="dns"
            ) from None
        except OSError as exc:
            raise TransportError(_describe(exc, phase), phase=phase) from None
        finally:
            if conn is not None:
                self._busy.discard(conn)
                self._release(conn, reusable=answered)

    def _leased_connection(self, lease: Lease) -> _Connection | None:
        """``lease``'s connection if it is still fit to carry a request; raise its failure."""
        if lease.failure is not None:
            failure, lease.failure = lease.failure, None
            raise failure
        fit = self._still_fit(lease)
        conn, lease.connection = lease.connection, None
        if conn is None:
            return None
        self._leased.discard(conn)
        if fit:
            return conn
        conn.close()  # it went stale while the request waited: take another, as without one
        return None

    def _still_fit(self, lease: Lease) -> bool:
        """Whether ``lease``'s connection can carry a request now: open, not idle too long."""
        conn = lease.connection
        return (
            conn is not None
            and conn.usable()
            and conn.idle_since >= self._loop.time() - self._idle_seconds
        )

    def _idle_connection(self) -> _Connection | None:
        """The most recently used idle connection still fit for a request, if any."""
        if not self._idle:
            return None
        oldest = self._loop.time() - self._idle_seconds
        while self._idle:
            conn = self._idle.pop()
            if conn.usable() and conn.idle_since >= oldest:
                return conn
            conn.close()
        return None

    async def _opened(self, deadline: float) -> _Connection:
        """A new connection, open by ``deadline``."""
        conn = await asyncio.wait_for(self._open(), max(0.0, deadline - self._loop.time()))
        if not conn.usable():  # closed by the server before a byte of ours was written
            raise _Broken("the server closed the connection before the request was sent")
        conn.idle_since = self._loop.time()  # a new connection idles from now until used
        return conn

    async def _open(self) -> _Connection:
        """A new connection: cached addresses, Happy Eyeballs, then TLS on the winning socket."""
        sock = await aiohappyeyeballs.start_connection(
            await self._resolver.resolve(),
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            interleave=1,
        )
        try:
            _, conn = await self._loop.create_connection(
                lambda: _Connection(self._loop),
                sock=sock,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
        except BaseException:
            sock.close()  # a failed handshake (or our deadline) must not leak the socket
            raise
        return conn

    async def _expire(self) -> None:
        """Fail every request past its deadline; one timer for the pool, not one per request.

        A per-request ``asyncio.timeout`` costs about 25 us (a timer armed and cancelled for
        every message); checking the few busy connections every ``_TICK`` costs nothing per
        message, and a timeout fires at most ``_TICK`` late.
        """
        while True:
            await asyncio.sleep(_TICK)
            now = self._loop.time()
            for conn in [c for c in self._busy if c.deadline <= now]:
                conn.expire()

    def _release(self, conn: _Connection, *, reusable: bool, fresh: bool = True) -> None:
        """Keep ``conn`` for another request if it can take one; ``fresh``: it carried one just
        now (an unused lease keeps the time it has been idle since)."""
        used = not fresh or conn.keep_alive()
        if reusable and used and conn.usable() and len(self._idle) < self._max_idle:
            if fresh:
                conn.idle_since = self._loop.time()
            self._idle.append(conn)
        else:
            conn.close()


def _unverified(exc: ssl.SSLCertVerificationError, where: str) -> str:
    """Which check failed: "unable to get local issuer certificate", "certificate has expired"..."""
    check = exc.verify_message or exc.reason or "verification failed"
    return f"the TLS certificate of {where} could not be verified: {check}"


def _describe(exc: OSError, phase: str) -> str:
    """A short description that never carries the request (its head holds the API key)."""
    # The OS's words for the errno ("Connection refused"), not the connector's ("Connect call
    # failed ('10.0.0.1', 443)"), which repeats an address per attempt.
    reason = (os.strerror(exc.errno) if exc.errno else exc.strerror) or type(exc).__name__
    return f"cannot connect: {reason}" if phase == "connect" else f"connection error: {reason}"
