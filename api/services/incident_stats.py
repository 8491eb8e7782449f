"""Incident statistics per grid, village, township or county: one scan, numpy, a cache.

Definitions (every count is over incidents reported in [from, to), not deleted):

- `counts`: incidents by current status;
- `received` (受理): all but the rejected ones — a case rejected at intake (not the grid
  platform's business, a duplicate) is not one to handle; cases still waiting for
  acceptance count, so a backlog shows;
- `handled` (调处): reached `feedback` at least once (the `handled` flag, kept when
  verification sends a case back);
- `handling_rate` (调处率) = handled / received;
- `succeeded` (成功): closed or evaluated without any `return` event (first-time right);
- `success_rate` (成功率) = succeeded / handled;
- `median_hours_to_close`: median of closed_at - reported_at over the closed (and
  evaluated) ones, in calendar hours;
- `overdue`: due_at has passed (now) and the status is not closed, evaluated or
  rejected;
- `in_coverage_gap`: located in no detect-level camera FOV (the precomputed `in_gap`
  flag); `coverage_unknown`: no flag yet (no FOVs computed, or no location).

Areas come from the grid code prefix (grid 15 digits, village 12, township 9,
county 6), so no spatial join is needed; incidents without a grid form `unassigned`.
Rates are None when their denominator is 0.

How: each incident keeps what it contributes — grid code as an integer, state, flags,
seconds to close, due time — packed in `stats_record` (a generated column, migration
0007); one scan of the index `incident_stats_record_idx` (index-only once vacuum has
marked the table's pages all-visible, as autovacuum does) concatenates the records of
the filters into a single bytea (no per-row expression at read time, no per-row Python
object, no per-group ordered-set aggregate), and numpy groups (areas are integer
divisions of the grid code), counts, compares due times with the transaction's now()
and takes the medians.

Served answers are cached as JSON per request shape (`incident_stats_json`): migration
0007 has every statement writing `incident`, `grid` or `admin_area` bump a change
marker in its transaction, and an answer is reused only in a snapshot that sees the
same marker, and only until the next open incident of its filters falls due (which
changes `overdue` with no write at all) — so a cached answer is exactly what computing
afresh would give. Computing afresh reuses the JSON of each group whose figures and name
are those of the previous answer (`GroupsJSON`): after one event only one grid, village,
township and county are written again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import numpy as np
import orjson
from sqlalchemy import Connection, Engine

from api.responses import ORJSON_OPTIONS
from api.services.incidents import STATES, statement

if TYPE_CHECKING:
    from api.services.lookup import GridSnapshot

LEVELS: dict[str, int] = {"grid": 15, "village": 12, "township": 9, "county": 6}
FINISHED = ("closed", "evaluated", "rejected")
CLOSED = ("closed", "evaluated")
STATE_INDEX = {state: i for i, state in enumerate(STATES)}
UNASSIGNED = -1  # the area number of incidents without a grid
# `incident.stats_record` (migration 0007): grid code as an integer, status numbered as
# in STATES, flags, hours to close as seconds (NaN: not closed) and due time in
# microseconds since POSTGRES_EPOCH (INT64_MAX: none), in network byte order.
RECORD = np.dtype(
    [("grid", ">i8"), ("state", ">i2"), ("flags", ">i2"), ("seconds", ">f8"), ("due", ">i8")]
)
HANDLED, NO_RETURN, IN_GAP, GAP_UNKNOWN = 1, 2, 4, 8
POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
GRID_DIGITS = 15

# {where}: fixed clauses with psycopg's placeholders, written into the text so that the
# planner sees the bounds; the index incident_stats_record_idx covers them and the record.
RECORDS_SQL = """
SELECT string_agg(stats_record, ''::bytea), now() FROM incident
WHERE deleted_at IS NULL{where}
"""
AREA_NAMES_SQL = "SELECT code, name FROM admin_area WHERE code = ANY(:codes)"
GRID_NAMES_SQL = """
SELECT DISTINCT ON (code) code, name FROM grid WHERE code = ANY(:codes)
ORDER BY code, valid_from DESC
"""
# The counters' sum, paired with their table's file node: a TRUNCATE or a table made
# anew (the migration run again, a restore) changes it, so counters that start over
# cannot meet an answer of before.
MARKER_SQL = """
SELECT pg_relation_filenode('incident_stats_marker'), sum(version)::int8, now()
FROM incident_stats_marker
"""
DEFINITIONS = {
    "received": "reported in the period, not rejected",
    "handled": "reached feedback at least once (调处)",
    "handling_rate": "handled / received (调处率)",
    "succeeded": "closed or evaluated without any return (成功)",
    "success_rate": "succeeded / handled (成功率)",
    "median_hours_to_close": "median calendar hours from report to close",
    "overdue": "due time passed, not closed, evaluated or rejected (now)",
    "in_coverage_gap": "located in no detect-level camera field of view",
}
# How the JSON of each group begins (GroupsJSON.of).
GROUP_START = b'{"code":"'
# Cached answers per server process and database: a grid-level answer of the demo year
# is about 4 MB of JSON.
CACHE_MAX_BYTES = 32 * 2**20


def medians(group: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The median of `seconds` per distinct `group` (non-negative integers): the sorted
    groups and their medians, interpolated like percentile_cont(0.5): the mean of the
    two middle values of an even count."""
    if group.size == 0:
        return group, seconds
    order = np.argsort(seconds)
    if group.max() < 2**16:
        # a stable sort of 16-bit keys is a radix sort: linear, unlike a lexsort
        order = order[np.argsort(group[order].astype(np.uint16), kind="stable")]
    else:
        order = np.lexsort((seconds, group))
    group, seconds = group[order], seconds[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    counts = np.diff(np.r_[starts, group.size])
    low, high = starts + (counts - 1) // 2, starts + counts // 2
    return group[starts], (seconds[low] + seconds[high]) / 2.0


def _figures(
    counts: np.ndarray, sums: np.ndarray, median_s: np.ndarray, labels: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The answer's figures per row of `counts` (areas x states), `sums` (5 x areas:
    handled, succeeded, overdue, in gap, gap unknown) and `median_s` (NaN: none), each
    after its `labels` entry."""
    total = counts.sum(axis=1).tolist()
    rejected = counts[:, STATE_INDEX["rejected"]].tolist()
    closed_n = (counts[:, STATE_INDEX["closed"]] + counts[:, STATE_INDEX["evaluated"]]).tolist()
    handled, succeeded, overdue, gap, unknown = sums.tolist()
    hours = np.round(median_s / 3600.0, 2).tolist()
    count_rows = counts.tolist()
    # Ten thousand grids share few distinct (numerator, denominator) pairs.
    rates: dict[tuple[int, int], float | None] = {}

    def rate(numerator: int, denominator: int) -> float | None:
        pair = (numerator, denominator)
        if pair not in rates:
            rates[pair] = round(numerator / denominator, 4) if denominator else None
        return rates[pair]

    out = []
    for i in range(len(total)):
        received = total[i] - rejected[i]
        out.append(
            {
                **labels[i],
                "total": total[i],
                "counts": dict(zip(STATES, count_rows[i], strict=True)),
                "received": received,
                "handled": handled[i],
                "handling_rate": rate(handled[i], received),
                "succeeded": succeeded[i],
                "success_rate": rate(succeeded[i], handled[i]),
                "closed": closed_n[i],
                "median_hours_to_close": None if hours[i] != hours[i] else hours[i],
                "overdue": overdue[i],
                "in_coverage_gap": gap[i],
                "coverage_unknown": unknown[i],
            }
        )
    return out


def _microseconds(moment: datetime) -> int:
    """`moment` as PostgreSQL stores a timestamptz: microseconds since 2000-01-01 UTC."""
    return (moment - POSTGRES_EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Measures:
    """The figures of one request per slot: 0 is everything, then the areas in code
    order, then the incidents without a grid when there are any."""

    areas: np.ndarray  # the areas' codes as integers, sorted
    codes: list[str]
    names: list[str | None]
    counts: np.ndarray  # slots x STATES
    sums: np.ndarray  # 5 x slots: handled, succeeded, overdue, in a gap, gap unknown
    median_s: np.ndarray  # median seconds to close per slot (NaN: none closed)
    has_unassigned: bool
    next_due: datetime | None  # when the next open incident counted falls due

    def labels(self, rows: Iterable[int]) -> list[dict[str, Any]]:
        """`code` and `name` of the areas in `rows` (0: the first area)."""
        return [{"code": self.codes[i], "name": self.names[i]} for i in rows]


def _measure(
    conn: Connection,
    by: str,
    reported_from: datetime | None,
    reported_to: datetime | None,
    category: str | None,
    grid_names: Mapping[str, str] | None,
) -> Measures:
    """The figures of incidents reported in [reported_from, reported_to) per area of
    level `by` (see `incident_stats`), before they become dicts or JSON."""
    if by not in LEVELS:
        raise ValueError(f"by must be one of {', '.join(LEVELS)}")
    clauses, params = [], {}
    if reported_from is not None:
        clauses.append(" AND reported_at >= %(reported_from)s")
        params["reported_from"] = reported_from
    if reported_to is not None:
        clauses.append(" AND reported_at < %(reported_to)s")
        params["reported_to"] = reported_to
    if category is not None:
        clauses.append(" AND category = %(category)s")
        params["category"] = category
    # In binary, the records arrive as one bytes object (psycopg's own placeholders, on
    # the same connection and transaction).
    with conn.connection.driver_connection.cursor(binary=True) as cursor:
        packed, now = cursor.execute(RECORDS_SQL.format(where="".join(clauses)), params).fetchone()
    records = np.frombuffer(packed or b"", RECORD)
    grid = records["grid"].astype(np.int64)
    state = records["state"].astype(np.int64)
    flags = records["flags"].astype(np.int64)
    seconds = records["seconds"].astype(np.float64)
    due = records["due"].astype(np.int64)

    # Areas are prefixes of the 15-digit grid code.
    is_unassigned = grid == UNASSIGNED
    area = np.where(is_unassigned, UNASSIGNED, grid // 10 ** (GRID_DIGITS - LEVELS[by]))
    # Slot 0 is everything; then the areas in code order; unassigned (sorting first) last.
    keys, inverse = np.unique(area, return_inverse=True)
    has_unassigned = bool(keys.size and keys[0] == UNASSIGNED)
    assigned = keys[1:] if has_unassigned else keys
    slot = np.where(inverse == 0, len(keys), inverse) if has_unassigned else inverse + 1
    size = 1 + len(keys)
    counts = np.bincount(slot * len(STATES) + state, minlength=size * len(STATES))
    counts = counts.reshape(size, len(STATES))
    closed = np.isin(state, [STATE_INDEX[s] for s in CLOSED])
    open_ = ~np.isin(state, [STATE_INDEX[s] for s in FINISHED])
    now_us = _microseconds(now)
    sums = np.array(
        [
            np.bincount(slot[mask], minlength=size)
            for mask in (
                (flags & HANDLED) != 0,
                closed & ((flags & NO_RETURN) != 0),
                open_ & (due < now_us),
                (flags & IN_GAP) != 0,
                (flags & GAP_UNKNOWN) != 0,
            )
        ],
        dtype=np.int64,
    )
    counts[0] = counts[1:].sum(axis=0)
    sums[:, 0] = sums[:, 1:].sum(axis=1)
    coming = due[open_ & (due >= now_us) & (due != np.iinfo(np.int64).max)]
    next_due = POSTGRES_EPOCH + timedelta(microseconds=int(coming.min())) if coming.size else None

    median_s = np.full(size, np.nan)
    timed = ~np.isnan(seconds)
    closed_s = seconds[timed]
    median_slot, median_value = medians(slot[timed], closed_s)
    if median_slot.size:
        median_s[median_slot] = median_value
        median_s[0] = float(np.median(closed_s))

    codes = [str(code) for code in assigned.tolist()]
    names: dict[str, str] = {}
    missing = codes
    if by == "grid" and grid_names is not None:
        names = {code: grid_names[code] for code in codes if code in grid_names}
        missing = [code for code in codes if code not in names]
    if missing:
        names_sql = GRID_NAMES_SQL if by == "grid" else AREA_NAMES_SQL
        names.update(conn.execute(statement(names_sql), {"codes": missing}).all())
    return Measures(
        assigned,
        codes,
        [names.get(code) for code in codes],
        counts,
        sums,
        median_s,
        has_unassigned,
        next_due,
    )


def _answer(
    by: str,
    reported_from: datetime | None,
    reported_to: datetime | None,
    category: str | None,
    total: Any,
    groups: list[Any],
    unassigned: Any,
) -> dict[str, Any]:
    return {
        "by": by,
        "from": reported_from,
        "to": reported_to,
        "category": category,
        "definitions": DEFINITIONS,
        "total": total,
        "unassigned": unassigned,
        "groups": groups,
    }


def incident_stats(
    conn: Connection,
    by: str = "county",
    reported_from: datetime | None = None,
    reported_to: datetime | None = None,
    category: str | None = None,
    grid_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Statistics of incidents reported in [reported_from, reported_to) (tz-aware
    instants; None: unbounded), per area of level `by` (module docstring), as `conn`
    sees them now (its own uncommitted writes included; never cached).

    `grid_names` (code -> name, e.g. from the in-memory grid index) saves reading the
    names of grids from the database; codes it lacks (retired grids) are read."""
    measures = _measure(conn, by, reported_from, reported_to, category, grid_names)
    n = len(measures.codes)
    labels = [{}, *measures.labels(range(n)), *([{}] if measures.has_unassigned else [])]
    figures = _figures(measures.counts, measures.sums, measures.median_s, labels)
    return _answer(
        by,
        reported_from,
        reported_to,
        category,
        figures[0],
        figures[1 : 1 + n],
        figures[-1] if measures.has_unassigned else None,
    )


@dataclass(frozen=True)
class GroupsJSON:
    """The groups of an answer as JSON, one object each, with what each was made of: the
    next answer to the same request reuses the JSON of every group whose figures and
    name stayed the same (after one event, all but one grid of ten thousand)."""

    areas: np.ndarray
    names: list[str | None]
    counts: np.ndarray
    sums: np.ndarray
    median_s: np.ndarray
    objects: list[bytes]

    @classmethod
    def of(cls, measures: Measures, previous: GroupsJSON | None) -> GroupsJSON:
        n = len(measures.codes)
        counts, sums = measures.counts[1 : 1 + n], measures.sums[:, 1 : 1 + n]
        median_s = measures.median_s[1 : 1 + n]
        objects: list[bytes | None] = [None] * n
        if previous is not None and previous.areas.size and n:
            old = np.searchsorted(previous.areas, measures.areas).clip(max=previous.areas.size - 1)
            same = (
                (previous.areas[old] == measures.areas)
                & (previous.counts[old] == counts).all(axis=1)
                & (previous.sums[:, old] == sums).all(axis=0)
                & (
                    (previous.median_s[old] == median_s)
                    | (np.isnan(previous.median_s[old]) & np.isnan(median_s))
                )
            )
            for i, j in zip(np.flatnonzero(same).tolist(), old[same].tolist(), strict=True):
                if previous.names[j] == measures.names[i]:
                    objects[i] = previous.objects[j]
        todo = [i for i, group in enumerate(objects) if group is None]
        if todo:
            # One dumps for all (a call per group costs several times more), cut into the
            # objects of the array: each opens with its code, and inside a JSON string a
            # quote is always escaped, so `,{"code":"` only ever stands between two.
            figures = _figures(counts[todo], sums[:, todo], median_s[todo], measures.labels(todo))
            first, *rest = orjson.dumps(figures, option=ORJSON_OPTIONS)[1:-1].split(
                b"," + GROUP_START
            )
            made = [first, *(GROUP_START + part for part in rest)]
            for i, group in zip(todo, made, strict=True):
                objects[i] = group
        return cls(measures.areas, measures.names, counts, sums, median_s, objects)


@dataclass(frozen=True)
class CachedAnswer:
    """An answer in JSON, exact for snapshots seeing `marker` at a time in
    [computed_at, valid_until] (valid_until None: no open incident will fall due)."""

    marker: tuple[int, int]
    computed_at: datetime
    valid_until: datetime | None
    body: bytes
    groups: GroupsJSON

    def holds(self, marker: tuple[int, int], now: datetime) -> bool:
        return (
            marker == self.marker
            and self.computed_at <= now
            and (self.valid_until is None or now <= self.valid_until)
        )

    @property
    def size(self) -> int:
        """Bytes held, about."""
        return len(self.body) + sum(map(len, self.groups.objects))


class StatsCache:
    """The latest answer per request shape, least recently used dropped first once the
    answers together exceed `max_bytes`. Thread-safe (requests run in a thread pool)."""

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES):
        self._max_bytes = max_bytes
        self._answers: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> CachedAnswer | None:
        """The latest answer to `key`, current or not (`CachedAnswer.holds` tells)."""
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key: Hashable, answer: CachedAnswer) -> None:
        size = answer.size
        with self._lock:
            # The latest put wins: should it be the older answer, it only costs a miss.
            old = self._answers.pop(key, None)
            if old is not None:
                self._bytes -= self._sizes.pop(key)
            if size > self._max_bytes:
                return
            self._answers[key], self._sizes[key] = answer, size
            self._bytes += size
            while self._bytes > self._max_bytes:
                dropped, _ = self._answers.popitem(last=False)
                self._bytes -= self._sizes.pop(dropped)


