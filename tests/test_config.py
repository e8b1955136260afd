"""Loading and validating config.toml, the API key from the environment, and Secret."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.config import (
    MAX_RATE,
    MIN_RATE,
    KaleyraSettings,
    Secret,
    Settings,
    load_settings,
    read_api_key,
)
from bulk_sender.errors import ConfigError, UsageError

# Every key, with the values a user would write: the example a newcomer copies.
EXAMPLE: Final = """\
[kaleyra]
pod = "in"                      # in, sg or eu
sid = "HXAP16XXXXXX97IN"
sender = "+919876543210"        # your WhatsApp business number
api_key_env = "KALEYRA_API_KEY" # the variable holding the key; never the key itself
base_url = ""

[campaign]
body_text = "Thanks for your interest! You can explore our catalog."
thumbnail_product_retailer_id = "2lxxxxxxpt"
wa_source = "api"
default_region = "IN"
allow_duplicates = false
encoding = "utf-8"

[sending]
rate_per_second = 50
concurrency = 32
max_attempts = 5
timeout_seconds = 30
delivery = "at-most-once"
error_threshold = 50
"""

MINIMAL: Final = '[kaleyra]\nsid = "HXAP16XXXXXX97IN"\nsender = "919876543210"\n'


def write(tmp_path: Path, text: str) -> Path:
    """``text`` as tmp_path/config.toml."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **overrides: dict[str, Any]) -> Settings:
    """Load ``text`` as a config file, with ``overrides`` by section."""
    return load_settings(write(tmp_path, text), overrides=overrides or None)


def config_with(section: str, line: str) -> str:
    """MINIMAL's text with ``line`` (``key = value``) set in ``section``."""
    key, value = (part.strip() for part in line.split("=", 1))
    sections: dict[str, dict[str, str]] = {
        "kaleyra": {"sid": '"HXAP16XXXXXX97IN"', "sender": '"919876543210"'}
    }
    sections.setdefault(section, {})[key] = value
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items())
        for name, items in sections.items()
    )


def kaleyra(**values: str) -> KaleyraSettings:
    """Valid [kaleyra] settings with ``values`` changed."""
    base = {"sid": "HXAP16XXXXXX97IN", "sender": "+919876543210"}
    return KaleyraSettings(**{**base, **values})


# --------------------------------------------------------------------------- loading


def test_example_loads(tmp_path: Path) -> None:
    """The full example config loads with every value as written."""
    settings = load(tmp_path, EXAMPLE)
    assert settings.kaleyra.pod == "in"
    assert settings.kaleyra.sid == "HXAP16XXXXXX97IN"
    assert settings.kaleyra.sender == "+919876543210"
    assert settings.kaleyra.api_key_env == "KALEYRA_API_KEY"
    assert settings.campaign.thumbnail_product_retailer_id == "2lxxxxxxpt"
    assert settings.campaign.default_region == "IN"
    assert settings.campaign.encoding == "utf-8"
    assert settings.sending.rate_per_second == 50.0
    assert isinstance(settings.sending.rate_per_second, float)
    assert (settings.sending.concurrency, settings.sending.max_attempts) == (32, 5)
    assert settings.sending.delivery == "at-most-once"


def test_minimal_config_takes_the_defaults(tmp_path: Path) -> None:
    """Only sid and sender are required; everything else has its documented default."""
    settings = load(tmp_path, MINIMAL)
    assert settings.kaleyra.pod == "in"
    assert settings.kaleyra.api_key_env == "KALEYRA_API_KEY"
    assert settings.campaign.wa_source == "api"
    assert settings.sending.rate_per_second == 50.0
    assert settings.sending.concurrency == 512  # a ceiling since issue 19
    assert settings.sending.max_attempts == 5
    assert settings.sending.delivery == "at-most-once"


