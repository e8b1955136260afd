"""choose_proxy: [kaleyra] proxy over the environment, HTTPS_PROXY/HTTP_PROXY/NO_PROXY as usual."""

from __future__ import annotations

from typing import Final

import pytest

from bulk_sender.config import Proxy, Secret
from bulk_sender.errors import ConfigError
from bulk_sender.sending.proxy import choose_proxy

KALEYRA: Final = "https://api.in.kaleyra.io/v2/SID/whatsapp/919000000001/messages"
PASSWORD: Final = "s3cr3t-pr0xy"
CORP: Final = f"http://bob:{PASSWORD}@proxy.corp.example:3128"


def test_the_config_key_wins_over_the_environment() -> None:
    """[kaleyra] proxy is used whatever HTTPS_PROXY says."""
    proxy = choose_proxy(KALEYRA, configured=CORP, environ={"HTTPS_PROXY": "http://other:8080"})
    assert proxy == Proxy("proxy.corp.example", 3128, "bob", Secret(PASSWORD))


def test_an_empty_config_key_means_no_proxy_even_with_the_environment() -> None:
    """proxy = "" connects directly although HTTPS_PROXY is set."""
    assert choose_proxy(KALEYRA, configured="", environ={"HTTPS_PROXY": CORP}) is None


def test_no_key_and_no_variable_means_no_proxy() -> None:
    """Nothing configured, nothing in the environment: direct."""
    assert choose_proxy(KALEYRA, configured=None, environ={"PATH": "/usr/bin"}) is None


@pytest.mark.parametrize(
    ("url", "environ", "host"),
    [
        (KALEYRA, {"HTTPS_PROXY": "http://upper:1"}, "upper"),
        (KALEYRA, {"https_proxy": "http://lower:1"}, "lower"),
        (KALEYRA, {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1"}, "lower"),
        (KALEYRA, {"HTTP_PROXY": "http://plain:1"}, None),
        ("http://127.0.0.1:8080/v2/x", {"HTTP_PROXY": "http://plain:1"}, "plain"),
        ("http://127.0.0.1:8080/v2/x", {"HTTPS_PROXY": "http://secure:1"}, None),
        (KALEYRA, {"https_proxy": "", "HTTPS_PROXY": "http://upper:1"}, None),
        (KALEYRA, {"HTTPS_PROXY": "  "}, None),
    ],
    ids=[
        "upper",
        "lower",
        "lower-wins",
        "http-var-not-for-https",
        "http-var-for-http",
        "https-var-not-for-http",
        "empty-lower-means-none",
        "blank",
    ],
)
def test_the_environment_variable_for_the_scheme(
    url: str, environ: dict[str, str], host: str | None
) -> None:
    """HTTPS_PROXY serves https URLs and HTTP_PROXY http ones; the lower-case name wins."""
    proxy = choose_proxy(url, configured=None, environ=environ)
    assert (proxy.host if proxy is not None else None) == host


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("api.in.kaleyra.io", True),
        ("kaleyra.io", True),
        (".kaleyra.io", True),
        ("localhost, kaleyra.io", True),
        ("*", True),
        ("api.in.kaleyra.io:443", True),
        ("example.com", False),
        ("ra.io", False),
        ("", False),
    ],
)
def test_no_proxy(no_proxy: str, bypassed: bool) -> None:
    """NO_PROXY: exact host, domain suffix (with or without a dot), host:port, or *."""
    environ = {"HTTPS_PROXY": CORP, "NO_PROXY": no_proxy}
    assert (choose_proxy(KALEYRA, configured=None, environ=environ) is None) == bypassed


def test_lower_case_no_proxy_wins() -> None:
    """no_proxy is read before NO_PROXY, as for the proxy variables."""
    environ = {"HTTPS_PROXY": CORP, "no_proxy": "example.com", "NO_PROXY": "kaleyra.io"}
    assert choose_proxy(KALEYRA, configured=None, environ=environ) is not None


def test_no_proxy_does_not_apply_to_the_config_key() -> None:
    """A proxy written in the config is used for Kaleyra even if NO_PROXY lists it."""
    environ = {"NO_PROXY": "kaleyra.io"}
    assert choose_proxy(KALEYRA, configured=CORP, environ=environ) is not None


def test_a_variable_without_a_scheme_means_http() -> None:
    """HTTPS_PROXY=host:port is an http:// proxy, as curl reads it."""
    proxy = choose_proxy(KALEYRA, configured=None, environ={"HTTPS_PROXY": "proxy.corp:8080"})
    assert proxy == Proxy("proxy.corp", 8080)
    assert proxy.url == "http://proxy.corp:8080"


def test_percent_encoded_credentials_are_decoded() -> None:
    """A user or password with @ or : is written percent-encoded in the URL and decoded here."""
    proxy = choose_proxy(KALEYRA, configured="http://me%40corp:p%3Ass%40@10.0.0.1:3128", environ={})
    assert proxy is not None
    assert (proxy.user, proxy.password.reveal(), proxy.address) == (
        "me@corp",
        "p:ss@",
        "10.0.0.1:3128",
    )


@pytest.mark.parametrize(
    "value",
    [
        f"socks5://bob:{PASSWORD}@proxy:1080",
        f"https://bob:{PASSWORD}@proxy:443",
        f"http://bob:{PASSWORD}@proxy:99999",
        f"http://bob:{PASSWORD}@proxy:port",
        f"http://bob:{PASSWORD}@:3128",
        f"http://bob:{PASSWORD}@proxy:3128/path",
    ],
    ids=["socks", "https-proxy", "port-range", "port-text", "no-host", "path"],
)
def test_a_bad_proxy_variable_is_a_config_error_without_the_password(value: str) -> None:
    """A bad HTTPS_PROXY is a ConfigError naming the variable and never showing the password."""
    with pytest.raises(ConfigError) as caught:
        choose_proxy(KALEYRA, configured=None, environ={"HTTPS_PROXY": value})
    assert caught.value.key == "HTTPS_PROXY"
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value.args)


def test_a_proxy_shows_host_and_port_only() -> None:
    """Proxy's repr, address and url never show the password."""
    proxy = choose_proxy(KALEYRA, configured=CORP, environ={})
    assert proxy is not None
    for text in (repr(proxy), str(proxy), proxy.address, proxy.url):
        assert PASSWORD not in text
    assert proxy.address == "proxy.corp.example:3128"


def test_an_ipv6_proxy_is_bracketed() -> None:
    """An IPv6 proxy's address is written in brackets."""
    proxy = choose_proxy(KALEYRA, configured="http://[::1]:3128", environ={})
    assert proxy is not None and proxy.url == "http://[::1]:3128"
