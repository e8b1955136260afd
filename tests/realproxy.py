"""A real forward proxy (tinyproxy, from Debian's packages) and a TLS front for the sandbox.

:func:`start_tinyproxy` runs tinyproxy on 127.0.0.1 with a free port, Basic credentials, its
own configuration and log file in a directory of the test's; the tests read that log to see
what really went through it. When the binary is missing the tests are skipped, except under
``CI=true``, where they fail: CI installs tinyproxy (``.ci/run``) and must run them.

:class:`ThreadedTlsFront` serves HTTPS on 127.0.0.1 with a given certificate and passes the
bytes to a plain server (the sandbox), as a load balancer in front of Kaleyra would: the
sandbox itself speaks plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import pytest

from tests.rawhttp import free_port, pipe

PROXY_USER: Final = "mktg-sender"
PROXY_PASSWORD: Final = "Tq7-pr0xy-Secret-w4"
#: Longest tinyproxy may take to listen (it takes milliseconds).
_START_PATIENCE: Final = 15.0


@dataclass(frozen=True)
class TinyProxy:
    """A running tinyproxy: where it listens, its credentials, and its log file."""

    port: int
    log: Path
    user: str = PROXY_USER
    password: str = PROXY_PASSWORD

    def url(self, *, password: str | None = None) -> str:
        """``http://user:password@127.0.0.1:port`` (``password`` overrides the right one)."""
        secret = self.password if password is None else password
        return f"http://{self.user}:{secret}@127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tunnels(self) -> list[str]:
        """The CONNECT targets tinyproxy logged, in order (``127.0.0.1:PORT``)."""
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            _, marker, rest = line.partition("): CONNECT ")
            if marker:
                found.append(rest.split(" ")[0])
        return found


def tinyproxy_binary() -> str:
    """The tinyproxy executable; skips the test (fails it under CI=true) when it is missing."""
    binary = shutil.which("tinyproxy") or shutil.which("tinyproxy", path="/usr/sbin:/usr/bin")
    if binary is not None:
        return binary
    if os.environ.get("CI") == "true":
        pytest.fail(
            "tinyproxy is not installed, and under CI=true the proxy tests must run: "
            "install it (apt-get install -y tinyproxy; .ci/run does)"
        )
    pytest.skip("tinyproxy is not installed (apt-get install tinyproxy); needed for proxy tests")


@contextlib.contextmanager
def start_tinyproxy(directory: Path) -> Iterator[TinyProxy]:
    """tinyproxy on 127.0.0.1 with Basic auth, configured and logging in ``directory``."""
    binary = tinyproxy_binary()
    for _ in range(3):  # the free port may be taken between the probe and tinyproxy's bind
        port = free_port()
        proxy = TinyProxy(port=port, log=directory / f"tinyproxy-{port}.log")
        config = directory / f"tinyproxy-{port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "Listen 127.0.0.1",
                    "Timeout 30",
                    f'LogFile "{proxy.log}"',
                    "LogLevel Connect",
                    f'PidFile "{directory / f"tinyproxy-{port}.pid"}"',
                    "MaxClients 64",
                    "Allow 127.0.0.1",
                    f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}",
                    "DisableViaHeader Yes",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        output = directory / f"tinyproxy-{port}.out"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [binary, "-d", "-c", str(config)], stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            if _listening(port, process):
                yield proxy
                return
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    pytest.fail(f"tinyproxy did not start; its output: {output.read_text(errors='replace')}")


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    """Wait until ``port`` accepts connections (True) or ``process`` exits (False)."""
    deadline = time.monotonic() + _START_PATIENCE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False


class ThreadedTlsFront:
    """HTTPS on 127.0.0.1 in front of a plain server at ``target_port``, in its own thread.

    ``with ThreadedTlsFront(port, context) as front:`` returns once it listens; ``front.url``
    is its ``https://127.0.0.1:PORT``.
    """

    def __init__(self, target_port: int, context: ssl.SSLContext) -> None:
        self._target = target_port
        self._context = context
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedTlsFront:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=_START_PATIENCE) or not self.port:
            raise RuntimeError("the TLS front did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        if self._thread is not None:
            self._thread.join(timeout=_START_PATIENCE)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        tasks: set[asyncio.Task[Any]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        try:
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self._context)
            self.port = server.sockets[0].getsockname()[1]
        finally:
            self._ready.set()
        async with server:
            await self._done.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
