"""The HTML report (placeholder until written)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulk_sender.delivery.report import ReportResult

__all__ = ["write_html"]


def write_html(path: Path, result: ReportResult) -> None:
    """Write the report."""
    path.write_text("<html></html>", encoding="utf-8")
