"""Name lookups for the sending client, kept for a while.

A run talks to one host for hours; looking its name up for every new connection would put a
DNS round trip (and a thread of the default executor) in front of each one, and a resolver
that fails for a moment would fail connections that the last answer could have served. So
:class:`CachedResolver` asks ``loop.getaddrinfo`` once, keeps the addresses for
:data:`DNS_TTL` seconds (as aiohttp's connector does), and lets concurrent connections share
one lookup in flight. Failed lookups are not kept: the next connection asks again.

An IP address needs no lookup and is answered at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["DNS_TTL", "AddrInfo", "CachedResolver", "Lookup"]

#: How long a lookup's addresses are reused, in seconds.
DNS_TTL: Final = 60.0

#: One ``getaddrinfo`` entry: family, type, proto, canonical name, socket address.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
#: ``loop.getaddrinfo``'s shape, reduced to what is used here: host, port -> entries.
Lookup = Callable[[str, int], Awaitable[list[AddrInfo]]]


class CachedResolver:
    """The addresses of one ``host:port``, looked up at most once per :data:`DNS_TTL`.

    Create inside the running loop. ``lookup`` and ``clock`` are for tests.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ttl: float = DNS_TTL,
        lookup: Lookup | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self._ttl = ttl
        self._lookup = lookup or _system_lookup(loop)
        self._clock = clock or loop.time
        self._addresses: list[AddrInfo] = _literal(host, port)
        self._expires = float("inf") if self._addresses else 0.0
        self._pending: asyncio.Future[list[AddrInfo]] | None = None
        self.lookups = 0

    def __repr__(self) -> str:
        return (
            f"CachedResolver(host={self.host!r}, port={self.port!r}, ttl={self._ttl!r}, "
            f"addresses={len(self._addresses)}, lookups={self.lookups})"
        )

    async def resolve(self) -> list[AddrInfo]:
        """The host's addresses, from the cache while it is fresh; raises ``OSError``."""
        if self._addresses and self._clock() < self._expires:
            return self._addresses
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._refresh())
            # Its failure is read here even when every caller gave up waiting (never "lost").
            self._pending.add_done_callback(lambda done: done.cancelled() or done.exception())
        # Shielded: one caller giving up (its deadline) must not cancel the others' lookup.
        return await asyncio.shield(self._pending)

    async def _refresh(self) -> list[AddrInfo]:
        self.lookups += 1
        try:
            addresses = await self._lookup(self.host, self.port)
            if not addresses:
                raise socket.gaierror(socket.EAI_NONAME, "no address found")
        finally:
            self._pending = None
        self._addresses = addresses
        self._expires = self._clock() + self._ttl
        return addresses


def _system_lookup(loop: asyncio.AbstractEventLoop) -> Lookup:
    async def lookup(host: str, port: int) -> list[AddrInfo]:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(f, t, p, c, tuple(a)) for f, t, p, c, a in found]

    return lookup


def _literal(host: str, port: int) -> list[AddrInfo]:
    """``host`` as an address entry if it is an IP address; otherwise nothing."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    if address.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
