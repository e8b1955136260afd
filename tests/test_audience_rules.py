"""The audience rules as pure functions: opt-out keywords, the rules' verdicts, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.audience.keywords import Keyword, keyword_of
from bulk_sender.audience.quiet import QuietHours, parse_quiet_hours, zone_names, zones_for
from bulk_sender.audience.rules import (
    HOUR_MS,
    Facts,
    Limits,
    OptOut,
    PastSend,
    Rule,
    ago,
    judge,
    window_warning,
)
from bulk_sender.sending.payload import content_key

NOW = 1_795_000_000_000  # 2026-11-18, in POSIX ms
DAY = 24 * HOUR_MS
OUT, IN = ("STOP", "UNSUBSCRIBE"), ("START",)


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- keywords ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["STOP", "stop", " Stop. ", "STOP!!", "S T O P", "stop 🙏", "Unsubscribe", "UN SUBSCRIBE"],
)
def test_an_opt_out_keyword_alone_opts_out(text: str) -> None:
    """Case, spaces, and punctuation or emoji around the word do not matter."""
    assert keyword_of(text, opt_out=OUT, opt_in=IN) is Keyword.OPT_OUT


@pytest.mark.parametrize("text", ["please stop sending offers", "ST-OP", "stopped", "", "  ", "?"])
def test_anything_but_the_keyword_alone_is_no_keyword(text: str) -> None:
    """A sentence, a word with punctuation inside, or nothing opts nobody out."""
    assert keyword_of(text, opt_out=OUT, opt_in=IN) is None


def test_start_opts_in_and_opting_out_wins_a_tie() -> None:
    """START opts back in; a word in both lists opts out."""
    assert keyword_of("start.", opt_out=OUT, opt_in=IN) is Keyword.OPT_IN
    assert keyword_of("stop", opt_out=["stop"], opt_in=["STOP"]) is Keyword.OPT_OUT


# -- the rules -------------------------------------------------------------------------------


def _send(hours_ago: float, content: int = 7, campaign: str = "diwali-2.csv") -> PastSend:
    return PastSend(NOW - round(hours_ago * HOUR_MS), content, campaign)


def test_the_repeat_guard_names_the_campaign_and_how_long_ago() -> None:
    """The same content within the window is held back with the issue's own wording."""
    held = judge(Limits(), Facts(sends=[_send(3.5)]), content=7, now=NOW)
    assert held is not None
    assert (held.rule, held.detail) == (
        Rule.REPEAT,
        "same message sent 3 h ago by campaign diwali-2.csv",
    )


def test_the_repeat_guard_ignores_other_content_and_older_sends() -> None:
    """Another message, or the same one exactly a window ago, does not hold it back."""
    assert judge(Limits(), Facts(sends=[_send(1, content=8)]), content=7, now=NOW) is None
    assert judge(Limits(), Facts(sends=[_send(24)]), content=7, now=NOW) is None
    assert judge(Limits(repeat_ms=0), Facts(sends=[_send(1)]), content=7, now=NOW) is None


def test_the_frequency_cap_counts_every_campaign_within_its_hours() -> None:
    """Two messages in the last 24 h hold back a third under a cap of 2, whatever they said."""
    limits = Limits(repeat_ms=0, cap_messages=2, cap_ms=DAY)
    facts = Facts(sends=[_send(2, content=1), _send(20, content=2), _send(30, content=3)])
    held = judge(limits, facts, content=9, now=NOW)
    assert held is not None
    assert (held.rule, held.detail) == (Rule.CAP, "2 messages in the last 24 h (cap 2)")
    assert judge(limits, facts._replace(sends=facts.sends[:1]), content=9, now=NOW) is None


def test_an_opt_out_comes_first_and_says_when_and_how() -> None:
    """An opt-out wins over every other rule; its date and cause are in the reason."""
    facts = Facts(opt_out=OptOut(NOW - DAY, "a STOP reply"), sends=[_send(1)])
    held = judge(Limits(), facts, content=7, now=NOW)
    assert held is not None
    assert (held.rule, held.detail) == (Rule.OPTED_OUT, "opted out on 2026-11-17 by a STOP reply")
    listed = judge(Limits(), Facts(opt_out=OptOut(None, "optouts.csv")), content=7, now=NOW)
    assert listed is not None
    assert listed.detail == "opted out: listed in the opt-out file optouts.csv"


