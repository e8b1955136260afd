"""What an account-level code means and what the operator does about it; likewise for the
codes of an endpoint that cannot be used (a wrong URL, a certificate, a proxy, no route).

Beside :mod:`~bulk_sender.sending.outcome`, which classifies these codes as ``ACCOUNT`` (the run
stops): every code in its ``ACCOUNT_CODES`` has its advice here. Any other answer that stops the
run (a bare 401, a redirect) is explained by Kaleyra's own message. The ``ENDPOINT`` stops
(``ENDPOINT_404``, ``TLS_VERIFY``, ``PROXY_<status>``, and ``CONNECT_ERROR``/``DNS_ERROR``
before anything reached the server) get theirs from :func:`endpoint_advice`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ACCOUNT_ADVICE", "Advice", "account_advice", "endpoint_advice"]


@dataclass(frozen=True, slots=True)
class Advice:
    """``what`` Kaleyra's code says is wrong, and what ``todo`` before running again."""

    what: str
    todo: str


#: Advice for each code in :data:`~bulk_sender.sending.outcome.ACCOUNT_CODES`.
ACCOUNT_ADVICE: Mapping[str, Advice] = MappingProxyType(
    {
        "E110": Advice("the balance is low", "Top up"),
        "WAV2101": Advice("the account's daily limit is used up", "Wait for the limit to reset"),
        "RBC001": Advice(
            "the SID or API key is wrong",
            "Check [kaleyra] sid and the key in the environment variable [kaleyra] api_key_env",
        ),
        "WA401": Advice(
            "the sender number is not on this account",
            "Check [kaleyra] sender against the numbers of your Kaleyra account",
        ),
        "WA-401": Advice(
            "the API is not available for this account or number", "Contact Kaleyra support"
        ),
    }
)


def account_advice(code: str, message: str) -> Advice:
    """The advice for ``code``; for a code without any, Kaleyra's ``message`` and "Fix it"."""
    return ACCOUNT_ADVICE.get(code) or Advice(message or "the account cannot send", "Fix it")


_PROXY_SETTINGS = "the proxy settings ([kaleyra] proxy, HTTPS_PROXY, NO_PROXY)"
_PROXY_CREDENTIALS = "Check the user and password in [kaleyra] proxy (or HTTPS_PROXY)"
_PROXY_ADVICE: Mapping[int, str] = MappingProxyType(
    {
        401: _PROXY_CREDENTIALS,  # tinyproxy 1.11 refuses credentials with 401, not 407
        407: _PROXY_CREDENTIALS,
        403: "The proxy does not allow this destination; ask whoever runs it to allow it",
        500: "The proxy could not reach the server; check [kaleyra] base_url (or pod) and ask "
        "whoever runs the proxy",
        502: "The proxy could not reach the server; check [kaleyra] base_url (or pod) and ask "
        "whoever runs the proxy",
        503: "The proxy is unavailable; try again later, or ask whoever runs it",
        504: "The proxy timed out reaching the server; check [kaleyra] base_url (or pod) and "
        "ask whoever runs the proxy",
    }
)
_ENDPOINT_ADVICE: Mapping[str, str] = MappingProxyType(
    {
        "TLS_VERIFY": "If your network inspects HTTPS (a company proxy or firewall), put its CA "
        "certificate in a PEM file and set [kaleyra] ca_bundle to it; otherwise check "
        "[kaleyra] base_url",
        "ENDPOINT_404": "Check [kaleyra] base_url (or pod), sid and sender",
        "ENDPOINT_405": "Check [kaleyra] base_url (or pod), sid and sender",
        "DNS_ERROR": f"Check the host name in [kaleyra] base_url (or pod), the DNS, and "
        f"{_PROXY_SETTINGS}",
    }
)


def endpoint_advice(code: str) -> str:
    """What to do about an ``ENDPOINT`` stop with ``code``, as one sentence without a stop."""
    if code.startswith("PROXY_"):
        status = code.removeprefix("PROXY_")
        known = _PROXY_ADVICE.get(int(status)) if status.isdigit() else None
        return known or "Check [kaleyra] proxy (or HTTPS_PROXY), or ask whoever runs the proxy"
    return _ENDPOINT_ADVICE.get(
        code, f"Check [kaleyra] base_url (or pod), the network and firewall, and {_PROXY_SETTINGS}"
    )
