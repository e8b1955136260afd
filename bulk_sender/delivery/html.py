"""The HTML delivery report: one self-contained file a marketer opens in a browser.

Everything is inline (CSS, SVG charts, no script, no font or image from elsewhere), so the file
can be mailed or archived and still opens offline. It shows the funnel as bars, the failure
reasons in words with whether sending again helps, and over time the sending rate and the
median delay from the 202 to ``delivered`` and to ``read``. Every figure also sits in the text
(with ``data-`` attributes), so the page reads without the charts and tests can check it.
"""

from __future__ import annotations

import bisect
import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bulk_sender.delivery.codes import Resend, explain
from bulk_sender.delivery.events import DeliveryStatus
from bulk_sender.delivery.funnel import DELAY_EDGES, Funnel, failure_lines
from bulk_sender.errors import OutputWriteError
from bulk_sender.record.atomic import atomic_write

if TYPE_CHECKING:
    from bulk_sender.delivery.report import ReportResult

__all__ = ["Bucket", "buckets", "render", "write_html"]

#: At most this many bars in a chart over time; longer campaigns are grouped.
MAX_BUCKETS: Final = 60
_RESEND_WORDS: Final = {
    Resend.YES: "yes",
    Resend.LATER: "yes, a day later",
    Resend.AFTER_REPLY: "only after the customer writes",
    Resend.NO: "no",
}
_COLOURS: Final = {
    "accepted": "#64748b", "sent": "#0ea5e9", "delivered": "#16a34a", "read": "#15803d",
    "failed": "#dc2626", "waiting": "#d97706",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bucket:
    """One stretch of sending time: its start, length, messages accepted, median delays."""

    start: datetime
    seconds: int
    accepted: int
    to_delivered: float | None
    to_read: float | None


def write_html(path: Path, result: ReportResult) -> None:
    """Write the report for ``result`` to ``path`` atomically."""
    page = render(
        result.funnel,
        title=f"Delivery report: {result.options.results.name}",
        facts={
            "Results file": str(result.options.results),
            "Campaign file": str(result.campaign),
            "Report made": result.generated_at,
            "Latest callback event": result.funnel.last_update or "none yet",
        },
    )
    try:
        with atomic_write(path, encoding="utf-8") as handle:
            handle.write(page)
    except OSError as exc:
        raise OutputWriteError(
            f"cannot write the HTML report {path}: {exc.strerror or exc}. Fix the cause, then "
            "run the report again",
            path=path,
        ) from None


def render(funnel: Funnel, *, title: str, facts: Mapping[str, str]) -> str:
    """The whole page as a string."""
    series = buckets(funnel)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        _facts(facts),
        "<h2>Funnel</h2>",
        _funnel_svg(funnel),
        _funnel_table(funnel),
        "<h2>Why messages failed</h2>",
        _failures(funnel),
        "<h2>Sending rate</h2>",
        _rate_svg(series),
        "<h2>Time from sending to delivered and read</h2>",
        _delay_svg(series),
        "<p class=note>Delays are medians per stretch of sending time, from Kaleyra's "
        "acceptance of the message to the time WhatsApp reported it delivered or read "
        "(within the width of a histogram bin). Read receipts are only sent by customers who "
        "have them switched on.</p>",
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _facts(facts: Mapping[str, str]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts.items())
    return f"<dl class=facts>{rows}</dl>"


def _stages(funnel: Funnel) -> list[tuple[str, str, int]]:
    """(key, label, count) of the funnel's bars."""
    return [
        ("accepted", "Accepted by Kaleyra", funnel.accepted),
        ("sent", "Sent by WhatsApp", funnel.sent),
        ("delivered", "Delivered", funnel.delivered),
        ("read", "Read", funnel.read),
        ("failed", "Failed after acceptance", funnel.failed),
        ("waiting", "Waiting for a callback", funnel.waiting),
    ]


def _funnel_svg(funnel: Funnel) -> str:
    stages = _stages(funnel)
    width, label_w, row_h = 760, 200, 34
    bar_w = width - label_w - 150
    top = max(funnel.accepted, 1)
    rows = []
    for i, (key, label, count) in enumerate(stages):
        y = i * row_h + 6
        w = max(round(bar_w * count / top), 1 if count else 0)
        rows.append(
            f'<text x="{label_w - 10}" y="{y + 17}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w}" height="{row_h - 10}" rx="3" '
            f'fill="{_COLOURS[key]}"><title>{_e(label)}: {count:,}</title></rect>'
            f'<text x="{label_w + w + 8}" y="{y + 17}" class="num">{count:,} '
            f"({_share(count, funnel.accepted)})</text>"
        )
    height = len(stages) * row_h + 8
    return (
        f'<svg class=chart role="img" aria-label="Delivery funnel" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">{"".join(rows)}</svg>'
    )


def _funnel_table(funnel: Funnel) -> str:
    rows = "".join(
        f'<tr id="funnel-{key}" data-count="{count}"><th>{_e(label)}</th>'
        f"<td>{count:,}</td><td>{_share(count, funnel.accepted)}</td></tr>"
        for key, label, count in _stages(funnel)
    )
    return (
        "<table class=funnel><thead><tr><th>Stage</th><th>Messages</th><th>Of accepted</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        f"<p class=note>{funnel.messages:,} messages in the campaign; the funnel counts the "
        f"{funnel.accepted:,} Kaleyra accepted. Each stage includes the ones after it: a read "
        "message was also sent and delivered.</p>"
    )


def _failures(funnel: Funnel) -> str:
    lines = failure_lines(funnel)
    if not lines:
        return "<p>No failures reported.</p>"
    rows = []
    for status, code, count, words in lines:
        label = "not sent" if status is DeliveryStatus.NOT_SENT else code or "no code"
        again = _RESEND_WORDS[explain(status, code).resend]
        rows.append(
            f'<tr data-code="{_e(label)}" data-count="{count}"><td class=code>{_e(label)}</td>'
            f"<td>{count:,}</td><td>{_share(count, funnel.accepted)}</td><td>{_e(words)}</td>"
            f"<td>{_e(again)}</td></tr>"
        )
    return (
        "<table class=failures><thead><tr><th>Code</th><th>Messages</th><th>Of accepted</th>"
        f"<th>What it means</th><th>Send again?</th></tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table>"
    )


# --------------------------------------------------------------------------- over time


def _second(key: str) -> datetime | None:
    try:
        return datetime.strptime(key, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _median(bins: Sequence[int]) -> float | None:
    """The upper edge (seconds) of the bin holding the median; the last bin counts as 2 days."""
    total = sum(bins)
    if not total:
        return None
    running = 0
    for index, count in enumerate(bins):
        running += count
        if running * 2 >= total:
            return float(DELAY_EDGES[index]) if index < len(DELAY_EDGES) else 2 * 86400.0
    return None


#: The delay chart's grid lines (seconds); its top is the first at or above the longest delay.
_DELAY_GRID: Final = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 14400, 86400, 172800)
#: Bucket widths in seconds: the smallest that gives at most MAX_BUCKETS bars is used.
_WIDTHS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


def buckets(funnel: Funnel) -> list[Bucket]:
    """The campaign's sending time cut into at most :data:`MAX_BUCKETS` equal stretches."""
    seconds = sorted(m for m in (_second(k) for k in funnel.accepted_per_second) if m)
    if not seconds:
        return []
    span = int((seconds[-1] - seconds[0]).total_seconds()) + 1
    width = next((w for w in _WIDTHS if span / w <= MAX_BUCKETS), math.ceil(span / MAX_BUCKETS))
    first = datetime.fromtimestamp(seconds[0].timestamp() // width * width, UTC)
    count = int((seconds[-1] - first).total_seconds()) // width + 1
    accepted = [0] * count
    delivered = [[0] * (len(DELAY_EDGES) + 1) for _ in range(count)]
    read = [[0] * (len(DELAY_EDGES) + 1) for _ in range(count)]
    for key, n in funnel.accepted_per_second.items():
        moment = _second(key)
        if moment is None:
            continue
        index = int((moment - first).total_seconds()) // width
        accepted[index] += n
        for source, target in ((funnel.to_delivered, delivered), (funnel.to_read, read)):
            for b, c in enumerate(source.get(key, ())):
                target[index][b] += c
    return [
        Bucket(
            start=first + timedelta(seconds=i * width),
            seconds=width,
            accepted=accepted[i],
            to_delivered=_median(delivered[i]),
            to_read=_median(read[i]),
        )
        for i in range(count)
    ]


def _axis_time(bucket: Bucket) -> str:
    return bucket.start.strftime("%H:%M:%S" if bucket.seconds < 60 else "%H:%M")


def _width_words(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"


def _rate_svg(series: Sequence[Bucket]) -> str:
    if not series:
        return "<p>No accepted messages yet.</p>"
    rates = [b.accepted / b.seconds for b in series]
    top = _nice(max(rates))
    width, height, left, bottom = 760, 220, 60, 30
    plot_w, plot_h = width - left - 10, height - bottom - 10
    bar = plot_w / len(series)
    shapes = _grid(top, left, plot_w, plot_h, lambda v: f"{v:g}/s")
    for i, (bucket, rate) in enumerate(zip(series, rates, strict=True)):
        h = plot_h * rate / top if top else 0
        x = left + i * bar
        shapes.append(
            f'<rect x="{x + 1:.1f}" y="{10 + plot_h - h:.1f}" width="{max(bar - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{_COLOURS["sent"]}"><title>{_axis_time(bucket)}: '
            f"{bucket.accepted:,} accepted, {rate:.2f}/s</title></rect>"
        )
    shapes.extend(_time_labels(series, left, bar, height))
    return _svg("Messages accepted per second over time", width, height, shapes) + (
        f"<p class=note>Each bar is {_width_words(series[0].seconds)} of sending, from "
        f"{series[0].start:%Y-%m-%d %H:%M:%S} UTC; the busiest reached {max(rates):.2f} "
        "messages/s.</p>"
    )


def _delay_svg(series: Sequence[Bucket]) -> str:
    points = [(i, b.to_delivered, b.to_read) for i, b in enumerate(series)]
    known = [v for _, d, r in points for v in (d, r) if v is not None]
    if not known:
        return "<p>No delivered or read messages yet.</p>"
    width, height, left, bottom = 760, 240, 60, 30
    plot_w, plot_h = width - left - 10, height - bottom - 10
    ceiling = next((g for g in _DELAY_GRID if g >= max(known)), _DELAY_GRID[-1])
    top = math.log10(ceiling + 1)
    step = plot_w / max(len(series), 1)

    def y(seconds: float) -> float:
        return 10 + plot_h - plot_h * math.log10(seconds + 1) / top

    shapes = []
    for seconds in _DELAY_GRID:
        if seconds <= ceiling:
            shapes.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y(seconds):.1f}" '
                f'y2="{y(seconds):.1f}" class=grid /><text x="{left - 6}" y="{y(seconds) + 4:.1f}" '
                f'text-anchor="end" class=axis>{_duration(seconds)}</text>'
            )
    for index, name, colour in ((1, "delivered", _COLOURS["delivered"]),
                                (2, "read", _COLOURS["waiting"])):  # fmt: skip
        coords = [
            (left + (i + 0.5) * step, y(value))
            for i, *values in points
            if (value := values[index - 1]) is not None
        ]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{v:.1f}" for x, v in coords)
            shapes.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" />'
            )
        shapes.extend(
            f'<circle cx="{x:.1f}" cy="{v:.1f}" r="3" fill="{colour}">'
            f"<title>{name}</title></circle>"
            for x, v in coords
        )
    shapes.extend(_time_labels(series, left, step, height))
    legend = (
        f'<p class=legend><span style="color:{_COLOURS["delivered"]}">&#9679; to delivered</span> '
        f'<span style="color:{_COLOURS["waiting"]}">&#9679; to read</span></p>'
    )
    return _svg("Median delay from sending to delivered and read", width, height, shapes) + legend


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    if seconds < 86400:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 86400:g} d"


