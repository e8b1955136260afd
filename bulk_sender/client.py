"""The HTTP side: one aiohttp session, and the one place aiohttp's exceptions are translated.

:meth:`KaleyraClient.post` returns the answer's status, ``Retry-After`` and body, or raises
:class:`~bulk_sender.errors.TransportError` whose ``phase`` says whether the request could have
reached Kaleyra. aiohttp never retries a POST by itself (it only retries idempotent methods on a
stale keep-alive connection), so one call is one request.

Timeouts: ``timeout_seconds`` is aiohttp's ``total`` for one request. aiohttp starts that clock
before it takes a connection from its pool (aiohttp issue 10313), so the engine never runs
more requests at once than the pool holds (``limit = concurrency``): no request ever waits for
a pooled connection, and the timeout measures only connecting, sending and answering.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from bulk_sender.config import Secret
from bulk_sender.errors import TransportError

__all__ = ["Answer", "KaleyraClient"]


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, reduced to what the classifier needs."""

    status: int
    body: bytes
    retry_after: str | None


class KaleyraClient:
    """POSTs catalog-message bodies to one sender's endpoint. Create inside the running loop."""

    def __init__(
        self, *, url: str, api_key: Secret, concurrency: int, timeout_seconds: float
    ) -> None:
        self.url = url
        connector = aiohttp.TCPConnector(
            limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300
        )
        # Every header is a session default, so no request has headers of its own to merge.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            headers={
                "Content-Type": "application/json",
                "api-key": api_key.reveal(),
                "User-Agent": "bulk-sender",
            },
        )

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
        """Close the session and its connections."""
        await self._session.close()

    async def post(self, body: bytes) -> Answer:
        """Send one request; raise :class:`TransportError` when no HTTP answer came back."""
        try:
            async with self._session.post(self.url, data=body, allow_redirects=False) as resp:
                payload = await resp.read()
                return Answer(resp.status, payload, resp.headers.get("Retry-After"))
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            raise TransportError(_describe(exc), phase="connect") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(_describe(exc), phase="after_send") from exc


def _describe(exc: BaseException) -> str:
    """A short description that never carries request headers (the API key is one)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, asyncio.TimeoutError):
        return "read timeout: no answer within timeout_seconds"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(exc, OSError) and exc.strerror:
        return f"connection error: {exc.strerror}"
    return f"connection error: {type(exc).__name__}"
