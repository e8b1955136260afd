"""The delivery semantics of both posters, against scripted servers on 127.0.0.1.

The engine sends through :class:`~bulk_sender.sending.client.KaleyraClient` when it connects
directly and through :class:`~bulk_sender.sending.proxied.ProxiedPoster` (aiohttp) when a
proxy is in play. Whichever it is, an answer is an answer, a failure before the request left
is ``phase="connect"`` (retryable), and one after is ``"after_send"`` (the row's fate is
unknown). Each test here runs on both: ``direct`` is the fast client, ``proxied`` is aiohttp
through :class:`~tests.rawhttp.PipeProxy` (a ``CONNECT`` tunnel for https, absolute-form
requests for http), with Basic credentials. Both loops (asyncio, uvloop) for each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Final

import pytest

from bulk_sender.config import Proxy, Secret
from bulk_sender.errors import TransportError
from bulk_sender.sending.client import MAX_ANSWER_BYTES, Answer, KaleyraClient
from bulk_sender.sending.engine import Poster
from bulk_sender.sending.proxied import ProxiedPoster
from tests.rawhttp import (
    LOOPS,
    PATH,
    PATIENCE,
    Peer,
    PipeProxy,
    RawServer,
    Run,
    Tls,
    echo,
    free_port,
    make_tls,
    reply,
    runner,
)

pytestmark = pytest.mark.timeout(20)

KEY: Final = "kal-test-key-Transport-5Hq2"
USER: Final = "alice"
PASSWORD: Final = "pr0xy-Pa55-w0rd"
VIAS: Final = ("direct", "proxied")
#: What no error may show: the key, the proxy password, and the two as Basic credentials.
SECRETS: Final = (KEY, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Run:
    """Run a test's coroutine to completion on a fresh loop of the parametrised kind."""
    return runner(request.param)


@pytest.fixture(params=VIAS)
def via(request: pytest.FixtureRequest) -> str:
    """Which poster the test drives: the fast client, or aiohttp through a proxy."""
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def tls() -> Tls:
    """Certificates from a CA made for this module, and a client context that trusts it."""
    return make_tls()


class Sent:
    """A poster under test, and the proxy it went through (``None`` when direct)."""

    def __init__(self, poster: KaleyraClient | ProxiedPoster, proxy: PipeProxy | None) -> None:
        self.poster = poster
        self.proxy = proxy

    async def post(self, body: bytes = b"{}") -> Answer:
        """``poster.post``, failing the test (not hanging it) if no outcome comes in PATIENCE."""
        return await asyncio.wait_for(self.poster.post(body), PATIENCE)

    async def failure(self, body: bytes = b"{}") -> TransportError:
        """The TransportError that posting ``body`` raises; it never shows a secret."""
        with pytest.raises(TransportError) as caught:
            await self.post(body)
        for text in _texts(caught.value):
            assert all(secret not in text for secret in SECRETS), text
        return caught.value


@contextlib.asynccontextmanager
async def sending(
    via: str,
    url: str,
    *,
    timeout: float = PATIENCE,  # noqa: ASYNC109 - the poster's timeout_seconds, passed on
    ssl_context: ssl.SSLContext | None = None,
    proxy: PipeProxy | None = None,
) -> AsyncIterator[Sent]:
    """A poster of kind ``via`` for ``url``; ``proxied`` starts a PipeProxy unless given one."""
    if via == "direct":
        async with KaleyraClient(
            url=url,
            api_key=Secret(KEY),
            concurrency=4,
            timeout_seconds=timeout,
            ssl_context=ssl_context,
            idle_seconds=60.0,
        ) as client:
            yield Sent(client, None)
        return
    async with contextlib.AsyncExitStack() as stack:
        if proxy is None:
            proxy = await stack.enter_async_context(PipeProxy(user=USER, password=PASSWORD))
        poster = ProxiedPoster(
            url=url,
            api_key=Secret(KEY),
            proxy=Proxy("127.0.0.1", proxy.port, USER, Secret(PASSWORD)),
            concurrency=4,
            timeout_seconds=timeout,
            ssl_context=ssl_context,
            idle_seconds=60.0,
        )
        async with poster:
            yield Sent(poster, proxy)


