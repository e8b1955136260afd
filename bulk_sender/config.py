"""Frozen run settings, read from ``config.toml`` (with ``tomllib``), the environment and flags.

Every value is validated here, before anything is sent: a wrong or missing value raises
:class:`~bulk_sender.errors.ConfigError` naming the key and what is allowed. Unknown keys are
errors too, because a typo (``rate_per_sec``) would otherwise silently run at the default.

The API key is read from the environment variable named by ``[kaleyra] api_key_env`` and is
held in a :class:`Secret`, whose ``repr``/``str`` never show it. A proxy's password is a
secret too: :class:`Proxy` holds it in a :class:`Secret`, and no message here repeats a URL
that carries one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, quote, unquote, urlsplit

from bulk_sender.errors import ConfigError
from bulk_sender.stores.locations import has_password

__all__ = [
    "CONCURRENCY_MAX",
    "DEFAULT_CALLBACK_SECRET_ENV",
    "MAX_RATE",
    "MIN_RATE",
    "POD_DOMAINS",
    "WA_SOURCES",
    "AudienceSettings",
    "CallbacksSettings",
    "CampaignSettings",
    "FrequencyCap",
    "KaleyraSettings",
    "Proxy",
    "Secret",
    "SendingSettings",
    "Settings",
    "load_settings",
    "parse_base_url",
    "parse_proxy_url",
    "read_api_key",
    "read_callback_secret",
    "with_overrides",
]

#: The seed's API domains by pod.
POD_DOMAINS: Mapping[str, str] = {
    "in": "api.in.kaleyra.io",
    "sg": "api.ap.kaleyra.io",
    "eu": "api.eu.kaleyra.io",
}

#: ``extra_info.wa_source`` values the API accepts; anything else is sent as "api".
WA_SOURCES: frozenset[str] = frozenset(
    {
        "api", "clevertap", "zoho", "webengage", "shopify", "leadsquared", "responsys",
        "braze", "hubspot", "salesforce", "zapier", "eloqua", "moengage",
    }
)  # fmt: skip

Delivery = Literal["at-most-once", "at-least-once"]
Planner = Literal["auto", "process", "inline"]
#: The slowest ``rate_per_second`` accepted: one message every 100 s (864 a day). Every wait of a
#: run is bounded by its rate; a rate such as 1e-300 would make the second request wait longer
#: than the universe is old, so the run could never finish.
MIN_RATE = 0.01
#: The fastest: far above any account's limit ("unlimited" in the benchmark).
MAX_RATE = 100_000
_SID_RE = re.compile(r"^[A-Za-z0-9]{6,64}$")
_SENDER_RE = re.compile(r"^\+?[1-9][0-9]{6,14}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: ``scheme://user[:password]@``: user info, found before anything tries to parse the rest;
#: also ``user:pass/word@`` (a password with an unencoded ``/``, ``?`` or ``#``), told from a
#: port by the letters after its ``:``.
_USERINFO_RE = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@|[^/?#@:]*:(?![0-9]*(?:[/?#]|$))[^@]*@)"
)
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")
#: A ``%`` that does not start an escape (``%2F``): it is written as ``%25``.
_LONE_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: What may stay as it is in a URL path (RFC 3986 pchar and ``/``); the rest is percent-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


class Secret:
    """A string that never shows itself in ``repr``, ``str``, f-strings or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


