"""The callback receiver: an ``aiohttp.web`` server that stores Kaleyra's callbacks durably.

Routes:

``POST /kaleyra/status``     a status callback (v2 JSON, a flat JSON object, or a form); ``GET``
                             with the flat fields in the query string also works
``POST /kaleyra/incoming``   a customer's message (likewise ``GET``)
``GET /healthz``             200 while the store can commit a write, 503 otherwise; no secret

Every other request must carry the shared secret, in the header ``X-Callback-Secret`` or as
the password of HTTP Basic auth (any user name), compared in constant time; otherwise 401 and
nothing is stored. A callback is answered 200 only once it is committed (group commit, see
:mod:`bulk_sender.stores.sqlite_writer`); 503 when the store cannot take it, so Kaleyra
retries; 400 with a short reason for a body that is not a callback (never stored, logged as
``bulk_sender.callback_rejected``); 413 for a body over 1 MiB. A repeated callback is stored
once. On SIGTERM or SIGINT the server stops accepting, finishes the requests in flight, closes
the store and returns.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from bulk_sender.config import Secret
from bulk_sender.delivery.events import Callback, IncomingMessage
from bulk_sender.delivery.parse import CallbackRejected, decode, parse_incoming, parse_status
from bulk_sender.errors import StoreError, UsageError
from bulk_sender.model import utc_now
from bulk_sender.stores.base import CallbackStore

__all__ = ["MAX_BODY", "SECRET_HEADER", "IncomingHook", "Receiver", "serve"]

log = logging.getLogger("bulk_sender")

MAX_BODY: Final = 1 << 20
SECRET_HEADER: Final = "X-Callback-Secret"
_OPEN_PATHS: Final = frozenset({"/healthz"})
#: How long a stop waits for the requests in flight.
_DRAIN_SECONDS: Final = 30.0

Parser = Callable[[object], Callback]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


_JSON: Final = {"Content-Type": "application/json"}


def _answer(status: int, **fields: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(fields), headers=_JSON)


@functools.lru_cache(maxsize=64)
def _stored_body(count: int) -> bytes:
    return orjson.dumps({"stored": count})


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


#: Called with every customer's message once it is stored (the audience ledger: STOP, START
#: and when each customer last wrote); raises StoreError if it cannot record them.
IncomingHook = Callable[[Sequence[IncomingMessage]], Awaitable[object]]


class Receiver:
    """The handlers, bound to one store and one secret; :meth:`handle` routes every request.

    ``on_incoming``, when given, is called with a callback's customer messages after the store
    committed them, and the answer is 200 only once it returned: a 503 sends the callback
    again, which both the store and the ledger take as often as it comes.
    """

    def __init__(
        self, store: CallbackStore, secret: Secret, *, on_incoming: IncomingHook | None = None
    ) -> None:
        self.store = store
        self._on_incoming = on_incoming
        self._secret = _digest(secret.reveal())
        self.stored = 0
        self.rejected = 0
        self.in_flight = 0
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._routes: dict[tuple[str, str], Handler] = {
            (method, path): route
            for path, route in (("/kaleyra/status", self.status),
                                ("/kaleyra/incoming", self.incoming))
            for method in ("POST", "GET")
        }  # fmt: skip
        self._routes["GET", "/healthz"] = self.healthz

    def __repr__(self) -> str:
        return f"Receiver(store={self.store!r}, stored={self.stored}, rejected={self.rejected})"

    def authorised(self, request: web.BaseRequest) -> bool:
        """Whether the request carries the secret (header or Basic auth password)."""
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            given = _basic_password(request.headers.get("Authorization", ""))
        # Digests of equal length, compared in constant time: neither the secret nor its length
        # shows in the timing.
        return given is not None and hmac.compare_digest(_digest(given), self._secret)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request: 503 once stopping (Kaleyra sends it again later); 401 without the
        secret; 413 for a declared body over the limit, before reading it; 404/405 for other
        paths and methods; then the route, counted as in flight until it has answered."""
        if self._stopping:
            answer = _answer(503, error="the receiver is stopping; send it again later")
            answer.force_close()
            return answer
        path = request.path
        if path not in _OPEN_PATHS and not self.authorised(request):
            return _answer(401, error="missing or wrong callback secret")
        route = self._routes.get((request.method, path))
        if route is None:
            known = any(p == path for _, p in self._routes)
            return _answer(405 if known else 404, error=f"no route {request.method} {path}")
        if (request.content_length or 0) > MAX_BODY:
            return _answer(413, error=f"the body is over {MAX_BODY} bytes")
        self.in_flight += 1
        self._idle.clear()
        try:
            return await route(request)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def drain(self, within: float) -> None:
        """Refuse new requests and wait (up to ``within`` seconds) for those in flight."""
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()

    async def status(self, request: web.BaseRequest) -> web.Response:
        """A status callback."""
        return await self._take(request, parse_status)

    async def incoming(self, request: web.BaseRequest) -> web.Response:
        """An incoming message."""
        return await self._take(request, parse_incoming)

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        """200 when a write to the store commits now."""
        try:
            await self.store.check_writable()
        except StoreError as exc:
            log.error(
                "bulk_sender.store_unwritable",
                extra={"event": "bulk_sender.store_unwritable", "error": str(exc)},
            )
            return _answer(503, health="store not writable")
        return _answer(200, health="ok")

    async def _take(self, request: web.BaseRequest, parse: Callable[..., Callback]) -> web.Response:
        received = utc_now()
        try:
            document = await _document(request)
            callback = parse(document, received_at=received)
        except CallbackRejected as exc:
            self.rejected += 1
            log.warning(
                "bulk_sender.callback_rejected",
                extra={
                    "event": "bulk_sender.callback_rejected",
                    "path": request.path,
                    "reason": exc.reason,
                },
            )
            return _answer(400, error=exc.reason)
        try:
            await self.store.save(callback)
            if callback.incoming and self._on_incoming is not None:
                await self._on_incoming(callback.incoming)
        except StoreError as exc:
            log.error(
                "bulk_sender.callback_not_stored",
                extra={"event": "bulk_sender.callback_not_stored", "error": str(exc)},
            )
            return _answer(503, error="the callback could not be stored; send it again later")
        self.stored += 1
        stored = _stored_body(len(callback.statuses) + len(callback.incoming))
        return web.Response(status=200, body=stored, headers=_JSON)


