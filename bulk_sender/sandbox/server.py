"""A Kaleyra-compatible fake server that enforces the Send Catalog Messages contract.

Every test of the project talks to it over real HTTP on 127.0.0.1, and ``bulk-sender sandbox``
serves it for demos and benchmarks. It answers ``POST /v2/{sid}/whatsapp/{sender}/messages``
the way the seed documentation says Kaleyra does, checking in this order:

1. the route (anything else is a 404 JSON answer);
2. the ``api-key`` header and the ``{sid}`` segment (else 401 ``RBC001``);
3. the ``{sender}`` segment, compared by digits with ``Account.senders`` (else 401 ``WA401``);
4. ``Content-Type: application/json`` and a body that matches the seed exactly, with no extra
   keys, no empty optional strings and the documented length limits (else 400 ``WA400`` with
   ``error.payload`` naming the problem, see :func:`body_problem`);
5. the injected faults: the recipient's script, the ``max_rate`` window, ``balance`` (``E110``)
   and ``daily_limit`` (``WAV2101``), and finally ``Faults.default``.

Every answer waits ``Faults.latency`` first. Every request that reaches a handler (except
``/health`` and ``/_sandbox/counts``) is recorded in :attr:`Sandbox.received` before that wait, so
a client that gives up still leaves a trace, and the record says what the server did.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from bulk_sender.sandbox.callbacks import CallbackEmitter

__all__ = [
    "DEFAULT_ACCOUNT",
    "Account",
    "Behaviour",
    "Custom",
    "Faults",
    "Received",
    "Sandbox",
    "ThreadedSandbox",
    "body_problem",
    "run_forever",
]

MESSAGES_ROUTE: Final = "/v2/{sid}/whatsapp/{sender}/messages"
#: How long stopping waits for status callbacks still to be posted.
_CALLBACK_DRAIN_SECONDS: Final = 10.0


# --------------------------------------------------------------------------- configuration


def _digits(number: str) -> str | None:
    """The ASCII digits of ``number`` after an optional ``+``; None if anything else is there."""
    bare = number.removeprefix("+")
    return bare if bare.isascii() and bare.isdigit() else None


@dataclass(frozen=True, slots=True)
class Account:
    """The one Kaleyra account the sandbox serves: its SID, API key and business numbers."""

    sid: str = "HXAP16SANDBOX97IN"
    api_key: str = "sandbox-key"
    senders: frozenset[str] = frozenset({"+919000000001"})

    def __post_init__(self) -> None:
        if not self.sid or not self.api_key:
            raise ValueError("An account needs a non-empty sid and api_key.")
        if not all(_digits(sender) for sender in self.senders):
            raise ValueError("Every sender must be a phone number like +919000000001.")

    def owns(self, sender: str) -> bool:
        """Whether the URL's ``{sender}`` segment (with ``+``, without, or ``%2B``) is ours."""
        digits = _digits(unquote(sender))
        return digits is not None and any(digits == _digits(own) for own in self.senders)


DEFAULT_ACCOUNT: Final = Account()


class Behaviour(enum.StrEnum):
    """One scripted answer of the sandbox to a valid request."""

    OK = "ok"
    WA500 = "wa500"
    HTML_502 = "html502"
    S503 = "503"
    S504 = "504"
    THROTTLE = "429"
    WA400 = "wa400"
    E110 = "e110"
    WAV2101 = "wav2101"
    RBC001 = "rbc001"
    WA401 = "wa401"
    WA401_ACCOUNT = "wa-401-account"
    WA401_VERSION = "wa-401-version"
    DROP = "drop"
    HANG = "hang"
    NOT_JSON = "not_json"
    NO_MESSAGE_ID = "no_message_id"
    #: accepted, answered exactly as Kaleyra's documentation prints it (commas missing)
    AS_DOCUMENTED = "as_documented"


