"""Programme-time arithmetic: sending window (DST, Sunday), next opening, day N, month N."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from mailflow.core.calendar import add_months, at_local, day_n, due_on, in_window, local_date, next_window_open
from mailflow.core.policy import Policy
from tests.unit.lifecycle_sim import PARIS, paris

P = Policy()


def utc(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


@pytest.mark.parametrize(
    ("t", "inside"),
    [
        (paris(2026, 1, 5, 8, 0), True),  # Monday, opening instant
        (paris(2026, 1, 5, 7, 59), False),
        (paris(2026, 1, 5, 19, 59), True),
        (paris(2026, 1, 5, 20, 0), False),  # end is exclusive
        (paris(2026, 1, 10, 12), True),  # Saturday
        (paris(2026, 1, 11, 12), False),  # Sunday
        # last Sunday of March 2026 (29th): 02:00 -> 03:00; Monday 30th is CEST
        (utc(2026, 3, 30, 6, 0), True),  # 08:00 CEST
        (utc(2026, 3, 30, 5, 59), False),  # 07:59 CEST (would be 06:59 in CET)
        (utc(2026, 3, 28, 7, 0), True),  # Saturday before, 08:00 CET
        (utc(2026, 3, 28, 6, 59), False),
        (utc(2026, 3, 28, 18, 59), True),  # 19:59 CET
        (utc(2026, 3, 28, 19, 0), False),
        # last Sunday of October 2026 (25th): 03:00 -> 02:00; Saturday 24th CEST, Monday 26th CET
        (utc(2026, 10, 24, 6, 0), True),
        (utc(2026, 10, 24, 17, 59), True),  # 19:59 CEST
        (utc(2026, 10, 24, 18, 0), False),  # 20:00 CEST
        (utc(2026, 10, 26, 6, 30), False),  # 07:30 CET
        (utc(2026, 10, 26, 7, 0), True),  # 08:00 CET
        (utc(2026, 10, 25, 12, 0), False),  # the DST Sunday itself
    ],
)
def test_in_window(t: datetime, inside: bool) -> None:
    assert in_window(t, P) is inside


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        in_window(datetime(2026, 1, 5, 10), P)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (paris(2026, 1, 5, 10), paris(2026, 1, 5, 10)),  # inside: itself
        (paris(2026, 1, 5, 6), paris(2026, 1, 5, 8)),  # early morning: same day
        (paris(2026, 1, 5, 20), paris(2026, 1, 6, 8)),  # evening: next day
        (paris(2026, 1, 10, 20, 30), paris(2026, 1, 12, 8)),  # Saturday evening -> Monday
        (paris(2026, 1, 11, 9), paris(2026, 1, 12, 8)),  # Sunday -> Monday
        (paris(2026, 3, 28, 21), at_local(date(2026, 3, 30), time(8), P)),  # across spring DST
        (paris(2026, 10, 24, 21), at_local(date(2026, 10, 26), time(8), P)),  # across autumn DST
    ],
)
def test_next_window_open(t: datetime, expected: datetime) -> None:
    got = next_window_open(t, P)
    assert got == expected
    assert in_window(got, P)


def test_next_window_open_across_dst_is_0800_local() -> None:
    assert next_window_open(paris(2026, 3, 28, 21), P) == utc(2026, 3, 30, 6)  # CEST: UTC+2
    assert next_window_open(paris(2026, 10, 24, 21), P) == utc(2026, 10, 26, 7)  # CET: UTC+1


def test_next_window_open_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="empty"):
        next_window_open(paris(2026, 1, 11, 9), Policy(window_days=frozenset()))


def test_custom_window() -> None:
    p = Policy(window_start=time(9, 30), window_end=time(17), window_days=frozenset({0, 2, 4}))
    assert next_window_open(paris(2026, 1, 6, 10), p) == paris(2026, 1, 7, 9, 30)  # Tue -> Wed
    assert not in_window(paris(2026, 1, 7, 17), p)


def test_at_local_handles_dst() -> None:
    assert at_local(date(2026, 3, 29), time(8), P) == utc(2026, 3, 29, 6)
    assert at_local(date(2026, 3, 28), time(8), P) == utc(2026, 3, 28, 7)
    assert at_local(date(2026, 3, 29), time(2, 30), P) == utc(2026, 3, 29, 1, 30)  # nonexistent: old offset
    assert at_local(date(2026, 10, 25), time(2, 30), P) == utc(2026, 10, 25, 0, 30)  # ambiguous: first


def test_local_date_is_paris_date() -> None:
    assert local_date(utc(2026, 1, 5, 23, 30), P) == date(2026, 1, 6)
    assert local_date(utc(2026, 7, 5, 21, 59), P) == date(2026, 7, 5)
    assert local_date(utc(2026, 7, 5, 22, 0), P) == date(2026, 7, 6)


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2026, 1, 5), 7, paris(2026, 1, 12, 8)),  # Monday + 7: Monday 08:00
        (date(2026, 1, 5), 6, paris(2026, 1, 12, 8)),  # Sunday -> Monday
        (date(2026, 1, 5), 0, paris(2026, 1, 5, 8)),
        (date(2026, 3, 15), 14, utc(2026, 3, 30, 6)),  # Sunday 29th (DST) -> Monday 30th 08:00 CEST
        (date(2026, 3, 8), 20, paris(2026, 3, 28, 8)),  # counts calendar days, not 24 h periods
        (date(2026, 10, 4), 21, paris(2026, 10, 26, 8)),  # DST Sunday 25th -> Monday 26th CET
    ],
)
def test_day_n(start: date, n: int, expected: datetime) -> None:
    assert day_n(start, n, P) == expected


def test_due_on_sunday_is_monday_0800() -> None:
    assert due_on(date(2026, 7, 5), P) == paris(2026, 7, 6, 8)
    assert due_on(date(2026, 7, 4), P) == paris(2026, 7, 4, 8)


@pytest.mark.parametrize(
    ("d", "n", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # leap year
        (date(2100, 1, 31), 1, date(2100, 2, 28)),  # not a leap year
        (date(2000, 1, 31), 1, date(2000, 2, 29)),  # leap year
        (date(2026, 1, 15), 6, date(2026, 7, 15)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 12, 1), 1, date(2027, 1, 1)),
        (date(2026, 5, 10), 0, date(2026, 5, 10)),
        (date(2026, 5, 10), 24, date(2028, 5, 10)),
        (date(2026, 5, 31), -3, date(2026, 2, 28)),
    ],
)
def test_add_months(d: date, n: int, expected: date) -> None:
    assert add_months(d, n) == expected


def test_window_over_a_whole_week_has_72_hours() -> None:
    t, inside = paris(2026, 3, 23, 0), 0  # the week of the March DST change
    while t < paris(2026, 3, 30, 0):
        inside += in_window(t, P)
        t = (t.astimezone(UTC) + timedelta(minutes=30)).astimezone(PARIS)
    assert inside == 6 * 12 * 2
