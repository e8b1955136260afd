"""The HTML report, rendered by a real headless Chromium: the funnel numbers are in its DOM and
the page needs nothing from the network."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliRunner
from tests.delivery_helpers import ThreadedReceiver, sqlite_store, store_factory
from tests.test_delivery_report import PLAN, _callbacks, campaign

__all__ = ["campaign"]  # the fixture, shared with the report tests


def _chromium() -> str:
    """The browser, or a skip (a failure under CI=true, where .ci/run installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser test")
        pytest.skip(reason)
    return found


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_the_html_report_renders_the_funnel_in_a_real_browser(
    tmp_path: Path, campaign: dict[str, Any], cli: CliRunner
) -> None:
    """Chromium's rendered DOM holds the funnel's numbers and failure codes; a screenshot works."""
    browser = _chromium()
    with ThreadedReceiver(store_factory(sqlite_store(tmp_path))) as url:
        _callbacks(url, campaign["ids"], PLAN)
    page = tmp_path / "report.html"
    run = cli("report", campaign["out"], "--config", campaign["config"], "--html", page)
    assert run.code == 0, run.err
    source = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=|https?://|@import|url\(""", source)
    dom = _headless(browser, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    counts = dict(re.findall(r'<tr id="funnel-(\w+)" data-count="(\d+)"', dom.stdout))
    assert counts == {"accepted": "8", "sent": "3", "delivered": "2", "read": "1",
                      "failed": "4", "waiting": "1"}  # fmt: skip
    codes = re.findall(r'<tr data-code="([^"]+)" data-count="(\d+)"', dom.stdout)
    assert sorted(codes) == [("130429", "1"), ("131026", "1"), ("131047", "1"), ("not sent", "1")]
    assert "<svg" in dom.stdout and "Delivery funnel" in dom.stdout
    shot = tmp_path / "report.png"
    taken = _headless(browser, "--window-size=900,1800", f"--screenshot={shot}", page.as_uri())
    assert taken.returncode == 0, taken.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
