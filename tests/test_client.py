"""KaleyraClient against tiny scripted HTTP servers on 127.0.0.1.

Each test starts a raw server (``asyncio.start_server`` on port 0, inside the test's own event
loop) whose handler the test scripts: it reads each request's head and ``Content-Length`` body
and writes whatever bytes the test wants, so the client meets keep-alive, chunking, compression,
interim answers, early closes, garbage, hangs and TLS exactly as a server could send them.
Every test runs on the standard asyncio loop and on uvloop (which production uses).

Nothing is ordered by sleeping: a script waits on events, on the client's next request, or on
:class:`ClientEnds` (the client has read what was sent, or seen the connection close), and
:class:`LoopClock` moves the loop's clock instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from bulk_sender.config import Secret
from bulk_sender.errors import ConfigError, TransportError
from bulk_sender.sending.client import (
    IDLE_SECONDS,
    MAX_ANSWER_BYTES,
    MAX_HEAD_BYTES,
    Answer,
    KaleyraClient,
    Lease,
)
from bulk_sender.sending.resolver import AddrInfo, CachedResolver
from tests.rawhttp import (
    LOOPS,
    PATH,
    PATIENCE,
    Peer,
    RawServer,
    Run,
    Script,
    Tls,
    chunked,
    echo,
    free_port,
    make_tls,
    reply,
    runner,
)

pytestmark = pytest.mark.timeout(10)

KEY: Final = "kal-test-key-7Q2xW9vB4nM1zR8"


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Run:
    """Run a test's coroutine to completion on a fresh loop of the parametrised kind."""
    return runner(request.param)


@pytest.fixture(scope="module")
def tls() -> Tls:
    """Certificates from a CA made for this module, and a client context that trusts it."""
    return make_tls()


def late_echo(late: bytes, arrived: asyncio.Event | None = None) -> Script:
    """Like :func:`echo`, but the request with body ``late`` is answered only when the client
    sends its next request on that connection, just before that one's answer; never if the
    client hangs up first. A client that reused the connection would take the late answer for
    the next request's; ``arrived`` is set once the ``late`` request is in."""

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == late:
                if arrived is not None:
                    arrived.set()
                request = await peer.request()
                if request is None:
                    return
                await peer.send(reply(b"re:" + late))
            await peer.send(reply(b"re:" + request.body))

    return script


def make_client(
    url: str,
    *,
    concurrency: int = 4,
    timeout: float = PATIENCE,
    ssl_context: ssl.SSLContext | None = None,
    idle_seconds: float = 60.0,  # long: a slow machine must not turn reuse into reconnects
) -> KaleyraClient:
    return KaleyraClient(
        url=url,
        api_key=Secret(KEY),
        concurrency=concurrency,
        timeout_seconds=timeout,
        ssl_context=ssl_context,
        idle_seconds=idle_seconds,
    )


async def post(client: KaleyraClient, body: bytes) -> Answer:
    """``client.post``, failing the test (not hanging it) if no outcome comes in PATIENCE."""
    return await asyncio.wait_for(client.post(body), PATIENCE)


async def post_on(client: KaleyraClient, body: bytes, lease: Lease) -> Answer:
    """``client.post`` on ``lease``, within PATIENCE."""
    return await asyncio.wait_for(client.post(body, lease), PATIENCE)


async def failure(client: KaleyraClient, body: bytes = b"{}") -> TransportError:
    """The TransportError that posting ``body`` raises (within PATIENCE)."""
    with pytest.raises(TransportError) as caught:
        await post(client, body)
    error = caught.value
    assert KEY not in str(error) and KEY not in repr(error)
    return error


async def finished(peer: Peer) -> None:
    """Wait until ``peer``'s connection is over (the client hung up, or the script ended)."""
    await asyncio.wait_for(peer.done.wait(), PATIENCE)


# --------------------------------------------------------------------------- the client's side

Connect = Callable[..., Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]]


@dataclass
class _End:
    """What the event loop has handed the client's end of one connection so far."""

    received: int = 0
    closed: bool = False


