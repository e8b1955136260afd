"""endpoint_advice: what to do about each stop that is not the account's."""

from __future__ import annotations

import pytest

from bulk_sender.sending.advice import endpoint_advice


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("TLS_VERIFY", "set [kaleyra] ca_bundle"),
        ("ENDPOINT_404", "Check [kaleyra] base_url (or pod), sid and sender"),
        ("ENDPOINT_405", "Check [kaleyra] base_url (or pod), sid and sender"),
        ("PROXY_407", "Check the user and password in [kaleyra] proxy (or HTTPS_PROXY)"),
        ("PROXY_401", "Check the user and password in [kaleyra] proxy (or HTTPS_PROXY)"),
        ("PROXY_403", "does not allow this destination"),
        ("PROXY_502", "could not reach the server"),
        ("PROXY_0", "Check [kaleyra] proxy (or HTTPS_PROXY)"),
        ("PROXY_418", "Check [kaleyra] proxy (or HTTPS_PROXY)"),
        ("DNS_ERROR", "Check the host name in [kaleyra] base_url"),
        ("CONNECT_ERROR", "the network and firewall, and the proxy settings"),
    ],
)
def test_each_endpoint_stop_says_what_to_check(code: str, says: str) -> None:
    """Every ENDPOINT code gets a sentence naming the setting to check (no final stop)."""
    advice = endpoint_advice(code)
    assert says in advice
    assert not advice.endswith(".")