def test_settings_are_frozen(tmp_path: Path) -> None:
    """Loaded settings cannot be changed."""
    settings = load(tmp_path, MINIMAL)
    with pytest.raises(AttributeError):
        settings.sending.rate_per_second = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("line", "section", "key"),
    [
        ('pod = "us"', "kaleyra", "[kaleyra] pod"),
        ('pod = "IN"', "kaleyra", "[kaleyra] pod"),
        ('sid = "HX-AP16"', "kaleyra", "[kaleyra] sid"),
        ('sid = "abc"', "kaleyra", "[kaleyra] sid"),
        ('sender = "not-a-number"', "kaleyra", "[kaleyra] sender"),
        ('sender = "0919876543210"', "kaleyra", "[kaleyra] sender"),
        ('sender = "+91"', "kaleyra", "[kaleyra] sender"),
        ('api_key_env = "MY KEY"', "kaleyra", "[kaleyra] api_key_env"),
        ('base_url = "ftp://example.com"', "kaleyra", "[kaleyra] base_url"),
        ("sid = 1234567", "kaleyra", "[kaleyra] sid"),
        ('default_region = "india"', "campaign", "[campaign] default_region"),
        ('default_region = "XX"', "campaign", "[campaign] default_region"),
        ('encoding = "klingon-8"', "campaign", "[campaign] encoding"),
        ('allow_duplicates = "yes"', "campaign", "[campaign] allow_duplicates"),
        ("rate_per_second = 0", "sending", "[sending] rate_per_second"),
        ("rate_per_second = -5", "sending", "[sending] rate_per_second"),
        ("rate_per_second = 1e-300", "sending", "[sending] rate_per_second"),
        ("rate_per_second = 0.0099", "sending", "[sending] rate_per_second"),
        ("rate_per_second = 100_001", "sending", "[sending] rate_per_second"),
        ("rate_per_second = nan", "sending", "[sending] rate_per_second"),
        ("rate_per_second = inf", "sending", "[sending] rate_per_second"),
        ('rate_per_second = "fast"', "sending", "[sending] rate_per_second"),
        ("rate_per_second = true", "sending", "[sending] rate_per_second"),
        ("concurrency = 0", "sending", "[sending] concurrency"),
        ("concurrency = 2.5", "sending", "[sending] concurrency"),
        ("concurrency = true", "sending", "[sending] concurrency"),
        ("max_attempts = 0", "sending", "[sending] max_attempts"),
        ("timeout_seconds = 0", "sending", "[sending] timeout_seconds"),
        ('delivery = "maybe"', "sending", "[sending] delivery"),
        ("error_threshold = -1", "sending", "[sending] error_threshold"),
        ('planner = "thread"', "sending", "[sending] planner"),
        ("rate_per_sec = 10", "sending", "[sending] rate_per_sec"),
        ("repeat_guard_hours = -1", "audience", "[audience] repeat_guard_hours"),
        ('repeat_guard_hours = "24"', "audience", "[audience] repeat_guard_hours"),
        ('opt_out_files = "optouts.csv"', "audience", "[audience] opt_out_files"),
        ("opt_out_keywords = [1]", "audience", "[audience] opt_out_keywords"),
        ('opt_in_keywords = [" "]', "audience", "[audience] opt_in_keywords"),
        ("frequency_cap = 2", "audience", "[audience] frequency_cap"),
        ("frequency_cap = { messages = 2 }", "audience", "[audience] frequency_cap"),
        ("frequency_cap = { messages = 0, hours = 24 }", "audience", "[audience] frequency_cap"),
        ("frequency_cap = { messages = 2.5, hours = 24 }", "audience", "[audience] frequency_cap"),
        ("frequency_cap = { messages = 2, hours = 0 }", "audience", "[audience] frequency_cap"),
        ('service_window = "strict"', "audience", "[audience] service_window"),
        ('quiet_hours = "9pm-9am"', "audience", "[audience] quiet_hours"),
        ('quiet_hours = "21:00-21:00"', "audience", "[audience] quiet_hours"),
        ('apikey = "x"', "kaleyra", "[kaleyra] apikey"),
    ],
)
def test_wrong_value_names_the_key(tmp_path: Path, line: str, section: str, key: str) -> None:
    """Every wrong, mistyped or unknown setting raises ConfigError naming its key."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config_with(section, line))
    assert caught.value.key == key
    assert str(caught.value).startswith(f"config: {key}: ")


def test_config_error_is_a_usage_error() -> None:
    """ConfigError is a UsageError, so the CLI exits 2 having sent nothing."""
    assert issubclass(ConfigError, UsageError)


def test_unknown_section_names_it(tmp_path: Path) -> None:
    """A section that does not exist is an error naming the section."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, MINIMAL + "[sendings]\nrate_per_second = 5\n")
    assert caught.value.key == "[sendings]"
    assert "kaleyra, campaign, sending" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[kaleyra]\nsender = "919876543210"\n', "[kaleyra] sid"),
        ('[kaleyra]\nsid = "HXAP16XXXXXX97IN"\n', "[kaleyra] sender"),
        ("[sending]\nrate_per_second = 5\n", "[kaleyra] sid"),
        ("", "[kaleyra] sid"),
    ],
)
def test_missing_required_key_names_it(tmp_path: Path, text: str, key: str) -> None:
    """A missing sid or sender (or a missing [kaleyra]) names the first missing key."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.key == key
    assert "required" in str(caught.value)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML is a ConfigError on --config that names the file."""
    path = write(tmp_path, MINIMAL + "rate_per_second = = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == "--config"
    assert str(path) in str(caught.value)
    assert "not valid TOML" in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError saying so."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == "--config"
    assert f"{path} does not exist" in str(caught.value)


def test_file_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A config file in another encoding is a ConfigError, not a traceback."""
    path = tmp_path / "config.toml"
    path.write_bytes(MINIMAL.encode() + b'[campaign]\nbody_text = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == "--config"


@pytest.mark.parametrize("line", ['sending = "fast"', "campaign = 5"])
def test_section_that_is_not_a_table_names_it(tmp_path: Path, line: str) -> None:
    """A section name used as a plain key is a ConfigError naming the section."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, line + "\n" + MINIMAL)
    assert caught.value.key.startswith(f"[{line.split()[0]}]")


@pytest.mark.parametrize(
    ("key", "value"), [("sid", "HXAP16XXXXXX97IN"), ("sender", "919876543210")]
)
def test_trailing_newline_is_refused(tmp_path: Path, key: str, value: str) -> None:
    """A value with a trailing newline (a multi-line TOML string) is refused, naming the key."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config_with("kaleyra", f'{key} = """\n{value}\n"""'))
    assert caught.value.key == f"[kaleyra] {key}"


# --------------------------------------------------------------------------- overrides


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    """Command-line overrides replace the file's values."""
    settings = load(tmp_path, EXAMPLE, sending={"rate_per_second": 10, "concurrency": 4})
    assert (settings.sending.rate_per_second, settings.sending.concurrency) == (10.0, 4)
    assert settings.sending.max_attempts == 5


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    """A flag that was not given (None) leaves the file's value."""
    settings = load(tmp_path, EXAMPLE, sending={"rate_per_second": None, "concurrency": None})
    assert (settings.sending.rate_per_second, settings.sending.concurrency) == (50.0, 32)


def test_overrides_fill_a_section_missing_from_the_file(tmp_path: Path) -> None:
    """An override for a section the file lacks still applies."""
    settings = load(tmp_path, MINIMAL, sending={"delivery": "at-least-once"})
    assert settings.sending.delivery == "at-least-once"


def test_overrides_are_validated(tmp_path: Path) -> None:
    """A wrong override is refused like a wrong file value."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, EXAMPLE, sending={"rate_per_second": 0})
    assert caught.value.key == "[sending] rate_per_second"


def test_overrides_can_supply_a_required_key(tmp_path: Path) -> None:
    """A required key may come from an override instead of the file."""
    text = '[kaleyra]\nsender = "919876543210"\n'
    settings = load(tmp_path, text, kaleyra={"sid": "HXAP16XXXXXX97IN"})
    assert settings.kaleyra.sid == "HXAP16XXXXXX97IN"


@given(rate=st.floats(min_value=MIN_RATE, max_value=MAX_RATE), concurrency=st.integers(1, 1024))
def test_any_valid_sending_override_is_taken(rate: float, concurrency: int) -> None:
    """Every in-range rate and concurrency override ends up in the settings unchanged."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load(
            Path(tmp), MINIMAL, sending={"rate_per_second": rate, "concurrency": concurrency}
        )
    assert (settings.sending.rate_per_second, settings.sending.concurrency) == (rate, concurrency)


