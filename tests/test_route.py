"""plan_route and open_poster: which poster a run gets, its trust, the clear-text warning."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
import trustme

from bulk_sender.config import KaleyraSettings, Proxy, Secret, SendingSettings
from bulk_sender.errors import ConfigError
from bulk_sender.sending.client import KaleyraClient
from bulk_sender.sending.proxied import ProxiedPoster
from bulk_sender.sending.transport import Route, open_poster, plan_route, tls_context

SENDING = SendingSettings(concurrency=2, timeout_seconds=1)


def kaleyra(**values: str) -> KaleyraSettings:
    """Valid [kaleyra] settings with ``values`` changed."""
    return KaleyraSettings(sid="HXAP16XXXXXX97IN", sender="+919876543210", **values)


def opened(route: Route) -> type[object]:
    """The type of poster ``open_poster`` gives for ``route`` (opened and closed in a loop)."""

    async def scenario() -> type[object]:
        async with open_poster(route, api_key=Secret("k"), sending=SENDING) as poster:
            return type(poster)

    return asyncio.run(scenario())


def test_the_route_follows_the_environment() -> None:
    """Without [kaleyra] proxy, HTTPS_PROXY decides the route to the pod's https URL."""
    route = plan_route(kaleyra(), environ={"HTTPS_PROXY": "http://u:p@10.1.1.1:3128"})
    assert route.url.startswith("https://api.in.kaleyra.io/v2/")
    assert route.proxy == Proxy("10.1.1.1", 3128, "u", Secret("p"))
    assert plan_route(kaleyra(), environ={}).proxy is None


def test_a_bad_proxy_variable_is_refused_before_anything_is_sent() -> None:
    """plan_route (called before the journal or any request) raises the ConfigError."""
    with pytest.raises(ConfigError) as caught:
        plan_route(kaleyra(), environ={"https_proxy": "socks5://10.1.1.1:1080"})
    assert caught.value.key == "https_proxy"


def test_direct_routes_get_the_fast_client_and_proxies_get_aiohttp() -> None:
    """No proxy: KaleyraClient. A proxy: ProxiedPoster."""
    url = "https://api.in.kaleyra.io/v2/SID/whatsapp/1/messages"
    assert opened(Route(url=url)) is KaleyraClient
    assert opened(Route(url=url, proxy=Proxy("127.0.0.1", 3128))) is ProxiedPoster


def test_the_ca_bundle_is_trusted_besides_the_system(tmp_path: Path) -> None:
    """tls_context holds the system's CAs and, with ca_bundle, that one more."""
    ca = trustme.CA()
    pem = f"{tmp_path}/ca.pem"
    ca.cert_pem.write_to_path(pem)
    system = tls_context().cert_store_stats()["x509_ca"]
    assert tls_context(pem).cert_store_stats()["x509_ca"] == system + 1
    assert tls_context(pem).verify_mode is ssl.CERT_REQUIRED
    assert tls_context(pem).check_hostname


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://gateway.example.com/v2/x", True),
        ("http://10.2.3.4:8080/v2/x", True),
        ("http://127.0.0.1:8080/v2/x", False),
        ("http://localhost:8080/v2/x", False),
        ("http://[::1]:8080/v2/x", False),
        ("https://gateway.example.com/v2/x", False),
    ],
)
def test_plain_http_beyond_this_machine_is_warned_about(
    url: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """http:// to a host that is not loopback logs bulk_sender.cleartext (the key would travel
    in clear); loopback and https do not. Nothing is sent to find out."""
    with caplog.at_level(logging.WARNING, logger="bulk_sender"):
        opened(Route(url=url))
    events = [record.getMessage() for record in caplog.records]
    assert ("bulk_sender.cleartext" in events) == warned
