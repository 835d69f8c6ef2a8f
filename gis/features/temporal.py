"""The `datetime` parameter: an instant or a closed, half-open or open interval (RFC 3339).

A date or a time without an offset is read in the city's time zone, as the refresh job reads the
departments' dates (gis/refresh/normalise.py): `2030-06-01` is the local day, midnight to midnight.
A date stands for its whole day, so an instant given as a date is the interval of that day.
"""

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from gis.errors import InvalidInput

CITY_TIME = ZoneInfo("Asia/Shanghai")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE
)
_OPEN = frozenset({"", ".."})


@dataclass(frozen=True)
class TimeRange:
    """[start, end] (or [start, end) when end_inclusive is False); None is an open end."""

    start: datetime | None
    end: datetime | None
    end_inclusive: bool = True

    @property
    def is_instant(self) -> bool:
        return self.start is not None and self.start == self.end and self.end_inclusive


def parse_date(text: str, parameter: str) -> date:
    if not _DATE.match(text):
        raise InvalidInput(parameter, f"'{text[:60]}' is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(parameter, f"'{text}' is not a valid date: {exc}") from None


def parse_timestamp(text: str, parameter: str, zone: tzinfo = CITY_TIME) -> datetime:
    """An RFC 3339 date-time, time-zone aware (no offset: `zone`, by default the city's local time)."""
    match = _DATETIME.match(text.strip())
    if not match:
        raise InvalidInput(parameter, f"'{text[:60]}' is not an RFC 3339 date-time (e.g. 2024-05-01T08:00:00Z)")
    day, clock, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # Python keeps microseconds
    suffix = "" if offset is None else ("+00:00" if offset.upper() == "Z" else offset)
    try:
        stamp = datetime.fromisoformat(f"{day}T{clock}{fraction}{suffix}")
    except ValueError as exc:
        raise InvalidInput(parameter, f"'{text[:60]}' is not a valid date-time: {exc}") from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=zone)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), CITY_TIME)


def _bound(text: str, parameter: str, *, is_end: bool) -> tuple[datetime, bool]:
    """(instant, inclusive) for one end of an interval."""
    if _DATE.match(text):
        day = parse_date(text, parameter)
        if is_end:
            try:
                return day_start(day + timedelta(days=1)), False
            except OverflowError:
                return datetime.max.replace(tzinfo=CITY_TIME), True
        return day_start(day), True
    return parse_timestamp(text, parameter), True


def parse_datetime(value: str, parameter: str = "datetime") -> TimeRange:
    text = value.strip()
    if "/" not in text:
        if text in _OPEN:
            raise InvalidInput(parameter, "an instant or an interval start/end is needed")
        if _DATE.match(text):
            opens, _ = _bound(text, parameter, is_end=False)
            closes, inclusive = _bound(text, parameter, is_end=True)
            return TimeRange(opens, closes, inclusive)
        stamp = parse_timestamp(text, parameter)
        return TimeRange(stamp, stamp)
    parts = text.split("/")
    if len(parts) != 2:
        raise InvalidInput(parameter, "an interval has exactly one '/' (start/end, '..' for an open end)")
    first, second = (p.strip() for p in parts)
    start = None if first in _OPEN else _bound(first, parameter, is_end=False)[0]
    end, inclusive = (None, True) if second in _OPEN else _bound(second, parameter, is_end=True)
    if start is not None and end is not None and (start > end or (start == end and not inclusive)):
        raise InvalidInput(parameter, "the interval ends before it starts")
    return TimeRange(start, end, inclusive)
