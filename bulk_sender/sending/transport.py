"""The way to Kaleyra: directly or through a proxy, and which certificates to trust.

:func:`plan_route` decides before anything is sent, so a bad ``HTTPS_PROXY`` or CA bundle is a
config error (exit 2) and not a failed row; :func:`open_poster` then opens, inside the running
loop, the poster the route calls for:

* no proxy: :class:`~bulk_sender.sending.client.KaleyraClient`, the fast keep-alive client;
* a proxy: :class:`~bulk_sender.sending.proxied.ProxiedPoster`, aiohttp's client, which
  tunnels HTTPS through the proxy with ``CONNECT``.

Both trust the system's CAs (OpenSSL's defaults, so ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``
work as everywhere) plus ``[kaleyra] ca_bundle`` when it is set.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from bulk_sender.config import KaleyraSettings, Proxy, Secret, SendingSettings, load_ca_bundle
from bulk_sender.sending.client import KaleyraClient
from bulk_sender.sending.engine import Poster
from bulk_sender.sending.proxy import choose_proxy

__all__ = ["Route", "open_poster", "plan_route"]

log = logging.getLogger("bulk_sender")


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where the requests go, through which proxy, trusting which extra CAs."""

    url: str
    proxy: Proxy | None = None
    ca_bundle: str = ""


def plan_route(kaleyra: KaleyraSettings, *, environ: Mapping[str, str] | None = None) -> Route:
    """The route to ``kaleyra.messages_url``; raises ``ConfigError`` for a bad proxy variable."""
    url = kaleyra.messages_url
    env = os.environ if environ is None else environ
    proxy = choose_proxy(url, configured=kaleyra.proxy, environ=env)
    return Route(url=url, proxy=proxy, ca_bundle=kaleyra.ca_bundle)


def open_poster(
    route: Route, *, api_key: Secret, sending: SendingSettings
) -> contextlib.AbstractAsyncContextManager[Poster]:
    """The poster for ``route``, to be used as ``async with``. Call inside the running loop."""
    _warn_if_cleartext(route.url)
    context = tls_context(route.ca_bundle) if urlsplit(route.url).scheme == "https" else None
    if route.proxy is None:
        return KaleyraClient(
            url=route.url,
            api_key=api_key,
            concurrency=sending.concurrency,
            timeout_seconds=sending.timeout_seconds,
            ssl_context=context,
        )
    # Imported here: aiohttp's client takes a tenth of a second to import, and a direct run
    # (the common case, and the benchmark's) never needs it.
    from bulk_sender.sending.proxied import ProxiedPoster

    log.info(
        "bulk_sender.proxy",
        extra={"event": "bulk_sender.proxy", "proxy": route.proxy.address},
    )
    return ProxiedPoster(
        url=route.url,
        api_key=api_key,
        proxy=route.proxy,
        concurrency=sending.concurrency,
        timeout_seconds=sending.timeout_seconds,
        ssl_context=context,
    )


def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """The system's trusted CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` apply), plus ``ca_bundle``."""
    context = ssl.create_default_context()
    if ca_bundle:
        load_ca_bundle(ca_bundle, context)
    return context


def _warn_if_cleartext(url: str) -> None:
    """Plain ``http://`` beyond this machine sends the API key where anyone on the way reads it."""
    parts = urlsplit(url)
    if parts.scheme != "http" or _is_loopback(parts.hostname or ""):
        return
    log.warning(
        "bulk_sender.cleartext",
        extra={
            "event": "bulk_sender.cleartext",
            "host": parts.hostname,
            "hint": "base_url is http://, so the API key and every message travel unencrypted; "
            "use https:// unless this host is on a network you trust",
        },
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