class ClientEnds:
    """The client's ends of its connections, as its event loop sees them: a test seam.

    While entered (``async with``, inside the test's loop), the loop's ``create_connection``
    is wrapped so that each connection the client opens reports the bytes handed to its
    protocol and its close. A script then orders events instead of sleeping: it waits until the
    client has *read* what it sent (so its next bytes come in another read), or has seen the
    connection close. With ``hold``, a new connection is handed to the client only once the
    client's end has seen it closed. Nothing the client does is changed.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self._hold = hold
        self._ends: dict[int, _End] = {}  # by the client's local port
        self._changed = asyncio.Event()
        self._patch = pytest.MonkeyPatch()

    async def __aenter__(self) -> ClientEnds:
        loop = asyncio.get_running_loop()
        self._patch.setattr(loop, "create_connection", self._wrapped(loop.create_connection))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._patch.undo()

    async def read(self, peer: Peer) -> None:
        """Wait until the client has been handed every byte ``peer`` has sent so far.

        Call it where the sending is known to be done (in the script, after its send).
        """
        await self._until(lambda: self._end(peer).received >= peer.sent)

    async def closed(self, peer: Peer) -> None:
        """Wait until the client's end of ``peer``'s connection is closed."""
        await self._until(lambda: self._end(peer).closed)

    def _end(self, peer: Peer) -> _End:
        return self._ends.get(peer.writer.get_extra_info("peername")[1], _End())

    async def _until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(PATIENCE):
            while not done():
                await self._changed.wait()

    def _changes(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _wrapped(self, connect: Connect) -> Connect:
        async def create_connection(
            factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
        ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
            end = _End()
            transport, protocol = await connect(
                lambda: self._watched(factory(), end), *args, **kwargs
            )
            self._ends[transport.get_extra_info("sockname")[1]] = end
            self._changes()
            if self._hold:
                await self._until(lambda: end.closed)
            return transport, protocol

        return create_connection

    def _watched(self, protocol: asyncio.BaseProtocol, end: _End) -> asyncio.BaseProtocol:
        assert isinstance(protocol, asyncio.Protocol)
        data_received, connection_lost = protocol.data_received, protocol.connection_lost

        def received(data: bytes) -> None:
            data_received(data)
            end.received += len(data)
            self._changes()

        def lost(exc: Exception | None) -> None:
            connection_lost(exc)
            end.closed = True
            self._changes()

        self._patch.setattr(protocol, "data_received", received)
        self._patch.setattr(protocol, "connection_lost", lost)
        return protocol


class LoopClock:
    """The running loop's clock, moved forward by the test instead of waited for: a test seam.

    While entered (``async with``, inside the test's loop), ``loop.time()`` reads the real clock
    plus everything :meth:`advance` has added, so the client sees that much time pass at once.
    Moving the clock forward can only make the loop's timers come sooner, never later.
    """

    def __init__(self) -> None:
        self._ahead = 0.0
        self._patch = pytest.MonkeyPatch()

    async def __aenter__(self) -> LoopClock:
        loop = asyncio.get_running_loop()
        real = loop.time
        self._patch.setattr(loop, "time", lambda: real() + self._ahead)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._patch.undo()

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self._ahead += seconds


# --------------------------------------------------------------------------- 1. a plain answer


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (PATH + "?mode=bulk&v=2", PATH + "?mode=bulk&v=2"),
        (PATH, PATH),
        ("", "/"),
    ],
    ids=["with-query", "no-query", "no-path"],
)
def test_plain_answer_and_the_exact_request(run: Run, path: str, target: str) -> None:
    """Each POST goes out exactly (target, headers once each, body); its answer comes back whole."""
    body = b'{"to":["+919812345678"],"type":"catalog","text":"Caf\xc3\xa9"}'

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            answer = b'{"id":"m-1","status":"accepted"}'
            await peer.send(reply(answer, "Content-Type: application/json", "Retry-After: 17"))

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url(path)) as client:
            answer = await post(client, body)
            empty = await post(client, b"")
        assert answer == Answer(202, b'{"id":"m-1","status":"accepted"}', "17")
        assert empty.status == 202
        first, second = server.requests
        assert first.line == f"POST {target} HTTP/1.1"
        for line in (
            f"Host: 127.0.0.1:{server.port}",
            "Content-Type: application/json",
            f"api-key: {KEY}",
            f"Content-Length: {len(body)}",
        ):
            assert line in first.headers
        names = [line.partition(":")[0].lower() for line in first.headers]
        assert len(names) == len(set(names)), "a header sent twice"
        assert first.body == body
        assert second.line == first.line
        assert second.header("content-length") == ["0"]
        assert second.body == b""

    run(scenario())


def test_answers_of_any_status_are_answers_and_keep_the_connection(run: Run) -> None:
    """An answer of any status, a bodiless 204 included, is an Answer; the connection is kept."""
    answers = [
        reply(b'{"error":"rate"}', "Retry-After: Wed, 21 Oct 2026 07:28:00 GMT", status="429 Too"),
        reply(b'{"error":"bad"}', status="400 Bad Request"),
        reply(b"oops", status="500 Internal Server Error"),
        reply(b"", status="204 No Content", length=False),  # no body by definition, no framing
        reply(b"fine", status="200 OK"),
    ]

    async def script(peer: Peer) -> None:
        for raw in answers:
            if await peer.request() is None:
                return
            await peer.send(raw)
        await peer.until_client_leaves()

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            got = [await post(client, b"{}") for _ in answers]
        assert got == [
            Answer(429, b'{"error":"rate"}', "Wed, 21 Oct 2026 07:28:00 GMT"),
            Answer(400, b'{"error":"bad"}', None),
            Answer(500, b"oops", None),
            Answer(204, b"", None),
            Answer(200, b"fine", None),
        ]
        assert server.connections == 1

    run(scenario())


def test_large_request_body_arrives_whole(run: Run) -> None:
    """A request body of half a megabyte reaches the server whole."""
    body = b'{"text":"' + bytes(range(65, 91)) * 20_000 + b'"}'  # about 520 kB

    async def scenario() -> None:
        async with RawServer(echo) as server, make_client(server.url()) as client:
            answer = await post(client, body)
        assert answer.body == b"re:" + body
        assert server.requests[0].header("content-length") == [str(len(body))]

    run(scenario())


# --------------------------------------------------------------------------- 2. keep-alive


def test_sequential_posts_use_one_connection(run: Run) -> None:
    """Requests one after another all go over one kept-alive connection."""

    async def scenario() -> None:
        async with RawServer(echo) as server, make_client(server.url()) as client:
            for i in range(50):
                assert await post(client, b"%d" % i) == Answer(202, b"re:%d" % i, None)
        assert server.connections == 1
        assert len(server.requests) == 50

    run(scenario())


def test_a_connection_idle_too_long_is_not_reused(run: Run) -> None:
    """A connection idle past ``idle_seconds`` is closed by the client, and a new one opened."""
    clock = LoopClock()

    async def scenario() -> None:
        async with (
            RawServer(echo) as server,
            clock,
            make_client(server.url(), idle_seconds=IDLE_SECONDS) as client,
        ):
            assert await post(client, b"1") == Answer(202, b"re:1", None)
            clock.advance(IDLE_SECONDS + 0.1)  # the server may be closing it by now
            assert await post(client, b"2") == Answer(202, b"re:2", None)
            assert server.connections == 2
            await finished(server.peers[0])

    run(scenario())


def test_concurrent_posts_use_at_most_concurrency_connections(run: Run) -> None:
    """Rounds of ``concurrency`` requests at once use that many connections, and never more."""
    round_in = asyncio.Barrier(8)  # no answer until all eight requests of a round are in

    async def echo_in_rounds(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await round_in.wait()
            await peer.send(reply(b"re:" + request.body))

    async def scenario() -> None:
        async with (
            RawServer(echo_in_rounds) as server,
            make_client(server.url(), concurrency=8) as client,
        ):
            for round_ in range(6):
                bodies = [b"%d-%d" % (round_, i) for i in range(8)]
                answers = await asyncio.gather(*(post(client, body) for body in bodies))
                assert [answer.body for answer in answers] == [b"re:" + body for body in bodies]
        assert server.connections == 8  # never more; and eight did run at once
        assert len(server.requests) == 48

    run(scenario())


def test_close_hangs_up_every_connection(run: Run) -> None:
    """close() hangs up idle and busy connections; the request in flight fails after_send."""
    arrived = asyncio.Event()

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"hang":
                arrived.set()
                await peer.until_client_leaves()
                return
            await peer.send(reply(b"re:" + request.body))

    async def scenario() -> None:
        async with RawServer(script) as server:
            client = make_client(server.url())
            await asyncio.gather(post(client, b"a"), post(client, b"b"))  # two connections
            pending = asyncio.ensure_future(client.post(b"hang"))  # one busy, one idle
            try:
                await asyncio.wait_for(arrived.wait(), PATIENCE)
                await client.close()
                with pytest.raises(TransportError) as caught:  # the busy one is told at once
                    await asyncio.wait_for(pending, PATIENCE)
            finally:
                pending.cancel()  # never left behind with an exception nobody retrieved
            assert caught.value.phase == "after_send"
            for peer in server.peers:
                await finished(peer)
            assert server.connections == 2

    run(scenario())


# --------------------------------------------------------------------------- 2b. leases


def test_a_lease_opens_the_connection_its_request_then_goes_on(run: Run) -> None:
    """ready() opens the connection before the request exists; the post goes on that one."""

    async def scenario() -> None:
        async with RawServer(echo) as server, make_client(server.url()) as client:
            lease = await client.ready()
            opened = lease.connection
            assert opened is not None and opened.usable()
            answer = await post_on(client, b"1", lease)
            assert answer == Answer(202, b"re:1", None) and answer.connection is opened
            assert lease.connection is None  # taken by the post
            assert server.connections == 1

    run(scenario())


def test_a_lease_given_back_unused_serves_the_next_request(run: Run) -> None:
    """A lease whose request was not sent goes back to the pool: nothing was written on it,
    and the next request uses it instead of opening another."""

    async def scenario() -> None:
        async with RawServer(echo) as server, make_client(server.url()) as client:
            first = await client.ready()
            client.give_back(first)
            client.give_back(first)  # twice is harmless
            second = await client.ready()
            assert await post_on(client, b"2", second) == Answer(202, b"re:2", None)
            assert server.connections == 1
            assert [r.body for r in server.requests] == [b"2"]

    run(scenario())


def test_a_lease_that_went_stale_is_not_posted_on(run: Run) -> None:
    """A lease idle past ``idle_seconds`` by the time its request leaves (a journal commit that
    stalled) is closed unused and the request opens another: the server may be closing it."""
    clock = LoopClock()

    async def scenario() -> None:
        async with (
            RawServer(echo) as server,
            clock,
            make_client(server.url(), idle_seconds=IDLE_SECONDS) as client,
        ):
            lease = await client.ready()
            clock.advance(IDLE_SECONDS + 0.1)
            assert await post_on(client, b"1", lease) == Answer(202, b"re:1", None)
            assert server.connections == 2
            await finished(server.peers[0])
            assert [r.body for r in server.requests] == [b"1"]

    run(scenario())


def test_a_lease_looked_at_again_is_kept_while_fit_and_replaced_once_stale(run: Run) -> None:
    """ready(lease) after a wait (the pace, a hold) keeps a lease still fit, and replaces one
    idle past ``idle_seconds`` with a new connection, closing the stale one unused."""
    clock = LoopClock()

    async def scenario() -> None:
        async with (
            RawServer(echo) as server,
            clock,
            make_client(server.url(), idle_seconds=IDLE_SECONDS) as client,
        ):
            lease = await client.ready()
            first = lease.connection
            assert await client.ready(lease) is lease and lease.connection is first
            clock.advance(IDLE_SECONDS + 0.1)
            lease = await client.ready(lease)
            assert lease.connection is not None and lease.connection is not first
            assert await post_on(client, b"1", lease) == Answer(202, b"re:1", None)
            assert server.connections == 2
            await finished(server.peers[0])
            assert [r.body for r in server.requests] == [b"1"]

    run(scenario())


def test_the_wait_between_a_lease_and_its_request_is_not_the_requests_time(run: Run) -> None:
    """A request posted 1 s after its lease (0.3 s timeout) still gets its whole timeout: the
    time spent at the rate gates and on the journal is not the server's."""
    clock = LoopClock()
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            arrived.set()
            await answer.wait()
            await peer.send(reply(b"re:" + request.body))

    async def scenario() -> None:
        async with (
            RawServer(script) as server,
            clock,
            make_client(server.url(), timeout=0.3) as client,
        ):
            lease = await client.ready()
            opened = lease.connection
            assert opened is not None
            clock.advance(1.0)
            pending = asyncio.ensure_future(post_on(client, b"1", lease))
            await asyncio.wait_for(arrived.wait(), PATIENCE)
            loop = asyncio.get_running_loop()
            assert opened.deadline > loop.time() + 0.2  # 0.3 s from the post, less the connect
            answer.set()
            assert await pending == Answer(202, b"re:1", None)

    run(scenario())


def test_a_lease_that_could_not_connect_fails_its_request_as_a_connect_error(run: Run) -> None:
    """A refused connection does not fail ready(): its request fails, ``phase="connect"``, when
    posted, as if it had tried to connect then."""
    port = free_port()

    async def scenario() -> None:
        async with make_client(f"http://127.0.0.1:{port}{PATH}") as client:
            lease = await client.ready()
            assert lease.connection is None and lease.failure is not None
            with pytest.raises(TransportError) as caught:
                await post_on(client, b"{}", lease)
            assert caught.value.phase == "connect"
            assert caught.value.description.startswith("cannot connect")
            assert KEY not in repr(caught.value)

    run(scenario())


def test_close_hangs_up_a_leased_connection(run: Run) -> None:
    """close() hangs up a connection taken by ready() and not posted on yet."""

    connected = asyncio.Event()

    async def script(peer: Peer) -> None:
        connected.set()
        await peer.until_client_leaves()

    async def scenario() -> None:
        async with RawServer(script) as server:
            client = make_client(server.url())
            await client.ready()
            await asyncio.wait_for(connected.wait(), PATIENCE)
            await client.close()
            await finished(server.peers[0])
            assert server.requests == []

    run(scenario())


# --------------------------------------------------------------------------- 3./4. closing


@pytest.mark.parametrize("server_closes", [True, False], ids=["server-closes", "server-waits"])
def test_connection_close_answer_is_not_reused(run: Run, server_closes: bool) -> None:
    """After an answer with ``Connection: close`` the client hangs up and opens another."""

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await peer.send(reply(b"re:" + request.body, "Connection: close"))
            if server_closes:
                return

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            assert (await post(client, b"1")).body == b"re:1"
            assert (await post(client, b"2")).body == b"re:2"
            assert server.connections == 2
            await finished(server.peers[0])  # the client hung up even if the server did not

    run(scenario())


def test_http10_answer_without_keep_alive_is_not_reused(run: Run) -> None:
    """After an HTTP/1.0 answer without keep-alive the client hangs up and opens another."""

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await peer.send(reply(b"re:" + request.body, version="HTTP/1.0", status="200 OK"))

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            assert (await post(client, b"1")).body == b"re:1"
            assert (await post(client, b"2")).body == b"re:2"
            assert server.connections == 2
            await finished(server.peers[0])

    run(scenario())


@pytest.mark.parametrize(
    ("goodbye", "then_close"),
    [
        (b"", True),
        (reply(b"", "Connection: close", status="408 Request Timeout"), True),
        (reply(b"", "Connection: close", status="408 Request Timeout"), False),
    ],
    ids=["silent-close", "408-and-close", "408-only"],
)
def test_idle_connection_dropped_by_server_is_replaced(
    run: Run, goodbye: bytes, then_close: bool
) -> None:
    """A pooled connection the server closes or answers unasked is dropped, and a new one used."""
    ends = ClientEnds()
    pooled = [asyncio.Event() for _ in range(3)]  # the client has its answer, the connection idles

    async def script(peer: Peer) -> None:
        request = await peer.request()
        if request is None:
            return
        await peer.send(reply(b"re:" + request.body))  # keep-alive, as far as the answer says
        await pooled[peer.index].wait()
        if goodbye:
            await peer.send(goodbye)  # an answer nobody asked for, on the idle connection
        if not then_close:
            await peer.until_client_leaves()

    async def scenario() -> None:
        async with RawServer(script) as server, ends, make_client(server.url()) as client:
            for i in range(3):
                assert await post(client, b"%d" % i) == Answer(202, b"re:%d" % i, None)
                pooled[i].set()
                await ends.closed(server.peers[i])  # the client saw the goodbye before posting
            assert server.connections == 3
            for peer in server.peers:
                await finished(peer)

    run(scenario())


# --------------------------------------------------------------------------- 5./6. framing


def test_chunked_answer_is_reassembled(run: Run) -> None:
    """A chunked answer cut at every kind of boundary is reassembled; the connection is kept."""
    answer = b'{"id":"m-7","status":"accepted","note":"split across several writes"}'
    ends = ClientEnds()

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            raw = reply(b"", "Transfer-Encoding: chunked", "Retry-After: 3", length=False)
            raw += chunked(answer[:5], answer[5:23], answer[23:24], answer[24:])
            for start in range(0, len(raw), 9):  # cuts through sizes, CRLFs and data alike
                await peer.send(raw[start : start + 9])
                await ends.read(peer)  # so the next piece comes in a read of its own

    async def scenario() -> None:
        async with RawServer(script) as server, ends, make_client(server.url()) as client:
            assert await post(client, b"1") == Answer(202, answer, "3")
            assert await post(client, b"2") == Answer(202, answer, "3")
        assert server.connections == 1  # a chunked answer ends by itself: connection kept

    run(scenario())


@pytest.mark.parametrize(
    "parts", [[b'{"part":1,', b'"part":2}'], []], ids=["two-writes", "empty-body"]
)
def test_answer_ended_by_close_is_read_to_the_close(run: Run, parts: list[bytes]) -> None:
    """An answer with neither Content-Length nor chunks is read up to the server's close."""
    ends = ClientEnds()

    async def script(peer: Peer) -> None:
        request = await peer.request()
        if request is None:
            return
        if peer.index > 0:
            await peer.send(reply(b"re:" + request.body))
            return
        await peer.send(reply(b"", "Content-Type: application/json", status="200 OK", length=False))
        for part in parts:
            await ends.read(peer)  # each write comes in a read of its own
            await peer.send(part)
        await ends.read(peer)  # then the script ends and the connection closes

    async def scenario() -> None:
        async with RawServer(script) as server, ends, make_client(server.url()) as client:
            assert await post(client, b"1") == Answer(200, b"".join(parts), None)
            assert await post(client, b"2") == Answer(202, b"re:2", None)
            assert server.connections == 2

    run(scenario())


def test_answer_read_to_close_cut_by_a_reset_is_not_an_answer(run: Run) -> None:
    """A read-to-close body ends only at a clean close; a reset means it was cut off."""

    async def script(peer: Peer) -> None:
        if await peer.request() is None:
            return
        await peer.send(reply(b"", status="202 Accepted", length=False) + b'{"code":"WA2')
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.writer.transport.abort()  # with SO_LINGER 0: a reset, not a FIN

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            error = await failure(client)
        assert error.phase == "after_send"

    run(scenario())


# --------------------------------------------------------------------------- 7. compression

PLAIN: Final = b'{"status":"accepted","ids":["' + b"abc123" * 100 + b'"]}'


@pytest.mark.parametrize(
    ("coding", "encoded"),
    [
        ("gzip", gzip.compress(PLAIN)),
        ("x-gzip", gzip.compress(PLAIN)),
        ("deflate", zlib.compress(PLAIN)),
        ("GZip", gzip.compress(PLAIN)),
    ],
    ids=["gzip", "x-gzip", "deflate", "mixed-case"],
)
def test_compressed_answer_is_decoded(run: Run, coding: str, encoded: bytes) -> None:
    """A gzip, x-gzip or deflate answer comes back decoded, whatever the coding's case."""

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(reply(encoded, f"Content-Encoding: {coding}"))

    async def scenario() -> None:
        assert encoded != PLAIN
        async with RawServer(script) as server, make_client(server.url()) as client:
            assert await post(client, b"1") == Answer(202, PLAIN, None)
            assert await post(client, b"2") == Answer(202, PLAIN, None)

    run(scenario())


def test_gzip_answer_in_chunks_is_decoded(run: Run) -> None:
    """A gzip answer sent in chunks comes back decoded."""
    encoded = gzip.compress(PLAIN)

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            head = reply(b"", "Transfer-Encoding: chunked", "Content-Encoding: gzip", length=False)
            await peer.send(head + chunked(encoded[:10], encoded[10:30], encoded[30:]))

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            assert (await post(client, b"1")).body == PLAIN

    run(scenario())


def test_undecodable_compressed_answer_comes_back_as_sent(run: Run) -> None:
    """An answer that says gzip but is not comes back as sent, not as an error."""
    garbled = b"this is not gzip at all"

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(reply(garbled, "Content-Encoding: gzip", status="502 Bad Gateway"))

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            assert await post(client, b"1") == Answer(502, garbled, None)

    run(scenario())


# --------------------------------------------------------------------------- 8. interim answers

EARLY_HINTS: Final = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nRetry-After: 99\r\n\r\n"
)


