"""The benchmark's output: result rows, the machine they were measured on, text and markdown."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = [
    "Row",
    "machine_info",
    "median",
    "render_markdown",
    "render_text",
    "source_digest",
    "spread",
]

_COLUMNS = ("section", "measure", "median", "runs", "target", "verdict")


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One line of the results table; ``ok`` is None when the measure has no target."""

    section: str
    measure: str
    value: str
    runs: str = ""
    target: str = ""
    ok: bool | None = None

    def cells(self) -> tuple[str, ...]:
        """The row as the table's cells."""
        verdict = "" if self.ok is None else ("met" if self.ok else "MISSED")
        return (self.section, self.measure, self.value, self.runs, self.target, verdict)


def median(values: Sequence[float]) -> float:
    """The median (the benchmark's headline statistic)."""
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str) -> str:
    """Every run's value, in run order, formatted with ``fmt`` (e.g. ``"{:,.0f}"``)."""
    return " / ".join(fmt.format(v) for v in values)


def render_text(rows: Sequence[Row]) -> str:
    """An aligned plain-text table."""
    table = [_COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(
    rows: Sequence[Row], *, machine: Sequence[str], command: str, notes: Sequence[str]
) -> str:
    """The results as a markdown document: machine, command, table, notes."""
    out = ["# bulk-sender benchmark results", "", "## Machine", ""]
    out += [f"- {line}" for line in machine]
    out += ["", "## Command", "", "```", command, "```", "", "## Results", ""]
    out.append("| " + " | ".join(_COLUMNS) + " |")
    out.append("|" + "|".join("---" for _ in _COLUMNS) + "|")
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |" for row in rows]
    if notes:
        out += ["", "## Notes", ""]
        out += list(notes)
    return "\n".join(out) + "\n"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_revision(repo: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def source_digest(repo: Path) -> str:
    """A digest of bulk_sender's sources, to tell whether they changed during a run."""
    digest = hashlib.sha256()
    for path in sorted((repo / "bulk_sender").rglob("*.py")):
        name = path.relative_to(repo).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def machine_info(repo: Path) -> list[str]:
    """What the numbers were measured on, one fact a line."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    packages = ", ".join(
        f"{p} {_version(p)}"
        for p in ("aiohttp", "httptools", "uvloop", "orjson", "aiolimiter", "py-spy")
    )
    return [
        f"date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"CPU: {_cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM",
        f"OS: {platform.system()} {platform.release()}",
        f"Python: {platform.python_version()} ({platform.python_implementation()})",
        f"packages: {packages}",
        f"bulk-sender tree: git {_git_revision(repo)}",
        f"load average when the table was written (1, 5, 15 min): {load}",
    ]
