"""Working-hour arithmetic (geo.workhours): fixed cases and properties against an oracle."""

import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.workhours import WorkCalendar, parse_dates, parse_periods, parse_weekdays

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEFAULT = WorkCalendar()
# National Day week off, with the Saturday after it worked (调休).
HOLIDAYS = WorkCalendar.parse(holidays="2025-10-01..2025-10-08", extra_workdays="2025-10-11")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        # inside a morning
        (at(2025, 1, 6, 9, 0), 1, at(2025, 1, 6, 10, 0)),
        # ends exactly at noon: due at 12:00, not at 14:30
        (at(2025, 1, 6, 11, 0), 1, at(2025, 1, 6, 12, 0)),
        # across lunch
        (at(2025, 1, 6, 11, 30), 1, at(2025, 1, 6, 15, 0)),
        (at(2025, 1, 6, 12, 45), 0.5, at(2025, 1, 6, 15, 0)),
        # reported before work starts
        (at(2025, 1, 6, 7, 10), 2, at(2025, 1, 6, 10, 30)),
        # across the evening into the next morning
        (at(2025, 1, 6, 17, 0), 1, at(2025, 1, 7, 9, 0)),
        (at(2025, 1, 6, 22, 0), 4, at(2025, 1, 7, 15, 0)),
        # across the weekend: Friday 17:00 + 1 h is Monday 09:00
        (at(2025, 1, 10, 17, 0), 1, at(2025, 1, 13, 9, 0)),
        # reported on a Saturday
        (at(2025, 1, 11, 10, 0), 4, at(2025, 1, 13, 15, 0)),
        # a full working day is 6.5 h: same time next working day
        (at(2025, 1, 6, 9, 0), 6.5, at(2025, 1, 7, 9, 0)),
        # 40 h (disputes) from Monday 08:00: six days and one hour
        (at(2025, 1, 6, 8, 0), 40, at(2025, 1, 14, 9, 30)),
        # zero hours: the start itself, even off hours
        (at(2025, 1, 11, 3, 0), 0, at(2025, 1, 11, 3, 0)),
        # a start given in UTC: 01:00Z is 09:00 in Shanghai
        (datetime(2025, 1, 6, 1, 0, tzinfo=UTC), 1, at(2025, 1, 6, 10, 0)),
    ],
)
def test_due_times_of_the_default_calendar(start, hours, due):
    assert DEFAULT.add(start, hours) == due
    assert DEFAULT.between(start, due) == pytest.approx(hours)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        # 2025-09-30 (Tue) 17:00 + 1 h: 10-01..10-08 are off, Thursday 10-09 is next
        (at(2025, 9, 30, 17, 0), 1, at(2025, 10, 9, 9, 0)),
        # Friday 10-10 16:30 + 2 h: 1 h that day, 1 h on the worked Saturday 10-11
        (at(2025, 10, 10, 16, 30), 2, at(2025, 10, 11, 9, 30)),
        # a start on a holiday counts from the next working day
        (at(2025, 10, 3, 10, 0), 3.5, at(2025, 10, 9, 12, 0)),
    ],
)
def test_holidays_and_extra_working_days(start, hours, due):
    assert HOLIDAYS.add(start, hours) == due