@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n" + EARLY_HINTS],
    ids=["100", "100-and-103"],
)
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "separate-writes"])
def test_informational_answers_are_skipped(run: Run, interim: bytes, split: bool) -> None:
    """1xx answers, in the final answer's read or in reads of their own, are skipped."""
    ends = ClientEnds()

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            final = reply(b"re:" + request.body)
            if split:
                await peer.send(interim)
                await ends.read(peer)  # the final answer comes in a read of its own
                await peer.send(final)
            else:
                await peer.send(interim + final)

    async def scenario() -> None:
        async with RawServer(script) as server, ends, make_client(server.url()) as client:
            assert await post(client, b"1") == Answer(202, b"re:1", None)
            assert await post(client, b"2") == Answer(202, b"re:2", None)
        assert server.connections == 1

    run(scenario())


# --------------------------------------------------------------------------- 9. broken answers


def test_server_closing_without_an_answer(run: Run) -> None:
    """A server that reads the request and closes without answering fails it after_send, at once."""

    async def script(peer: Peer) -> None:
        await peer.request()  # then the script ends: the connection closes, nothing answered

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            started = time.monotonic()
            error = await failure(client)
            elapsed = time.monotonic() - started
        assert error.phase == "after_send"
        assert "without answering" in error.description
        assert elapsed < PATIENCE / 2  # told at once, not when timeout_seconds ran out

    run(scenario())


