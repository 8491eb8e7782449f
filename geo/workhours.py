"""Working-hour arithmetic: due times of incidents whose time limit is in working hours.

An incident category's time limit (办理时限) counts working hours only: by default
Monday to Friday, 08:30–12:00 and 14:30–17:30, Asia/Shanghai local time (6.5 hours a
day). A :class:`WorkCalendar` holds those periods, the working weekdays, the time zone,
and optional holidays (法定节假日, days off that would be working days) and extra working
days (调休 make-up days, working days that would be off).

Semantics
---------
Let ``W(a, b)`` be the working time between instants ``a`` and ``b`` (the length of
``[a, b]`` that falls in working periods of working days, in local time).

* :meth:`WorkCalendar.add` ``(start, h)`` is the *earliest* instant ``T >= start`` with
  ``W(start, T) = h``. A limit that ends exactly at a period's end is due at that end
  (12:00), not at the next period's start; ``add(start, 0) == start``. It follows that
  ``add(start, h) >= start`` and ``add(add(start, h1), h2) == add(start, h1 + h2)``.
* :meth:`WorkCalendar.between` ``(a, b)`` is ``W(a, b)`` in hours (negative when
  ``b < a``); ``between(s, add(s, h)) == h``.

Times are timezone-aware ``datetime`` (any zone; naive ones are refused) or, for the
vectorised :meth:`WorkCalendar.add_many`, anything :func:`pandas.DatetimeIndex` reads
with a zone. Results are in the calendar's zone (``add``) or UTC (``add_many``).
Working time is counted to the microsecond, exactly, in integer arithmetic: hours are
rounded to whole microseconds once.

How: with local time as integer microseconds since 1970-01-01 local, the cumulative
working time from a fixed origin is ``C(t) = working_days_before(day) * W_day +
worked_today(time_of_day)``; ``add`` inverts ``C``. Working days before a day come from
the weekday pattern in closed form, corrected by the holidays and extra days before it
(binary search), so every step is a few numpy operations on whole arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_PERIODS",
    "DEFAULT_WEEKDAYS",
    "WEEKDAY_NAMES",
    "WorkCalendar",
]

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_PERIODS = "08:30-12:00,14:30-17:30"
DEFAULT_WEEKDAYS = "mon-fri"
DEFAULT_TIMEZONE = "Asia/Shanghai"
# 1970-01-01 (day 0) was a Thursday: weekday(day) = (day + 3) % 7, Monday = 0.
_WEEKDAY_OF_DAY_0 = 3
_EPOCH = datetime(1970, 1, 1)

IntArray = NDArray[np.int64]

_TIME = r"(\d{1,2}):(\d{2})"
_PERIOD_RE = re.compile(rf"^\s*{_TIME}\s*-\s*{_TIME}\s*$")


def _minutes(hours: str, minutes: str, text: str) -> int:
    h, m = int(hours), int(minutes)
    if m >= 60 or h > 24 or (h == 24 and m):
        raise ValueError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return h * 60 + m


def parse_periods(text: str) -> tuple[tuple[int, int], ...]:
    """``"08:30-12:00,14:30-17:30"`` as ((start, end), ...) in microseconds after local
    midnight; periods must be non-empty, sorted and apart."""
    periods = []
    for part in text.split(","):
        match = _PERIOD_RE.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a period like 08:30-12:00")
        start = _minutes(match[1], match[2], part)
        end = _minutes(match[3], match[4], part)
        periods.append((start * 60 * US_PER_SECOND, end * 60 * US_PER_SECOND))
    return tuple(periods)


def parse_weekdays(text: str) -> frozenset[int]:
    """``"mon-fri"``, ``"mon,wed,sat"`` or ``"mon-fri,sun"`` as weekday numbers (Monday 0)."""
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        ends = part.split("-")
        if not part or len(ends) > 2 or any(end not in WEEKDAY_NAMES for end in ends):
            raise ValueError(f"{part!r} is not a weekday or range like mon-fri")
        first, last = WEEKDAY_NAMES.index(ends[0]), WEEKDAY_NAMES.index(ends[-1])
        if last < first:
            raise ValueError(f"{part!r}: a weekday range runs forward (mon-fri)")
        days.update(range(first, last + 1))
    return frozenset(days)


def parse_dates(text: str) -> frozenset[date]:
    """``"2025-10-01..2025-10-08,2025-12-25"`` (single days and inclusive ranges)."""
    days: set[date] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        ends = part.split("..")
        try:
            first, last = date.fromisoformat(ends[0]), date.fromisoformat(ends[-1])
        except ValueError:
            example = "2025-10-01..2025-10-08"
            raise ValueError(f"{part!r} is not a date or range like {example}") from None
        if len(ends) > 2 or last < first:
            raise ValueError(f"{part!r} is not a date or forward range")
        days.update(first + timedelta(days=k) for k in range((last - first).days + 1))
    return frozenset(days)


def _day_number(day: date) -> int:
    return (day - _EPOCH.date()).days


@dataclass(frozen=True)
class WorkCalendar:
    """Working periods of working days in one time zone (module docstring).

    ``periods``: (start, end) pairs in microseconds after local midnight, sorted and
    disjoint; ``weekdays``: working weekdays (Monday 0); ``holidays``: dates off that
    would be working days; ``extra_workdays``: dates worked that would be off.
    """

    periods: tuple[tuple[int, int], ...] = field(
        default_factory=lambda: parse_periods(DEFAULT_PERIODS)
    )
    weekdays: frozenset[int] = frozenset(range(5))
    timezone: str = DEFAULT_TIMEZONE
    holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("a working day needs at least one period")
        end_before = 0
        for start, end in self.periods:
            if not 0 <= start < end <= US_PER_DAY:
                raise ValueError("each working period must be non-empty and within the day")
            if start < end_before:
                raise ValueError("working periods must be in order and must not overlap")
            end_before = end
        if not self.weekdays:
            raise ValueError("a calendar needs at least one working weekday")
        if not all(0 <= d <= 6 for d in self.weekdays):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        if self.holidays & self.extra_workdays:
            raise ValueError("a date cannot be both a holiday and an extra working day")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None

    @classmethod
    def parse(
        cls,
        periods: str = DEFAULT_PERIODS,
        weekdays: str = DEFAULT_WEEKDAYS,
        timezone: str = DEFAULT_TIMEZONE,
        holidays: str = "",
        extra_workdays: str = "",
    ) -> WorkCalendar:
        """A calendar from its text form (the settings' form); ValueError says what is wrong."""
        return cls(
            parse_periods(periods),
            parse_weekdays(weekdays),
            timezone,
            parse_dates(holidays),
            parse_dates(extra_workdays),
        )

    # -- derived tables ---------------------------------------------------------------
    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _tables(self) -> dict[str, Any]:
        starts = np.array([s for s, _ in self.periods], dtype=np.int64)
        ends = np.array([e for _, e in self.periods], dtype=np.int64)
        lengths = ends - starts
        pattern = np.array([d in self.weekdays for d in range(7)])
        # Days off that the pattern would work, and worked days it would not.
        holidays = np.array(
            sorted(
                n for n in map(_day_number, self.holidays) if pattern[(n + _WEEKDAY_OF_DAY_0) % 7]
            ),
            dtype=np.int64,
        )
        extras = np.array(
            sorted(
                n
                for n in map(_day_number, self.extra_workdays)
                if not pattern[(n + _WEEKDAY_OF_DAY_0) % 7]
            ),
            dtype=np.int64,
        )
        overrides = np.union1d(holidays, extras)
        return {
            "starts": starts,
            "lengths": lengths,
            "cum_before": np.cumsum(lengths) - lengths,
            "cum_end": np.cumsum(lengths),
            "day_us": int(lengths.sum()),
            "pattern": pattern,
            # pattern working days among weekdays 0..j-1, j = 0..7
            "prefix": np.concatenate([[0], np.cumsum(pattern)]).astype(np.int64),
            "pattern_days": np.flatnonzero(pattern).astype(np.int64),
            "holidays": holidays,
            "extras": extras,
            "overrides": overrides,
        }

    @property
    def hours_per_day(self) -> float:
        """Working hours in one working day."""
        return self._tables["day_us"] / US_PER_HOUR

    # -- the integer core: local microseconds ----------------------------------------------
    def _base(self, day: IntArray) -> IntArray:
        """Pattern working days in [Monday 1969-12-29, day) (negative before it)."""
        t = self._tables
        m = day + _WEEKDAY_OF_DAY_0
        return (m // 7) * len(t["pattern_days"]) + t["prefix"][m % 7]

    def _base_inverse(self, k: IntArray) -> IntArray:
        """The pattern working day ``d`` with ``_base(d) == k``."""
        pattern_days = self._tables["pattern_days"]
        n = len(pattern_days)
        return (k // n) * 7 + pattern_days[k % n] - _WEEKDAY_OF_DAY_0

    def _adjust(self, day: IntArray) -> IntArray:
        t = self._tables
        return np.searchsorted(t["extras"], day, "left") - np.searchsorted(
            t["holidays"], day, "left"
        )

    def _count(self, day: IntArray) -> IntArray:
        """Working days in [origin, day): the pattern's, corrected by the overrides."""
        return self._base(day) + self._adjust(day)

    def _is_workday(self, day: IntArray) -> NDArray[np.bool_]:
        t = self._tables
        worked = t["pattern"][(day + _WEEKDAY_OF_DAY_0) % 7]
        if len(t["overrides"]):
            worked = (worked & ~np.isin(day, t["holidays"])) | np.isin(day, t["extras"])
        return worked

    def _day_of(self, k: IntArray) -> IntArray:
        """The working day ``d`` with ``_count(d) == k``."""
        t = self._tables
        overrides = t["overrides"]
        if not len(overrides):
            return self._base_inverse(k)
        lo, hi = int(overrides[0]), int(overrides[-1])
        window = np.arange(lo, hi + 1, dtype=np.int64)
        worked = window[self._is_workday(window)]
        k_lo = int(self._count(np.array([lo]))[0])
        k_hi = k_lo + len(worked)
        total_adjust = len(t["extras"]) - len(t["holidays"])
        out = np.empty_like(k)
        before, after = k < k_lo, k >= k_hi
        inside = ~(before | after)
        if before.any():
            out[before] = self._base_inverse(k[before])
        if after.any():
            out[after] = self._base_inverse(k[after] - total_adjust)
        if inside.any():
            out[inside] = worked[k[inside] - k_lo]
        return out

    def _cumulative(self, local_us: IntArray) -> IntArray:
        """Working microseconds from the origin to each local instant."""
        t = self._tables
        day = local_us // US_PER_DAY
        time_of_day = local_us - day * US_PER_DAY
        worked_today = np.clip(time_of_day[:, None] - t["starts"], 0, t["lengths"]).sum(axis=1)
        worked_today = np.where(self._is_workday(day), worked_today, 0)
        return self._count(day) * t["day_us"] + worked_today

    def _instant(self, cumulative: IntArray) -> IntArray:
        """The earliest local instant whose cumulative working time is ``cumulative``."""
        t = self._tables
        k = (cumulative - 1) // t["day_us"]  # so that the remainder is in (0, day]
        rest = cumulative - k * t["day_us"]
        period = np.searchsorted(t["cum_end"], rest, "left")
        time_of_day = t["starts"][period] + rest - t["cum_before"][period]
        return self._day_of(k) * US_PER_DAY + time_of_day

    def add_local(self, local_us: IntArray, work_us: IntArray) -> IntArray:
        """``add`` on local microseconds (integer arrays; ``work_us >= 0``)."""
        local_us = np.asarray(local_us, dtype=np.int64)
        work_us = np.asarray(work_us, dtype=np.int64)
        if (work_us < 0).any():
            raise ValueError("working time to add must not be negative")
        out = local_us.copy()
        positive = work_us > 0
        if positive.any():
            target = self._cumulative(local_us[positive]) + work_us[positive]
            out[positive] = self._instant(target)
        return out

    # -- datetimes ---------------------------------------------------------------------
    def _to_local_us(self, moment: datetime) -> int:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("working-hour arithmetic needs timezone-aware datetimes")
        local = moment.astimezone(self.zone).replace(tzinfo=None)
        delta = local - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds

    def _from_local_us(self, local_us: int) -> datetime:
        return (_EPOCH + timedelta(microseconds=int(local_us))).replace(tzinfo=self.zone)

    def add(self, start: datetime, hours: float) -> datetime:
        """The due instant of a limit of ``hours`` working hours counted from ``start``
        (tz-aware), in the calendar's zone."""
        if not hours >= 0:
            raise ValueError(f"working hours must be a number >= 0, not {hours!r}")
        local = self._to_local_us(start)
        work = round(hours * US_PER_HOUR)
        if work == 0:
            return start.astimezone(self.zone)
        return self._from_local_us(self.add_local(np.array([local]), np.array([work]))[0])

    def between(self, start: datetime, end: datetime) -> float:
        """Working hours from ``start`` to ``end`` (both tz-aware); negative if end < start."""
        a, b = self._cumulative(np.array([self._to_local_us(start), self._to_local_us(end)]))
        return float(b - a) / US_PER_HOUR

    def is_working_time(self, moment: datetime) -> bool:
        """True inside a working period of a working day (start included, end excluded)."""
        local = self._to_local_us(moment)
        after = self.add_local(np.array([local]), np.array([1]))[0]
        return bool(after == local + 1)

    def add_many(self, starts: Any, hours: Any) -> pd.DatetimeIndex:
        """:meth:`add` for arrays: ``starts`` tz-aware (DatetimeIndex, Series, array of
        aware datetimes), ``hours`` numbers (NaN or NaT in, NaT out); UTC out."""
        index = pd.DatetimeIndex(starts)
        if index.tz is None:
            raise ValueError("working-hour arithmetic needs timezone-aware datetimes")
        hours = np.broadcast_to(np.asarray(hours, dtype=np.float64), index.shape)
        missing = index.isna() | ~np.isfinite(hours)
        if (hours[~missing] < 0).any():
            raise ValueError("working hours must not be negative")
        local = index.tz_convert(self.timezone).tz_localize(None).as_unit("us")
        local_us = local.asi8.copy()
        work = np.where(missing, 0, np.round(hours * US_PER_HOUR)).astype(np.int64)
        local_us[missing] = 0
        due = self.add_local(local_us, work)
        out = pd.DatetimeIndex(due.astype("datetime64[us]")).tz_localize(
            self.timezone, ambiguous=np.ones(len(due), dtype=bool), nonexistent="shift_forward"
        )
        out = out.tz_convert(UTC)
        return out.where(~missing, pd.NaT)

    def hours_between_many(self, starts: Any, ends: Any) -> NDArray[np.float64]:
        """:meth:`between` for arrays of tz-aware instants (NaT in, NaN out)."""
        a, b = pd.DatetimeIndex(starts), pd.DatetimeIndex(ends)
        if a.tz is None or b.tz is None:
            raise ValueError("working-hour arithmetic needs timezone-aware datetimes")
        missing = a.isna() | b.isna()
        ua = a.tz_convert(self.timezone).tz_localize(None).as_unit("us").asi8.copy()
        ub = b.tz_convert(self.timezone).tz_localize(None).as_unit("us").asi8.copy()
        ua[missing] = 0
        ub[missing] = 0
        hours = (self._cumulative(ub) - self._cumulative(ua)) / US_PER_HOUR
        return np.where(missing, np.nan, hours)

    def describe(self) -> dict[str, Any]:
        """The calendar in its text form (for API answers and logs)."""
        return {
            "periods": ",".join(
                f"{s // 60_000_000 // 60:02d}:{s // 60_000_000 % 60:02d}-"
                f"{e // 60_000_000 // 60:02d}:{e // 60_000_000 % 60:02d}"
                for s, e in self.periods
            ),
            "weekdays": ",".join(WEEKDAY_NAMES[d] for d in sorted(self.weekdays)),
            "timezone": self.timezone,
            "holidays": sorted(d.isoformat() for d in self.holidays),
            "extra_workdays": sorted(d.isoformat() for d in self.extra_workdays),
            "hours_per_day": self.hours_per_day,
        }
