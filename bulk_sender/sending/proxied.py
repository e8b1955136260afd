"""Sending through a forward proxy: aiohttp's client, behind the engine's ``Poster`` protocol.

The fast client (:mod:`bulk_sender.sending.client`) talks to Kaleyra directly. Behind a
company proxy the requests go through aiohttp instead, which has a well-kept implementation
of what a proxy needs: an ``https`` URL goes through a ``CONNECT`` tunnel (TLS to Kaleyra
inside it, so the proxy sees neither the key nor the bodies), an ``http`` one is sent to the
proxy in absolute form, and the proxy's credentials go as ``Proxy-Authorization: Basic``.
aiohttp costs more CPU per request than the fast client; a proxy's own round trip dwarfs that.

The delivery semantics are the fast client's: one call is one request, never retried or
redirected; a failure before the connection (tunnel and TLS included) was ready is
``phase="connect"``, anything later is ``"after_send"``. aiohttp's exceptions are translated in
:func:`_translate` and nowhere else. The phase comes from aiohttp's connection trace, not from
exception types: a proxy that hangs up in the middle of the ``CONNECT`` raises the same
``ServerDisconnectedError`` as Kaleyra hanging up after reading the body.

Nothing aiohttp raises is kept or chained: its exceptions carry the request's headers and the
proxy's credentials in their ``repr``.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Final, Literal
from urllib.parse import urlsplit

import aiohttp

from bulk_sender.config import Proxy, Secret
from bulk_sender.errors import TransportError
from bulk_sender.sending.client import (
    HAPPY_EYEBALLS_DELAY,
    IDLE_SECONDS,
    MAX_ANSWER_BYTES,
    Answer,
    Lease,
)
from bulk_sender.sending.resolver import DNS_TTL

__all__ = ["ProxiedPoster"]

_USER_AGENT: Final = "bulk-sender"


@dataclass(slots=True)
class _Progress:
    """How far one request got; set by the connection trace."""

    connected: bool = False


class _TooLarge(Exception):
    """The answer grew past :data:`MAX_ANSWER_BYTES`."""


async def _on_connected(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: object
) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.connected = True


class ProxiedPoster:
    """POSTs catalog-message bodies through ``proxy`` (or directly, when it is ``None``).

    Create inside the running loop; close it (``async with``) to close its connections.
    """

    def __init__(
        self,
        *,
        url: str,
        api_key: Secret,
        proxy: Proxy | None,
        concurrency: int,
        timeout_seconds: float,
        ssl_context: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.url = url
        self.proxy = proxy
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._where = f"{parts.hostname}:{port}"  # what messages name as the destination
        headers = {
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
            "api-key": api_key.reveal(),
        }
        # The proxy's credentials: on the CONNECT for https (the proxy never sees the request
        # inside the tunnel); on the request itself for http, which is sent to the proxy.
        authorization = _proxy_authorization(proxy)
        self._proxy_headers: dict[str, str] | None = None
        if authorization is not None and parts.scheme == "https":
            self._proxy_headers = {"Proxy-Authorization": authorization}
        elif authorization is not None:
            headers["Proxy-Authorization"] = authorization
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(_on_connected)
        trace.on_connection_reuseconn.append(_on_connected)
        connector = aiohttp.TCPConnector(
            limit=concurrency,
            ssl=ssl_context if ssl_context is not None else True,
            ttl_dns_cache=int(DNS_TTL),
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            interleave=1,
            keepalive_timeout=idle_seconds,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=[trace],
        )
        self._proxy_url = proxy.url if proxy is not None else None
        # Per request, never as the session's defaults: aiohttp copies those into the CONNECT
        # it sends the proxy, which would hand the proxy the API key in clear.
        self._headers = headers

    def __repr__(self) -> str:
        via = self.proxy.address if self.proxy is not None else None
        return f"ProxiedPoster(url={self.url!r}, proxy={via!r})"

    async def __aenter__(self) -> ProxiedPoster:
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
        await self._session.close()

    async def ready(self, lease: Lease | None = None) -> Lease:
        """An empty lease: aiohttp takes (or opens) a connection when the request is posted, so
        behind a proxy a new connection still opens after the departure gate."""
        return lease or Lease()

    def give_back(self, lease: Lease) -> None:
        """Nothing to give back (see :meth:`ready`)."""

    async def post(self, body: bytes, lease: Lease | None = None) -> Answer:
        """Send one request; raise :class:`TransportError` when no HTTP answer came back."""
        progress = _Progress()
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers=self._headers,
                allow_redirects=False,
                proxy=self._proxy_url,
                proxy_headers=self._proxy_headers,
                trace_request_ctx=progress,
            ) as response:
                if response.status == 407 and self.proxy is not None:  # only a proxy says 407
                    failure = _refused(self.proxy, self._where, 407, response.reason)
                else:
                    content = await _read(response)
                    return Answer(response.status, content, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError, _TooLarge) as exc:
            failure = _translate(exc, progress, self.proxy, self._where)
        # Raised out here, not in the handler: aiohttp's exceptions show the API key and the
        # proxy's credentials in their repr, and must not ride along as __context__.
        raise failure


async def _read(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, refusing to hold more than :data:`MAX_ANSWER_BYTES` of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _proxy_authorization(proxy: Proxy | None) -> str | None:
    """``Basic`` credentials for the proxy (UTF-8, as RFC 7617 allows), if it has any."""
    if proxy is None or not (proxy.user or proxy.password.reveal()):
        return None
    pair = f"{proxy.user}:{proxy.password.reveal()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _refused(proxy: Proxy, where: str, status: int, reason: str | None) -> TransportError:
    what = f"{status} {reason}" if reason else str(status)
    return TransportError(
        f"the proxy {proxy.address} refused the connection to {where}: {what}",
        phase="connect",
        cause="proxy",
        status=status,
    )


def _translate(
    exc: BaseException, progress: _Progress, proxy: Proxy | None, where: str
) -> TransportError:
    """aiohttp's failure as ours: the one place where that translation happens."""
    phase: Literal["connect", "after_send"] = "after_send" if progress.connected else "connect"
    if isinstance(exc, aiohttp.ClientHttpProxyError) and proxy is not None:
        return _refused(proxy, where, exc.status, exc.message)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        check = getattr(error, "verify_message", None) or getattr(error, "reason", None)
        return TransportError(
            f"the TLS certificate of {where} could not be verified: {check or error}",
            phase="connect",
            cause="certificate",
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return TransportError(
            f"cannot resolve {exc.host}: {exc.strerror or 'no address found'}",
            phase="connect",
            cause="dns",
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError) and proxy is not None:
        reason = exc.strerror or type(exc.os_error).__name__
        return TransportError(
            f"cannot connect to the proxy {proxy.address}: {reason}", phase="connect"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = getattr(exc.os_error, "reason", None) or "handshake failed"
        return TransportError(f"TLS error: {reason}", phase="connect")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.strerror or type(exc.os_error).__name__
        return TransportError(f"cannot connect: {reason}", phase="connect")
    return TransportError(_describe(exc, phase, proxy), phase=phase)


def _describe(exc: BaseException, phase: str, proxy: Proxy | None) -> str:
    """Words for a failure that has no better class: by when it happened and what it was."""
    if isinstance(exc, TimeoutError):
        what = "connect timeout" if phase == "connect" else "read timeout"
        return f"{what}: no answer within timeout_seconds"
    if isinstance(exc, _TooLarge):
        return f"the answer was larger than {MAX_ANSWER_BYTES} bytes"
    if phase == "connect" and proxy is not None:
        return f"the proxy {proxy.address} failed the connection: {_reason(exc)}"
    if phase == "connect":
        return f"cannot connect: {_reason(exc)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "the answer was not valid HTTP"
    return f"connection error: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    """A short, credential-free reason: the OS's words, or the kind of failure."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    return type(exc).__name__