@dataclass(frozen=True, slots=True)
class Custom:
    """A scripted answer of any status and body: text Kaleyra never sent, hostile or odd.

    A JSON body's ``code`` and ``data.message_id`` are recorded as for a canned answer.
    """

    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class Faults:
    """The faults to inject. Mutable on purpose: tests change it between and during runs.

    ``scripts`` maps a recipient (``messaging_object.to`` exactly as sent) to the answers for its
    1st, 2nd, ... valid request (a :class:`Behaviour`, or a :class:`Custom` answer); entries
    are popped as they are used. ``max_rate`` answers 429
    when more than that many valid requests arrived in the trailing second (counting throttled
    ones, like a real sliding-window limiter); with ``max_rate_throttles`` it lifts itself after
    answering that many 429s (a limit that goes away, ordered by events, not by a timer).
    ``balance`` and ``daily_limit`` count accepted messages since the last :meth:`Sandbox.reset`.
    """

    latency: float = 0.0
    retry_after: str | None = "1"
    balance: int | None = None
    daily_limit: int | None = None
    max_rate: float | None = None
    max_rate_throttles: int | None = None
    scripts: dict[str, list[Behaviour | Custom]] = field(default_factory=dict)
    default: Behaviour = Behaviour.OK


@dataclass(frozen=True, slots=True)
class Received:
    """One request that reached the sandbox, and what it answered (status 0: DROP or HANG)."""

    to: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    status: int
    code: str
    message_id: str | None
    at: float


# --------------------------------------------------------------------------- canned answers


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer ready to send; ``code`` is "" when the body is not Kaleyra JSON."""

    status: int
    code: str
    body: bytes
    content_type: str = "application/json"
    retry_after: bool = False
    message_id: str | None = None


def _kaleyra(status: int, document: Mapping[str, object], *, retry_after: bool = False) -> _Answer:
    code = document["code"]
    assert isinstance(code, str)
    return _Answer(status, code, orjson.dumps(document), retry_after=retry_after)


def _html(status: int, title: str) -> _Answer:
    page = (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        "<hr><center>nginx</center></body></html>\n"
    )
    return _Answer(status, "", page.encode(), content_type="text/html")


_WA400_MESSAGE: Final = "Refer to correct payload format"
_WA401_ACCOUNT_MESSAGE: Final = (
    "API is not available for given customer.Please contact support for more info"
)
_WA401_VERSION_MESSAGE: Final = (
    "The phone number you're using is associated with different Version of our WA API. "
    "Please use the appropriate endpoint."
)
_E110_MESSAGE: Final = "Please check your balance, You have a low balance!"
_WAV2101_MESSAGE: Final = "Daily limit exhausted for the account."
_RBC001_MESSAGE: Final = "Incorrect SID or API key."
_WA401_MESSAGE: Final = "Phone number is not present or does not belong to the account."

_CANNED: Final[Mapping[Behaviour, _Answer]] = {
    Behaviour.WA500: _kaleyra(
        500,
        {
            "code": "WA500",
            "message": "Please try again later",
            "data": {},
            "error": {"error": "Internal server error"},
        },
    ),
    Behaviour.HTML_502: _html(502, "502 Bad Gateway"),
    Behaviour.S503: _kaleyra(
        503,
        {
            "code": "503",
            "message": "Service temporarily unavailable. Please try again later.",
            "data": {},
            "error": {"error": "Service temporarily unavailable."},
        },
        retry_after=True,
    ),
    Behaviour.S504: _html(504, "504 Gateway Time-out"),
    Behaviour.THROTTLE: _kaleyra(
        429,
        {
            "code": "429",
            "message": "Too many requests. Please retry after some time.",
            "data": {},
            "error": {"error": "Too many requests."},
        },
        retry_after=True,
    ),
    Behaviour.WA400: _kaleyra(
        400,
        {
            "code": "WA400",
            "message": _WA400_MESSAGE,
            "data": {},
            "error": {"payload": "Incorrect payload format"},
        },
    ),
    Behaviour.E110: _kaleyra(
        400,
        {"code": "E110", "message": _E110_MESSAGE, "data": {}, "error": {"balance": _E110_MESSAGE}},
    ),
    Behaviour.WAV2101: _kaleyra(
        400,
        {
            "code": "WAV2101",
            "message": _WAV2101_MESSAGE,
            "data": {},
            "error": {"error": _WAV2101_MESSAGE},
        },
    ),
    Behaviour.RBC001: _kaleyra(
        401,
        {
            "code": "RBC001",
            "message": _RBC001_MESSAGE,
            "data": [],
            "error": {"error": _RBC001_MESSAGE},
        },
    ),
    Behaviour.WA401: _kaleyra(
        401,
        {
            "code": "WA401",
            "message": _WA401_MESSAGE,
            "data": {},
            "error": {"phone_number": _WA401_MESSAGE},
        },
    ),
    Behaviour.WA401_ACCOUNT: _kaleyra(
        401,
        {
            "code": "WA-401",
            "message": _WA401_ACCOUNT_MESSAGE,
            "data": {},
            "error": {"account": _WA401_ACCOUNT_MESSAGE},
        },
    ),
    Behaviour.WA401_VERSION: _kaleyra(
        401,
        {
            "code": "WA-401",
            "message": _WA401_VERSION_MESSAGE,
            "data": {},
            "error": {"phone_number": _WA401_VERSION_MESSAGE},
        },
    ),
    Behaviour.NOT_JSON: _Answer(
        200,
        "",
        b"<html><body><h1>Welcome</h1><p>Please sign in to continue.</p></body></html>\n",
        content_type="text/html",
    ),
    Behaviour.NO_MESSAGE_ID: _kaleyra(
        202, {"code": "WA202", "message": "Request Accepted", "data": {}, "error": {}}
    ),
}


def _as_documented(message_id: str) -> _Answer:
    """The "Sample Success Response" of Kaleyra's page, byte for byte but for the id."""
    body = (
        '{\n"code":"WA202"\n"message":"Request Accepted",\n"data":{\n'
        f'"message_id":"{message_id}"\n}}\n"error":{{}}\n}}'
    )
    return _Answer(202, "WA202", body.encode(), message_id=message_id)


