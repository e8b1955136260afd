"""A store's location: a file path (SQLite) or a PostgreSQL URL, and how to print one.

Kept free of imports beyond the standard library: the config checks locations with it, and
the default install (SQLite only) never loads the PostgreSQL backend.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["SCHEMES", "has_password", "is_postgres", "redacted", "shown"]

SCHEMES: Final = ("postgresql", "postgres")


def is_postgres(location: str) -> bool:
    """Whether ``location`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    scheme, separator, _ = location.partition("://")
    return bool(separator) and scheme.lower() in SCHEMES


def has_password(url: str) -> bool:
    """Whether the URL carries a password (in its user info or as ``?password=``)."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return True  # unparseable: assume the worst, never print it
    return parts.password is not None or any(key == "password" for key, _ in query)


def redacted(url: str) -> str:
    """The URL with its password (user info or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hosts = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
        if any(key == "password" for key, _ in query):
            shown = [(k, "***" if k == "password" else v) for k, v in query]
            return urlunsplit(parts._replace(netloc=netloc, query=urlencode(shown, safe="*")))
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return f"{url.partition('://')[0]}://***"


def shown(location: str) -> str:
    """A location fit to print: a path as it is, a URL through :func:`redacted`."""
    return redacted(location) if "://" in location else location
