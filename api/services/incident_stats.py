"""Incident statistics per grid, village, township or county: one SQL aggregate.

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

How: one aggregate in SQL counts per (area, status) from the covering index
`incident_stats_idx` (an index-only scan, parallel); the durations of the closed ones come
back as two arrays and numpy takes the medians (a sort of integers and floats, several
times faster than PostgreSQL's per-group ordered-set aggregate over 10,000 grids); areas
are integers (codes are digit strings without leading zeros) until the answer is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection

from api.services.incidents import STATES, statement

LEVELS: dict[str, int] = {"grid": 15, "village": 12, "township": 9, "county": 6}
FINISHED = ("closed", "evaluated", "rejected")
CLOSED = ("closed", "evaluated")
STATE_INDEX = {state: i for i, state in enumerate(STATES)}
_STATE_CASE = "CASE status " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(STATES))
UNASSIGNED = -1  # the area number of incidents without a grid

# {digits} is one of LEVELS' integers and {where} fixed clauses with bound parameters:
# both are written into the text so that the grouping expression is the same everywhere
# and the planner sees the bounds.
COUNTS_SQL = f"""
SELECT coalesce(left(grid_code, {{digits}})::int8, {UNASSIGNED}) AS area,
       {_STATE_CASE} END AS state, count(*) AS n,
       count(*) FILTER (WHERE handled) AS handled,
       count(*) FILTER (WHERE return_count = 0) AS no_return,
       count(*) FILTER (WHERE due_at < now()) AS past_due,
       count(*) FILTER (WHERE in_gap) AS in_gap,
       count(*) FILTER (WHERE in_gap IS NULL) AS gap_unknown
FROM incident
WHERE deleted_at IS NULL{{where}}
GROUP BY 1, 2
"""
DURATIONS_SQL = f"""
SELECT array_agg(coalesce(left(grid_code, {{digits}})::int8, {UNASSIGNED})),
       array_agg(date_part('epoch', closed_at - reported_at))
FROM incident
WHERE deleted_at IS NULL AND status IN ('closed', 'evaluated') AND closed_at IS NOT NULL{{where}}
"""
AREA_NAMES_SQL = "SELECT code, name FROM admin_area WHERE code = ANY(:codes)"
GRID_NAMES_SQL = """
SELECT DISTINCT ON (code) code, name FROM grid WHERE code = ANY(:codes)
ORDER BY code, valid_from DESC
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


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def medians(area: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The median of `seconds` per distinct `area` (sorted areas, medians), interpolated
    like percentile_cont(0.5): the mean of the two middle values of an even count."""
    if area.size == 0:
        return area, seconds
    order = np.lexsort((seconds, area))
    area, seconds = area[order], seconds[order]
    starts = np.flatnonzero(np.r_[True, area[1:] != area[:-1]])
    counts = np.diff(np.r_[starts, area.size])
    low, high = starts + (counts - 1) // 2, starts + counts // 2
    return area[starts], (seconds[low] + seconds[high]) / 2.0


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
                "handling_rate": _rate(handled[i], received),
                "succeeded": succeeded[i],
                "success_rate": _rate(succeeded[i], handled[i]),
                "closed": closed_n[i],
                "median_hours_to_close": None if hours[i] != hours[i] else hours[i],
                "overdue": overdue[i],
                "in_coverage_gap": gap[i],
                "coverage_unknown": unknown[i],
            }
        )
    return out


def incident_stats(
    conn: Connection,
    by: str = "county",
    reported_from: datetime | None = None,
    reported_to: datetime | None = None,
    category: str | None = None,
    grid_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Statistics of incidents reported in [reported_from, reported_to) (tz-aware
    instants; None: unbounded), per area of level `by` (module docstring).

    `grid_names` (code -> name, e.g. from the in-memory grid index) saves reading the
    names of grids from the database; codes it lacks (retired grids) are read."""
    if by not in LEVELS:
        raise ValueError(f"by must be one of {', '.join(LEVELS)}")
    clauses, params = [], {}
    if reported_from is not None:
        clauses.append(" AND reported_at >= :reported_from")
        params["reported_from"] = reported_from
    if reported_to is not None:
        clauses.append(" AND reported_at < :reported_to")
        params["reported_to"] = reported_to
    if category is not None:
        clauses.append(" AND category = :category")
        params["category"] = category
    shape = {"digits": int(LEVELS[by]), "where": "".join(clauses)}
    result = conn.execute(statement(COUNTS_SQL.format(**shape)), params)
    rows = np.array([tuple(row) for row in result.all()], dtype=np.int64).reshape(-1, 8)
    # The two arrays in binary: parsing 80,000 numbers from text would cost more than
    # the query (psycopg's own placeholders, on the same connection and transaction).
    with conn.connection.driver_connection.cursor(binary=True) as cursor:
        durations = cursor.execute(
            DURATIONS_SQL.format(**shape)
            .replace(":reported_from", "%(reported_from)s")
            .replace(":reported_to", "%(reported_to)s")
            .replace(":category", "%(category)s"),
            params,
        ).fetchone()
    closed_area = np.array(durations[0] or [], dtype=np.int64)
    closed_s = np.array(durations[1] or [], dtype=np.float64)

    # Row 0 is everything; then the areas in code order; unassigned last.
    areas = np.unique(rows[:, 0])
    assigned = areas[areas != UNASSIGNED]
    has_unassigned = bool((areas == UNASSIGNED).any())
    keys = np.r_[assigned, [UNASSIGNED] if has_unassigned else []].astype(np.int64)

    def slots(area: np.ndarray) -> np.ndarray:
        return np.where(area == UNASSIGNED, len(keys), 1 + np.searchsorted(assigned, area))

    slot = slots(rows[:, 0])
    size = 1 + len(keys)
    state = rows[:, 1]
    closed = np.isin(state, [STATE_INDEX[s] for s in CLOSED])
    open_ = ~np.isin(state, [STATE_INDEX[s] for s in FINISHED])
    counts = np.zeros((size, len(STATES)), dtype=np.int64)
    sums = np.zeros((5, size), dtype=np.int64)
    values = (
        rows[:, 3],
        np.where(closed, rows[:, 4], 0),
        np.where(open_, rows[:, 5], 0),
        rows[:, 6],
        rows[:, 7],
    )
    for target in (slot, np.zeros_like(slot)):
        np.add.at(counts, (target, state), rows[:, 2])
        for k, value in enumerate(values):
            sums[k] += np.bincount(target, value, size).astype(np.int64)
    median_s = np.full(size, np.nan)
    median_area, median_value = medians(closed_area, closed_s)
    if median_area.size:
        median_s[slots(median_area)] = median_value
        median_s[0] = float(np.median(closed_s))
    codes = [str(code) for code in assigned.tolist()]
    names: dict[str, str] = {}
    missing = codes
    if by == "grid" and grid_names is not None:
        names = {code: grid_names[code] for code in codes if code in grid_names}
        missing = [code for code in codes if code not in names]
    if missing:
        sql = GRID_NAMES_SQL if by == "grid" else AREA_NAMES_SQL
        names.update(conn.execute(statement(sql), {"codes": missing}).all())
    labels = [{}, *({"code": code, "name": names.get(code)} for code in codes), {}]
    figures = _figures(counts, sums, median_s, labels[:size])
    return {
        "by": by,
        "from": reported_from,
        "to": reported_to,
        "category": category,
        "definitions": DEFINITIONS,
        "total": figures[0],
        "unassigned": figures[-1] if has_unassigned else None,
        "groups": figures[1 : 1 + len(codes)],
    }