def _accepted(message_id: str) -> _Answer:
    document = {
        "code": "WA202",
        "message": "Request Accepted",
        "data": {"message_id": message_id},
        "error": {},
    }
    return _Answer(202, "WA202", orjson.dumps(document), message_id=message_id)


def _wa400(reason: str) -> _Answer:
    document = {
        "code": "WA400",
        "message": _WA400_MESSAGE,
        "data": {},
        "error": {"payload": reason},
    }
    return _Answer(400, "WA400", orjson.dumps(document))


def _not_found(path: str) -> _Answer:
    document = {
        "code": "404",
        "message": "Not found. Messages are sent with POST /v2/{sid}/whatsapp/{sender}/messages.",
        "data": {},
        "error": {"path": path},
    }
    return _Answer(404, "404", orjson.dumps(document))


# --------------------------------------------------------------------------- body validation

_Check = Callable[[str, object], "str | None"]
"""Validates one JSON value named by its dotted path; returns the problem, or None."""

_E164_LIST: Final = re.compile(r"\+?[0-9]{8,15}(?:,\+?[0-9]{8,15})*")
_INVALID_JSON: Final = object()


def _join(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def _object(fields: Mapping[str, tuple[bool, _Check]]) -> _Check:
    """A JSON object with only ``fields`` (name -> (required, check)), checked in that order."""

    def check(name: str, value: object) -> str | None:
        if not isinstance(value, dict):
            return f"{name or 'The request body'} must be a JSON object."
        for key in value:
            if key not in fields:
                return f"{_join(name, key)} is not a field of this API; remove it."
        for key, (required, field_check) in fields.items():
            if key in value:
                problem = field_check(_join(name, key), value[key])
                if problem is not None:
                    return problem
            elif required:
                return f"{_join(name, key)} is required."
        return None

    return check


def _text(max_length: int | None = None) -> _Check:
    """A non-empty string of at most ``max_length`` characters (Python ``len``)."""

    def check(name: str, value: object) -> str | None:
        if not isinstance(value, str):
            return f"{name} must be a string."
        if not value:
            return f"{name} is empty; omit empty optional fields."
        if max_length is not None and len(value) > max_length:
            return f"{name} is longer than {max_length} characters."
        return None

    return check


def _exactly(expected: str) -> _Check:
    """The string ``expected`` and nothing else."""

    def check(name: str, value: object) -> str | None:
        if value != expected:
            return f'{name} must be "{expected}".'
        return None

    return check


def _recipients(name: str, value: object) -> str | None:
    """One or more E.164 numbers (optional "+", 8 to 15 digits), comma-separated."""
    if not isinstance(value, str):
        return f"{name} must be a string."
    if not _E164_LIST.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return (
            f"{name} must be one or more E.164 numbers separated by commas, "
            f"like +919000000001; got {shown!r}."
        )
    return None


# The seed's request format, one object at a time: field -> (required, check).
_REF: Final = (False, _text(255))
_PARAMETERS: Final = _object({"thumbnail_product_retailer_id": (False, _text())})
_ACTION: Final = _object(
    {"name": (True, _exactly("catalog_message")), "parameters": (True, _PARAMETERS)}
)
_INTERACTIVE: Final = _object(
    {
        "type": (True, _exactly("catalog_message")),
        "body": (False, _object({"text": (True, _text(1024))})),
        "action": (True, _ACTION),
    }
)
_MESSAGING_OBJECT: Final = _object(
    {
        "messaging_product": (True, _exactly("whatsapp")),
        "recipient_type": (False, _exactly("individual")),
        "to": (True, _recipients),
        "type": (True, _exactly("interactive")),
        "interactive": (True, _INTERACTIVE),
    }
)
_EXTRA_INFO: Final = _object(
    {"ref": _REF, "ref1": _REF, "ref2": _REF, "wa_source": (False, _text())}
)
_REQUEST: Final = _object(
    {"messaging_object": (True, _MESSAGING_OBJECT), "extra_info": (False, _EXTRA_INFO)}
)


def body_problem(document: object) -> str | None:
    """What is wrong with a decoded request body for Send Catalog Messages, or None if valid.

    Strict on purpose, so the client's payloads are tested: only the seed's keys at each
    level, the documented types and values, no empty optional strings, ``body.text`` of at most
    1024 characters and ``ref``/``ref1``/``ref2`` of at most 255. Any ``wa_source`` is accepted,
    as the real API replaces unknown values with "api".
    """
    if document is _INVALID_JSON:
        return "The request body is not valid JSON."
    return _REQUEST("", document)


def _decode(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _INVALID_JSON


def _recipient(document: object) -> str:
    """``messaging_object.to`` as sent, or "" when the body does not carry a string there."""
    if isinstance(document, dict):
        messaging_object = document.get("messaging_object")
        if isinstance(messaging_object, dict):
            to = messaging_object.get("to")
            if isinstance(to, str):
                return to
    return ""


def _refs(document: object) -> tuple[str, str, str]:
    """``extra_info``'s ref, ref1 and ref2 of a valid body ("" for those not given)."""
    extra = document.get("extra_info", {}) if isinstance(document, dict) else {}
    found = [
        extra.get(name, "") if isinstance(extra, dict) else "" for name in ("ref", "ref1", "ref2")
    ]
    return found[0], found[1], found[2]


def _is_json(request: web.Request) -> bool:
    charset = request.charset
    return request.content_type == "application/json" and (charset or "utf-8").lower() == "utf-8"


def _rejection(account: Account, request: web.Request, document: object) -> _Answer | None:
    """Checks 2 to 4 of the module docstring: the answer rejecting the request, or None."""
    sid = request.match_info["sid"]
    if request.headers.get("api-key") != account.api_key or sid != account.sid:
        return _CANNED[Behaviour.RBC001]
    if not account.owns(request.match_info["sender"]):
        return _CANNED[Behaviour.WA401]
    if not _is_json(request):
        return _wa400("Content-Type must be application/json.")
    problem = body_problem(document)
    return None if problem is None else _wa400(problem)


# --------------------------------------------------------------------------- the server


class Sandbox:
    """The fake Kaleyra server: start it in a running loop, script its faults, read its records."""

    def __init__(
        self,
        account: Account = DEFAULT_ACCOUNT,
        faults: Faults | None = None,
        callbacks: CallbackEmitter | None = None,
    ) -> None:
        self.account = account
        self.faults = faults if faults is not None else Faults()
        #: posts status callbacks for the messages it accepts (see sandbox/callbacks.py)
        self.callbacks = callbacks
        self.received: list[Received] = []
        #: Message requests being answered right now, and the most there ever were at once.
        self.in_progress = self.most_in_progress = 0
        self._accepted_total = 0
        self._window: collections.deque[float] = collections.deque()
        self._id_prefix = secrets.token_hex(4).upper()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._url = ""

    def __repr__(self) -> str:
        return (
            f"Sandbox(url={self._url or None!r}, sid={self.account.sid!r}, "
            f"received={len(self.received)}, accepted={self._accepted_total}, "
            f"faults={self.faults!r})"
        )

    @property
    def url(self) -> str:
        """The base URL, like ``http://127.0.0.1:8080``; only while running."""
        if not self._url:
            raise RuntimeError("The sandbox is not running; await start() first.")
        return self._url

    # ------------------------------------------------------------------ records

    def count(self, to: str) -> int:
        """How many requests arrived for recipient ``to``, whatever they were answered."""
        return sum(1 for record in self.received if record.to == to)

    def counts(self) -> collections.Counter[str]:
        """Requests received per recipient ("" for bodies without a readable ``to``)."""
        return collections.Counter(record.to for record in self.received)

    def accepted(self) -> list[Received]:
        """The requests that were given a message_id, in arrival order."""
        return [record for record in self.received if record.message_id is not None]

    def reset(self) -> None:
        """Forget every record and counter, and restore the default :class:`Faults`."""
        self.received = []
        self.faults = Faults()
        self.most_in_progress = self.in_progress
        self._accepted_total = 0
        self._window.clear()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("The sandbox is already running.")
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self._application(), access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._url = f"http://{host}:{runner.addresses[0][1]}"
        if self.callbacks is not None:
            await self.callbacks.start()
        return self._url

    async def stop(self) -> None:
        """Stop listening, end hanging and sleeping answers, and close every connection."""
        runner, self._runner = self._runner, None
        self._url = ""
        if runner is not None:
            self._stopping.set()
            await runner.cleanup()
            if self.callbacks is not None:
                await self.callbacks.drain(_CALLBACK_DRAIN_SECONDS)
                await self.callbacks.stop()

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post(MESSAGES_ROUTE, self._messages)
        app.router.add_get("/health", self._health)
        app.router.add_get("/_sandbox/counts", self._counts)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    # ------------------------------------------------------------------ handlers

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, dumps=_dumps)

    async def _counts(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.counts()), dumps=_dumps)

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await request.read()
        answer = _not_found(request.path)
        self._record(request, body, _recipient(_decode(body)), answer, arrived)
        return await self._answer(answer)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        self.in_progress += 1
        self.most_in_progress = max(self.most_in_progress, self.in_progress)
        try:
            return await self._message(request)
        finally:
            self.in_progress -= 1

    async def _message(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await request.read()
        document = _decode(body)
        to = _recipient(document)
        rejection = _rejection(self.account, request, document)
        outcome = rejection if rejection is not None else self._render(self._behaviour_for(to))
        self._record(request, body, to, outcome, arrived)
        if self.callbacks is not None and isinstance(outcome, _Answer) and outcome.message_id:
            self.callbacks.accepted(message_id=outcome.message_id, to=to, refs=_refs(document))
        if outcome is Behaviour.HANG:
            await self._pause(None)
        if isinstance(outcome, Behaviour):
            return _hang_up(request)
        return await self._answer(outcome)

    def _record(
        self,
        request: web.Request,
        body: bytes,
        to: str,
        outcome: _Answer | Behaviour,
        arrived: float,
    ) -> None:
        answered = outcome if isinstance(outcome, _Answer) else _Answer(0, "", b"")
        headers = {key.lower(): value for key, value in request.headers.items()}
        self.received.append(
            Received(
                to=to,
                path=request.path,
                headers=headers,
                body=body,
                status=answered.status,
                code=answered.code,
                message_id=answered.message_id,
                at=arrived,
            )
        )

    async def _answer(self, answer: _Answer) -> web.Response:
        await self._pause(self.faults.latency)
        retry_after = self.faults.retry_after
        headers = {"Retry-After": retry_after} if answer.retry_after and retry_after else None
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            headers=headers,
        )

    async def _pause(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (None: forever) or until the sandbox stops, whichever is first."""
        if seconds is not None and seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # ------------------------------------------------------------------ faults

    def _behaviour_for(self, to: str) -> Behaviour | Custom:
        """Step 5 of the module docstring, for a request that passed every check."""
        faults = self.faults
        self._note_arrival(time.monotonic())
        script = faults.scripts.get(to)
        if script:
            return script.pop(0)
        if faults.max_rate is not None and len(self._window) > faults.max_rate:
            if faults.max_rate_throttles is not None:
                faults.max_rate_throttles -= 1
                if faults.max_rate_throttles <= 0:
                    faults.max_rate = faults.max_rate_throttles = None
            return Behaviour.THROTTLE
        if faults.balance is not None and self._accepted_total >= faults.balance:
            return Behaviour.E110
        if faults.daily_limit is not None and self._accepted_total >= faults.daily_limit:
            return Behaviour.WAV2101
        return faults.default

    def _note_arrival(self, now: float) -> None:
        window = self._window
        window.append(now)
        while window[0] <= now - 1.0:
            window.popleft()

    def _render(self, behaviour: Behaviour | Custom) -> _Answer | Behaviour:
        """The answer for ``behaviour``; DROP and HANG stay behaviours (they send nothing)."""
        if isinstance(behaviour, Custom):
            return _custom(behaviour)
        if behaviour is Behaviour.OK or behaviour is Behaviour.AS_DOCUMENTED:
            self._accepted_total += 1
            message_id = f"A{self._id_prefix}{next(self._ids):011X}"
            if behaviour is Behaviour.AS_DOCUMENTED:
                return _as_documented(message_id)
            return _accepted(message_id)
        return _CANNED.get(behaviour, behaviour)


def _custom(answer: Custom) -> _Answer:
    document = _decode(answer.body)
    code = document.get("code") if isinstance(document, dict) else None
    data = document.get("data") if isinstance(document, dict) else None
    message_id = data.get("message_id") if isinstance(data, dict) else None
    return _Answer(
        answer.status,
        code if isinstance(code, str) else "",
        answer.body,
        content_type=answer.content_type,
        message_id=message_id if isinstance(message_id, str) else None,
    )


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection without a byte of answer.

    aiohttp then fails to write the returned response, treats it as a client disconnect and
    writes nothing; the client sees the connection closed after its request went out.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


# --------------------------------------------------------------------------- runners


class ThreadedSandbox:
    """Runs a :class:`Sandbox` in a daemon thread with its own event loop, for sync tests.

    ``with ThreadedSandbox() as sandbox:`` returns once the server listens; leaving the block
    stops the server and joins the thread.
    """

    def __init__(self, account: Account = DEFAULT_ACCOUNT, faults: Faults | None = None) -> None:
        self._sandbox = Sandbox(account, faults)
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"ThreadedSandbox({self._sandbox!r})"

    def __enter__(self) -> Sandbox:
        self._thread = threading.Thread(target=self._run, name="kaleyra-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("The sandbox did not start within 30 seconds.")
        if self._error is not None:
            raise RuntimeError("The sandbox could not start.") from self._error
        return self._sandbox

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run(self._serve())
        self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        try:
            await self._sandbox.start()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()
        try:
            await self._done.wait()
        finally:
            await self._sandbox.stop()


def run_forever(
    *,
    host: str,
    port: int,
    account: Account,
    faults: Faults,
    callbacks: CallbackEmitter | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM, after printing the URL, SID and senders to stdout."""
    with contextlib.suppress(KeyboardInterrupt):
        sandbox = Sandbox(account, faults, callbacks)
        asyncio.run(_serve_until_signalled(sandbox, host=host, port=port))


async def _serve_until_signalled(sandbox: Sandbox, *, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
            loop.add_signal_handler(signum, stop.set)
    url = await sandbox.start(host, port)
    print(
        f"Kaleyra sandbox listening on {url} "
        f"(sid {sandbox.account.sid}, sender {_listing(sandbox.account.senders)})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await sandbox.stop()


def _listing(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))