_caches: WeakKeyDictionary[Engine, StatsCache] = WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_of(engine: Engine) -> StatsCache:
    with _caches_lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = StatsCache()
        return cache


def incident_stats_json(
    engine: Engine,
    by: str = "county",
    reported_from: datetime | None = None,
    reported_to: datetime | None = None,
    category: str | None = None,
    grids: GridSnapshot | None = None,
) -> bytes:
    """`incident_stats` as committed now, in JSON, from this process's cache when no write
    and no due time came between (module docstring).

    `grids` (the in-memory grid index) names the grids it holds; answers made with
    another index (another fingerprint) are not reused."""
    # An instant's offset shows in the answer's `from` and `to`: equal instants written
    # with other offsets are other answers.
    key = (
        by,
        None if reported_from is None else reported_from.isoformat(),
        None if reported_to is None else reported_to.isoformat(),
        category,
        None if grids is None else grids.fingerprint,
    )
    cache = _cache_of(engine)
    with engine.connect() as conn:
        # One snapshot for the marker and everything computed under it; read only, so
        # nothing of this transaction's own can be in what is cached.
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            node, version, now = conn.execute(statement(MARKER_SQL)).one()
            marker = (node, version)
            cached = cache.get(key)
            if cached is not None and cached.holds(marker, now):
                return cached.body
            names = None
            if grids is not None:
                names = dict(zip(grids.column("code"), grids.column("name"), strict=True))
            measures = _measure(conn, by, reported_from, reported_to, category, names)
    groups = GroupsJSON.of(measures, None if cached is None else cached.groups)
    total, *unassigned = _figures(
        measures.counts[[0, -1] if measures.has_unassigned else [0]],
        measures.sums[:, [0, -1] if measures.has_unassigned else [0]],
        measures.median_s[[0, -1] if measures.has_unassigned else [0]],
        [{}, {}],
    )
    answer = _answer(
        by,
        reported_from,
        reported_to,
        category,
        total,
        [orjson.Fragment(made) for made in groups.objects],
        unassigned[0] if unassigned else None,
    )
    body = orjson.dumps(answer, option=ORJSON_OPTIONS, default=str)
    cache.put(key, CachedAnswer(marker, now, measures.next_due, body, groups))
    return body