# --------------------------------------------------------------------------- the URL


@pytest.mark.parametrize(
    ("pod", "domain"),
    [("in", "api.in.kaleyra.io"), ("sg", "api.ap.kaleyra.io"), ("eu", "api.eu.kaleyra.io")],
)
def test_messages_url_per_pod(pod: str, domain: str) -> None:
    """Each pod's URL is the seed's https://<domain>/v2/<sid>/whatsapp/<number>/messages."""
    settings = kaleyra(pod=pod, sender="+919876543210")
    assert settings.api_base == f"https://{domain}/v2/HXAP16XXXXXX97IN"
    assert settings.messages_url == (
        f"https://{domain}/v2/HXAP16XXXXXX97IN/whatsapp/919876543210/messages"
    )


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://proxy.example.com/kaleyra/", "https://proxy.example.com/kaleyra"),
    ],
)
def test_messages_url_with_base_url(base_url: str, root: str) -> None:
    """A base_url replaces the pod's domain, with no doubled slash."""
    settings = kaleyra(pod="eu", base_url=base_url)
    assert settings.messages_url == f"{root}/v2/HXAP16XXXXXX97IN/whatsapp/919876543210/messages"


@pytest.mark.parametrize("sender", ["+919876543210", "919876543210", "+91 98765 43210"])
def test_sender_in_url_has_no_plus_or_spaces(sender: str) -> None:
    """The sender appears in the URL as bare digits, as in the seed's sample."""
    assert "/whatsapp/919876543210/messages" in kaleyra(sender=sender).messages_url