def _texts(error: BaseException) -> Iterator[str]:
    """Every text an error could show: its own, its traceback's, and those of its chain."""
    yield str(error)
    yield repr(error)
    yield repr(vars(error))
    yield "".join(traceback.format_exception(error))
    link: BaseException | None = error.__cause__ or error.__context__
    while link is not None:
        yield repr(link)
        link = link.__cause__ or link.__context__


def test_both_posters_are_posters() -> None:
    """Both transports satisfy the engine's Poster protocol (checked by mypy, here by name)."""
    posters: list[type[Poster]] = [KaleyraClient, ProxiedPoster]
    methods = ("ready", "give_back", "post")
    assert all(callable(getattr(kind, name, None)) for kind in posters for name in methods)


# --------------------------------------------------------------------------- answers


def test_an_answer_arrives_with_the_key_and_body(run: Run, via: str) -> None:
    """A 202 comes back with its body and Retry-After; the server saw the key and the body."""
    body = b'{"to":"+919812345678","text":"Caf\xc3\xa9"}'

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(reply(b'{"data":{"message_id":"m-1"}}', "Retry-After: 7"))

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url()) as sent:
            assert await sent.post(body) == Answer(202, b'{"data":{"message_id":"m-1"}}', "7")
            assert (await sent.post(body)).status == 202
        first = server.requests[0]
        assert first.line.startswith("POST ") and first.line.endswith(f"{PATH} HTTP/1.1")
        assert f"api-key: {KEY}" in first.headers
        assert "Content-Type: application/json" in first.headers
        assert first.body == body
        if sent.proxy is not None:  # the request really went through the proxy
            assert [head.line.split(" ")[0] for head in sent.proxy.heads] == ["POST"]
            assert sent.proxy.heads[0].header("proxy-authorization") != []
        assert first.header("proxy-authorization") == []  # the proxy's, never passed on

    run(scenario())


@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (429, reply(b'{"code":"rate"}', "Retry-After: 1", status="429 Too Many Requests")),
        (400, reply(b'{"code":"WA400"}', status="400 Bad Request")),
        (500, reply(b"oops", status="500 Internal Server Error")),
        (302, reply(b"", "Location: http://127.0.0.1:1/elsewhere", status="302 Found")),
    ],
    ids=["429", "400", "500", "redirect-not-followed"],
)
def test_any_status_is_an_answer(run: Run, via: str, status: int, raw: bytes) -> None:
    """4xx, 5xx and 3xx are answers to classify; a redirect is never followed."""

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(raw)

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url()) as sent:
            assert (await sent.post()).status == status
        assert len(server.requests) == 1

    run(scenario())


# --------------------------------------------------------------------------- after the request left


def test_server_closing_after_reading_the_body_is_after_send(run: Run, via: str) -> None:
    """The request arrived whole and the server hung up: it may have been acted on."""

    async def script(peer: Peer) -> None:
        await peer.request()  # then the script ends: closed without an answer

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url()) as sent:
            error = await sent.failure()
        assert error.phase == "after_send"
        assert error.cause == "network"
        assert server.requests[0].body == b"{}"

    run(scenario())


def test_answer_cut_off_is_after_send(run: Run, via: str) -> None:
    """An answer shorter than its Content-Length is no answer, and the request had left."""

    async def script(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(reply(b"abc").replace(b"Length: 3", b"Length: 9"))

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url()) as sent:
            error = await sent.failure()
        assert error.phase == "after_send"

    run(scenario())


def test_garbage_answer_is_after_send(run: Run, via: str) -> None:
    """Bytes that are not HTTP after the request: after_send, told at once (no timeout)."""

    async def script(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(b"not http at all\r\n\r\n")

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url()) as sent:
            error = await sent.failure()
        assert error.phase == "after_send"
        assert "timeout" not in error.description

    run(scenario())


def test_no_answer_is_a_read_timeout(run: Run, via: str) -> None:
    """A server that reads the request and stays silent: read timeout, after_send."""

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.until_client_leaves()

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url(), timeout=0.5) as sent:
            error = await sent.failure()
        assert error.phase == "after_send"
        assert "read timeout" in error.description

    run(scenario())


