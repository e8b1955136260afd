"""Whole processes, measured: wall time, exit code, peak RSS, CPU, and the machine's other load.

:func:`run_measured` starts one command, reaps it with ``os.wait4`` (so the peak RSS and CPU
are that child's own, not the maximum over every child so far) and notes how much CPU the rest
of the machine used meanwhile: the benchmark shares two cores with whatever else is running,
and a result is only as good as the quiet it was measured in. :class:`Server` runs
``fast_server.py`` as its own process and talks to its ``/stats`` endpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

__all__ = [
    "BENCH_DIR",
    "Measured",
    "Server",
    "machine_busy_seconds",
    "process_cpu_seconds",
    "run_measured",
]

BENCH_DIR = Path(__file__).resolve().parent
_TICK = os.sysconf("SC_CLK_TCK")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


def process_cpu_seconds(pid: int) -> float:
    """CPU-seconds (user + system) a live process has used."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True, slots=True)
class Measured:
    """One finished process."""

    name: str
    exit_code: int
    wall: float  # seconds from just before the fork to the reap
    started: float  # time.monotonic() just before the fork
    max_rss_mib: float
    cpu: float  # the child's user + system CPU-seconds
    other_cores: float  # mean cores the rest of the machine kept busy meanwhile
    stdout: Path
    stderr: Path

    def text(self) -> str:
        """What the process printed on stdout."""
        return self.stdout.read_text(encoding="utf-8", errors="replace")


def run_measured(
    name: str,
    command: Sequence[str | Path],
    *,
    logs: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
    also_busy: Sequence[Server] = (),
) -> Measured:
    """Run ``command`` to completion; its stdout/stderr go to ``logs/<name>.out|.err``.

    ``also_busy`` are servers whose CPU counts as the benchmark's own, not as other load.
    A process still running after ``timeout`` seconds is killed (and reported as such).
    """
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    server_cpu = sum(s.cpu_seconds() for s in also_busy)
    busy = machine_busy_seconds()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(c) for c in command], stdout=stdout, stderr=stderr, env=dict(env or os.environ)
        )
        reaped: list[tuple[int, int, Any]] = []
        reaper = threading.Thread(target=lambda: reaped.append(os.wait4(proc.pid, 0)))
        reaper.start()
        reaper.join(timeout)
        if reaper.is_alive():
            proc.kill()
            reaper.join()
        wall = time.monotonic() - started
    _, status, usage = reaped[0]
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    cpu = usage.ru_utime + usage.ru_stime
    ours = cpu + sum(s.cpu_seconds() for s in also_busy) - server_cpu
    other = max(0.0, machine_busy_seconds() - busy - ours) / wall if wall > 0 else 0.0
    return Measured(
        name=name,
        exit_code=proc.returncode,
        wall=wall,
        started=started,
        max_rss_mib=usage.ru_maxrss / 1024,
        cpu=cpu,
        other_cores=other,
        stdout=out,
        stderr=err,
    )


class Server:
    """``fast_server.py`` in its own process on 127.0.0.1; use as a context manager.

    ``latency_after`` holds ``(seconds, latency)`` pairs: from that many seconds after the first
    request since the last :meth:`reset` on, the server answers after ``latency`` instead.
    """

    def __init__(
        self,
        *,
        logs: Path,
        name: str,
        latency: float = 0.0,
        latency_after: Sequence[tuple[float, float]] = (),
        accept: int | None = None,
        max_seconds: float = 3600.0,
    ) -> None:
        self.name = name
        self._command = [
            sys.executable,
            str(BENCH_DIR / "fast_server.py"),
            "--latency",
            str(latency),
            "--max-seconds",
            str(max_seconds),
        ]
        for after, later in latency_after:
            self._command += ["--latency-after", f"{after}:{later}"]
        if accept is not None:
            self._command += ["--accept", str(accept)]
        self._logs = logs
        self._proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc is not None else None
        return f"Server(name={self.name!r}, base_url={self.base_url!r}, pid={pid!r})"

    def __enter__(self) -> Server:
        self._logs.mkdir(parents=True, exist_ok=True)
        with (self._logs / f"{self.name}.err").open("wb") as stderr:
            self._proc = subprocess.Popen(self._command, stdout=subprocess.PIPE, stderr=stderr)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "PORT":
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self._logs / self.name}.err")
        self.base_url = f"http://127.0.0.1:{line[1]}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def cpu_seconds(self) -> float:
        """CPU-seconds the server has used so far."""
        assert self._proc is not None
        return process_cpu_seconds(self._proc.pid)

    def _get(self, path: str) -> dict[str, Any]:
        with _DIRECT.open(self.base_url + path, timeout=30) as answer:
            doc: dict[str, Any] = orjson.loads(answer.read())
        return doc

    def reset(self) -> None:
        """Forget every request so far."""
        self._get("/reset")

    def stats(self, *, arrivals: bool = False) -> dict[str, Any]:
        """The server's counters (and arrival times if asked)."""
        return self._get("/stats?arrivals=1" if arrivals else "/stats")