@given(digits=st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True), plus=st.booleans())
def test_any_e164_sender_appears_as_digits(digits: str, plus: bool) -> None:
    """Every valid E.164 sender is accepted and appears in the URL as its digits."""
    url = kaleyra(sender=("+" if plus else "") + digits).messages_url
    assert url.endswith(f"/whatsapp/{digits}/messages")
    assert "+" not in url


# --------------------------------------------------------------------------- the API key


def test_read_api_key_from_the_named_variable() -> None:
    """The key comes from the variable api_key_env names, stripped, as a Secret."""
    settings = kaleyra(api_key_env="MY_KALEYRA_KEY")
    secret = read_api_key(settings, {"MY_KALEYRA_KEY": "  Axxxxxxxxxxxxxxx3\n"})
    assert secret.reveal() == "Axxxxxxxxxxxxxxx3"


def test_read_api_key_uses_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, the key is read from os.environ."""
    monkeypatch.setenv("BULK_SENDER_CONFIG_TEST_KEY", "k-123")
    settings = kaleyra(api_key_env="BULK_SENDER_CONFIG_TEST_KEY")
    assert read_api_key(settings) == Secret("k-123")


@pytest.mark.parametrize("environ", [{}, {"MY_KALEYRA_KEY": ""}, {"MY_KALEYRA_KEY": "  "}])
def test_missing_api_key_names_the_variable(environ: dict[str, str]) -> None:
    """An unset or blank key variable is a ConfigError that names the variable."""
    with pytest.raises(ConfigError) as caught:
        read_api_key(kaleyra(api_key_env="MY_KALEYRA_KEY"), environ)
    assert caught.value.key == "[kaleyra] api_key_env"
    assert "MY_KALEYRA_KEY" in str(caught.value)


SHOWN: Final = "[(Secret('***'),)]"


@given(value=st.text(min_size=1, max_size=40).filter(lambda v: v not in SHOWN))
def test_secret_never_shows_itself(value: str) -> None:
    """repr, str, f-strings and containers of a Secret never contain its value."""
    secret = Secret(value)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", str([secret]), str((secret,))]
    assert shown[:4] == ["Secret('***')"] * 4
    assert all(value not in text for text in shown)
    assert secret.reveal() == value


def test_secret_equality_compares_values() -> None:
    """Two Secrets are equal when their values are, and hash alike."""
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))


@pytest.mark.parametrize("key", ["abc\r\nX-Evil: 1", "abc\x00def", "clé-123", "tab\there"])
def test_an_api_key_that_is_not_plain_ascii_is_refused(key: str) -> None:
    """The key goes into a header as it is: a line break would inject one. Refused, unshown."""
    with pytest.raises(ConfigError) as caught:
        read_api_key(kaleyra(api_key_env="MY_KALEYRA_KEY"), {"MY_KALEYRA_KEY": key})
    assert "MY_KALEYRA_KEY" in str(caught.value)
    assert key not in str(caught.value) and "abc" not in str(caught.value)


@pytest.mark.parametrize("rate", [0.01, 0.5, 100_000])
def test_rates_from_the_floor_to_the_ceiling_are_accepted(tmp_path: Path, rate: float) -> None:
    """The slowest accepted rate (0.01/s, one message every 100 s) and the fastest both load."""
    settings = load(tmp_path, config_with("sending", f"rate_per_second = {rate!r}"))
    assert settings.sending.rate_per_second == rate


# --------------------------------------------------------------------------- base_url


@pytest.mark.parametrize(
    ("base_url", "says"),
    [
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:abc", "Port could not be cast"),
        ("http://127.0.0.1:0", "port 0"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://", "no host name"),
        ("https:///v2", "no host name"),
        ("https://exa mple.com", "invalid host name"),
        ("https://api.example.com/kaleyra?x=1", "query"),
        ("https://api.example.com/kaleyra#top", "fragment"),
        ("ftp://api.example.com", "not an http(s) URL"),
        ("api.example.com", "not an http(s) URL"),
    ],
)
def test_a_bad_base_url_is_a_config_error(base_url: str, says: str) -> None:
    """A base_url that is not a usable http(s) base is a ConfigError saying why, not a crash."""
    with pytest.raises(ConfigError) as caught:
        kaleyra(base_url=base_url)
    assert caught.value.key == "[kaleyra] base_url"
    assert says in str(caught.value)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://bob:hunter2-pw@api.example.com",
        "http://hunter2-pw@127.0.0.1:8080/x",
        "http://bob:hunter2/pw@127.0.0.1:18411",  # a / in the password, not encoded
        "http://bob:hunter2?pw@127.0.0.1:18411",
    ],
)
def test_user_info_in_base_url_is_refused_without_showing_it(base_url: str) -> None:
    """user:password@ in base_url is refused, the message points at proxy and api_key_env, and
    the password is not repeated."""
    with pytest.raises(ConfigError) as caught:
        kaleyra(base_url=base_url)
    message = str(caught.value)
    assert "hunter2-pw" not in message
    assert "[kaleyra] proxy" in message and "api_key_env" in message


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("https://gw.example.com/kaleyra api", "https://gw.example.com/kaleyra%20api"),
        ("https://gw.example.com/café/", "https://gw.example.com/caf%C3%A9"),
        ("https://gw.example.com/a%20b", "https://gw.example.com/a%20b"),
        ("https://gw.example.com/100%", "https://gw.example.com/100%25"),
        ("https://gw.example.com/a;v=1/@x", "https://gw.example.com/a;v=1/@x"),
        ("HTTPS://GW.Example.com:8443/K", "https://gw.example.com:8443/K"),
        ("https://bücher.example/", "https://xn--bcher-kva.example"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("  https://gw.example.com/  ", "https://gw.example.com"),
    ],
    ids=[
        "space",
        "non-ascii",
        "escaped",
        "lone-percent",
        "sub-delims",
        "case",
        "idn",
        "ipv6",
        "blank",
    ],
)
def test_base_url_is_normalised_for_the_request_line(base_url: str, root: str) -> None:
    """The path is percent-encoded (keeping / and existing escapes), the host IDNA-encoded:
    the request line and Host header stay plain ASCII."""
    settings = kaleyra(base_url=base_url)
    assert settings.api_base == f"{root}/v2/HXAP16XXXXXX97IN"
    assert settings.messages_url.isascii()


def test_bad_base_url_flag_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--base-url with a bad port exits 2 with one line naming the key, not a traceback."""
    from bulk_sender.cli import main

    config = write(tmp_path, MINIMAL)
    campaign = tmp_path / "c.csv"
    campaign.write_text("to\n+919876543210\n", encoding="utf-8")
    code = main(["send", str(campaign), "--config", str(config), "--base-url", "http://h:99999"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "[kaleyra] base_url" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- proxy and ca_bundle


def test_proxy_absent_empty_or_set(tmp_path: Path) -> None:
    """proxy absent is None (the environment decides), "" is kept (no proxy), a URL is kept."""
    assert load(tmp_path, MINIMAL).kaleyra.proxy is None
    assert load(tmp_path, MINIMAL + 'proxy = ""\n').kaleyra.proxy == ""
    url = "http://bob:pw-9f3@10.0.0.1:3128"
    assert load(tmp_path, MINIMAL + f'proxy = "{url}"\n').kaleyra.proxy == url


def test_the_proxy_password_is_not_in_the_settings_repr(tmp_path: Path) -> None:
    """repr(settings) (in a log or a traceback) does not show the proxy URL and its password."""
    settings = load(tmp_path, MINIMAL + 'proxy = "http://bob:pw-9f3@10.0.0.1:3128"\n')
    assert "pw-9f3" not in repr(settings)


@pytest.mark.parametrize(
    "proxy",
    [
        "socks5://bob:pw-9f3@10.0.0.1:1080",
        "http://bob:pw-9f3@10.0.0.1:70000",
        "http://bob:pw-9f3@",
        "http://bob:pw#9f3@127.0.0.1:3128",  # a # in the password, not encoded
    ],
)
def test_a_bad_proxy_is_a_config_error_without_the_password(tmp_path: Path, proxy: str) -> None:
    """A bad [kaleyra] proxy names the key and never shows the password."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, MINIMAL + f'proxy = "{proxy}"\n')
    assert caught.value.key == "[kaleyra] proxy"
    assert "pw-9f3" not in str(caught.value)


@pytest.mark.parametrize("encoding", ["rot13", "hex", "base64"])
def test_an_encoding_that_is_not_text_is_refused(tmp_path: Path, encoding: str) -> None:
    """A bytes-to-bytes codec is not a text encoding: a ConfigError, not a crash mid-run."""
    with pytest.raises(ConfigError, match="not a known text encoding"):
        load(tmp_path, MINIMAL + f'[campaign]\nencoding = "{encoding}"\n')


def test_a_ca_bundle_with_a_certificate_loads(tmp_path: Path) -> None:
    """A PEM file with a CA certificate is accepted (relative to the current directory)."""
    ca = trustme.CA()
    pem = tmp_path / "company-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    settings = load(tmp_path, MINIMAL + f'ca_bundle = "{pem}"\n')
    assert settings.kaleyra.ca_bundle == str(pem)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist"),
        ("", "no valid certificate"),
        ("not a certificate\n", "no valid certificate"),
        ("dir", "cannot read"),
    ],
    ids=["missing", "empty", "garbage", "directory"],
)
def test_a_bad_ca_bundle_is_a_config_error(tmp_path: Path, content: str | None, says: str) -> None:
    """A missing, empty, non-PEM or unreadable ca_bundle is a ConfigError naming the key."""
    path = tmp_path / "bundle.pem"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, MINIMAL + f'ca_bundle = "{path}"\n')
    assert caught.value.key == "[kaleyra] ca_bundle"
    assert says in str(caught.value)


# --------------------------------------------------------------------------- [audience]


def test_the_audience_rules_are_on_by_default_with_a_ledger_beside_the_config(
    tmp_path: Path,
) -> None:
    """No [audience] section: the ledger is ledger.db beside config.toml, the guard 24 h."""
    audience = load(tmp_path, MINIMAL).audience
    assert audience.enabled
    assert Path(audience.ledger) == tmp_path / "ledger.db"
    assert (audience.repeat_guard_hours, audience.frequency_cap) == (24.0, None)
    assert (audience.service_window, audience.quiet_hours) == ("off", "")


def test_audience_paths_are_taken_from_the_config_files_directory(tmp_path: Path) -> None:
    """Relative ledger and opt-out file paths are the config's neighbours; absolute ones stay."""
    text = MINIMAL + (
        '[audience]\nledger = "shared/acme.db"\n'
        'opt_out_files = ["optouts.csv", "/srv/crm/stop.xlsx"]\n'
        "frequency_cap = { messages = 2, hours = 12 }\n"
    )
    audience = load(tmp_path, text).audience
    assert Path(audience.ledger) == tmp_path / "shared" / "acme.db"
    assert audience.opt_out_files == (str(tmp_path / "optouts.csv"), "/srv/crm/stop.xlsx")
    assert audience.frequency_cap is not None
    assert (audience.frequency_cap.messages, audience.frequency_cap.hours) == (2, 12.0)


def test_an_empty_ledger_turns_the_ledger_rules_off(tmp_path: Path) -> None:
    """ledger = "" is off, and stays "" (not a path beside the config)."""
    audience = load(tmp_path, MINIMAL + '[audience]\nledger = ""\n').audience
    assert not audience.enabled
    assert audience.ledger == ""