def test_the_service_window_skips_or_warns_about_silent_customers() -> None:
    """skip holds back a customer who has not written for 24 h; warn only warns."""
    skip = Limits(window="skip")
    held = judge(skip, Facts(last_incoming=NOW - DAY), content=7, now=NOW)
    assert held is not None
    assert (held.rule, held.detail) == (
        Rule.WINDOW,
        "no message from this customer in the last 24 h",
    )
    assert judge(skip, Facts(last_incoming=NOW - DAY + 1), content=7, now=NOW) is None
    warn = Limits(window="warn")
    assert judge(warn, Facts(), content=7, now=NOW) is None
    assert "131047" in (window_warning(warn, None, now=NOW) or "")
    assert window_warning(warn, NOW - 1, now=NOW) is None


@given(st.integers(min_value=-5, max_value=10**10))
def test_ago_rounds_down_to_the_largest_unit(millis: int) -> None:
    """Under a minute, minutes under an hour, else whole hours."""
    text = ago(millis)
    minutes = max(millis, 0) // 60_000
    expected = "less than a minute" if minutes < 1 else f"{minutes} min" if minutes < 60 else None
    assert text == (expected or f"{minutes // 60} h")


def test_the_content_key_is_what_the_customer_sees() -> None:
    """Same text and thumbnail: same key; a different text or thumbnail: another."""
    assert content_key("Hi Asha", "p1") == content_key("Hi Asha", "p1")
    assert (
        len(
            {
                content_key("Hi Asha", "p1"),
                content_key("Hi Ravi", "p1"),
                content_key("Hi Asha", "p2"),
            }
        )
        == 3
    )
    assert 0 <= content_key("x", "") < 2**63


# -- quiet hours -----------------------------------------------------------------------------


def test_quiet_hours_parse_and_wrap_midnight() -> None:
    """ "21:00-09:00" covers 21:00 to 08:59; a daytime period works too; bad text is refused."""
    night = parse_quiet_hours("21:00-09:00")
    assert str(night) == "21:00-09:00"
    assert [night.quiet_at(m) for m in (20 * 60 + 59, 21 * 60, 0, 8 * 60 + 59, 9 * 60)] == [
        False, True, True, True, False,
    ]  # fmt: skip
    noon = parse_quiet_hours("13:00-14:00")
    assert noon.quiet_at(13 * 60 + 30) and not noon.quiet_at(14 * 60)
    for bad in ("21-09", "25:00-09:00", "21:00", "09:00-09:00"):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)


def test_an_indian_number_at_night_waits_for_the_morning_in_india() -> None:
    """22:30 in Kolkata: quiet; it may go at 09:00 IST, 03:30 UTC."""
    zones = zones_for("+919845012345")
    assert zone_names(zones) in ("Asia/Calcutta", "Asia/Kolkata")
    night = QuietHours(21 * 60, 9 * 60)
    opens = night.next_open(zones, _utc("2026-11-20T17:00:00"))
    assert opens == _utc("2026-11-21T03:30:00")
    assert night.next_open(zones, _utc("2026-11-20T05:00:00")) == _utc("2026-11-20T05:00:00")


def test_a_number_of_several_zones_waits_until_no_zone_is_quiet() -> None:
    """A Russian mobile may be anywhere from UTC+2 to UTC+12: it waits for the window that is
    outside quiet hours in every one of them (07:00 to 09:00 UTC in November)."""
    zones = zones_for("+79161234567")
    assert len(zones) > 10
    night = QuietHours(21 * 60, 9 * 60)
    assert night.next_open(zones, _utc("2026-11-20T12:00:00")) == _utc("2026-11-21T07:00:00")
    assert night.next_open(zones, _utc("2026-11-21T08:00:00")) == _utc("2026-11-21T08:00:00")


def test_quiet_hours_follow_daylight_saving() -> None:
    """New York springs forward in the night of 8 March 2026: 09:00 EDT is 13:00 UTC."""
    zones = zones_for("+12025550123")
    night = QuietHours(21 * 60, 9 * 60)
    assert night.next_open(zones, _utc("2026-03-08T04:00:00")) == _utc("2026-03-08T13:00:00")
    assert night.next_open(zones, _utc("2026-03-01T04:00:00")) == _utc("2026-03-01T14:00:00")


def test_no_moment_outside_quiet_hours_everywhere_is_none() -> None:
    """Twenty hours of quiet over zones ten hours apart leave no moment: never, not a loop."""
    zones = zones_for("+79161234567")
    assert QuietHours(14 * 60, 10 * 60).next_open(zones, _utc("2026-11-20T12:00:00")) is None