def test_parsing_and_refusals():
    assert parse_periods("8:30-12:00, 14:30-17:30") == DEFAULT.periods
    assert parse_weekdays("mon-fri") == frozenset(range(5))
    assert parse_weekdays("mon,wed,sat-sun") == frozenset({0, 2, 5, 6})
    assert parse_dates("2025-01-01,2025-01-28..2025-01-30") == {
        date(2025, 1, 1),
        date(2025, 1, 28),
        date(2025, 1, 29),
        date(2025, 1, 30),
    }
    for bad in ("8-12", "25:00-26:00", "08:30-12:60"):
        with pytest.raises(ValueError):
            parse_periods(bad)
    with pytest.raises(ValueError):
        WorkCalendar.parse(periods="14:00-18:00,08:00-12:00")  # out of order
    with pytest.raises(ValueError):
        WorkCalendar.parse(periods="08:00-12:00,11:00-13:00")  # overlapping
    with pytest.raises(ValueError):
        WorkCalendar.parse(weekdays="fri-mon")
    with pytest.raises(ValueError):
        WorkCalendar.parse(timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        WorkCalendar.parse(holidays="2025-01-01", extra_workdays="2025-01-01")
    with pytest.raises(ValueError):
        DEFAULT.add(datetime(2025, 1, 6, 9), 1)  # naive
    with pytest.raises(ValueError):
        DEFAULT.add(at(2025, 1, 6, 9), -1)


def test_a_whole_day_calendar_in_another_zone():
    utc_days = WorkCalendar.parse("00:00-24:00", "mon-sun", "UTC")
    start = datetime(2025, 3, 1, 5, 0, tzinfo=UTC)
    assert utc_days.add(start, 30) == start + timedelta(hours=30)
    assert utc_days.hours_per_day == 24


# -- properties -------------------------------------------------------------------------
def oracle(calendar: WorkCalendar, start: datetime, minutes: int) -> datetime:
    """Step minute by minute from a whole-minute start: slow and obviously right."""
    if minutes == 0:
        return start
    local = start.astimezone(calendar.zone).replace(tzinfo=None)
    periods = [(s // 60_000_000, e // 60_000_000) for s, e in calendar.periods]
    done = 0
    while True:
        day = local.date()
        worked = (day.weekday() in calendar.weekdays and day not in calendar.holidays) or (
            day in calendar.extra_workdays
        )
        minute = local.hour * 60 + local.minute
        if worked and any(s <= minute < e for s, e in periods):
            done += 1
        local += timedelta(minutes=1)
        if done == minutes:
            return local.replace(tzinfo=calendar.zone)


starts = st.datetimes(
    min_value=datetime(2024, 12, 20), max_value=datetime(2026, 1, 10), timezones=st.just(SHANGHAI)
)
minute_starts = starts.map(lambda d: d.replace(second=0, microsecond=0))
calendars = st.sampled_from(
    [
        DEFAULT,
        HOLIDAYS,
        WorkCalendar.parse("09:00-17:00", "mon-sat"),
        WorkCalendar.parse("08:00-08:30,13:00-13:01,20:00-24:00", "tue,thu,sun"),
    ]
)
hours = st.integers(0, 200 * 60).map(lambda minutes: minutes / 60)
# No per-example deadline: other work on a shared machine must not fail these.
relaxed = settings(deadline=None)


@relaxed
@given(calendars, starts, hours)
def test_due_is_never_before_the_start(calendar, start, h):
    due = calendar.add(start, h)
    assert due >= start
    assert (due > start) or h == 0


@relaxed
@given(calendars, starts, hours, hours)
def test_adding_twice_is_adding_the_sum(calendar, start, h1, h2):
    assert calendar.add(calendar.add(start, h1), h2) == calendar.add(start, h1 + h2)


@relaxed
@given(calendars, starts, hours)
def test_between_inverts_add(calendar, start, h):
    assert calendar.between(start, calendar.add(start, h)) == pytest.approx(h, abs=1e-9)


@relaxed
@given(calendars, starts, starts, hours)
def test_later_starts_are_never_due_earlier(calendar, a, b, h):
    a, b = min(a, b), max(a, b)
    assert calendar.add(a, h) <= calendar.add(b, h)


@settings(max_examples=60, deadline=None)
@given(calendars, minute_starts, st.integers(0, 3 * 60 * 24))
def test_agrees_with_a_minute_by_minute_oracle(calendar, start, minutes):
    assert calendar.add(start, minutes / 60) == oracle(calendar, start, minutes)


@relaxed
@given(
    st.dates(date(2024, 1, 1), date(2026, 12, 31)).filter(lambda d: d.weekday() < 5),
    st.integers(8 * 60 + 30, 12 * 60 - 1),
    st.integers(0, 210),
)
def test_a_limit_within_one_morning_stays_in_it(day, start_minute, minutes):
    start = at(day.year, day.month, day.day) + timedelta(minutes=start_minute)
    minutes = min(minutes, 12 * 60 - start_minute)
    due = DEFAULT.add(start, minutes / 60)
    assert due == start + timedelta(minutes=minutes)
    assert due.date() == day and due.hour * 60 + due.minute <= 12 * 60


@relaxed
@given(calendars, starts, hours.filter(lambda h: h > 0))
def test_a_positive_limit_ends_inside_a_working_period_or_at_its_end(calendar, start, h):
    due = calendar.add(start, h)
    just_before = due - timedelta(microseconds=1)
    assert calendar.is_working_time(just_before)


@relaxed
@given(calendars, st.lists(st.tuples(starts, hours), min_size=1, max_size=30))
def test_the_vectorised_form_matches_the_scalar_one(calendar, pairs):
    when = pd.DatetimeIndex([s for s, _ in pairs])
    h = np.array([h for _, h in pairs])
    expected = [calendar.add(s, x) for s, x in pairs]
    assert list(calendar.add_many(when, h)) == expected
    back = calendar.hours_between_many(when, calendar.add_many(when, h))
    np.testing.assert_allclose(back, h, atol=1e-9)


def test_the_vectorised_form_passes_missing_values_through():
    when = pd.DatetimeIndex([at(2025, 1, 6, 9), pd.NaT, at(2025, 1, 6, 9)])
    due = DEFAULT.add_many(when, [1.0, 1.0, np.nan])
    assert due[0] == at(2025, 1, 6, 10) and pd.isna(due[1]) and pd.isna(due[2])
    with pytest.raises(ValueError):
        DEFAULT.add_many(pd.DatetimeIndex([datetime(2025, 1, 6, 9)]), [1.0])


def test_a_year_of_due_times_at_once_is_fast():
    rng = np.random.default_rng(1)
    when = pd.DatetimeIndex(
        pd.Timestamp("2025-01-01", tz=SHANGHAI)
        + pd.to_timedelta(rng.integers(0, 365 * 86_400, 82_000), unit="s")
    )
    limits = rng.choice([4.0, 8.0, 16.0, 24.0, 40.0, 80.0], 82_000)
    begin = time.perf_counter()
    due = HOLIDAYS.add_many(when, limits)
    assert time.perf_counter() - begin < 1.0
    assert (due >= when).all()
