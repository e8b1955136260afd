"""CachedResolver: one lookup per TTL, shared by concurrent callers, failures not kept."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bulk_sender.sending.resolver import DNS_TTL, AddrInfo, CachedResolver

ADDRESS: AddrInfo = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lookup:
    """getaddrinfo's stand-in: answers ``ADDRESS`` (or raises ``errors`` first), counting calls."""

    def __init__(self, *errors: OSError) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, host: str, port: int) -> list[AddrInfo]:
        self.calls += 1
        await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return [ADDRESS]


def test_addresses_are_reused_until_the_ttl_runs_out() -> None:
    """Within DNS_TTL the cached addresses are returned; after it, the name is looked up again."""

    async def scenario() -> None:
        clock, lookup = Clock(), Lookup()
        resolver = CachedResolver("api.kaleyra.test", 443, lookup=lookup, clock=clock)
        assert await resolver.resolve() == [ADDRESS]
        clock.now += DNS_TTL - 0.001
        assert await resolver.resolve() == [ADDRESS]
        assert lookup.calls == 1
        clock.now += 0.001
        await resolver.resolve()
        assert lookup.calls == 2

    asyncio.run(scenario())


def test_concurrent_callers_share_one_lookup() -> None:
    """Callers that arrive while a lookup is in flight wait for it instead of starting theirs."""

    async def scenario() -> None:
        lookup = Lookup()
        lookup.gate.clear()
        resolver = CachedResolver("api.kaleyra.test", 443, lookup=lookup, clock=Clock())
        waiting = [asyncio.ensure_future(resolver.resolve()) for _ in range(5)]
        await asyncio.sleep(0)
        lookup.gate.set()
        assert await asyncio.gather(*waiting) == [[ADDRESS]] * 5
        assert lookup.calls == 1

    asyncio.run(scenario())


def test_a_caller_giving_up_does_not_cancel_the_others_lookup() -> None:
    """One caller's deadline cancels its own wait only; the shared lookup goes on."""

    async def scenario() -> None:
        lookup = Lookup()
        lookup.gate.clear()
        resolver = CachedResolver("api.kaleyra.test", 443, lookup=lookup, clock=Clock())
        impatient = asyncio.ensure_future(resolver.resolve())
        patient = asyncio.ensure_future(resolver.resolve())
        await asyncio.sleep(0)
        impatient.cancel()
        lookup.gate.set()
        assert await patient == [ADDRESS]
        assert lookup.calls == 1

    asyncio.run(scenario())


def test_a_failed_lookup_is_not_kept() -> None:
    """A lookup that fails raises to its callers; the next call asks again."""

    async def scenario() -> None:
        lookup = Lookup(socket.gaierror(socket.EAI_AGAIN, "Temporary failure"))
        resolver = CachedResolver("api.kaleyra.test", 443, lookup=lookup, clock=Clock())
        with pytest.raises(socket.gaierror):
            await resolver.resolve()
        assert await resolver.resolve() == [ADDRESS]
        assert lookup.calls == 2

    asyncio.run(scenario())


def test_an_empty_answer_is_a_failure() -> None:
    """getaddrinfo answering no address at all is treated as a failed lookup."""

    async def empty(host: str, port: int) -> list[AddrInfo]:
        return []

    async def scenario() -> None:
        resolver = CachedResolver("api.kaleyra.test", 443, lookup=empty, clock=Clock())
        with pytest.raises(socket.gaierror):
            await resolver.resolve()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("host", "family", "address"),
    [
        ("127.0.0.1", socket.AF_INET, ("127.0.0.1", 8443)),
        ("::1", socket.AF_INET6, ("::1", 8443, 0, 0)),
    ],
)
def test_an_ip_address_needs_no_lookup(host: str, family: int, address: tuple[object]) -> None:
    """An IP address is its own answer: nothing is looked up, ever."""
    lookup = Lookup()

    async def scenario() -> list[AddrInfo]:
        resolver = CachedResolver(host, 8443, lookup=lookup, clock=Clock())
        return await resolver.resolve()

    (entry,) = asyncio.run(scenario())
    assert (entry[0], entry[4]) == (family, address)
    assert lookup.calls == 0


def test_the_system_lookup_resolves_localhost() -> None:
    """Without a stand-in, the loop's getaddrinfo answers (localhost: no network needed)."""

    async def scenario() -> list[AddrInfo]:
        return await CachedResolver("localhost", 80).resolve()

    addresses = asyncio.run(scenario())
    assert addresses
    assert all(entry[1] == socket.SOCK_STREAM for entry in addresses)
