"""What every section shares: the sizes, the bench's state, starting and checking bulk-sender."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import BENCH_DIR, Measured, run_measured
from results import Row
from workload import API_KEY, KEY_ENV, messages_url, write_campaign

__all__ = [
    "QUICK",
    "REPO",
    "SECTIONS",
    "UNLIMITED_RATE",
    "Bench",
    "BenchError",
    "PaceCase",
    "RateCase",
    "Sizes",
    "bare_command",
    "bulk_sender",
    "expect",
    "expect_count",
    "progress",
    "send_command",
]

SECTIONS = (
    "throughput",
    "rate fidelity",
    "latency-sized pace",
    "memory",
    "preflight",
    "resume",
    "delivery",
    "ledger checks",
)
#: The highest rate bulk-sender accepts ([sending] rate_per_second <= 100,000): "unlimited".
UNLIMITED_RATE = 100_000
REPO = BENCH_DIR.parent


class BenchError(Exception):
    """A run did not do what the benchmark needs (wrong exit code, requests missing)."""


@dataclass(frozen=True, slots=True)
class RateCase:
    """One rate-fidelity configuration."""

    rate: float
    latency: float
    rows: int

    @property
    def concurrency(self) -> int:
        """Enough requests in flight that latency never limits the rate: rate x latency x 2."""
        return max(1, math.ceil(self.rate * self.latency * 2))

    def label(self) -> str:
        """``rate 200/s, 150 ms latency, 2,000 rows``."""
        return f"rate {self.rate:g}/s, {self.latency * 1000:g} ms latency, {self.rows:,} rows"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaceCase:
    """One latency-sized pace configuration: bulk-sender's default in-flight sizing, unless
    ``concurrency`` sets a fixed pool (``--concurrency``) to compare with."""

    rate: float
    latency: float
    rows: int
    #: The latency from half-way through the run on (the server's clock: from its first request).
    later_latency: float | None = None
    concurrency: int | None = None

    @property
    def switch_after(self) -> float:
        """Seconds from the first request to the latency change: half the run at the rate."""
        return self.rows / self.rate / 2

    def settings(self) -> str:
        """``default settings`` or ``--concurrency 32``."""
        return (
            "default settings" if self.concurrency is None else f"--concurrency {self.concurrency}"
        )

    def server(self) -> str:
        """``300 ms latency`` or ``100 ms latency, 600 ms from 5 s on``."""
        text = f"{self.latency * 1000:g} ms latency"
        if self.later_latency is not None:
            text += f", {self.later_latency * 1000:g} ms from {self.switch_after:g} s on"
        return text

    def label(self) -> str:
        """``rate 500/s, 300 ms latency, default settings, 5,000 rows``."""
        return f"rate {self.rate:g}/s, {self.server()}, {self.settings()}, {self.rows:,} rows"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """How big each measurement is."""

    repeat: int = 3
    throughput_rows: int = 60_000
    concurrency: int = 64
    small_rows: int = 100_000
    large_rows: int = 1_000_000
    resume_left: int = 1_000
    rate_cases: tuple[RateCase, ...] = (RateCase(200, 0.150, 2_000), RateCase(1000, 0.050, 5_000))
    #: About 10 s of sending each; the fixed pool of the old default (32) and its peer, 5 s.
    pace_cases: tuple[PaceCase, ...] = (
        PaceCase(rate=200, latency=0.3, rows=2_000),
        PaceCase(rate=1000, latency=0.3, rows=10_000),
        PaceCase(rate=500, latency=0.1, later_latency=0.6, rows=5_000),
        PaceCase(rate=500, latency=0.3, rows=2_500),
        PaceCase(rate=500, latency=0.3, rows=500, concurrency=32),
    )
    timeout: float = 1800.0  # seconds any one process may take


QUICK = Sizes(
    repeat=1,
    throughput_rows=2_000,
    small_rows=2_000,
    large_rows=10_000,
    resume_left=100,
    rate_cases=(RateCase(200, 0.150, 300), RateCase(1000, 0.050, 1_000)),
    pace_cases=(
        PaceCase(rate=500, latency=0.3, rows=500),
        PaceCase(rate=500, latency=0.1, later_latency=0.6, rows=500),
        PaceCase(rate=500, latency=0.3, rows=100, concurrency=32),
    ),
    timeout=120.0,
)


@dataclass(slots=True)
class Bench:
    """One benchmark run: where files go, how to start bulk-sender, what was found."""

    sizes: Sizes
    out: Path
    rows: dict[str, list[Row]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    other_load: dict[str, list[float]] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        """Where every process's stdout and stderr go."""
        return self.out / "logs"

    @property
    def env(self) -> dict[str, str]:
        """The environment of every measured process: the bench API key, a bytecode cache.

        An installed package has its bytecode compiled; an editable install under
        ``PYTHONDONTWRITEBYTECODE=1`` (as on the bench machine) would compile bulk_sender's
        source in every process instead. The cache lives under the bench's out directory, so
        nothing is written beside the sources.
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env[KEY_ENV] = API_KEY
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(self.out / "pycache")
        return env

    def campaign(self, rows: int) -> Path:
        """The ``rows``-row campaign file (written once, then reused)."""
        return write_campaign(self.out / "campaigns" / f"campaign-{rows}.csv", rows)

    def fresh_dir(self, name: str) -> Path:
        """An empty directory for one run's results, journal and lock."""
        path = self.out / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def run(self, section: str, name: str, command: Sequence[str | Path], **kw: Any) -> Measured:
        """Run and measure one process, noting the machine's other load for ``section``."""
        measured = run_measured(
            name, command, logs=self.logs, env=self.env, timeout=self.sizes.timeout, **kw
        )
        self.other_load.setdefault(section, []).append(measured.other_cores)
        return measured


def bulk_sender() -> list[str]:
    """How a user starts bulk-sender here: the console script beside this interpreter."""
    script = Path(sys.executable).parent / "bulk-sender"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bulk_sender"]


def send_command(
    campaign: Path,
    config: Path,
    out: Path,
    *,
    rate: float,
    concurrency: int | None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``bulk-sender send`` with the flags every bench run uses (``concurrency`` None: none)."""
    pool = [] if concurrency is None else ["--concurrency", str(concurrency)]
    return [
        *bulk_sender(), "send", str(campaign), "--config", str(config), "--out", str(out),
        "--rate", f"{rate:g}", *pool, "-q", *extra,
    ]  # fmt: skip


def bare_command(base_url: str, count: int, concurrency: int) -> list[str]:
    """``bare_loop.py`` sending ``count`` messages to the server at ``base_url``."""
    return [
        sys.executable, str(BENCH_DIR / "bare_loop.py"), "--url", messages_url(base_url),
        "--count", str(count), "--concurrency", str(concurrency),
    ]  # fmt: skip


def expect(measured: Measured, code: int, what: str) -> None:
    """Raise :class:`BenchError` unless the process exited with ``code``."""
    if measured.exit_code != code:
        tail = measured.stderr.read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(
            f"{what} exited {measured.exit_code}, expected {code}; see {measured.stderr}: "
            + " | ".join(tail)
        )


def expect_count(actual: int, wanted: int, what: str) -> None:
    """Raise :class:`BenchError` unless ``actual == wanted``."""
    if actual != wanted:
        raise BenchError(f"{what}: {actual:,}, expected {wanted:,}")


def progress(message: str) -> None:
    """One line on stderr while the bench runs."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