def test_oversized_answer_is_after_send(run: Run, via: str) -> None:
    """An answer past MAX_ANSWER_BYTES is refused, not held whole."""

    async def script(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(reply(b"z" * (MAX_ANSWER_BYTES + 1), status="200 OK"))

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url()) as sent:
            error = await sent.failure()
        assert error.phase == "after_send"
        assert f"larger than {MAX_ANSWER_BYTES}" in error.description

    run(scenario())


# --------------------------------------------------------------------------- before it left


def test_nothing_listening_is_a_connect_failure(run: Run, via: str, tls: Tls) -> None:
    """Nothing listens at the address: connect phase. Through a proxy it is the proxy saying so
    (502 to the CONNECT: it could not reach the server), which stops the run."""

    async def scenario() -> None:
        url = f"https://127.0.0.1:{free_port()}{PATH}"
        async with sending(via, url, ssl_context=tls.client) as sent:
            error = await sent.failure()
        assert error.phase == "connect"
        if via == "direct":
            assert (error.cause, error.description) == (
                "network",
                "cannot connect: Connection refused",
            )
        else:
            assert (error.cause, error.status) == ("proxy", 502)

    run(scenario())


def test_stalled_tls_handshake_is_a_connect_timeout(run: Run, via: str, tls: Tls) -> None:
    """A server that never answers the TLS hello: connect timeout, nothing was sent."""

    async def script(peer: Peer) -> None:
        await peer.until_client_leaves()

    async def scenario() -> None:
        async with (
            RawServer(script) as server,
            sending(via, server.url(scheme="https"), timeout=0.5, ssl_context=tls.client) as sent,
        ):
            error = await sent.failure()
        assert error.phase == "connect"
        assert "connect timeout" in error.description

    run(scenario())


# --------------------------------------------------------------------------- TLS


def test_tls_with_a_trusted_certificate(run: Run, via: str, tls: Tls) -> None:
    """With the CA trusted, the request goes over TLS (through the tunnel when proxied)."""

    async def scenario() -> None:
        async with (
            RawServer(echo, ssl_context=tls.server) as server,
            sending(via, server.url(scheme="https"), ssl_context=tls.client) as sent,
        ):
            assert await sent.post(b"1") == Answer(202, b"re:1", None)
        assert server.requests[0].line == f"POST {PATH} HTTP/1.1"
        assert server.requests[0].header("proxy-authorization") == []  # the proxy's, not Kaleyra's
        if sent.proxy is not None:
            (connect,) = sent.proxy.heads
            assert connect.line == f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"
            assert connect.header("proxy-authorization") != []
            assert connect.header("api-key") == []  # the key travels inside the tunnel only
            assert KEY not in "\n".join(connect.headers)

    run(scenario())


@pytest.mark.parametrize(
    ("served", "check"),
    [
        ("server", "unable to get local issuer certificate"),
        ("localhost_only", "mismatch"),
        ("expired", "certificate has expired"),
    ],
    ids=["unknown-ca", "wrong-host", "expired"],
)
def test_unverifiable_certificate_names_the_check(
    run: Run, via: str, tls: Tls, served: str, check: str
) -> None:
    """A certificate that cannot be verified is cause "certificate", connect phase, naming the
    check that failed; nothing reached the server."""
    trusted = tls.client if served != "server" else ssl.create_default_context()

    async def scenario() -> None:
        context: ssl.SSLContext = getattr(tls, served)
        async with (
            RawServer(echo, ssl_context=context) as server,
            sending(via, server.url(scheme="https"), ssl_context=trusted) as sent,
        ):
            error = await sent.failure()
        assert (error.phase, error.cause) == ("connect", "certificate")
        assert check in error.description
        assert f"127.0.0.1:{server.port}" in error.description
        assert server.requests == []

    run(scenario())


