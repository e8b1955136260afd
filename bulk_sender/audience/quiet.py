"""Pure: quiet hours in the recipient's local time, and when a held row may be sent.

``quiet_hours = "21:00-09:00"`` means no message leaves while the recipient's clock reads from
21:00 (included) to 09:00 (excluded); ``"13:00-14:00"`` works too (a period within one day).

The recipient's time zone comes from the number, with phonenumbers' own data
(:func:`phonenumbers.timezone.time_zones_for_number`). A number may map to several zones: a
Russian or a Kazakh mobile is not tied to a region, so it gets every zone of +7, from UTC+2 to
UTC+12; an Australian one every zone of Australia. The rule is conservative: **a row is held
while any of its number's zones is in quiet hours**, so it may only leave at a time that is
outside quiet hours everywhere the customer may be. (For +7 and ``21:00-09:00`` that leaves
about two hours a day.) A number phonenumbers cannot place (its type is unknown, as for the
``+52 1`` mobiles sent with a warning) gets its country's zones; a number with no country zone
at all gets the time zone of the machine running bulk-sender.

Times are POSIX seconds (UTC); the zones' rules (daylight saving included) come from the
system's IANA database through :mod:`zoneinfo`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

__all__ = ["QuietHours", "parse_quiet_hours", "zone_names", "zones_for"]

_CLOCK = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")
_UNKNOWN = phone_timezone.UNKNOWN_TIMEZONE
#: How far ahead :meth:`QuietHours.next_open` looks for a moment outside quiet hours everywhere.
_HORIZON_DAYS = 8


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily period, in minutes after local midnight: ``start`` included, ``end`` excluded."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < 1440 and 0 <= self.end < 1440) or self.start == self.end:
            raise ValueError("quiet hours need two different times of day")

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    def quiet_at(self, minute: int) -> bool:
        """Whether ``minute`` after local midnight is inside the period."""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def quiet_in(self, zone: tzinfo, now: float) -> bool:
        """Whether it is quiet in ``zone`` at ``now``."""
        local = datetime.fromtimestamp(now, zone)
        return self.quiet_at(local.hour * 60 + local.minute)

    def ends_in(self, zone: tzinfo, now: float) -> float:
        """When the quiet period ``zone`` is in at ``now`` ends (``now`` if it is not quiet)."""
        local = datetime.fromtimestamp(now, zone)
        if not self.quiet_at(local.hour * 60 + local.minute):
            return now
        end = local.replace(hour=self.end // 60, minute=self.end % 60, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        # Wall-clock arithmetic in the zone: a daylight-saving change in between is accounted.
        return max(end.timestamp(), now)

    def next_open(self, zones: tuple[tzinfo, ...], now: float) -> float | None:
        """The first moment from ``now`` that is outside quiet hours in every one of ``zones``
        (``now`` itself if none is quiet); None if there is none within eight days."""
        moment = now
        limit = now + _HORIZON_DAYS * 86_400
        while moment <= limit:
            later = max(self.ends_in(zone, moment) for zone in zones)
            if later == moment:
                return moment
            moment = later
        return None


def parse_quiet_hours(text: str) -> QuietHours:
    """``"21:00-09:00"`` -> :class:`QuietHours`; raises ValueError with what is wrong."""
    start, dash, end = text.partition("-")
    first, second = _CLOCK.match(start), _CLOCK.match(end)
    if not dash or first is None or second is None:
        raise ValueError(f'{text!r} must be two times of day such as "21:00-09:00"')
    begins, ends = int(first[1]) * 60 + int(first[2]), int(second[1]) * 60 + int(second[2])
    if begins == ends:
        raise ValueError(f"{text!r} starts and ends at the same time; leave it empty for none")
    return QuietHours(begins, ends)


def zones_for(e164: str) -> tuple[tzinfo, ...]:
    """The time zones a number may be in (see the module docstring), cached by country."""
    single = _single_zone(_country_code(e164))
    if single is not None:
        return single
    return _zones(e164)


def _zones(e164: str) -> tuple[tzinfo, ...]:
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return _local_zone()
    names = phone_timezone.time_zones_for_number(number)
    if names == (_UNKNOWN,):
        names = TIMEZONE_DATA.get(str(number.country_code), (_UNKNOWN,))
    return _load(tuple(names)) if names != (_UNKNOWN,) else _local_zone()


@functools.cache
def _single_zone(country_code: str) -> tuple[tzinfo, ...] | None:
    """The one zone of every number of ``country_code`` (India, Germany...), or None."""
    if not country_code:
        return None
    names = {
        name
        for prefix, zones in TIMEZONE_DATA.items()
        if prefix.startswith(country_code)
        for name in zones
    }
    if len(names) != 1 or _UNKNOWN in names:
        return None
    return _load(tuple(names))


def _country_code(e164: str) -> str:
    """``+919845012345`` -> ``"91"`` (country codes are prefix-free)."""
    digits = e164.lstrip("+")
    for size in (1, 2, 3):
        if int(digits[:size] or 0) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return digits[:size]
    return ""


@functools.cache
def _load(names: tuple[str, ...]) -> tuple[tzinfo, ...]:
    return tuple(ZoneInfo(name) for name in names)


@functools.cache
def _local_zone() -> tuple[tzinfo, ...]:
    local = datetime.now().astimezone().tzinfo
    return (local,) if local is not None else (ZoneInfo("UTC"),)


def zone_names(zones: tuple[tzinfo, ...]) -> str:
    """``Asia/Kolkata`` or ``Asia/Irkutsk, Europe/Moscow and 14 more`` for a reason text."""
    names = [getattr(zone, "key", None) or str(zone) for zone in zones]
    if len(names) <= 2:
        return " and ".join(names)
    return f"{names[0]}, {names[1]} and {len(names) - 2} more"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
