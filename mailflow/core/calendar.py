"""Programme-time arithmetic: the Paris calendar, the sending window, day N and month N.

Everything is pure and takes tz-aware datetimes. Instants it builds are in UTC: a local time in the
repeated hour of October would otherwise never compare equal (==) to other zones' datetimes (PEP 495).
DST is handled by zoneinfo: local wall times are built with `datetime.combine(..., tzinfo=zone)` and
normalised through UTC, so a time that does not exist (02:30 on the last Sunday of March) maps to
the instant it names in the old offset (03:30 CEST), and an ambiguous one (02:30 on the last Sunday of
October) to its first occurrence. The window bounds (08:00, 20:00 by default) are never ambiguous.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailflow.core.policy import Policy

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def zone(policy: Policy) -> ZoneInfo:
    return ZoneInfo(policy.timezone)  # zoneinfo caches instances by key


def require_aware(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"a tz-aware datetime is required, got naive {t.isoformat()}")
    return t


def local_date(t: datetime, policy: Policy) -> date:
    """The programme-time calendar date of instant `t`."""
    return require_aware(t).astimezone(zone(policy)).date()


def at_local(d: date, wall: time, policy: Policy) -> datetime:
    """The instant (in UTC) of wall-clock time `wall` on local date `d` (DST-correct)."""
    return datetime.combine(d, wall.replace(tzinfo=None), tzinfo=zone(policy)).astimezone(UTC)


def in_window(t: datetime, policy: Policy) -> bool:
    """Whether emails may go at instant `t`: a window day, window_start <= local time < window_end."""
    local = require_aware(t).astimezone(zone(policy))
    if local.weekday() not in policy.window_days:
        return False
    return policy.window_start <= local.time().replace(tzinfo=None) < policy.window_end


def next_window_open(t: datetime, policy: Policy) -> datetime:
    """The earliest instant >= `t` inside the sending window (`t` itself when it is inside)."""
    if in_window(t, policy):
        return t
    if not policy.window_days or policy.window_start >= policy.window_end:
        raise ValueError("the sending window is empty: check window_days, window_start and window_end")
    d = local_date(t, policy)
    for offset in range(8):
        candidate = at_local(d + timedelta(days=offset), policy.window_start, policy)
        if candidate >= t and in_window(candidate, policy):
            return candidate
    raise AssertionError("unreachable: a non-empty weekly window opens within 8 days")  # pragma: no cover


def due_on(d: date, policy: Policy) -> datetime:
    """When something scheduled for local date `d` happens: window_start that day, or the next opening."""
    return next_window_open(at_local(d, policy.window_start, policy), policy)


def day_n(start: date, n: int, policy: Policy) -> datetime:
    """ "Day N" counted in programme calendar days from local date `start` (day 0), as a sending instant."""
    return due_on(start + timedelta(days=n), policy)


def add_months(d: date, n: int) -> date:
    """`d` plus `n` calendar months, clamped to the end of the month (Jan 31 + 1 month = Feb 28/29)."""
    year, month0 = divmod(d.month - 1 + n, 12)
    year += d.year
    month = month0 + 1
    last = _DAYS_IN_MONTH[month0] + (1 if month == 2 and _is_leap(year) else 0)
    return date(year, month, min(d.day, last))


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
