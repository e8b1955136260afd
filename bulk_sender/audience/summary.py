"""What the audience rules did, for the summary JSON (``audience``) and the printed summary.

The document's ``audience`` field is None when no rule applied (no ledger, no opt-out file, no
quiet hours); otherwise::

    {"held_back": {"OPTED_OUT": {"count": 12, "examples": [{"row": 4, "reason": "..."}]},
                   "REPEAT_GUARD": {...}, ...},          every rule, in the rules' order
     "window_warnings": 0,                                 rows sent outside the 24-hour window
     "quiet_hours": {"rows": 40, "send_after": "2026-11-21T03:30:00Z",
                     "all_by": "2026-11-21T07:00:00Z"} or None}

A send's counts are the whole campaign's (every run so far, from the journal, as its statuses
are); its examples are this run's. A dry run's are what the rules would hold back if the file
were sent now.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bulk_sender.audience.gate import AudienceReport
from bulk_sender.audience.rules import Rule

__all__ = ["audience_dict", "audience_lines"]


def audience_dict(
    report: AudienceReport | None, *, counts: Mapping[str, int] | None = None
) -> dict[str, Any] | None:
    """The summary's ``audience`` field; ``counts`` by rule (a send's whole campaign), else the
    report's own."""
    if report is None:
        return None
    held = {
        rule.value: {
            "count": (counts if counts is not None else report.held).get(rule, 0),
            "examples": [
                {"row": row, "reason": reason} for row, reason in report.examples.get(rule, [])
            ],
        }
        for rule in Rule
    }
    quiet = None
    if report.quiet_from is not None and report.quiet_until is not None:
        quiet = {
            "rows": report.held.get(Rule.QUIET, 0),
            "send_after": _iso(report.quiet_from),
            "all_by": _iso(report.quiet_until),
        }
    return {"held_back": held, "window_warnings": report.window_warnings, "quiet_hours": quiet}


def audience_lines(audience: dict[str, Any] | None, *, dry_run: bool) -> list[str]:
    """The printed summary's lines about the audience rules."""
    if audience is None:
        return []
    held = {rule: info for rule, info in audience["held_back"].items() if info["count"]}
    lines = []
    if held:
        title = "would hold back now" if dry_run else "held back by the audience rules"
        lines.append(f"  {title} (example row):")
        for rule, info in held.items():
            example = info["examples"][0] if info["examples"] else None
            shown = f"  (row {example['row']}: {example['reason']})" if example else ""
            lines.append(f"    {info['count']:>7,}  {rule}{shown}")
    if audience["window_warnings"]:
        lines.append(
            f"  {audience['window_warnings']:,} sent outside the customer-service window "
            "(a warning in their row)"
        )
    quiet = audience["quiet_hours"]
    if quiet is not None and not dry_run:
        lines.append(
            f"  quiet hours: {quiet['rows']:,} rows wait; run the same command again after "
            f"{_shown(quiet['send_after'])} to send them (all can go by {_shown(quiet['all_by'])})"
        )
    return lines


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(iso: str) -> str:
    return iso.replace("T", " ").replace(":00Z", " UTC")
