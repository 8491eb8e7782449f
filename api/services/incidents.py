"""Incidents: the category catalogue, intake with grid assignment, the lifecycle, bulk import.

Assignment is the grid lookup's (api.services.lookup): a point, or the point an address
matches, is located in the in-memory grid index, never by a spatial query. One
incident (HTTP intake) and 82,000 (bulk import, demo load) go through the same
vectorised `resolve_points`. What the assignment found is stored on the incident:
`grid_id` (the grid *version* row valid at the time) and `grid_code`, the department of
the category, and `assignment` (jsonb) saying how:

- `method`: `point` (the point lies in the grid), `address` (the address matched a place
  at `precision` house_number | road | village, whose point lies in the grid), `nearest`
  (the point lies in no grid; the nearest one within the lookup limit is taken,
  `distance_m` away), or `none` (nothing resolvable: stored without a grid, in the
  unassigned queue, never lost; `reason` says why);
- `ambiguous`: several grids are candidates (a point within `accuracy_m` of a boundary,
  an address matching several places, a village-precision address in a village of
  several grids); `candidates` lists them.

The lifecycle (`TRANSITIONS`): reported -> accepted | rejected; accepted -> dispatched
-> in_progress -> feedback -> verified | returned; returned -start-> in_progress;
verified -> closed -> evaluated. Events are applied under a row lock (SELECT ... FOR
UPDATE), so two racing events cannot both leave the same state.

Times: `reported_at`, `due_at`, `closed_at` are timestamptz; the due time is the
category's limit in working hours (geo.workhours, the calendar of the settings,
Asia/Shanghai by default) counted from `reported_at`. Distances are metres (EPSG:4546).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from api.audit import record_write
from api.errors import GridcoverError, Problem
from api.services.addresses import DIVISIONS_SQL, GAZETTEER_SQL
from api.services.bulk import copy_frame, select_columns
from api.services.files import read_vector_file
from api.services.lookup import (
    CHAIN_LEVELS,
    GRID_COLUMNS,
    GRIDS_AT_SQL,
    GridSnapshot,
    PointAnswers,
    resolve_points,
)
from api.services.validation import RowErrors, RowsRejected
from geo.address import AddressMatch, AddressMatcher
from geo.assign import GridIndex
from geo.catalogue import INCIDENT_CATEGORIES
from geo.crs import to_metric
from geo.workhours import WorkCalendar

# SQL text as a statement, built once per text: text() parses its bind parameters with a
# regular expression on every call, which costs more than the query on a busy intake.
statement = lru_cache(maxsize=256)(text)

CHANNELS = ("hotline", "grid_app", "wechat", "walk_in", "open311", "import")
INTAKE_CHANNELS = ("hotline", "grid_app", "wechat", "walk_in")
STATES = (
    "reported",
    "accepted",
    "rejected",
    "dispatched",
    "in_progress",
    "feedback",
    "verified",
    "returned",
    "closed",
    "evaluated",
)
# state -> {action: next state}
TRANSITIONS: dict[str, dict[str, str]] = {
    "reported": {"accept": "accepted", "reject": "rejected"},
    "accepted": {"dispatch": "dispatched"},
    "dispatched": {"start": "in_progress"},
    "in_progress": {"feedback": "feedback"},
    "feedback": {"verify": "verified", "return": "returned"},
    "returned": {"start": "in_progress"},
    "verified": {"close": "closed"},
    "closed": {"evaluate": "evaluated"},
    "rejected": {},
    "evaluated": {},
}
ACTIONS = (
    "accept",
    "reject",
    "dispatch",
    "start",
    "feedback",
    "verify",
    "return",
    "close",
    "evaluate",
)
# Not open any more: no duplicate hints, never overdue, no reassignment.
FINISHED_STATES = ("closed", "evaluated", "rejected")
# Reached feedback (handled, 调处) — as a status; the `handled` flag also remembers it
# for incidents sent back to work.
HANDLED_STATES = ("feedback", "verified", "returned", "closed", "evaluated")
# Actions whose note is the reason and so is required.
NOTE_REQUIRED = ("reject", "return")
MAX_PHOTOS = 10
MAX_URL_LENGTH = 2000
MAX_DUPLICATES = 10
COARSE_PRECISIONS = ("township", "county")

COLUMNS = [
    "category",
    "description",
    "channel",
    "address",
    "reported_at",
    "raw_lon",
    "raw_lat",
    "raw_coord_sys",
    "accuracy_m",
]


# -- categories ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Category:
    code: str
    name: str
    department: str
    time_limit_hours: float


def ensure_default_categories(conn: Connection) -> None:
    """Insert the shipped catalogue; categories already present are left as configured."""
    conn.execute(
        statement(
            "INSERT INTO incident_category (code, name, department, time_limit_hours) "
            "VALUES (:code, :name, :department, :time_limit_hours) ON CONFLICT (code) DO NOTHING"
        ),
        [category.__dict__ for category in INCIDENT_CATEGORIES],
    )


CATEGORIES_SQL = (
    "SELECT code, name, department, time_limit_hours FROM incident_category ORDER BY code"
)


def read_categories(conn: Connection) -> list[Category]:
    """The catalogue as stored (time limits in working hours)."""
    return [Category(**row) for row in conn.execute(statement(CATEGORIES_SQL)).mappings()]


# Categories change rarely (by hand in the database): each process remembers them this long.
CATEGORY_CACHE_S = 5.0
_category_cache: dict[str, tuple[float, dict[str, Category]]] = {}


def categories_by_code(conn: Connection) -> dict[str, Category]:
    """The catalogue by code, remembered per database for `CATEGORY_CACHE_S` seconds."""
    key = conn.engine.url.render_as_string(hide_password=True)
    cached = _category_cache.get(key)
    now = time.monotonic()
    if cached is None or now - cached[0] > CATEGORY_CACHE_S:
        cached = (now, {c.code: c for c in read_categories(conn)})
        _category_cache[key] = cached
    return cached[1]


def category_or_problem(conn: Connection, code: str) -> Category:
    """The category `code`, or a 422 problem listing the known codes."""
    known = categories_by_code(conn)
    if code not in known:
        known = {c.code: c for c in read_categories(conn)}  # added a moment ago?
    if code in known:
        return known[code]
    codes = ", ".join(sorted(known))
    raise Problem(
        422,
        f"unknown category {code!r}; use one of {codes}",
        errors=[{"field": "category", "reason": f"one of {codes}"}],
    )


# -- working hours ------------------------------------------------------------------------
@lru_cache(maxsize=8)
def work_calendar(
    periods: str, weekdays: str, timezone: str, holidays: str, extra_workdays: str
) -> WorkCalendar:
    """The calendar of the settings' text form (cached); GridcoverError when invalid."""
    try:
        return WorkCalendar.parse(periods, weekdays, timezone, holidays, extra_workdays)
    except ValueError as exc:
        raise GridcoverError(f"invalid incident working hours: {exc}") from None


def calendar_of(settings: Any) -> WorkCalendar:
    """The working-hour calendar configured by `GRIDCOVER_INCIDENT_*` settings."""
    return work_calendar(
        settings.incident_work_periods,
        settings.incident_work_weekdays,
        settings.incident_timezone,
        settings.incident_holidays,
        settings.incident_extra_workdays,
    )


def check_photos(photos: Sequence[str]) -> list[str]:
    """Photo URLs as given, after checking them: http(s), a host, no spaces, at most
    `MAX_PHOTOS`; a 422 problem names each bad one."""
    errors = []
    if len(photos) > MAX_PHOTOS:
        errors.append({"field": "photos", "reason": f"at most {MAX_PHOTOS} photos"})
    for i, url in enumerate(photos):
        parts = urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or len(url) > MAX_URL_LENGTH
            or any(c.isspace() or ord(c) < 32 for c in url)
        ):
            errors.append(
                {
                    "field": f"photos.{i}",
                    "reason": f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters",
                }
            )
    if errors:
        raise Problem(422, f"invalid {errors[0]['field']}: {errors[0]['reason']}", errors=errors)
    return list(photos)