#: The most requests in flight a run may be allowed (each holds a connection).
CONCURRENCY_MAX = 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy (``http://`` only: HTTPS goes through it in a CONNECT tunnel).

    ``password`` is a :class:`Secret`; :attr:`address` (host and port) is what messages show.
    """

    host: str
    port: int
    user: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))

    @property
    def address(self) -> str:
        """``host:port``, the only part of a proxy that messages name."""
        return f"{_bracketed(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port``, without the credentials."""
        return f"http://{self.address}"


@dataclass(frozen=True, slots=True, kw_only=True)
class KaleyraSettings:
    """Where to send: the account, the business number, the API's address and the way there.

    ``proxy``: ``None`` (the key is absent) lets ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
    decide; ``""`` means no proxy whatever the environment says; a URL is the proxy to use.
    ``ca_bundle``: a PEM file of CA certificates trusted in addition to the system's.
    """

    pod: str = "in"
    base_url: str = ""
    sid: str
    sender: str
    api_key_env: str = "KALEYRA_API_KEY"
    proxy: str | None = field(default=None, repr=False)
    ca_bundle: str = ""

    def __post_init__(self) -> None:
        if self.pod not in POD_DOMAINS:
            raise ConfigError(
                "[kaleyra] pod", f"{self.pod!r} is not a pod; use one of {', '.join(POD_DOMAINS)}"
            )
        if self.base_url:
            parse_base_url(self.base_url)
        if not _SID_RE.fullmatch(self.sid):
            raise ConfigError(
                "[kaleyra] sid", "must be your Kaleyra account SID (letters and digits)"
            )
        if not _SENDER_RE.fullmatch(self.sender.replace(" ", "")):
            raise ConfigError(
                "[kaleyra] sender",
                f"{self.sender!r} must be your WhatsApp business number in E.164 (+919876543210)",
            )
        if not _ENV_RE.fullmatch(self.api_key_env):
            raise ConfigError(
                "[kaleyra] api_key_env", "must be the name of an environment variable"
            )
        if self.proxy:
            parse_proxy_url(self.proxy, key="[kaleyra] proxy")
        if self.ca_bundle:
            load_ca_bundle(self.ca_bundle, ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))

    @property
    def api_base(self) -> str:
        """``https://<domain>/v2/<sid>`` or the ``base_url`` override with ``/v2/<sid>``."""
        root = (
            parse_base_url(self.base_url) if self.base_url else f"https://{POD_DOMAINS[self.pod]}"
        )
        return f"{root}/v2/{self.sid}"

    @property
    def messages_url(self) -> str:
        """The endpoint for this sender; the seed's sample writes the number without ``+``."""
        digits = self.sender.replace(" ", "").lstrip("+")
        return f"{self.api_base}/whatsapp/{digits}/messages"


def _known_region(region: str) -> bool:
    """Whether ``region`` is a region code ``phonenumbers`` has a numbering plan for."""
    import phonenumbers  # only when a region is set: the settings load without it otherwise

    return region in phonenumbers.SUPPORTED_REGIONS


def parse_base_url(url: str) -> str:
    """``base_url`` checked and normalised: ``scheme://host[:port]/path`` without a final ``/``.

    The host is IDNA-encoded and the path percent-encoded (``/`` and existing ``%XX`` escapes
    kept), so the request line and ``Host`` header are plain ASCII. Raises :class:`ConfigError`
    for anything that is not an ``http(s)`` base URL, never repeating user info.
    """
    key = "[kaleyra] base_url"
    if _USERINFO_RE.match(url.strip()):
        raise ConfigError(
            key,
            "must not hold a user name or password (user:password@...): the API key goes in "
            "the environment variable named by [kaleyra] api_key_env, and a proxy's "
            "credentials in [kaleyra] proxy or HTTPS_PROXY",
        )
    parts, port = _split(url.strip(), key, what="an http(s) URL; leave it empty to use the pod")
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(key, f"{url!r} is not an http(s) URL; leave it empty to use the pod")
    if "?" in url or "#" in url:
        raise ConfigError(
            key,
            f"{url!r} must not have a query (?...) or fragment (#...): the API's path "
            "(/v2/<sid>/whatsapp/<number>/messages) is appended to it",
        )
    host = _host(parts, key, url)
    path = quote(_LONE_PERCENT_RE.sub("%25", parts.path), safe=_PATH_SAFE).rstrip("/")
    netloc = _bracketed(host) if port is None else f"{_bracketed(host)}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{path}"