async def _document(request: web.BaseRequest) -> object:
    """The callback's fields: the JSON body, a form body, or the query string of a GET."""
    if request.method == "GET":
        return dict(request.query)
    body = await request.read()
    # The raw header first: parsing it (request.content_type) costs microseconds a request,
    # and only a form needs it.
    raw_type = request.headers.get("Content-Type", "")
    if "form" in raw_type.lower() and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    if not body.strip() and request.query:
        return dict(request.query)
    return decode(body)


def _capped_request(
    message: Any, payload: Any, protocol: Any, writer: Any, task: Any
) -> web.BaseRequest:
    """A request whose body may be at most 1 MiB: read() answers 413 beyond, chunked too."""
    loop = asyncio.get_running_loop()
    return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY)


def _basic_password(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


async def serve(
    store: CallbackStore,
    secret: Secret,
    *,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    on_incoming: IncomingHook | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then finish in-flight requests and return.

    ``ready`` is called with the base URL once the server listens; ``on_incoming``: see
    :class:`Receiver`; ``reuse_port``: listen with SO_REUSEPORT, beside other receivers on the
    same port (``receive --workers``, :mod:`.workers`).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    receiver = Receiver(store, secret, on_incoming=on_incoming)
    # The low-level server: one handler that routes by a dict lookup, no application, router
    # or middleware chain to pay for on every callback.
    server = web.Server(receiver.handle, request_factory=_capped_request)
    runner = web.ServerRunner(server, access_log=None, shutdown_timeout=_DRAIN_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
        url = f"http://{host}:{runner.addresses[0][1]}"
        log.info("bulk_sender.receiving", extra={"event": "bulk_sender.receiving", "url": url})
        if ready is not None:
            ready(url)
        await stop.wait()
        log.info("bulk_sender.receiver_stopping", extra={"event": "bulk_sender.receiver_stopping"})
        # Stop listening, then let every request in flight finish, its body included (aiohttp's
        # own shutdown stops reading bodies still arriving), before closing connections.
        await site.stop()
        await receiver.drain(_DRAIN_SECONDS)
    finally:
        await runner.cleanup()
        await store.close()
