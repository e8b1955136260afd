"""Scripted HTTP servers on 127.0.0.1 for the transport tests, and the loops they run on.

A :class:`RawServer` (``asyncio.start_server`` on port 0, inside the test's own event loop) runs
a script per connection: it reads each request's head and ``Content-Length`` body and writes
whatever bytes the test wants, so a client meets keep-alive, chunking, compression, interim
answers, early closes, garbage, hangs and TLS exactly as a server could send them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit

import trustme
import uvloop

PATH: Final = "/v1/HXAP16TEST0001IN/messages"
#: Longest any single step may take before a test calls it a hang (answers come in milliseconds).
PATIENCE: Final = 5.0

T = TypeVar("T")

# --------------------------------------------------------------------------- event loops


class Run(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


LOOPS: Final = ("asyncio", "uvloop")


def runner(kind: str) -> Run:
    """Run a test's coroutine to completion on a fresh loop of ``kind`` (one of :data:`LOOPS`)."""
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop
    )

    def go(coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(8):
                return await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    return go


# --------------------------------------------------------------------------- the raw server


@dataclass
class Request:
    """One request as the server read it."""

    line: str
    headers: list[str]
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        found = []
        for line in self.headers:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                found.append(value.strip())
        return found


class Peer:
    """The server's end of one accepted connection, handed to the test's script."""

    def __init__(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.requests: list[Request] = []
        self.sent = 0
        self.done = asyncio.Event()  # set once the script has ended and the socket is closed

    async def request(self) -> Request | None:
        """The next request on this connection, or None when the client hung up."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        line, *headers = head[:-4].decode("latin-1").split("\r\n")
        request = Request(line, headers)
        lengths = request.header("content-length")
        if lengths:
            try:
                request.body = await self.reader.readexactly(int(lengths[0]))
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
        self.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        """Write ``data`` now; raises ConnectionError once the client has gone."""
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()

    async def until_client_leaves(self) -> None:
        """Read (and ignore) everything until the client closes the connection."""
        with contextlib.suppress(ConnectionError):
            await self.reader.read()


Script = Callable[[Peer], Awaitable[None]]


class RawServer:
    """A TCP (or TLS) server on 127.0.0.1 whose every connection runs ``script``."""

    def __init__(self, script: Script, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._script = script
        self._ssl = ssl_context
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def connections(self) -> int:
        """How many connections were accepted (TLS: completed the handshake)."""
        return len(self.peers)

    @property
    def requests(self) -> list[Request]:
        return [request for peer in self.peers for request in peer.requests]

    def url(self, path: str = PATH, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self.errors and exc is None:
            raise self.errors[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._script(peer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away; the test checks what it got
        except asyncio.CancelledError:
            pass  # torn down by __aexit__ (a cancelled handler task would be logged as an error)
        except Exception as exc:  # a broken script: fail the test at __aexit__
            self.errors.append(exc)
        finally:
            writer.close()
            peer.done.set()


def reply(
    body: bytes = b"",
    *headers: str,
    status: str = "202 Accepted",
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    """An answer's bytes; with ``Content-Length`` unless ``length`` is false."""
    lines = [f"{version} {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes) -> bytes:
    """``parts`` in chunked transfer coding, the last chunk included."""
    return b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


async def echo(peer: Peer) -> None:
    """Answer every request on the connection at once: 202, ``re:`` + its body."""
    while (request := await peer.request()) is not None:
        await peer.send(reply(b"re:" + request.body))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class Tls:
    ca: trustme.CA
    server: ssl.SSLContext  # serves a certificate for 127.0.0.1 and localhost
    localhost_only: ssl.SSLContext  # serves a certificate for localhost alone
    expired: ssl.SSLContext  # serves a certificate for 127.0.0.1 that expired yesterday
    client: ssl.SSLContext  # trusts ``ca``


def make_tls() -> Tls:
    """Certificates from a fresh CA, and a client context that trusts it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    localhost_only = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(localhost_only)
    expired = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    now = datetime.now(UTC)
    ca.issue_cert(
        "127.0.0.1", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    ).configure_cert(expired)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(ca, server, localhost_only, expired, client)


# --------------------------------------------------------------------------- a forward proxy


class PipeProxy:
    """A forward proxy on 127.0.0.1 that pipes bytes: ``CONNECT`` tunnels and absolute-form
    requests alike, after checking ``Proxy-Authorization`` against ``user``/``password``.

    ``answer``, when given, is written instead of opening the tunnel (a refusal: 403, 502...);
    ``hang_up`` closes the connection after reading the request head. ``heads`` records the
    first line and headers of every request the proxy read.
    """

    def __init__(
        self,
        *,
        user: str = "",
        password: str = "",
        answer: bytes | None = None,
        hang_up: bool = False,
    ) -> None:
        self._expected = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if user or password
            else None
        )
        self._answer = answer
        self._hang_up = hang_up
        self.heads: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> PipeProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *headers = head[:-4].decode("latin-1").split("\r\n")
        request = Request(line, headers)
        self.heads.append(request)
        if self._hang_up:
            return
        if self._expected is not None and request.header("proxy-authorization") != [self._expected]:
            writer.write(
                reply(b"", 'Proxy-Authenticate: Basic realm="test"', status="407 Proxy Auth")
            )
            await writer.drain()
            return
        if self._answer is not None:
            writer.write(self._answer)
            await writer.drain()
            return
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        else:
            parts = urlsplit(target)
            host, port = parts.hostname or "", str(parts.port or 80)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.write(reply(b"", status="502 Bad Gateway"))
            await writer.drain()
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # forwarded without the credentials meant for the proxy, as proxies do
            kept = [h for h in headers if not h.lower().startswith("proxy-authorization:")]
            up_writer.write("\r\n".join([line, *kept, "", ""]).encode("latin-1"))
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until end of file, then close ``writer``'s side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class ThreadedRawServer:
    """A :class:`RawServer` on its own loop in a daemon thread, for tests that run the CLI.

    ``with ThreadedRawServer(script) as server:`` returns the running RawServer once it
    listens; leaving the block stops it (and raises a broken script's error).
    """

    def __init__(self, script: Script) -> None:
        self._script = script
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._server: RawServer | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> RawServer:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=PATIENCE) or self._server is None:
            raise RuntimeError("the raw server did not start")
        return self._server

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        if self._thread is not None:
            self._thread.join(timeout=PATIENCE)
        if self._error is not None and exc is None:
            raise self._error

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        try:
            async with RawServer(self._script) as server:
                self._server = server
                self._ready.set()
                await self._done.wait()
        except Exception as exc:  # a broken script: raised in the test's thread at exit
            self._error = exc
        finally:
            self._ready.set()