def parse_proxy_url(text: str, *, key: str) -> Proxy:
    """A proxy URL (``http://[user:password@]host[:port]``; ``host:port`` alone means http).

    Raises :class:`ConfigError` naming ``key``; no message repeats the URL, which may hold a
    password.
    """
    text = text.strip()
    url = text if "://" in text else f"http://{text}"
    what = "a proxy URL such as http://user:password@proxy.example.com:3128"
    parts, port = _split(url, key, what=what)
    if parts.scheme.lower() != "http":
        raise ConfigError(
            key,
            f"a {parts.scheme}:// proxy is not supported; give an http:// proxy (HTTPS to "
            "Kaleyra still goes through it encrypted, in a CONNECT tunnel)",
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(key, f"must be {what}, with no path after the port")
    host = _host(parts, key, None)
    return Proxy(
        host,
        80 if port is None else port,
        unquote(parts.username or ""),
        Secret(unquote(parts.password or "")),
    )


def load_ca_bundle(value: str, context: ssl.SSLContext) -> None:
    """Add the PEM certificates of ``[kaleyra] ca_bundle`` to ``context``'s trusted CAs."""
    key = "[kaleyra] ca_bundle"
    path = Path(value).expanduser()
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise ConfigError(
            key,
            f"{path} does not exist; give the path of a PEM file holding the CA "
            "certificate(s) to trust (your company's, or your proxy's)",
        ) from None
    except ssl.SSLError:
        raise ConfigError(
            key,
            f"{path} holds no valid certificate; it must be PEM text with one or more "
            "-----BEGIN CERTIFICATE----- blocks",
        ) from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None


def _split(url: str, key: str, *, what: str) -> tuple[SplitResult, int | None]:
    """``urlsplit`` and the port, both checked; messages leave user info out."""
    secret = _USERINFO_RE.match(url) is not None
    shown = "the URL" if secret else repr(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # The parser's own words may quote a piece of a password: leave them out then.
        reason = "it cannot be parsed" if secret else str(exc).replace(url, "...")
        raise ConfigError(key, f"{shown} is not {what} ({reason})") from None
    if port == 0:
        raise ConfigError(key, f"{shown} is not {what} (port 0)")
    return parts, port


def _host(parts: SplitResult, key: str, url: str | None) -> str:
    """The URL's host, IDNA-encoded; an IP address as it is."""
    shown = repr(url) if url is not None else "the URL"
    host = parts.hostname or ""
    if not host:
        raise ConfigError(key, f"{shown} has no host name")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise ConfigError(key, f"{shown} has a host name that cannot be encoded") from None
    if not _HOSTNAME_RE.fullmatch(host):
        raise ConfigError(key, f"{shown} has an invalid host name")
    return host


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, as URLs and ``Host`` headers write it."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignSettings:
    """What every message says unless a CSV column overrides it, and how to read the file."""

    body_text: str = ""
    thumbnail_product_retailer_id: str = ""
    wa_source: str = "api"
    default_region: str = ""
    allow_duplicates: bool = False
    encoding: str = ""

    def __post_init__(self) -> None:
        if self.default_region and not _known_region(self.default_region):
            raise ConfigError(
                "[campaign] default_region",
                f"{self.default_region!r} must be a two-letter region code phone numbers know, "
                'such as "IN"',
            )
        if self.encoding:
            import codecs

            try:
                if not getattr(codecs.lookup(self.encoding), "_is_text_encoding", True):
                    raise LookupError(self.encoding)  # rot13, hex, base64: bytes to bytes
            except LookupError:
                raise ConfigError(
                    "[campaign] encoding",
                    f'{self.encoding!r} is not a known text encoding (try "cp1252" or "utf-8")',
                ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendingSettings:
    """How fast and how persistently to send."""

    rate_per_second: float = 50.0
    #: The ceiling of requests in flight; the run sizes its limit from the latency below it.
    concurrency: int = 512
    max_attempts: int = 5
    timeout_seconds: float = 30.0
    delivery: Delivery = "at-most-once"
    error_threshold: int = 50
    planner: Planner = "auto"
    #: After a stop request (a signal, a cancelled task) requests in flight get this long to be
    #: answered; the run then abandons them (their rows are ``unknown``) and writes its results.
    stop_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not MIN_RATE <= self.rate_per_second <= MAX_RATE:
            raise ConfigError(
                "[sending] rate_per_second",
                f"must be a number of messages per second from {MIN_RATE:g} (one every 100 s) "
                f"to {MAX_RATE:,}, not {self.rate_per_second:g} (set in the config or with --rate)",
            )
        if not 1 <= self.concurrency <= CONCURRENCY_MAX:
            raise ConfigError(
                "[sending] concurrency", f"must be a whole number from 1 to {CONCURRENCY_MAX}"
            )
        if not 1 <= self.max_attempts <= 100:
            raise ConfigError("[sending] max_attempts", "must be a whole number from 1 to 100")
        if not 0 < self.timeout_seconds <= 600:
            raise ConfigError("[sending] timeout_seconds", "must be a number of seconds, 0 to 600")
        if self.delivery not in ("at-most-once", "at-least-once"):
            raise ConfigError(
                "[sending] delivery", 'must be "at-most-once" (the default) or "at-least-once"'
            )
        if self.error_threshold < 0:
            raise ConfigError("[sending] error_threshold", "must be 0 (off) or a positive number")
        if not 0 <= self.stop_grace_seconds <= 600:
            raise ConfigError(
                "[sending] stop_grace_seconds", "must be a number of seconds, 0 to 600"
            )
        if self.planner not in ("auto", "process", "inline"):
            raise ConfigError(
                "[sending] planner",
                'must be "auto" (the default), "process" (plan rows in a second process) or '
                '"inline" (plan them in the sending process)',
            )


DEFAULT_CALLBACK_SECRET_ENV = "BULK_SENDER_CALLBACK_SECRET"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbacksSettings:
    """Where delivery callbacks are stored, and where ``receive`` listens by default.

    ``store`` is a path (a relative one is taken from the config file's directory, resolved by
    :func:`load_settings`, or by :meth:`beside` when the config has no ``[callbacks]``) or a
    ``postgresql://`` URL without a password. ``store_env``, when set, names the environment
    variable holding the location instead (a URL with its password); :meth:`location` reads it.
    """

    store: str = "callbacks.db"
    store_env: str = ""
    secret_env: str = DEFAULT_CALLBACK_SECRET_ENV
    host: str = "127.0.0.1"
    port: int = 8090

    def __post_init__(self) -> None:
        if not self.store.strip():
            raise ConfigError("[callbacks] store", "must be the path of the callback store")
        _check_location("[callbacks] store", self.store, env_key="store_env")
        if self.store_env and not _ENV_RE.fullmatch(self.store_env):
            raise ConfigError(
                "[callbacks] store_env", "must be the name of an environment variable"
            )
        if not _ENV_RE.fullmatch(self.secret_env):
            raise ConfigError(
                "[callbacks] secret_env", "must be the name of an environment variable"
            )
        if not self.host.strip():
            raise ConfigError("[callbacks] host", "must be an address to listen on")
        if not 0 <= self.port <= 65535:
            raise ConfigError("[callbacks] port", "must be a port number from 0 to 65535")

    @classmethod
    def beside(cls, config: Path, **values: Any) -> CallbacksSettings:
        """Settings whose relative ``store`` path is taken from ``config``'s directory."""
        made = cls(**values)
        store = Path(made.store)
        if store.is_absolute() or "://" in made.store:
            return made
        return dataclasses.replace(made, store=str(config.parent / store))

    def location(self, environ: Mapping[str, str] | None = None) -> str:
        """Where the store is: the variable ``store_env`` names if set, else ``store``. It may
        hold a password: print it only through :func:`bulk_sender.stores.locations.shown`."""
        return _location_from_env("[callbacks] store_env", self.store_env, environ) or self.store


@dataclass(frozen=True, slots=True, kw_only=True)
class FrequencyCap:
    """At most ``messages`` messages per recipient within ``hours``, across every campaign."""

    messages: int
    hours: float

    def __post_init__(self) -> None:
        if isinstance(self.messages, bool) or not isinstance(self.messages, int):
            raise ConfigError("[audience] frequency_cap", "messages must be a whole number")
        if not 1 <= self.messages <= 1000:
            raise ConfigError("[audience] frequency_cap", "messages must be from 1 to 1000")
        if not 0 < self.hours <= 24 * 366:
            raise ConfigError(
                "[audience] frequency_cap",
                "hours must be a number of hours above 0 (at most a year)",
            )


ServiceWindow = Literal["off", "warn", "skip"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AudienceSettings:
    """The rules across campaigns, and the ledger that keeps what they need.

    ``ledger`` is a path; a relative one (the default ``ledger.db`` included) is taken from the
    config file's directory by :func:`load_settings`. ``""`` turns off every rule that needs
    the ledger (repeat guard, frequency cap, service window, opt-outs by reply or by hand);
    ``opt_out_files`` and ``quiet_hours`` need none and still apply. ``opt_out_files`` are
    relative to the config file's directory too. ``ledger`` may be a ``postgresql://`` URL
    without a password; ``ledger_env``, when set, names the environment variable holding the
    location instead (a URL with its password), read by :meth:`ledger_location`.
    """

    ledger: str = "ledger.db"
    ledger_env: str = ""
    opt_out_files: tuple[str, ...] = ()
    opt_out_keywords: tuple[str, ...] = ("STOP", "UNSUBSCRIBE")
    opt_in_keywords: tuple[str, ...] = ("START",)
    repeat_guard_hours: float = 24.0
    frequency_cap: FrequencyCap | None = None
    service_window: ServiceWindow = "off"
    quiet_hours: str = ""

    def __post_init__(self) -> None:
        _check_location("[audience] ledger", self.ledger, env_key="ledger_env")
        if self.ledger_env and not _ENV_RE.fullmatch(self.ledger_env):
            raise ConfigError(
                "[audience] ledger_env", "must be the name of an environment variable"
            )
        if not 0 <= self.repeat_guard_hours <= 24 * 366:
            raise ConfigError(
                "[audience] repeat_guard_hours", "must be a number of hours, 0 (off) to a year"
            )
        if self.service_window not in ("off", "warn", "skip"):
            raise ConfigError(
                "[audience] service_window", 'must be "off" (the default), "warn" or "skip"'
            )
        for key in ("opt_out_keywords", "opt_in_keywords"):
            if any(not word.strip() for word in getattr(self, key)):
                raise ConfigError(f"[audience] {key}", "must be a list of non-empty words")
        if self.quiet_hours.strip():
            from bulk_sender.audience.quiet import parse_quiet_hours

            try:
                parse_quiet_hours(self.quiet_hours)
            except ValueError as exc:
                raise ConfigError("[audience] quiet_hours", str(exc)) from None

    @property
    def enabled(self) -> bool:
        """Whether the cross-campaign rules are on (a ledger is set)."""
        return bool(self.ledger.strip() or self.ledger_env)

    def ledger_location(self, environ: Mapping[str, str] | None = None) -> str:
        """Where the ledger is: the variable ``ledger_env`` names if set, else ``ledger``. It may
        hold a password: print it only through :func:`bulk_sender.stores.locations.shown`."""
        return _location_from_env("[audience] ledger_env", self.ledger_env, environ) or self.ledger

    def beside(self, config: Path) -> AudienceSettings:
        """These settings with relative paths taken from ``config``'s directory."""
        base = config.parent

        def resolve(value: str) -> str:
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else base / path)

        ledger = resolve(self.ledger) if self.enabled and "://" not in self.ledger else self.ledger
        files = tuple(resolve(name) for name in self.opt_out_files)
        return dataclasses.replace(self, ledger=ledger, opt_out_files=files)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a run needs, validated and immutable."""

    kaleyra: KaleyraSettings
    campaign: CampaignSettings = field(default_factory=CampaignSettings)
    sending: SendingSettings = field(default_factory=SendingSettings)
    audience: AudienceSettings = field(default_factory=AudienceSettings)
    #: None when the config has no ``[callbacks]`` section.
    callbacks: CallbacksSettings | None = None


_SECTIONS: Mapping[str, type[Any]] = {
    "kaleyra": KaleyraSettings,
    "campaign": CampaignSettings,
    "sending": SendingSettings,
    "audience": AudienceSettings,
    "callbacks": CallbacksSettings,
}


def load_settings(
    path: Path, *, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Settings:
    """Read and validate ``config.toml``; ``overrides`` (from flags) win over the file.

    ``overrides`` is ``{"sending": {"rate_per_second": 10}, ...}``; ``None`` values are ignored.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            "--config", f"{path} does not exist; pass --config PATH or create ./config.toml"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    for section, table in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"[{section}]", f"is not a section; the sections are {', '.join(_SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}]", "must be a table: write it as a [section] header")
    built: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        values = dict(raw.get(section, {}))
        for key, value in (overrides or {}).get(section, {}).items():
            if value is not None:
                values[key] = value
        built[section] = _build_section(section, cls, values)
    built["audience"] = built["audience"].beside(path)
    built["callbacks"] = (
        CallbacksSettings.beside(path, **dataclasses.asdict(built["callbacks"]))
        if "callbacks" in raw
        else None
    )
    return Settings(**built)


def with_overrides(settings: Settings, overrides: Mapping[str, Mapping[str, Any]]) -> Settings:
    """``settings`` with ``overrides`` applied and checked as :func:`load_settings` checks them."""
    built: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        current = getattr(settings, section)
        if current is None:  # an optional section the config does not have ([callbacks])
            built[section] = None
            continue
        values = {f.name: getattr(current, f.name) for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if v is not None}  # None: unset, as in a file
        for key, value in overrides.get(section, {}).items():
            if value is not None:
                values[key] = value
        built[section] = _build_section(section, cls, values)
    return Settings(**built)


def _build_section(section: str, cls: type[Any], values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"[{section}] {key}", f"is not a setting; the settings are {', '.join(fields)}"
            )
        values[key] = _coerce(f"[{section}] {key}", fields[key].type, value)
    missing = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and name not in values
    ]
    if missing:
        raise ConfigError(f"[{section}] {missing[0]}", "is required and missing")
    return cls(**values)


def _coerce(key: str, annotation: object, value: object) -> object:
    kind = str(annotation)
    if kind == "tuple[str, ...]":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f'must be a list of strings such as ["a", "b"], not {value!r}')
        return tuple(value)
    if kind == "FrequencyCap | None":
        return value if isinstance(value, FrequencyCap) else _frequency_cap(key, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, not {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be a whole number, not {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, not {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, not {value!r}")
    return value


def _frequency_cap(key: str, value: object) -> FrequencyCap:
    """``{ messages = 2, hours = 24 }`` -> :class:`FrequencyCap`."""
    shape = "a table such as { messages = 2, hours = 24 }"
    if not isinstance(value, dict) or set(value) != {"messages", "hours"}:
        raise ConfigError(key, f"must be {shape}, not {value!r}")
    hours = value["hours"]
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        raise ConfigError(key, f"hours must be a number, not {hours!r}")
    return FrequencyCap(messages=value["messages"], hours=float(hours))


def _check_location(key: str, value: str, *, env_key: str) -> None:
    """A store's location in the config file: a path, or a URL that carries no password."""
    if "://" in value and has_password(value):
        section = key.split("]")[0] + "]"
        raise ConfigError(
            key,
            "must not hold a password (the config file is not a place for secrets); put the "
            f"whole URL in an environment variable named by {section} {env_key}, or the password "
            "in PGPASSWORD or ~/.pgpass",
        )


def _location_from_env(key: str, name: str, environ: Mapping[str, str] | None) -> str:
    """The location held by the environment variable ``name`` ("" when ``name`` is "")."""
    if not name:
        return ""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(
            key,
            f"the environment variable {name} is not set or empty; export the store's "
            "location in it (a postgresql:// URL, or a path)",
        )
    return value


def read_api_key(settings: KaleyraSettings, environ: Mapping[str, str] | None = None) -> Secret:
    """The API key from the environment variable the config names; never from a file."""
    env = os.environ if environ is None else environ
    value = env.get(settings.api_key_env, "").strip()
    if not value:
        raise ConfigError(
            "[kaleyra] api_key_env",
            f"the environment variable {settings.api_key_env} is not set or empty; export your "
            "Kaleyra API key in it (or use --sandbox to try the tool without one)",
        )
    if not (value.isascii() and value.isprintable()):  # it goes into an HTTP header as it is
        raise ConfigError(
            "[kaleyra] api_key_env",
            f"the environment variable {settings.api_key_env} holds a line break, a control "
            "character or a non-ASCII character; an API key is plain ASCII: export it again",
        )
    return Secret(value)


def read_callback_secret(
    settings: CallbacksSettings, environ: Mapping[str, str] | None = None
) -> Secret:
    """The callback receiver's shared secret from the environment variable the config names."""
    env = os.environ if environ is None else environ
    value = env.get(settings.secret_env, "").strip()
    if not value:
        raise ConfigError(
            "[callbacks] secret_env",
            f"the environment variable {settings.secret_env} is not set or empty; export the "
            "shared secret of your Kaleyra callback profile in it",
        )
    if not (value.isascii() and value.isprintable()):
        raise ConfigError(
            "[callbacks] secret_env",
            f"the environment variable {settings.secret_env} holds a line break, a control "
            "character or a non-ASCII character; the secret goes in an HTTP header: export it "
            "again",
        )
    return Secret(value)
