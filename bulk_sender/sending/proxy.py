"""Which proxy, if any, the requests to Kaleyra go through. Pure: no I/O but reading a mapping.

``[kaleyra] proxy`` decides when it is set: a URL is the proxy, ``""`` means none whatever the
environment says. When the key is absent the environment decides, with the meaning curl,
requests and Python's ``urllib`` give it:

* ``https_proxy``/``HTTPS_PROXY`` for an ``https`` URL, ``http_proxy``/``HTTP_PROXY`` for an
  ``http`` one; the lower-case name wins when both are set, and an empty value means none;
* ``no_proxy``/``NO_PROXY``: host names (a name also covers its subdomains; a leading ``.`` is
  allowed), ``host:port``, IP addresses, or ``*`` for every host, separated by commas; a host
  listed there is reached directly. The matching is ``urllib.request.proxy_bypass_environment``'s.

A value without a scheme (``proxy.example.com:3128``) means ``http://``, as curl takes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

# Not in typeshed (nor in urllib's docs), but in urllib since Python 2; requests falls back to it.
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

from bulk_sender.config import Proxy, parse_proxy_url

__all__ = ["choose_proxy"]


def choose_proxy(url: str, *, configured: str | None, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy for requests to ``url``, or ``None`` to connect directly.

    Raises :class:`~bulk_sender.errors.ConfigError` naming the setting or variable when the
    chosen proxy URL is not valid (without repeating it: it may hold a password).
    """
    if configured is not None:
        return parse_proxy_url(configured, key="[kaleyra] proxy") if configured.strip() else None
    parts = urlsplit(url)
    found = _variable(environ, f"{parts.scheme}_proxy")
    if found is None:
        return None
    name, value = found
    no_proxy = _variable(environ, "no_proxy")
    if no_proxy is not None and parts.hostname:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if proxy_bypass_environment(f"{parts.hostname}:{port}", {"no": no_proxy[1]}):
            return None
    return parse_proxy_url(value, key=name)


def _variable(environ: Mapping[str, str], lower: str) -> tuple[str, str] | None:
    """``(name, value)`` of the lower- or else upper-case variable; ``None`` if unset or empty."""
    for name in (lower, lower.upper()):
        if name in environ:
            value = environ[name].strip()
            return (name, value) if value else None
    return None