# -- assignment ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Assignment:
    """Where an incident is and which grid it belongs to.

    `lon`/`lat`: the stored location (WGS84), None when unknown; `grid`: row of the
    snapshot's grids, -1 for none; `details`: the `assignment` jsonb (module docstring).
    """

    lon: float | None
    lat: float | None
    grid: int
    details: dict[str, Any]


def _r(value: float, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def point_assignments(
    snapshot: GridSnapshot, answers: PointAnswers, source: str = "point"
) -> list[dict[str, Any]]:
    """The `assignment` details of each point of a `resolve_points` answer (distances in
    metres, EPSG:4546): one small dict per point, built from the answer's arrays."""
    grid, outside = answers.grid, answers.outside
    counts = np.diff(answers.candidate_offsets)
    codes = snapshot.column("code")
    out: list[dict[str, Any]] = []
    for i in range(grid.size):
        if grid[i] < 0:
            reason = (
                "no coordinates"
                if not np.isfinite(answers.lon[i])
                else "no grid within the lookup distance"
            )
            out.append({"method": "none", "source": source, "ambiguous": False, "reason": reason})
            continue
        method = "nearest" if outside[i] else source
        details: dict[str, Any] = {"method": method, "source": source, "ambiguous": False}
        if outside[i]:
            details["distance_m"] = _r(answers.distance_m[i])
        else:
            details["distance_to_boundary_m"] = _r(answers.distance_to_boundary_m[i])
        if counts[i] > 1:
            start, stop = answers.candidate_offsets[i], answers.candidate_offsets[i + 1]
            details["ambiguous"] = True
            details["candidates"] = [
                {"code": codes[g], "distance_m": _r(d)}
                for g, d in zip(
                    answers.candidate_grid[start:stop],
                    answers.candidate_distance_m[start:stop],
                    strict=True,
                )
            ]
        out.append(details)
    return out


def assign_point(
    snapshot: GridSnapshot,
    lon: float,
    lat: float,
    coord_sys: str = "wgs84",
    accuracy_m: float = 0.0,
    max_distance_m: float = 5000.0,
) -> Assignment:
    """Locate one point given in `coord_sys` (accuracy and distances in metres)."""
    answers = resolve_points(
        snapshot, np.array([lon]), np.array([lat]), coord_sys, accuracy_m, max_distance_m
    )
    details = point_assignments(snapshot, answers)[0]
    x, y = float(answers.lon[0]), float(answers.lat[0])
    if not (math.isfinite(x) and math.isfinite(y)):
        return Assignment(None, None, -1, details)
    return Assignment(x, y, int(answers.grid[0]), details)


def assign_address(
    snapshot: GridSnapshot,
    match: AddressMatch | None,
    address: str,
    max_distance_m: float = 5000.0,
) -> Assignment:
    """Assign by a matched address. Township- or county-precision matches are too coarse
    to pick a grid (nor a point worth storing): they stay unassigned, with the match."""
    if match is None or match.lon is None or match.lat is None:
        return Assignment(
            None,
            None,
            -1,
            {
                "method": "none",
                "source": "address",
                "ambiguous": False,
                "reason": f"no place in the gazetteer matches {address!r}",
            },
        )
    matched = {
        "precision": match.precision,
        "confidence": round(float(match.confidence), 3),
        "matched_text": match.matched_text,
    }
    if match.precision in COARSE_PRECISIONS:
        return Assignment(
            None,
            None,
            -1,
            {
                "method": "none",
                "source": "address",
                "ambiguous": match.ambiguous,
                "reason": f"the address names only a {match.precision}",
                "township_code": match.township_code,
                "county_code": match.county_code,
                **matched,
            },
        )
    answers = resolve_points(
        snapshot, np.array([match.lon]), np.array([match.lat]), max_distance_m=max_distance_m
    )
    details = point_assignments(snapshot, answers, source="address")[0]
    details.update(matched)
    grid = int(answers.grid[0])
    if details["method"] == "address" and match.precision == "village" and grid >= 0:
        # A village's point says little about which of its grids: all of them are candidates.
        village = snapshot.column("village_code")[grid]
        rows = np.flatnonzero(snapshot.column("village_code") == village)
        if rows.size > 1:
            details["ambiguous"] = True
            details["candidates"] = [{"code": snapshot.column("code")[r]} for r in rows]
    if match.ambiguous:
        details["ambiguous"] = True
        details["address_candidates"] = [c.to_dict() for c in match.candidates]
    return Assignment(float(match.lon), float(match.lat), grid, details)


def _grid_values(snapshot: GridSnapshot, grid: int) -> tuple[int | None, str | None]:
    if grid < 0:
        return None, None
    return int(snapshot.column("id")[grid]), str(snapshot.column("code")[grid])


# -- reading ------------------------------------------------------------------------------
INCIDENT_SELECT = """
SELECT i.id, i.category, c.name AS category_name, i.department, i.description, i.channel,
       i.status, ST_X(i.location) AS lon, ST_Y(i.location) AS lat,
       i.raw_lon, i.raw_lat, i.raw_coord_sys, i.accuracy_m, i.address,
       i.grid_id, i.grid_code, g.version AS grid_version, g.name AS grid_name,
       g.worker_name, g.worker_phone,
       v.code AS village_code, v.name AS village_name,
       t.code AS township_code, t.name AS township_name,
       co.code AS county_code, co.name AS county_name,
       i.assignment, i.reported_at, i.due_at, i.closed_at, i.updated_at, i.evaluation,
       i.photos, i.reporter, i.created_by, i.in_gap, i.handled, i.return_count,
       (i.due_at < now() AND i.status NOT IN ('closed', 'evaluated', 'rejected')) AS overdue
FROM incident i
JOIN incident_category c ON c.code = i.category
LEFT JOIN grid g ON g.id = i.grid_id
LEFT JOIN admin_area v ON v.code = left(i.grid_code, 12)
LEFT JOIN admin_area t ON t.code = left(i.grid_code, 9)
LEFT JOIN admin_area co ON co.code = left(i.grid_code, 6)
WHERE i.deleted_at IS NULL
"""
EVENTS_SQL = """
SELECT id, at, actor, action, from_status, to_status, note, data
FROM incident_event WHERE incident_id = :id ORDER BY at, id
"""


def _local(value: datetime | None, calendar: WorkCalendar | None) -> datetime | None:
    if value is None or calendar is None:
        return value
    return value.astimezone(calendar.zone)


def incident_dict(
    row: Any, with_phone: bool = False, calendar: WorkCalendar | None = None
) -> dict[str, Any]:
    """The JSON shape of an incident row of `INCIDENT_SELECT` (times in the calendar's
    zone, +08:00 by default)."""
    grid = None
    if row.grid_id is not None:
        grid = {
            "id": row.grid_id,
            "code": row.grid_code,
            "version": row.grid_version,
            "name": row.grid_name,
            "worker_name": row.worker_name,
        }
        if with_phone:
            grid["worker_phone"] = row.worker_phone
    chain = {
        level: (
            None
            if getattr(row, f"{level}_code") is None
            else {"code": getattr(row, f"{level}_code"), "name": getattr(row, f"{level}_name")}
        )
        for level in CHAIN_LEVELS
    }
    raw = None
    if row.raw_lon is not None:
        raw = {
            "lon": row.raw_lon,
            "lat": row.raw_lat,
            "coord_sys": row.raw_coord_sys,
            "accuracy_m": row.accuracy_m,
        }
    return {
        "id": row.id,
        "category": row.category,
        "category_name": row.category_name,
        "department": row.department,
        "description": row.description,
        "channel": row.channel,
        "status": row.status,
        "allowed_actions": list(TRANSITIONS[row.status]),
        "overdue": bool(row.overdue),
        "point": None if row.lon is None else [round(row.lon, 7), round(row.lat, 7)],
        "input": raw,
        "address": row.address,
        "grid": grid,
        **chain,
        "assignment": row.assignment,
        "in_coverage_gap": row.in_gap,
        "reported_at": _local(row.reported_at, calendar),
        "due_at": _local(row.due_at, calendar),
        "closed_at": _local(row.closed_at, calendar),
        "updated_at": _local(row.updated_at, calendar),
        "handled": row.handled,
        "return_count": row.return_count,
        "evaluation": row.evaluation,
        "photos": row.photos,
        "reporter": row.reporter,
        "created_by": row.created_by,
    }


def read_incident(
    conn: Connection,
    incident_id: int,
    with_phone: bool = False,
    calendar: WorkCalendar | None = None,
    with_events: bool = True,
) -> dict[str, Any]:
    """One incident with its whole event history; 404 problem when absent or deleted."""
    row = conn.execute(statement(INCIDENT_SELECT + " AND i.id = :id"), {"id": incident_id}).first()
    if row is None:
        raise Problem(404, f"no incident {incident_id}")
    body = incident_dict(row, with_phone, calendar)
    if with_events:
        body["events"] = [
            {**event, "at": _local(event["at"], calendar)}
            for event in conn.execute(statement(EVENTS_SQL), {"id": incident_id}).mappings()
        ]
    return body


LAST_NOTES_SQL = """
SELECT DISTINCT ON (incident_id) incident_id, note
FROM incident_event WHERE incident_id = ANY(:ids)
ORDER BY incident_id, at DESC, id DESC
"""


def last_notes(conn: Connection, ids: Sequence[int]) -> dict[int, str | None]:
    """The note of each incident's latest event (None when it had none)."""
    if not ids:
        return {}
    return dict(conn.execute(statement(LAST_NOTES_SQL), {"ids": list(ids)}).all())


@dataclass(frozen=True)
class IncidentFilter:
    """What `list_incidents` selects. `area` is a code prefix: a grid code (15 digits) or
    a village (12), township (9) or county (6) code; times are instants (reported_at in
    [reported_from, reported_to)); `bbox` is west, south, east, north in WGS84 degrees."""

    status: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    area: str | None = None
    overdue: bool | None = None
    unassigned: bool | None = None
    reported_from: datetime | None = None
    reported_to: datetime | None = None
    bbox: tuple[float, float, float, float] | None = None
    ids: tuple[int, ...] = ()
    channel: str | None = None
    limit: int = 100
    offset: int = 0


def _filter_sql(f: IncidentFilter) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if f.status:
        clauses.append("i.status = ANY(:status)")
        params["status"] = list(f.status)
    if f.category:
        clauses.append("i.category = ANY(:category)")
        params["category"] = list(f.category)
    if f.area:
        clauses.append("i.grid_code LIKE :area")
        params["area"] = f.area + "%"
    if f.overdue is not None:
        overdue = "(i.due_at < now() AND i.status NOT IN ('closed', 'evaluated', 'rejected'))"
        clauses.append(overdue if f.overdue else f"NOT coalesce({overdue}, false)")
    if f.unassigned is not None:
        clauses.append("i.grid_id IS NULL" if f.unassigned else "i.grid_id IS NOT NULL")
    if f.reported_from is not None:
        clauses.append("i.reported_at >= :reported_from")
        params["reported_from"] = f.reported_from
    if f.reported_to is not None:
        clauses.append("i.reported_at < :reported_to")
        params["reported_to"] = f.reported_to
    if f.bbox is not None:
        clauses.append("i.location && ST_MakeEnvelope(:west, :south, :east, :north, 4326)")
        params.update(zip(("west", "south", "east", "north"), f.bbox, strict=True))
    if f.ids:
        clauses.append("i.id = ANY(:ids)")
        params["ids"] = list(f.ids)
    if f.channel:
        clauses.append("i.channel = :channel")
        params["channel"] = f.channel
    return "".join(f" AND {c}" for c in clauses), params


def list_incidents(
    conn: Connection,
    f: IncidentFilter,
    with_phone: bool = False,
    calendar: WorkCalendar | None = None,
) -> dict[str, Any]:
    """Incidents matching `f`, newest report first, with the number matched in all."""
    where, params = _filter_sql(f)
    rows = conn.execute(
        statement(
            INCIDENT_SELECT + where + " ORDER BY i.reported_at DESC, i.id DESC "
            "LIMIT :limit OFFSET :offset"
        ),
        {**params, "limit": f.limit, "offset": f.offset},
    ).all()
    total = conn.execute(
        statement("SELECT count(*) FROM incident i WHERE i.deleted_at IS NULL" + where), params
    ).scalar_one()
    return {
        "total": total,
        "count": len(rows),
        "limit": f.limit,
        "offset": f.offset,
        "incidents": [incident_dict(row, with_phone, calendar) for row in rows],
    }


# -- intake -------------------------------------------------------------------------------
@dataclass
class Intake:
    """One reported incident as a client sends it (coordinates in `coord_sys`, accuracy
    in metres; `reported_at` defaults to now)."""

    category: str
    lon: float | None = None
    lat: float | None = None
    coord_sys: str = "wgs84"
    accuracy_m: float = 0.0
    address: str | None = None
    description: str = ""
    channel: str = "hotline"
    photos: list[str] = field(default_factory=list)
    reported_at: datetime | None = None
    reporter: dict[str, Any] | None = None


@dataclass(frozen=True)
class IntakeContext:
    """What intake needs besides the database: the grids valid now, the address matcher
    (built lazily: only addresses need it), the calendar, the limits (metres, hours)."""

    snapshot: GridSnapshot
    matcher: Callable[[], AddressMatcher]
    calendar: WorkCalendar
    max_distance_m: float = 5000.0
    duplicate_radius_m: float = 100.0
    duplicate_window_h: float = 24.0


def locate(context: IntakeContext, intake: Intake) -> Assignment:
    """The assignment of an intake: its point when given, else its address."""
    if intake.lon is not None and intake.lat is not None:
        return assign_point(
            context.snapshot,
            intake.lon,
            intake.lat,
            intake.coord_sys,
            intake.accuracy_m,
            context.max_distance_m,
        )
    if intake.address:
        match = context.matcher().match(intake.address)
        return assign_address(context.snapshot, match, intake.address, context.max_distance_m)
    return Assignment(
        None,
        None,
        -1,
        {"method": "none", "source": None, "ambiguous": False, "reason": "no location given"},
    )


# The box (degrees) finds candidates with the index of open incidents; the distance in
# EPSG:4546 metres decides.
DUPLICATES_SQL = """
SELECT id, category, status, grid_code, reported_at, description, distance_m
FROM (
    SELECT id, category, status, grid_code, reported_at, description,
           round(ST_Distance(ST_Transform(location, 4546), ST_Transform(
               ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), 4546))::numeric, 1)::float8
               AS distance_m
    FROM incident
    WHERE deleted_at IS NULL AND status NOT IN ('closed', 'evaluated', 'rejected')
      AND location && ST_Expand(ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :dlon, :dlat)
      AND category = :category AND reported_at BETWEEN :since AND :until AND id <> :exclude
) near
WHERE distance_m <= :radius
ORDER BY distance_m, id
LIMIT :limit
"""


def possible_duplicates(
    conn: Connection,
    category: str,
    lon: float,
    lat: float,
    reported_at: datetime,
    radius_m: float,
    window_h: float,
    exclude: int = 0,
    calendar: WorkCalendar | None = None,
) -> list[dict[str, Any]]:
    """Open incidents of `category` within `radius_m` metres of (lon, lat) (WGS84),
    reported within `window_h` hours either side of `reported_at`; nearest first."""
    window = timedelta(hours=window_h)
    # a generous box: 1 degree of latitude is over 110.5 km, of longitude cos(lat) of that
    dlat = radius_m / 110_000.0 + 1e-6
    dlon = dlat / max(math.cos(math.radians(abs(lat))), 0.01)
    rows = conn.execute(
        statement(DUPLICATES_SQL),
        {
            "lon": lon,
            "lat": lat,
            "dlon": dlon,
            "dlat": dlat,
            "category": category,
            "since": reported_at - window,
            "until": reported_at + window,
            "radius": radius_m,
            "exclude": exclude,
            "limit": MAX_DUPLICATES,
        },
    ).mappings()
    return [{**row, "reported_at": _local(row["reported_at"], calendar)} for row in rows]


# Whether coverage was ever computed: without it, "in a coverage gap" is unknown (NULL).
COVERAGE_KNOWN_SQL = """
SELECT EXISTS (SELECT 1 FROM camera_fov WHERE level = 'detect')
    OR EXISTS (SELECT 1 FROM coverage WHERE level = 'detect')
"""
# One statement: the incident, its first event and its audit row (the row
# api.audit.record_write would write), so that intake costs one round trip.
INSERT_SQL = f"""
WITH p AS (
    SELECT CASE WHEN CAST(:lon AS float8) IS NULL THEN NULL
           ELSE ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) END AS pt,
           ({COVERAGE_KNOWN_SQL}) AS known
), new AS (
    INSERT INTO incident (category, description, channel, location, raw_lon, raw_lat,
                          raw_coord_sys, accuracy_m, address, grid_id, grid_code, assignment,
                          department, status, reported_at, due_at, photos, reporter,
                          created_by, in_gap, updated_at)
    SELECT :category, :description, :channel, p.pt, :raw_lon, :raw_lat, :raw_coord_sys,
           :accuracy_m, :address, :grid_id, :grid_code, CAST(:assignment AS jsonb),
           :department, 'reported', :reported_at, :due_at, CAST(:photos AS jsonb),
           CAST(:reporter AS jsonb), :actor,
           CASE WHEN p.pt IS NOT NULL AND p.known
                THEN NOT EXISTS (SELECT 1 FROM camera_fov f WHERE f.level = 'detect'
                                 AND ST_Intersects(f.geom_m, ST_Transform(p.pt, 4546)))
           END,
           now()
    FROM p
    RETURNING id, reported_at, updated_at, in_gap, channel
), event AS (
    INSERT INTO incident_event (incident_id, at, actor, action, from_status, to_status, data)
    SELECT id, now(), :actor, 'report', NULL, 'reported',
           jsonb_build_object('channel', channel, 'reported_at', reported_at)
    FROM new
    RETURNING id, at, data
), audit AS (
    INSERT INTO audit_log (actor, action, entity, entity_id, after)
    SELECT :actor, 'create', 'incident', new.id::text, CAST(:audit AS jsonb) FROM new
)
SELECT new.id, new.updated_at, new.in_gap, event.id AS event_id, event.at AS event_at,
       event.data AS event_data
FROM new, event
"""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _new_incident_row(
    snapshot: GridSnapshot, values: dict[str, Any], category: Category, created: Any
) -> SimpleNamespace:
    """A row shaped like `INCIDENT_SELECT`'s for an incident just inserted, from what
    intake knows already (the grid's attributes come from the index snapshot)."""
    grid = values["grid_row"]
    column = snapshot.column

    def attribute(name: str) -> Any:
        if grid < 0:
            return None
        value = column(name)[grid]
        return None if pd.isna(value) else value

    return SimpleNamespace(
        **{k: v for k, v in values.items() if k not in ("grid_row", "assignment", "photos")},
        id=created.id,
        category_name=category.name,
        status="reported",
        grid_version=None if grid < 0 else int(column("version")[grid]),
        grid_name=attribute("name"),
        worker_name=attribute("worker_name"),
        worker_phone=attribute("worker_phone"),
        **{f"{level}_{part}": attribute(f"{level}_{part}") for level in CHAIN_LEVELS
           for part in ("code", "name")},
        assignment=values["assignment"],
        photos=values["photos"],
        closed_at=None,
        updated_at=created.updated_at,
        evaluation=None,
        in_gap=created.in_gap,
        handled=False,
        return_count=0,
        overdue=values["due_at"] < datetime.now(UTC),
    )  # fmt: skip


def create_incident(
    engine: Engine, context: IntakeContext, intake: Intake, actor: str, with_phone: bool = True
) -> dict[str, Any]:
    """Store a reported incident, assigned at once, with its first event and an audit row,
    in a transaction of its own.

    The location is resolved before a database connection is taken: resolving an address
    may have to wait for the process's address matcher to be (re)built, which itself
    needs a connection, and a pool full of requests waiting for it would never give one.
    Returns the incident (shape of `read_incident`, history included) plus
    `possible_duplicates`.
    """
    photos = check_photos(intake.photos)
    assignment = locate(context, intake)
    with engine.begin() as conn:
        return _store_intake(conn, context, intake, actor, with_phone, photos, assignment)


def _store_intake(
    conn: Connection,
    context: IntakeContext,
    intake: Intake,
    actor: str,
    with_phone: bool,
    photos: list[str],
    assignment: Assignment,
) -> dict[str, Any]:
    category = category_or_problem(conn, intake.category)
    reported_at = intake.reported_at or datetime.now(UTC)
    due_at = context.calendar.add(reported_at, category.time_limit_hours)
    duplicates: list[dict[str, Any]] = []
    if assignment.lon is not None and assignment.lat is not None:
        duplicates = possible_duplicates(
            conn,
            category.code,
            assignment.lon,
            assignment.lat,
            reported_at,
            context.duplicate_radius_m,
            context.duplicate_window_h,
            calendar=context.calendar,
        )
    grid_id, grid_code = _grid_values(context.snapshot, assignment.grid)
    has_point = intake.lon is not None and intake.lat is not None
    values: dict[str, Any] = {
        "category": category.code,
        "description": intake.description,
        "channel": intake.channel,
        "lon": assignment.lon,
        "lat": assignment.lat,
        "raw_lon": intake.lon if has_point else None,
        "raw_lat": intake.lat if has_point else None,
        "raw_coord_sys": intake.coord_sys if has_point else None,
        "accuracy_m": intake.accuracy_m if has_point else None,
        "address": intake.address,
        "grid_id": grid_id,
        "grid_code": grid_code,
        "grid_row": assignment.grid,
        "assignment": assignment.details,
        "department": category.department,
        "reported_at": reported_at,
        "due_at": due_at,
        "photos": photos,
        "reporter": intake.reporter,
        "created_by": actor,
    }
    audit = {
        "category": category.code,
        "grid_code": grid_code,
        "channel": intake.channel,
        "assignment": assignment.details["method"],
    }
    created = conn.execute(
        statement(INSERT_SQL),
        {
            **{k: v for k, v in values.items() if k not in ("grid_row", "created_by")},
            "assignment": _json(assignment.details),
            "photos": _json(photos),
            "reporter": _json(intake.reporter),
            "actor": actor,
            "audit": _json(audit),
        },
    ).one()
    row = _new_incident_row(context.snapshot, values, category, created)
    body = incident_dict(row, with_phone, context.calendar)
    body["events"] = [
        {
            "id": created.event_id,
            "at": _local(created.event_at, context.calendar),
            "actor": actor,
            "action": "report",
            "from_status": None,
            "to_status": "reported",
            "note": None,
            "data": created.event_data,
        }
    ]
    body["possible_duplicates"] = duplicates
    return body


# -- lifecycle ----------------------------------------------------------------------------
LOCK_SQL = """
SELECT id, status, category, reported_at, grid_code, department, ST_X(location) AS lon,
       ST_Y(location) AS lat, address, description, photos
FROM incident WHERE id = :id AND deleted_at IS NULL FOR UPDATE
"""


def _locked(conn: Connection, incident_id: int) -> Any:
    row = conn.execute(statement(LOCK_SQL), {"id": incident_id}).first()
    if row is None:
        raise Problem(404, f"no incident {incident_id}")
    return row


def transition_problem(incident_id: int, status: str, action: str) -> Problem:
    """The 409 problem of an action not allowed from `status`, naming the allowed ones."""
    allowed = list(TRANSITIONS[status])
    hint = f"allowed: {', '.join(allowed)}" if allowed else "no action is allowed any more"
    return Problem(
        409,
        f"incident {incident_id} is {status}: cannot {action} it; {hint}",
        title="Transition not allowed",
        current_status=status,
        allowed_actions=allowed,
    )


@dataclass(frozen=True)
class Event:
    """An action on an incident: `note` free text; `score` (1-5) and `comment` only with
    evaluate; `assignee` (who is sent) only with dispatch."""

    action: str
    note: str | None = None
    score: int | None = None
    comment: str | None = None
    assignee: str | None = None


def _check_event(event: Event) -> None:
    if event.action not in ACTIONS:
        raise Problem(422, f"unknown action {event.action!r}; use one of {', '.join(ACTIONS)}")
    errors = []
    if event.action in NOTE_REQUIRED and not (event.note and event.note.strip()):
        errors.append({"field": "note", "reason": f"required to {event.action}: say why"})
    if event.action == "evaluate":
        if event.score is None:
            errors.append({"field": "score", "reason": "required to evaluate: 1 to 5"})
    elif event.score is not None or event.comment is not None:
        errors.append({"field": "score", "reason": "only with action evaluate"})
    if event.assignee is not None and event.action != "dispatch":
        errors.append({"field": "assignee", "reason": "only with action dispatch"})
    if errors:
        raise Problem(422, f"invalid {errors[0]['field']}: {errors[0]['reason']}", errors=errors)


UPDATE_STATUS_SQL = """
UPDATE incident SET
    status = :to_status,
    updated_at = now(),
    handled = handled OR :to_status = 'feedback',
    return_count = return_count + CASE WHEN :action = 'return' THEN 1 ELSE 0 END,
    closed_at = CASE WHEN :to_status = 'closed' THEN now() ELSE closed_at END,
    evaluation = CASE WHEN :action = 'evaluate' THEN CAST(:evaluation AS jsonb)
                      ELSE evaluation END
WHERE id = :id
"""
EVENT_SQL = """
INSERT INTO incident_event (incident_id, at, actor, action, from_status, to_status, note, data)
VALUES (:id, now(), :actor, :action, :from_status, :to_status, :note, CAST(:data AS jsonb))
"""


def apply_event(
    conn: Connection,
    incident_id: int,
    event: Event,
    actor: str,
    with_phone: bool = True,
    calendar: WorkCalendar | None = None,
) -> dict[str, Any]:
    """Move an incident by `event` under a row lock; 409 problem (nothing changed) when
    the action is not allowed from its status. Returns the incident with its history."""
    _check_event(event)
    row = _locked(conn, incident_id)
    to_status = TRANSITIONS[row.status].get(event.action)
    if to_status is None:
        raise transition_problem(incident_id, row.status, event.action)
    evaluation = None
    data: dict[str, Any] = {}
    if event.action == "evaluate":
        evaluation = {"score": event.score, "comment": event.comment, "by": actor}
        data = {"score": event.score, "comment": event.comment}
    if event.assignee is not None:
        data["assignee"] = event.assignee
    params = {"id": incident_id, "actor": actor, "action": event.action}
    conn.execute(
        statement(UPDATE_STATUS_SQL),
        {**params, "to_status": to_status, "evaluation": _json(evaluation)},
    )
    conn.execute(
        statement(EVENT_SQL),
        {
            **params,
            "from_status": row.status,
            "to_status": to_status,
            "note": event.note,
            "data": _json(data or None),
        },
    )
    record_write(
        conn,
        actor,
        event.action,
        "incident",
        incident_id,
        before={"status": row.status},
        after={"status": to_status},
    )
    return read_incident(conn, incident_id, with_phone, calendar)


@dataclass
class Change:
    """A PATCH: only what is set changes. A new point (lon/lat in `coord_sys`) or a new
    address re-locates the incident; a new category changes department and due time."""

    lon: float | None = None
    lat: float | None = None
    coord_sys: str = "wgs84"
    accuracy_m: float = 0.0
    address: str | None = None
    category: str | None = None
    description: str | None = None
    photos: list[str] | None = None
    note: str | None = None

    @property
    def moves(self) -> bool:
        return self.lon is not None or self.address is not None


UPDATE_SQL = """
UPDATE incident SET
    category = :category, department = :department, due_at = :due_at,
    description = :description, photos = CAST(:photos AS jsonb), updated_at = now(),
    location = CASE WHEN :moves THEN
                   CASE WHEN CAST(:lon AS float8) IS NULL THEN NULL
                        ELSE ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) END
               ELSE location END,
    raw_lon = CASE WHEN :moves THEN :raw_lon ELSE raw_lon END,
    raw_lat = CASE WHEN :moves THEN :raw_lat ELSE raw_lat END,
    raw_coord_sys = CASE WHEN :moves THEN :raw_coord_sys ELSE raw_coord_sys END,
    accuracy_m = CASE WHEN :moves THEN :accuracy_m ELSE accuracy_m END,
    address = CASE WHEN :moves THEN :address ELSE address END,
    grid_id = CASE WHEN :moves THEN :grid_id ELSE grid_id END,
    grid_code = CASE WHEN :moves THEN :grid_code ELSE grid_code END,
    assignment = CASE WHEN :moves THEN CAST(:assignment AS jsonb) ELSE assignment END
WHERE id = :id
RETURNING location
"""
REFRESH_GAP_SQL = f"""
UPDATE incident i SET in_gap = CASE
    WHEN i.location IS NULL OR NOT ({COVERAGE_KNOWN_SQL}) THEN NULL
    ELSE NOT EXISTS (SELECT 1 FROM camera_fov f WHERE f.level = 'detect'
                     AND ST_Intersects(f.geom_m, ST_Transform(i.location, 4546))) END
WHERE i.id = :id
"""


def update_incident(
    engine: Engine,
    incident_id: int,
    change: Change,
    context: IntakeContext,
    actor: str,
    with_phone: bool = True,
) -> dict[str, Any]:
    """Edit an open incident, in a transaction of its own (the new location is resolved
    before, as in `create_incident`). Moving it or changing its category re-resolves grid,
    department and due time and is recorded as a `reassign` event; other edits as an
    `edit` event. 409 problem for finished incidents (closed, evaluated, rejected)."""
    assignment = None
    if change.moves:
        assignment = locate(
            context,
            Intake(
                category="",
                lon=change.lon,
                lat=change.lat,
                coord_sys=change.coord_sys,
                accuracy_m=change.accuracy_m,
                address=change.address,
            ),
        )
    with engine.begin() as conn:
        return _apply_change(conn, incident_id, change, context, actor, with_phone, assignment)


def _apply_change(
    conn: Connection,
    incident_id: int,
    change: Change,
    context: IntakeContext,
    actor: str,
    with_phone: bool,
    assignment: Assignment | None,
) -> dict[str, Any]:
    row = _locked(conn, incident_id)
    if row.status in FINISHED_STATES:
        raise Problem(
            409,
            f"incident {incident_id} is {row.status}: it can no longer be edited",
            current_status=row.status,
            allowed_actions=list(TRANSITIONS[row.status]),
        )
    category = category_or_problem(conn, change.category or row.category)
    photos = check_photos(change.photos) if change.photos is not None else row.photos
    params: dict[str, Any] = {
        "id": incident_id,
        "category": category.code,
        "department": category.department,
        "due_at": context.calendar.add(row.reported_at, category.time_limit_hours),
        "description": row.description if change.description is None else change.description,
        "photos": _json(photos),
        "moves": change.moves,
    }
    before = {"category": row.category, "department": row.department, "grid_code": row.grid_code}
    if assignment is not None:
        grid_id, grid_code = _grid_values(context.snapshot, assignment.grid)
        has_point = change.lon is not None
        params.update(
            lon=assignment.lon,
            lat=assignment.lat,
            raw_lon=change.lon if has_point else None,
            raw_lat=change.lat if has_point else None,
            raw_coord_sys=change.coord_sys if has_point else None,
            accuracy_m=change.accuracy_m if has_point else None,
            address=change.address if change.address is not None else row.address,
            grid_id=grid_id,
            grid_code=grid_code,
            assignment=_json(assignment.details),
        )
    else:
        params.update(
            lon=None,
            lat=None,
            raw_lon=None,
            raw_lat=None,
            raw_coord_sys=None,
            accuracy_m=None,
            address=None,
            grid_id=None,
            grid_code=None,
            assignment=None,
        )
    conn.execute(statement(UPDATE_SQL), params)
    if change.moves:
        conn.execute(statement(REFRESH_GAP_SQL), {"id": incident_id})
    after = {
        "category": category.code,
        "department": category.department,
        "grid_code": params["grid_code"] if change.moves else row.grid_code,
    }
    reassigned = change.moves or category.code != row.category
    action = "reassign" if reassigned else "edit"
    data: dict[str, Any] = {"before": before, "after": after}
    if assignment is not None:
        data["assignment"] = assignment.details["method"]
    edited = [name for name in ("description", "photos") if getattr(change, name) is not None]
    if edited:
        data["edited"] = edited
    conn.execute(
        statement(EVENT_SQL),
        {
            "id": incident_id,
            "actor": actor,
            "action": action,
            "from_status": row.status,
            "to_status": row.status,
            "note": change.note,
            "data": _json(data),
        },
    )
    # The audit row also holds what was edited or moved, old and new.
    new = {"description": params["description"], "photos": photos} | {
        name: params[name] for name in ("lon", "lat", "address")
    }
    audited = [*edited, *(("lon", "lat", "address") if change.moves else ())]
    record_write(
        conn,
        actor,
        action,
        "incident",
        incident_id,
        before=before | {name: getattr(row, name) for name in audited},
        after=after | {name: new[name] for name in audited},
    )
    return read_incident(conn, incident_id, with_phone, context.calendar)


def delete_incident(conn: Connection, incident_id: int, actor: str) -> None:
    """Soft delete (sets `deleted_at`; hidden from every read), audited; 404 if absent."""
    row = conn.execute(
        statement(
            "UPDATE incident SET deleted_at = now(), updated_at = now() "
            "WHERE id = :id AND deleted_at IS NULL RETURNING status, category, grid_code"
        ),
        {"id": incident_id},
    ).first()
    if row is None:
        raise Problem(404, f"no incident {incident_id}")
    record_write(conn, actor, "delete", "incident", incident_id, before=dict(row._mapping))


# -- coverage gaps ------------------------------------------------------------------------
def gap_flags(conn: Connection, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """For points in EPSG:4546 metres: True where no detect-level camera FOV covers the
    point (a coverage gap), False where one does; None when coverage was never computed.
    Points with a non-finite coordinate get True (the caller stores NULL for them).

    The FOVs around the points are read once and tested with a shapely STRtree, so a
    year of incidents takes a second or two, where a per-row PostGIS test takes tens.
    """
    if not conn.execute(statement(COVERAGE_KNOWN_SQL)).scalar_one():
        return None
    flags = np.ones(len(x), dtype=bool)
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return flags
    xs, ys = x[finite], y[finite]
    wkb = (
        conn.execute(
            statement(
                "SELECT ST_AsBinary(geom_m) FROM camera_fov WHERE level = 'detect' "
                "AND geom_m && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4546)"
            ),
            {"x0": xs.min() - 1, "y0": ys.min() - 1, "x1": xs.max() + 1, "y1": ys.max() + 1},
        )
        .scalars()
        .all()
    )
    if not wkb:
        return flags
    tree = shapely.STRtree(shapely.from_wkb(np.array([bytes(w) for w in wkb], dtype=object)))
    hit = tree.query(shapely.points(xs, ys), predicate="intersects")[0]
    covered = np.zeros(xs.size, dtype=bool)
    covered[hit] = True
    flags[np.flatnonzero(finite)] = ~covered
    return flags


def refresh_incident_gaps(conn: Connection, grid_ids: Sequence[int] | None = None) -> int:
    """Recompute `in_gap` (location in no detect-level camera FOV) of the incidents that
    lie in the given grids (any version row; None: all incidents). Without any coverage
    computed, `in_gap` becomes NULL: unknown. Returns the number of rows changed.

    The coverage recompute calls this after rewriting `camera_fov`, so the statistics'
    count of incidents in coverage gaps follows the cameras.
    """
    where, params = "", {}
    if grid_ids is not None:
        where = (
            " AND EXISTS (SELECT 1 FROM grid g WHERE g.id = ANY(:grid_ids) "
            "AND ST_Intersects(g.geom, i.location))"
        )
        params["grid_ids"] = list(grid_ids)
    rows = conn.execute(
        statement(
            "SELECT i.id, ST_X(i.location) AS lon, ST_Y(i.location) AS lat, i.in_gap "
            "FROM incident i WHERE i.location IS NOT NULL" + where
        ),
        params,
    ).all()
    return reflag_gaps(conn, rows)


def reflag_gaps(conn: Connection, rows: Sequence[Any]) -> int:
    """Set `in_gap` afresh for the incidents `rows` (id, lon, lat, current in_gap), writing
    only the flags that change; returns how many did."""
    if not rows:
        return 0
    ids, lon, lat, before = (np.array(column, dtype=object) for column in zip(*rows, strict=True))
    x, y = to_metric(lon.astype(np.float64), lat.astype(np.float64))
    flags = gap_flags(conn, np.asarray(x), np.asarray(y))
    after = np.full(ids.size, None, dtype=object) if flags is None else flags.astype(object)
    changed = np.flatnonzero(before != after)
    if not changed.size:
        return 0
    conn.connection.driver_connection.execute(
        "UPDATE incident i SET in_gap = u.in_gap "
        "FROM unnest(%(ids)s::bigint[], %(flags)s::boolean[]) AS u(id, in_gap) "
        "WHERE i.id = u.id",
        {"ids": [int(i) for i in ids[changed]], "flags": after[changed].tolist()},
    )
    return int(changed.size)


# -- bulk ---------------------------------------------------------------------------------
def snapshot_in(conn: Connection, at: datetime) -> GridSnapshot:
    """The grids valid at `at` as seen by this connection's transaction (so that grids
    written in it count), indexed for lookup."""
    rows = conn.execute(statement(GRIDS_AT_SQL), {"at": at}).mappings().all()
    frame = pd.DataFrame(rows, columns=[*GRID_COLUMNS, "valid_from", "valid_to"])[GRID_COLUMNS]
    codes = frame["code"].astype(str).to_numpy()
    wkb = np.array([bytes(w) for w in frame["wkb"]], dtype=object)
    index = GridIndex.build(codes, shapely.from_wkb(wkb), check_valid=False)
    return GridSnapshot(index, frame.drop(columns="wkb").reset_index(drop=True), at, (), wkb)


def matcher_in(conn: Connection) -> AddressMatcher:
    """An address matcher over the gazetteer and divisions this transaction sees."""
    gazetteer = pd.DataFrame(conn.execute(statement(GAZETTEER_SQL)).mappings().all())
    divisions = pd.DataFrame(conn.execute(statement(DIVISIONS_SQL)).mappings().all())
    if divisions.empty:
        return AddressMatcher.build(None, None)
    divisions = gpd.GeoDataFrame(
        divisions.drop(columns="wkb"),
        geometry=shapely.from_wkb(divisions["wkb"].map(bytes).to_numpy()),
        crs=4326,
    )
    return AddressMatcher.build(gazetteer if len(gazetteer) else None, divisions)


def _instants(values: pd.Series, calendar: WorkCalendar) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Timestamps as UTC instants (naive ones are the calendar's local time) and a mask of
    the values that are not times."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        index = pd.DatetimeIndex(values)
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        index = pd.DatetimeIndex(values).tz_localize(calendar.timezone)
    else:
        try:
            index = pd.DatetimeIndex(pd.to_datetime(values, format="ISO8601"))
        except (ValueError, TypeError):
            index = None
        if index is not None:
            if index.tz is None:
                index = index.tz_localize(calendar.timezone)
            index = index.tz_convert(UTC).as_unit("us")
            return index, np.asarray(index.isna())
        parsed = []
        for value in values.to_numpy(dtype=object):
            try:
                stamp = pd.Timestamp(value) if value is not None else pd.NaT
            except (ValueError, TypeError):
                stamp = pd.NaT
            if stamp is not pd.NaT and stamp.tzinfo is None:
                stamp = stamp.tz_localize(calendar.timezone)
            parsed.append(stamp.tz_convert(UTC) if stamp is not pd.NaT else pd.NaT)
        index = pd.DatetimeIndex(parsed, dtype="datetime64[us, UTC]")
    index = index.tz_convert(UTC).as_unit("us")
    return index, np.asarray(index.isna())


def _iso(instants: pd.DatetimeIndex) -> np.ndarray:
    """UTC instants as ISO 8601 text for COPY (None for NaT), formatted in C."""
    naive = instants.tz_convert(UTC).tz_localize(None).to_numpy(dtype="datetime64[us]")
    text_ = np.datetime_as_string(naive, unit="us").astype(object) + "Z"
    text_[np.asarray(instants.isna())] = None
    return text_


def _epochs(conn: Connection, reported: pd.DatetimeIndex) -> tuple[np.ndarray, list[datetime]]:
    """Group instants by the set of grid versions valid then: per instant the epoch number
    (-1: before any grid) and per epoch the moment that starts it."""
    bounds = sorted(
        {
            b
            for row in conn.execute(statement("SELECT DISTINCT valid_from, valid_to FROM grid"))
            for b in row
            if b is not None
        }
    )
    if not bounds:
        return np.full(len(reported), -1), []
    edges = pd.DatetimeIndex(bounds).tz_convert(UTC).as_unit("us").asi8
    epoch = np.searchsorted(edges, reported.asi8, side="right") - 1
    return epoch, list(bounds)


@dataclass
class BulkAssignment:
    lon: np.ndarray
    lat: np.ndarray
    grid_id: np.ndarray  # object: int or None
    grid_code: np.ndarray  # object: str or None
    details: list[dict[str, Any]]


def assign_many(
    conn: Connection,
    lon: np.ndarray,
    lat: np.ndarray,
    address: np.ndarray,
    reported: pd.DatetimeIndex,
    max_distance_m: float = 5000.0,
) -> BulkAssignment:
    """Assign many incidents (WGS84 points, NaN where absent; addresses for those) to the
    grids valid at each one's report time: one index per set of valid grid versions,
    all points of a set located in one vectorised call."""
    n = len(lon)
    out_lon, out_lat = lon.astype(float).copy(), lat.astype(float).copy()
    grid_id = np.full(n, None, dtype=object)
    grid_code = np.full(n, None, dtype=object)
    details: list[dict[str, Any]] = [
        {"method": "none", "source": None, "ambiguous": False, "reason": "no location given"}
    ] * n
    has_point = np.isfinite(out_lon) & np.isfinite(out_lat)
    by_address = ~has_point & pd.notna(address)
    matches: dict[int, AddressMatch | None] = {}
    if by_address.any():
        matcher = matcher_in(conn)
        rows = np.flatnonzero(by_address)
        for row, match in zip(
            rows, matcher.match_many([str(a) for a in address[rows]]), strict=True
        ):
            matches[int(row)] = match
    epoch, starts = _epochs(conn, reported)
    for e in np.unique(epoch):
        rows = np.flatnonzero(epoch == e)
        moment = starts[e] if e >= 0 else datetime.min.replace(tzinfo=UTC)
        snapshot = snapshot_in(conn, moment)
        point_rows = rows[has_point[rows]]
        if point_rows.size:
            answers = resolve_points(
                snapshot, out_lon[point_rows], out_lat[point_rows], max_distance_m=max_distance_m
            )
            found = answers.grid >= 0
            ids, codes = snapshot.column("id"), snapshot.column("code")
            grid_id[point_rows[found]] = ids[answers.grid[found]]
            grid_code[point_rows[found]] = codes[answers.grid[found]]
            for row, item in zip(point_rows, point_assignments(snapshot, answers), strict=True):
                details[row] = item
        for row in rows[by_address[rows]]:
            match = matches[int(row)]
            assignment = assign_address(snapshot, match, str(address[row]), max_distance_m)
            details[row] = assignment.details
            if assignment.lon is not None:
                out_lon[row], out_lat[row] = assignment.lon, assignment.lat
            grid_id[row], grid_code[row] = _grid_values(snapshot, assignment.grid)
    return BulkAssignment(out_lon, out_lat, grid_id, grid_code, details)


def write_incidents(
    conn: Connection,
    incidents: gpd.GeoDataFrame,
    progress: Callable[[int], None] | None = None,
    *,
    calendar: WorkCalendar | None = None,
    actor: str = "import",
    max_distance_m: float = 5000.0,
) -> int:
    """Store incidents in bulk (see `store_incidents`); returns the number written."""
    return store_incidents(
        conn,
        incidents,
        progress,
        calendar=calendar,
        actor=actor,
        max_distance_m=max_distance_m,
    )[0]


def _check_optional_choice(
    errors: RowErrors, frame: pd.DataFrame, column: str, allowed: tuple[str, ...]
) -> None:
    if column in frame.columns:
        values = frame[column]
        bad = (values.notna() & ~values.isin(allowed)).to_numpy(bool)
        errors.add(bad, column, "must be one of " + ", ".join(allowed), frame)


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name in frame.columns:
        return frame[name].to_numpy(dtype=object)
    return np.full(len(frame), None, dtype=object)


def store_incidents(
    conn: Connection,
    incidents: gpd.GeoDataFrame,
    progress: Callable[[int], None] | None = None,
    *,
    calendar: WorkCalendar | None = None,
    actor: str = "import",
    max_distance_m: float = 5000.0,
) -> tuple[int, dict[str, int]]:
    """Store incidents (WGS84 points; rows without one need an `address`), each assigned
    like an HTTP intake to the grids valid at its `reported_at` (naive times are the
    calendar's local time), with a `report` event each (at `reported_at`, by `actor`).

    Optional columns: description, channel, address, status (historical cases; default
    reported), due_at (default: the category's limit in working hours from
    reported_at), closed_at, photos (list of URLs), raw_lon/raw_lat/raw_coord_sys/
    accuracy_m. Unresolvable rows are stored unassigned, never dropped. All rows are
    checked first; RowsRejected lists every bad one (rows numbered by position) and
    nothing is written. Returns (rows written, rows per assignment method).
    """
    calendar = calendar or WorkCalendar()
    categories = {c.code: c for c in read_categories(conn)}
    errors = RowErrors("incidents")
    errors.require_columns(incidents, ["category", "reported_at"])
    errors.require_values(incidents, ["category", "reported_at"])
    _check_optional_choice(errors, incidents, "category", tuple(sorted(categories)))
    _check_optional_choice(errors, incidents, "channel", CHANNELS)
    _check_optional_choice(errors, incidents, "status", STATES)
    errors.check_text(incidents)
    geometry = (
        incidents.geometry.to_numpy()
        if isinstance(incidents, gpd.GeoDataFrame)
        else np.full(len(incidents), None, dtype=object)
    )
    address = _column(incidents, "address")
    missing = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    errors.add(missing & pd.isna(address), "geometry", "needs a point or an address", incidents)
    points = ~missing
    errors.add(
        points & (shapely.get_type_id(geometry) != 0), "geometry", "must be a Point", incidents
    )
    reported, bad_time = _instants(incidents["reported_at"], calendar)
    given = incidents["reported_at"].notna().to_numpy(bool)
    errors.add(bad_time & given, "reported_at", "not a date and time", incidents)
    for name in ("due_at", "closed_at"):
        if name in incidents.columns:
            bad = _instants(incidents[name], calendar)[1] & incidents[name].notna().to_numpy(bool)
            errors.add(bad, name, "not a date and time", incidents)
    errors.raise_if_any()

    n = len(incidents)
    if n == 0:
        return 0, {}
    lon = np.where(points, shapely.get_x(geometry), np.nan)
    lat = np.where(points, shapely.get_y(geometry), np.nan)
    assigned = assign_many(conn, lon, lat, address, reported, max_distance_m)

    frame = select_columns(incidents, COLUMNS, {"channel": "import", "description": ""})
    frame["reported_at"] = _iso(reported)
    limit = np.array([categories[c].time_limit_hours for c in frame["category"]])
    due = calendar.add_many(reported, limit)
    if "due_at" in incidents.columns:
        stated = _instants(incidents["due_at"], calendar)[0]
        due = stated.where(~stated.isna(), due)
    frame["due_at"] = _iso(due)
    status = pd.Series(_column(incidents, "status")).fillna("reported").to_numpy(dtype=object)
    frame["status"] = status
    frame["handled"] = np.isin(status, HANDLED_STATES)
    if "closed_at" in incidents.columns:
        frame["closed_at"] = _iso(_instants(incidents["closed_at"], calendar)[0])
    if "photos" in incidents.columns:
        frame["photos"] = [p if isinstance(p, list) else [] for p in incidents["photos"]]
    frame["department"] = [categories[c].department for c in frame["category"]]
    frame["grid_id"] = assigned.grid_id
    frame["grid_code"] = assigned.grid_code
    frame["assignment"] = assigned.details
    frame["created_by"] = actor
    frame["updated_at"] = frame["reported_at"]
    # Ids taken from the sequence up front: the events refer to exactly these.
    ids = np.array(
        conn.execute(
            statement(
                "SELECT nextval(pg_get_serial_sequence('incident', 'id')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": n},
        )
        .scalars()
        .all(),
        dtype=np.int64,
    )
    frame.insert(0, "id", ids)
    located = np.isfinite(assigned.lon) & np.isfinite(assigned.lat)
    x, y = to_metric(
        np.where(located, assigned.lon, np.nan), np.where(located, assigned.lat, np.nan)
    )
    flags = gap_flags(conn, np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    if flags is not None:
        frame["in_gap"] = np.where(located, flags, None)
    frame["location"] = np.where(
        located,
        shapely.points(np.where(located, assigned.lon, 0.0), np.where(located, assigned.lat, 0.0)),
        None,
    )
    written = copy_frame(conn, "incident", frame, {"location": 4326}, progress)
    channel = frame["channel"].to_numpy(dtype=object)  # checked choices: safe in JSON text
    events = pd.DataFrame(
        {
            "incident_id": ids,
            "at": frame["reported_at"].to_numpy(),
            "actor": actor,
            "action": "report",
            "to_status": status,
            "data": '{"channel": "' + channel + '", "imported": true}',
        }
    )
    copy_frame(conn, "incident_event", events)
    methods, counts = np.unique([d["method"] for d in assigned.details], return_counts=True)
    return written, {str(m): int(c) for m, c in zip(methods, counts, strict=True)}


# -- file import --------------------------------------------------------------------------
@dataclass(frozen=True)
class IncidentImport:
    """What an incident file import did."""

    file: str
    coordinates: str
    read: int
    written: int
    assigned: int
    by_method: dict[str, int]
    seconds: float

    def summary(self) -> str:
        methods = ", ".join(f"{m} {c:,}" for m, c in sorted(self.by_method.items()))
        return (
            f"incidents: {self.written:,} of {self.read:,} written from {self.file} in "
            f"{self.seconds:.1f} s; {self.assigned:,} assigned to a grid ({methods}), "
            f"{self.written - self.assigned:,} unassigned"
        )


Progress = Callable[[str, float], None]


def import_incident_file(
    engine: Engine,
    path: str | Path,
    *,
    actor: str,
    coord_sys: str | None = None,
    layer: str | None = None,
    calendar: WorkCalendar | None = None,
    max_distance_m: float = 5000.0,
    progress: Progress | None = None,
) -> IncidentImport:
    """Import historical incidents from CSV (lon/lat or WKT columns; an address column
    alone is not enough for the reader) or GeoJSON & co., in one transaction with an
    audit row. Raises the file reader's errors or RowsRejected (nothing written)."""
    report = progress or (lambda stage, fraction: None)
    begin = time.perf_counter()
    report("reading", 0.0)
    vector = read_vector_file(path, coord_sys=coord_sys, layer=layer)
    report("reading", 1.0)
    frame = vector.frame
    # A row without a point is fine when it has an address: keep the reader's other errors.
    has_address = (
        frame["address"].notna() if "address" in frame.columns else pd.Series(False, frame.index)
    )
    read_errors = [
        e
        for e in vector.errors
        if not (
            e.get("field") == "geometry"
            and e["row"] in frame.index
            and has_address.get(e["row"], False)
        )
    ]
    if read_errors:
        raise RowsRejected("incidents", read_errors)
    total = len(frame)
    done = 0

    def rows_written(rows: int) -> None:
        nonlocal done
        if done == 0:
            report("assigning", 1.0)
        done += rows
        report("writing", done / max(total, 1))

    with engine.begin() as conn:
        report("assigning", 0.0)
        try:
            written, by_method = store_incidents(
                conn,
                frame.reset_index(drop=True),
                rows_written,
                calendar=calendar,
                actor=actor,
                max_distance_m=max_distance_m,
            )
        except RowsRejected as exc:
            labels = frame.index.to_numpy()
            for error in exc.errors:
                if isinstance(error.get("row"), int) and error["row"] < len(labels):
                    error["row"] = int(labels[error["row"]])
            raise RowsRejected("incidents", exc.errors) from None
        record_write(
            conn,
            actor,
            "import",
            "incident",
            None,
            after={"file": vector.name, "format": vector.format, "written": written, **by_method},
        )
    return IncidentImport(
        vector.name,
        vector.coords,
        total,
        written,
        sum(c for m, c in by_method.items() if m != "none"),
        by_method,
        time.perf_counter() - begin,
    )
