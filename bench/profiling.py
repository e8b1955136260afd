"""Where a bulk-sender run spends its time: py-spy samples, summarised by component.

py-spy samples every thread from outside the process, idle time included (``--idle``), so the
summary shows both what the main thread computes and what it waits for, and what the journal's
writer thread does. Main-thread samples are put in a component by the innermost frame that
belongs to one (``phonenumbers`` under ``campaign.py`` is validation, ``asyncio`` under
``client.py`` is the HTTP client); a sample whose innermost frames are only the event loop's is
the loop waiting for the network or the journal, or running uvloop's own C code. Other threads are
summarised by the source line they were on.
"""

from __future__ import annotations

import linecache
import re
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Profile", "py_spy", "py_spy_command", "summarise"]

RATE = 250  # samples per second per thread

# (component, path fragments); checked innermost frame first, the first match names the sample
_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("phone-number validation (phone.py, phonenumbers)", ("phonenumbers/", "input/phone.py")),
    ("CSV reading and checks (table.py, csv)", ("input/table.py",)),
    ("results and failed export (report.py)", ("record/results.py",)),
    ("journal, main-thread side (records, futures, reads)", ("record/journal.py",)),
    ("HTTP client: writes, parsing, pool (client.py, httptools)", (
        "sending/client.py", "httptools/",
    )),
    ("rate limiter (limiter.py, aiolimiter)", ("sending/limiter.py", "aiolimiter/")),
    ("logging and progress (ui.py, logging)", ("logging/", "bulk_sender/ui.py")),
    ("pandas", ("pandas/",)),
    ("planning rows into bodies (campaign.py, payload.py)", (
        "input/campaign.py", "sending/payload.py",
    )),
    ("planned rows arriving from the planning process (planner.py, pickle)", (
        "input/plan_process.py",
    )),
    ("engine: classify, retry, stats (engine.py, outcome.py, ...)", (
        "sending/engine.py", "sending/outcome.py", "sending/policy.py",
        "sending/stats.py", "sending/ratecontrol.py",
    )),
    ("config and settings (config.py)", ("bulk_sender/config.py",)),
)  # fmt: skip
_IMPORTS = "<frozen importlib"
_LOOP = "event loop: waiting (network, journal) or uvloop's C code"
_OTHER = "other"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>[^)]*)\)(?:: (?P<name>.*))?$")


@dataclass(slots=True)
class Profile:
    """Sample counts per thread, by component (main thread) or source line (others)."""

    threads: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    leaves: Counter[str] = field(default_factory=Counter)  # main thread's innermost frames

    def lines(self, *, top: int = 12) -> list[str]:
        """The summary as text lines: each thread's time by component or line, in percent."""
        out = []
        for thread, counts in sorted(self.threads.items(), key=lambda kv: kv[0] != "MainThread"):
            total = sum(counts.values())
            if thread != "MainThread" and _only_waiting(counts):
                continue
            out.append(f"{thread}: {total / RATE:.1f} s sampled; share of that time:")
            out += [f"  {n / total:6.1%}  {what}" for what, n in counts.most_common(top)]
        main = sum(self.leaves.values())
        if main:
            out.append("MainThread, innermost frames (self time):")
            out += [f"  {n / main:6.1%}  {what}" for what, n in self.leaves.most_common(top)]
        return out


def _only_waiting(counts: Counter[str]) -> bool:
    what, _ = counts.most_common(1)[0]
    return "wait" in what.lower() and len(counts) <= 3


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter (a venv's bin) or on PATH, if installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def py_spy_command(executable: str, raw: Path, command: Sequence[str | Path]) -> list[str]:
    """``py-spy record`` of ``command``, every thread, idle included, raw collapsed stacks."""
    return [
        executable, "record", "--format", "raw", "--output", str(raw), "--rate", str(RATE),
        "--threads", "--idle", "--", *map(str, command),
    ]  # fmt: skip


def summarise(raw: Path) -> Profile:
    """Read py-spy's raw output (``frame;frame;... count`` lines)."""
    profile = Profile()
    names: dict[str, str] = {}
    parsed: list[tuple[str, list[str], int]] = []
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        thread, *frames = stack.split(";")
        match = _THREAD.match(thread)
        tid = match["tid"] if match else thread
        if match and match["name"]:
            names[tid] = match["name"]
        parsed.append((tid, frames, int(samples)))
    for tid, frames, count in parsed:
        thread = names.get(tid, "MainThread")
        if thread == "MainThread":
            profile.threads[thread][_component(frames)] += count
            if frames:
                profile.leaves[_describe(frames[-1])] += count
        else:
            profile.threads[thread][_describe(frames[-1]) if frames else _OTHER] += count
    return profile


def _component(frames: list[str]) -> str:
    if any(_IMPORTS in frame for frame in frames):
        return "imports (interpreter start-up)"
    for frame in reversed(frames):
        for name, fragments in _COMPONENTS:
            if any(fragment in frame for fragment in fragments):
                return name
    return _LOOP if frames and ("asyncio/" in frames[-1] or "uvloop" in frames[-1]) else _OTHER


def _describe(frame: str) -> str:
    """``func (path:line)`` plus the source line itself when the file is one of ours."""
    match = _FRAME.match(frame)
    if match is None or match["line"] is None:
        return frame
    source = ""
    path = match["path"]
    if path.startswith("bulk_sender/"):
        repo = Path(__file__).resolve().parent.parent
        source = linecache.getline(str(repo / path), int(match["line"])).strip()
    return f"{frame}  `{source}`" if source else frame