def _nice(value: float) -> float:
    """A round number at least ``value`` for an axis top."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    steps = (1.0, 2.0, 2.5, 5.0, 10.0)
    return power * steps[min(bisect.bisect_left(steps, value / power), len(steps) - 1)]


def _grid(
    top: float, left: int, plot_w: int, plot_h: int, label: Callable[[float], str]
) -> list[str]:
    lines = []
    for k in range(5):
        value = top * k / 4
        y = 10 + plot_h - plot_h * k / 4
        lines.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class=grid />'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class=axis>'
            f"{_e(label(round(value, 2)))}</text>"
        )
    return lines


def _time_labels(series: Sequence[Bucket], left: int, step: float, height: int) -> list[str]:
    every = max(1, math.ceil(len(series) / 8))
    return [
        f'<text x="{left + (i + 0.5) * step:.1f}" y="{height - 8}" text-anchor="middle" '
        f"class=axis>{_axis_time(b)}</text>"
        for i, b in enumerate(series)
        if i % every == 0
    ]


def _svg(label: str, width: int, height: int, shapes: Sequence[str]) -> str:
    return (
        f'<svg class=chart role="img" aria-label="{_e(label)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">{"".join(shapes)}</svg>'
    )


_CSS: Final = """
body{margin:0;background:#f8fafc;color:#0f172a;
 font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:820px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 12px}h2{font-size:18px;margin:28px 0 8px;
 border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0;color:#334155}
.facts dt{font-weight:600}.facts dd{margin:0;word-break:break-all}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e2e8f0;vertical-align:top}
td:nth-child(2),td:nth-child(3){text-align:right;white-space:nowrap}
thead th{background:#f1f5f9;font-size:13px}
.code{font-family:ui-monospace,Menlo,Consolas,monospace}
.chart{max-width:100%;height:auto;font-size:13px}
.chart text{fill:#0f172a}.chart .axis{fill:#64748b;font-size:11px}
.chart .grid{stroke:#e2e8f0;stroke-width:1}
.note,.legend{color:#475569;font-size:13px}
.legend span{margin-right:16px}
"""