def test_server_closing_a_new_connection_before_the_request(run: Run) -> None:
    """A new connection the client finds closed before writing a byte fails in phase "connect"."""

    async def hang_up(peer: Peer) -> None:
        pass  # the script ends at once: the connection closes before anything is read

    async def scenario() -> None:
        async with (
            RawServer(hang_up) as server,
            ClientEnds(hold=True),  # each new connection reaches the client once it saw it close
            make_client(server.url(), timeout=60) as client,  # so a timeout cannot be the outcome
        ):
            for _ in range(3):
                error = await failure(client)
                assert error.phase == "connect"
                assert error.description == (
                    "the server closed the connection before the request was sent"
                )
            assert server.connections == 3  # a closed connection is never reused

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        reply(b"x" * 40).replace(b"Content-Length: 40", b"Content-Length: 100"),
        reply(b"", "Transfer-Encoding: chunked", length=False) + b"a\r\n0123456789\r\n5\r\nab",
    ],
    ids=["content-length", "chunked"],
)
def test_answer_cut_off_by_close(run: Run, answer: bytes) -> None:
    """An answer closed before its Content-Length or last chunk is an after_send error."""
    ends = ClientEnds()

    async def script(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(answer)
            await ends.read(peer)  # the client has the partial answer; then the close

    async def scenario() -> None:
        async with RawServer(script) as server, ends, make_client(server.url()) as client:
            error = await failure(client)
        assert error.phase == "after_send"
        assert "cut off" in error.description

    run(scenario())


@pytest.mark.parametrize("then_close", [True, False], ids=["then-close", "then-wait"])
@pytest.mark.parametrize(
    "garbage",
    [
        b"not http\r\n\r\n",
        b"HTTP/1.1 2x2 Odd\r\n\r\n",
        b"HTTP/1.1 202 OK\r\nContent-Length: -4\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "bad-length"],
)
def test_garbage_answer(run: Run, garbage: bytes, then_close: bool) -> None:
    """An answer that is not HTTP fails after_send at once, whether or not the server closes."""

    async def script(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(garbage)
            if not then_close:
                await peer.until_client_leaves()

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            started = time.monotonic()
            error = await failure(client)
            elapsed = time.monotonic() - started
            assert error.phase == "after_send"
            assert "timeout" not in error.description
            assert elapsed < PATIENCE / 2
            await finished(server.peers[0])  # the client dropped the connection

    run(scenario())


# --------------------------------------------------------------------------- 10. refused


def test_connection_refused_is_a_connect_error(run: Run) -> None:
    """A refused connection is a connect error, every time."""
    port = free_port()

    async def scenario() -> None:
        async with make_client(f"http://127.0.0.1:{port}{PATH}") as client:
            for _ in range(2):
                error = await failure(client)
                assert error.phase == "connect"
                assert error.description.startswith("cannot connect")

    run(scenario())


# --------------------------------------------------------------------------- 11. timeouts


def test_no_answer_is_a_read_timeout(run: Run) -> None:
    """No answer within timeout_seconds is an after_send read timeout; the connection is dropped."""

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.until_client_leaves()

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url(), timeout=0.3) as client:
            started = time.monotonic()
            error = await failure(client)
            elapsed = time.monotonic() - started
            assert error.phase == "after_send"
            assert "read timeout" in str(error)
            assert 0.25 <= elapsed < PATIENCE
            await finished(server.peers[0])  # the client dropped the connection

    run(scenario())


def test_trickling_answer_still_times_out(run: Run) -> None:
    """An answer trickling in a byte at a time still times out: the timeout bounds it whole."""

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 202 Accepted\r\n")
        while True:  # a byte every 20 ms keeps the connection lively but never ends the head
            await peer.send(b"X")
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url(), timeout=0.3) as client:
            started = time.monotonic()
            error = await failure(client)
            elapsed = time.monotonic() - started
        assert error.phase == "after_send"
        assert "read timeout" in str(error)
        assert elapsed < PATIENCE

    run(scenario())


def test_timed_out_connection_is_not_reused(run: Run) -> None:
    """A timed-out request's connection is dropped: its late answer never answers another."""

    async def scenario() -> None:
        async with (
            RawServer(late_echo(b"slow")) as server,
            make_client(server.url(), timeout=0.3) as client,
        ):
            error = await failure(client, b"slow")
            assert "read timeout" in str(error)
            assert await post(client, b"next") == Answer(202, b"re:next", None)
            await finished(server.peers[0])  # the client dropped the timed-out connection
            assert await post(client, b"last") == Answer(202, b"re:last", None)
            assert server.connections == 2

    run(scenario())


def test_stalled_tls_handshake_is_a_connect_timeout(run: Run) -> None:
    """A TLS handshake that never completes is a connect timeout."""

    async def script(peer: Peer) -> None:
        await peer.until_client_leaves()  # a plain TCP server: never answers the ClientHello

    async def scenario() -> None:
        async with RawServer(script) as server:
            url = server.url(scheme="https")
            async with make_client(url, timeout=0.3) as client:
                started = time.monotonic()
                error = await failure(client)
                elapsed = time.monotonic() - started
        assert error.phase == "connect"
        assert "connect timeout" in str(error)
        assert 0.25 <= elapsed < PATIENCE

    run(scenario())


# --------------------------------------------------------------------------- 12. size limit


@pytest.mark.parametrize("framing", ["content-length", "chunked", "to-close"])
def test_oversized_answer_fails_without_being_read_whole(run: Run, framing: str) -> None:
    """An answer past MAX_ANSWER_BYTES fails after_send, and the client stops reading it early."""
    total = 64 << 20
    block = b"x" * (64 << 10)

    async def script(peer: Peer) -> None:
        if await peer.request() is None:
            return
        if framing == "content-length":
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        elif framing == "chunked":
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            await peer.send(b"HTTP/1.1 200 OK\r\n\r\n")
        while peer.sent < total:
            await peer.send(
                b"%x\r\n%b\r\n" % (len(block), block) if framing == "chunked" else block
            )

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            error = await failure(client)
            assert error.phase == "after_send"
            assert f"larger than {MAX_ANSWER_BYTES}" in error.description
            await finished(server.peers[0])
            assert server.peers[0].sent < total  # the client stopped reading long before the end

    run(scenario())


@pytest.mark.parametrize("complete", [True, False], ids=["whole-at-the-cap", "unfinished-past-it"])
def test_head_size_limit(run: Run, complete: bool) -> None:
    """A head of MAX_HEAD_BYTES arriving in pieces is an answer; a head still unfinished past
    MAX_HEAD_BYTES is a malformed answer (after_send) at once, not at the timeout."""
    base = reply(b"", status="200 OK")[:-2]  # status line and Content-Length, one CRLF left
    end = b"\r\n\r\n" if complete else b""
    size = MAX_HEAD_BYTES if complete else MAX_HEAD_BYTES + 1
    head = base + b"X-Pad: " + b"p" * (size - len(base) - len(b"X-Pad: ") - len(end)) + end
    assert len(head) == size
    ends = ClientEnds()

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            for start in range(0, len(head), 4096):
                await peer.send(head[start : start + 4096])
                await ends.read(peer)  # a read of its own, so the cap is met mid-head
            if not complete:
                await peer.until_client_leaves()

    async def scenario() -> None:
        async with RawServer(script) as server, ends, make_client(server.url()) as client:
            if complete:
                assert (await post(client, b"{}")).status == 200
            else:
                error = await failure(client)
                assert error.phase == "after_send"
                assert f"headers were larger than {MAX_HEAD_BYTES}" in error.description

    run(scenario())


def test_a_large_body_right_behind_the_head_is_not_taken_for_headers(run: Run) -> None:
    """Head and a body far past MAX_HEAD_BYTES in one write: the cap counts the head only."""
    body = b"b" * (4 * MAX_HEAD_BYTES)

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(reply(body, status="200 OK"))

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            assert (await post(client, b"{}")).body == body

    run(scenario())


@pytest.mark.parametrize("size", [MAX_ANSWER_BYTES, MAX_ANSWER_BYTES + 1])
def test_answer_size_limit_is_exact(run: Run, size: int) -> None:
    """An answer of exactly MAX_ANSWER_BYTES is taken; one byte more fails."""

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(reply(b"y" * size, status="200 OK"))

    async def scenario() -> None:
        async with RawServer(script) as server, make_client(server.url()) as client:
            if size <= MAX_ANSWER_BYTES:
                answer = await post(client, b"{}")
                assert answer.body == b"y" * size
            else:
                assert (await failure(client)).phase == "after_send"

    run(scenario())


def test_compressed_answer_inflating_past_the_limit_is_refused(run: Run) -> None:
    """A small gzip answer inflating past MAX_ANSWER_BYTES fails rather than come back cut short."""
    plain = b"0" * (MAX_ANSWER_BYTES + 1000)
    bomb = gzip.compress(plain)  # a few kB on the wire

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(reply(bomb, "Content-Encoding: gzip", status="200 OK"))

    async def scenario() -> None:
        assert len(bomb) < MAX_ANSWER_BYTES // 100
        async with RawServer(script) as server, make_client(server.url()) as client:
            error = await failure(client)  # not an Answer holding the first MiB of it
        assert error.phase == "after_send"

    run(scenario())


# --------------------------------------------------------------------------- 13. TLS


def test_tls_answer_with_a_trusted_certificate(run: Run, tls: Tls) -> None:
    """Over TLS with a trusted certificate, requests and answers go through one connection."""

    async def scenario() -> None:
        async with (
            RawServer(echo, ssl_context=tls.server) as server,
            make_client(server.url(scheme="https"), ssl_context=tls.client) as client,
        ):
            assert await post(client, b"1") == Answer(202, b"re:1", None)
            assert await post(client, b"2") == Answer(202, b"re:2", None)
        assert server.connections == 1
        request = server.requests[0]
        assert request.line == f"POST {PATH} HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}" in request.headers
        assert f"api-key: {KEY}" in request.headers

    run(scenario())


# Certificates that cannot be verified (unknown CA, wrong host, expired): tests/test_transport.py,
# for both posters.


def test_https_url_to_a_plain_http_server_is_a_connect_error(run: Run, tls: Tls) -> None:
    """An https URL pointing at a plain HTTP server is a connect error (TLS)."""

    async def script(peer: Peer) -> None:
        await peer.reader.read(1)
        await peer.send(reply(b"plain", status="400 Bad Request"))

    async def scenario() -> None:
        async with (
            RawServer(script) as server,
            make_client(server.url(scheme="https"), ssl_context=tls.client) as client,
        ):
            error = await failure(client)
        assert error.phase == "connect"
        assert error.description.startswith("TLS error")

    run(scenario())


# --------------------------------------------------------------------------- 14. the API key


def _texts(error: BaseException) -> Iterator[str]:
    """Every text an error could show: its own, its traceback's, and those of its chain."""
    yield str(error)
    yield repr(error)
    yield "".join(traceback.format_exception(error))
    yield "".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield repr(link)
        yield repr(link.args)
        yield repr(vars(link)) if hasattr(link, "__dict__") else ""
        link = link.__cause__ or link.__context__


def test_api_key_never_shows(run: Run, tls: Tls) -> None:
    """The API key shows in no error, traceback, repr or chained exception, whatever fails."""

    async def script(peer: Peer) -> None:
        request = await peer.request()
        if request is None:
            return
        match request.body:
            case b"close":
                return
            case b"cut":
                await peer.send(reply(b"abc").replace(b"3", b"9"))
            case b"garbage":
                await peer.send(b"not http\r\n\r\n")
            case b"huge":
                await peer.send(reply(b"z" * (MAX_ANSWER_BYTES + 1)))
            case b"hang":
                await peer.until_client_leaves()
            case _:
                await peer.send(reply(b"re:" + request.body))

    async def scenario() -> list[BaseException]:
        errors: list[BaseException] = []
        async with RawServer(script) as server, make_client(server.url(), timeout=0.3) as client:
            for body in (b"close", b"cut", b"garbage", b"huge", b"hang"):
                errors.append(await failure(client, body))
            texts = [repr(client), str(client)]
        async with make_client(f"http://127.0.0.1:{free_port()}/") as refused:
            errors.append(await failure(refused))
            texts.append(repr(refused))
        async with (
            RawServer(echo, ssl_context=tls.server) as server,
            make_client(server.url(scheme="https")) as untrusted,
        ):
            errors.append(await failure(untrusted))
        with pytest.raises(ConfigError) as bad_url:
            make_client("ftp://127.0.0.1/x")
        errors.append(bad_url.value)
        for text in texts:
            assert KEY not in text
        return errors

    errors = run(scenario())
    assert len(errors) == 8
    for error in errors:
        for text in _texts(error):
            assert KEY not in text, text


# --------------------------------------------------------------------------- 15. cancellation


def test_cancelled_post_leaves_no_connection_to_reuse(run: Run) -> None:
    """A cancelled request's connection is dropped: its late answer never answers another."""
    arrived = asyncio.Event()

    async def scenario() -> None:
        async with (
            RawServer(late_echo(b"first", arrived)) as server,
            make_client(server.url()) as client,
        ):
            task = asyncio.ensure_future(client.post(b"first"))
            try:
                await asyncio.wait_for(arrived.wait(), PATIENCE)
            finally:
                task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await post(client, b"second") == Answer(202, b"re:second", None)
            await finished(server.peers[0])  # the cancelled request's connection was dropped
            assert await post(client, b"third") == Answer(202, b"re:third", None)
            assert server.connections == 2

    run(scenario())


# --------------------------------------------------------------------------- out of step


@pytest.mark.parametrize("later", [False, True], ids=["with-the-answer", "while-idle"])
def test_stray_bytes_after_an_answer_do_not_answer_the_next_request(run: Run, later: bool) -> None:
    """Unasked bytes after an answer drop the connection: they never answer the next request."""
    ends = ClientEnds()
    pooled = asyncio.Event()  # the client has the first answer, the connection idles
    delivered = asyncio.Event()  # the client has read the stray bytes
    stray = b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\n\r\nsta"  # unasked, unfinished

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            answer = reply(b"re:" + request.body)
            if request.body != b"1":
                await peer.send(answer)
                continue
            if later:
                await peer.send(answer)
                await pooled.wait()
                await peer.send(stray)
            else:
                await peer.send(answer + stray)
            await ends.read(peer)
            delivered.set()

    async def scenario() -> None:
        async with RawServer(script) as server, ends, make_client(server.url()) as client:
            assert await post(client, b"1") == Answer(202, b"re:1", None)
            pooled.set()
            await asyncio.wait_for(delivered.wait(), PATIENCE)
            assert await post(client, b"2") == Answer(202, b"re:2", None)
            assert server.connections == 2
            await finished(server.peers[0])

    run(scenario())


# --------------------------------------------------------------------------- connecting


class FakeLookup:
    """A stand-in for getaddrinfo: fixed answers (or an error), counting the calls."""

    def __init__(self, answers: list[AddrInfo] | None = None, error: OSError | None = None):
        self.answers = answers or []
        self.error = error
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[AddrInfo]:
        self.calls += 1
        await asyncio.sleep(0)  # a real lookup yields; concurrent callers overlap here
        if self.error is not None:
            raise self.error
        return self.answers


def ipv4(port: int) -> AddrInfo:
    """An address entry for 127.0.0.1:``port``."""
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


def named_client(url: str, lookup: FakeLookup, *, timeout: float = PATIENCE) -> KaleyraClient:
    """A client for ``url`` whose host name is resolved by ``lookup``."""
    parts = urlsplit(url)
    return KaleyraClient(
        url=url,
        api_key=Secret(KEY),
        concurrency=4,
        timeout_seconds=timeout,
        idle_seconds=60.0,
        resolver=CachedResolver(parts.hostname or "", parts.port or 80, lookup=lookup),
    )


def test_a_name_that_does_not_resolve_is_a_dns_failure(run: Run) -> None:
    """A failed lookup is a connect failure with cause "dns", naming the host."""
    lookup = FakeLookup(error=socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    async def scenario() -> None:
        async with named_client(f"http://api.example.invalid{PATH}", lookup) as client:
            error = await failure(client)
        assert (error.phase, error.cause) == ("connect", "dns")
        assert error.description == "cannot resolve api.example.invalid: Name or service not known"

    run(scenario())


def test_new_connections_share_one_lookup(run: Run) -> None:
    """Four connections opened at once ask for the name once (the cache: tests/test_resolver.py),
    and the Host header keeps the name."""

    async def scenario() -> None:
        async with RawServer(echo) as server:
            lookup = FakeLookup([ipv4(server.port)])
            url = f"http://kaleyra.test:{server.port}{PATH}"
            async with named_client(url, lookup) as client:
                await asyncio.gather(*(post(client, b"%d" % i) for i in range(4)))
            assert server.connections == 4
            assert lookup.calls == 1
            assert server.requests[0].header("host") == [f"kaleyra.test:{server.port}"]

    run(scenario())


def test_happy_eyeballs_moves_past_an_address_that_hangs(run: Run) -> None:
    """The first address never completes its handshake; the second is tried after 250 ms and
    the request is answered, well before timeout_seconds (a client trying only the first
    address would time out)."""

    async def scenario() -> None:
        with stuck_port() as stuck:
            async with RawServer(echo) as server:
                lookup = FakeLookup([ipv4(stuck), ipv4(server.port)])
                url = f"http://kaleyra.test:{server.port}{PATH}"
                async with named_client(url, lookup, timeout=4.0) as client:
                    assert await post(client, b"hi") == Answer(202, b"re:hi", None)
                assert server.connections == 1

    run(scenario())


@contextlib.contextmanager
def stuck_port() -> Iterator[int]:
    """A port on 127.0.0.1 where a connection attempt hangs: its accept queue is full.

    A listener with a backlog of 0 that never accepts holds one connection; the kernel drops
    the SYN of every later one, so ``connect`` waits (for minutes) instead of failing.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