# --------------------------------------------------------------------------- the proxy itself


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_wrong_proxy_password_is_the_proxys_refusal(run: Run, tls: Tls, scheme: str) -> None:
    """A 407 from the proxy is cause "proxy", connect phase, naming the proxy by host and port
    only; the origin saw nothing."""

    async def scenario() -> None:
        async with (
            RawServer(echo, ssl_context=tls.server if scheme == "https" else None) as server,
            PipeProxy(user=USER, password="another-password") as proxy,
            sending(
                "proxied", server.url(scheme=scheme), ssl_context=tls.client, proxy=proxy
            ) as sent,
        ):
            error = await sent.failure()
        assert (error.phase, error.cause, error.status) == ("connect", "proxy", 407)
        assert f"the proxy {proxy.address} refused" in error.description
        assert server.requests == []

    run(scenario())


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (reply(b"<html>denied</html>", status="403 Forbidden"), 403),
        (reply(b"<html>no route</html>", status="502 Bad Gateway"), 502),
    ],
    ids=["403", "502"],
)
def test_proxy_refusing_the_tunnel(run: Run, tls: Tls, raw: bytes, status: int) -> None:
    """A proxy answering CONNECT with an error is cause "proxy" with its status, connect phase."""

    async def scenario() -> None:
        async with (
            RawServer(echo, ssl_context=tls.server) as server,
            PipeProxy(user=USER, password=PASSWORD, answer=raw) as proxy,
            sending(
                "proxied", server.url(scheme="https"), ssl_context=tls.client, proxy=proxy
            ) as sent,
        ):
            error = await sent.failure()
        assert (error.phase, error.cause, error.status) == ("connect", "proxy", status)
        assert server.requests == []

    run(scenario())


def test_proxy_hanging_up_during_connect_is_a_connect_failure(run: Run, tls: Tls) -> None:
    """A proxy that closes in the middle of CONNECT: nothing left for Kaleyra, so connect phase
    (retryable), though aiohttp raises the same error as for a server hanging up after a body."""

    async def scenario() -> None:
        async with (
            RawServer(echo, ssl_context=tls.server) as server,
            PipeProxy(hang_up=True) as proxy,
            sending(
                "proxied", server.url(scheme="https"), ssl_context=tls.client, proxy=proxy
            ) as sent,
        ):
            error = await sent.failure()
        assert (error.phase, error.cause) == ("connect", "network")
        assert f"the proxy {proxy.address}" in error.description
        assert server.requests == []

    run(scenario())


def test_proxy_not_listening_is_a_connect_failure(run: Run) -> None:
    """No proxy at the configured address: connect phase, naming the proxy."""

    async def scenario() -> None:
        async with RawServer(echo) as server:
            poster = ProxiedPoster(
                url=server.url(),
                api_key=Secret(KEY),
                proxy=Proxy("127.0.0.1", free_port(), USER, Secret(PASSWORD)),
                concurrency=1,
                timeout_seconds=PATIENCE,
            )
            async with poster:
                error = await Sent(poster, None).failure()
        assert (error.phase, error.cause) == ("connect", "network")
        assert "cannot connect to the proxy 127.0.0.1:" in error.description

    run(scenario())


def test_proxied_poster_never_shows_the_password(run: Run, tls: Tls) -> None:
    """Neither the poster's repr nor its errors show the proxy password or the API key."""

    async def scenario() -> list[str]:
        url = f"https://127.0.0.1:{free_port()}{PATH}"
        async with sending("proxied", url, ssl_context=tls.client) as sent:
            await sent.failure()
            return [repr(sent.poster), str(sent.poster)]

    for text in run(scenario()):
        assert PASSWORD not in text and KEY not in text


def test_an_endless_header_is_refused_early(run: Run, via: str) -> None:
    """A header that never ends is a malformed answer: after_send, at once, without reading
    (and holding) what the server keeps sending."""
    total = 32 << 20

    async def script(peer: Peer) -> None:
        if await peer.request() is None:
            return
        await peer.send(b"HTTP/1.1 202 Accepted\r\nX-Endless: ")
        while peer.sent < total:
            await peer.send(b"a" * (64 << 10))

    async def scenario() -> None:
        async with RawServer(script) as server, sending(via, server.url()) as sent:
            error = await sent.failure()
            await asyncio.wait_for(server.peers[0].done.wait(), PATIENCE)
        assert error.phase == "after_send"
        assert "timeout" not in error.description
        assert server.peers[0].sent < total  # the client hung up long before the end

    run(scenario())
