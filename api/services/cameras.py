"""Cameras: the registry's SQL (read, create, edit, delete) and its validation.

Every write runs in the caller's transaction, takes the camera write lock, records an
audit row and, before it returns, brings the FOVs and the coverage of the grids they
touch up to date (`api.services.coverage.refresh_cameras`), so no read sees a camera
whose coverage is stale. (An edit of fields the FOVs do not depend on, a rename say,
leaves them as they are.)
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg.rows import dict_row
from sqlalchemy import Connection, text

from api.audit import audit_statement, record_write
from api.errors import Problem
from api.services.bulk import copy_frame, select_columns
from api.services.coverage import (
    CAMERA_WRITE_LOCK_KEY,
    CAMERA_WRITE_LOCK_SQL,
    begin_camera_write,
    finish_refresh,
    refresh_cameras,
    start_refresh,
)
from api.services.validation import RowErrors, RowsRejected, unprintable
from api.services.write_locks import write_lock_busy
from geo.camera import DEFAULT_HFOV_DEG
from geo.codes import validate_camera_gb_id
from geo.reference import load_counties, load_prefecture

CAMERA_KINDS = ("bullet", "dome", "ptz")
STATUSES = ("online", "offline", "fault")
OWNERS = ("public", "industry", "enterprise", "residential")
COLUMNS = [
    "gb_id",
    "name",
    "kind",
    "height_m",
    "azimuth_deg",
    "hfov_deg",
    "resolution_h_px",
    "range_m",
    "status",
    "owner",
    "installed_at",
    "county_code",
]


# The id checks `validate_camera_gb_id` makes, as one pattern: an id that matches needs no
# closer look (the region digits are compared with the county separately).
PLAUSIBLE_GB_ID = r"\d{10}13[12]\d{7}"
REQUIRED = [
    "gb_id",
    "name",
    "kind",
    "height_m",
    "azimuth_deg",
    "hfov_deg",
    "resolution_h_px",
    "county_code",
    "geometry",
]
REQUIRED_VALUES = ["gb_id", "name", "kind", "county_code"]
# Each number's test (on float arrays; NaN is a missing value) and the reason it fails.
VALUE_RULES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "height_m": (lambda v: v >= 0, "must be 0 m or more"),
    "azimuth_deg": (lambda v: (v >= 0) & (v < 360), "must be in [0, 360) degrees"),
    "hfov_deg": (lambda v: (v > 0) & (v <= 360), "must be in (0, 360] degrees"),
    "resolution_h_px": (lambda v: v > 0, "must be a positive pixel count"),
    "range_m": (lambda v: np.isnan(v) | (v > 0), "must be more than 0 m when given"),
}
NULLABLE_VALUES = ("range_m",)
OUTSIDE_REASON = "point lies outside Xiangxi prefecture"


def _bad_values(name: str, values: np.ndarray) -> np.ndarray:
    ok, _ = VALUE_RULES[name]
    with np.errstate(invalid="ignore"):
        if name in NULLABLE_VALUES:
            return ~ok(values)
        return ~np.isfinite(values) | ~ok(values)


def _wrong_county_reason(county: str, code: str) -> str:
    return (
        f"the camera stands in county {county} ({COUNTY_NAMES[county]}) "
        f"but its id says county {code}: fix the id's first 6 digits or the position"
    )


@functools.cache
def _prepared_prefecture() -> shapely.Geometry:
    prefecture = load_prefecture()
    shapely.prepare(prefecture)
    return prefecture


def validate_cameras(cameras: gpd.GeoDataFrame) -> None:
    """Raise `RowsRejected` listing every bad row: ids, ranges, choices, position.
    (`check_camera` is the same for one camera without a frame.)"""
    errors = RowErrors("cameras")
    errors.require_columns(cameras, REQUIRED)
    errors.require_values(cameras, REQUIRED_VALUES)
    gb_ids = cameras["gb_id"].astype("string")
    plausible = (
        gb_ids.str.fullmatch(PLAUSIBLE_GB_ID).fillna(False)
        & (gb_ids.str[:6] == cameras["county_code"].astype("string")).fillna(False)
    ).to_numpy(bool)
    for position in np.flatnonzero(~plausible):
        row = cameras.iloc[position]
        county = None if row["county_code"] is None else str(row["county_code"])
        for reason in validate_camera_gb_id(str(row["gb_id"]), county):
            errors.errors.append(
                {"row": int(position), "field": "gb_id", "reason": reason, "id": str(row["gb_id"])}
            )
    errors.check_text(cameras)
    errors.check_unique(cameras, "gb_id")
    errors.check_choice(cameras, "kind", CAMERA_KINDS)
    for name, allowed in (("status", STATUSES), ("owner", OWNERS)):
        if name in cameras.columns:
            errors.check_choice(cameras.fillna({name: allowed[0]}), name, allowed)
    for name, (_, reason) in VALUE_RULES.items():
        if name in cameras.columns:
            bad = _bad_values(name, cameras[name].astype(float).to_numpy())
            errors.add(bad, name, reason, cameras)
    errors.check_geometry(cameras, "geometry", ("Point",))
    points = cameras.geometry.to_numpy()
    present = ~(shapely.is_missing(points) | shapely.is_empty(points))
    outside = present & ~shapely.covers(_prepared_prefecture(), points)
    errors.add(outside, "geometry", OUTSIDE_REASON, cameras)
    # The county the point stands in must be the id's (only for ids that are otherwise good,
    # so a malformed id is not reported twice).
    bad_ids = {e["row"] for e in errors.errors if e["field"] in ("gb_id", "county_code")}
    check = np.array(
        [p for p in np.flatnonzero(present & ~outside) if p not in bad_ids], dtype=np.int64
    )
    claimed = cameras["county_code"].astype("string").to_numpy()[check]
    found = misplaced_counties(points[check], claimed)
    for position, county, code in zip(check, found, claimed, strict=True):
        if county is not None:
            errors.errors.append(
                {
                    "row": int(position),
                    "field": "gb_id",
                    "reason": _wrong_county_reason(county, code),
                    "id": str(cameras["gb_id"].iloc[position]),
                }
            )
    errors.raise_if_any()


def check_camera(properties: dict[str, Any], point: shapely.Geometry) -> dict[str, Any]:
    """One camera (WGS84 point) checked as `validate_cameras` checks a one-row frame of it
    (`camera_frame`), in plain Python: the same errors in the same order, raised as
    `RowsRejected`, for a small share of the frame's cost (an edit checks one camera).
    Returns the values to store: the kind's default HFOV when none is given, and the
    county from the id."""
    values = _with_defaults(properties)
    missing = [name for name in REQUIRED if name != "geometry" and name not in values]
    if missing:
        raise RowsRejected(
            "cameras", [{"row": 0, "field": name, "reason": "column missing"} for name in missing]
        )
    gb_id = values["gb_id"]
    label = None if _missing(gb_id) else str(gb_id)
    errors: list[dict[str, Any]] = []

    def add(field: str, reason: str) -> None:
        errors.append({"row": 0, "field": field, "reason": reason, "id": label})

    for name in REQUIRED_VALUES:
        if _missing(values[name]):
            add(name, "value missing")
    county = values["county_code"]
    claimed = None if _missing(county) else str(county)
    if label is None or not (
        re.fullmatch(PLAUSIBLE_GB_ID, label) and label[:6] == claimed
    ):  # the frame compares the id's text; None and NaN show as "None" and "nan"
        for reason in validate_camera_gb_id(str(gb_id), None if county is None else str(county)):
            errors.append({"row": 0, "field": "gb_id", "reason": reason, "id": str(gb_id)})
    for name, value in values.items():
        if isinstance(value, str) and (reason := unprintable(value)) is not None:
            add(name, reason)
    if values["kind"] not in CAMERA_KINDS:
        add("kind", "must be one of " + ", ".join(CAMERA_KINDS))
    for name, allowed in (("status", STATUSES), ("owner", OWNERS)):
        if name in values and (allowed[0] if _missing(values[name]) else values[name]) not in (
            allowed
        ):
            add(name, "must be one of " + ", ".join(allowed))
    for name, (_, reason) in VALUE_RULES.items():
        if name in values and _bad_values(name, np.array([_float(values[name])]))[0]:
            add(name, reason)
    present = not (shapely.is_missing(point) or shapely.is_empty(point))
    if not present:
        add("geometry", "geometry missing or empty")
    elif shapely.get_type_id(point) != 0:
        add("geometry", "geometry must be Point")
    elif not shapely.is_valid(point):
        add("geometry", "invalid geometry: " + shapely.is_valid_reason(point))
    outside = present and not shapely.covers(_prepared_prefecture(), point)
    if outside:
        add("geometry", OUTSIDE_REASON)
    if present and not outside and not any(e["field"] in ("gb_id", "county_code") for e in errors):
        (found,) = misplaced_counties(np.array([point], dtype=object), np.array([claimed]))
        if found is not None:
            errors.append(
                {
                    "row": 0,
                    "field": "gb_id",
                    "reason": _wrong_county_reason(found, str(claimed)),
                    "id": str(gb_id),
                }
            )
    if errors:
        raise RowsRejected("cameras", errors)
    return values


def _missing(value: Any) -> bool:
    """What pandas counts as a missing value, for one plain value."""
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and value != value)
    )


def _float(value: Any) -> float:
    """A number as the frame's `astype(float)` reads it (missing: NaN); what is no number
    at all is NaN too, and so fails its rule (the frame would raise)."""
    if _missing(value):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


COUNTY_NAMES = dict(zip(load_counties()["code"], load_counties()["name"], strict=True))
# Points this close to a county border may be registered to either county: positions
# from handheld GPS or a GCJ-02 conversion are that uncertain.
COUNTY_BORDER_TOLERANCE_DEG = 1e-4  # ~10 m


@functools.cache
def _county_index() -> tuple[shapely.STRtree, np.ndarray, np.ndarray]:
    counties = load_counties()
    polygons = counties.geometry.to_numpy()
    shapely.prepare(polygons)
    return shapely.STRtree(polygons), polygons, counties["code"].to_numpy()


def misplaced_counties(points: np.ndarray, claimed: np.ndarray) -> list[str | None]:
    """For each WGS84 point, the county it stands in when that is not `claimed` and the
    point is farther than `COUNTY_BORDER_TOLERANCE_DEG` from the claimed county; else None.
    Most points lie inside their county, so only the others are measured."""
    tree, polygons, codes = _county_index()
    out: list[str | None] = [None] * len(points)
    if not len(points):
        return out
    point_index, county_index = tree.query(points, predicate="intersects")
    located = np.full(len(points), None, dtype=object)
    located[point_index] = codes[county_index]
    by_code = dict(zip(codes, polygons, strict=True))
    for i in np.flatnonzero((located != claimed) & (located != None)):  # noqa: E711
        home = by_code.get(claimed[i])
        if home is None or shapely.distance(home, points[i]) > COUNTY_BORDER_TOLERANCE_DEG:
            out[i] = str(located[i])
    return out


def write_cameras(
    conn: Connection, cameras: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> list[int]:
    """Insert cameras (WGS84 points) after validating them, all or nothing; returns their
    new ids in the frame's order. The caller refreshes coverage (`refresh_cameras`)."""
    validate_cameras(cameras)
    frame = select_columns(cameras, COLUMNS, {"status": STATUSES[0], "owner": OWNERS[0]})
    frame["geom"] = cameras.geometry.to_numpy()
    copy_frame(conn, "camera", frame, {"geom": 4326}, progress)
    gb_ids = frame["gb_id"].astype(str).tolist()
    ids = dict(
        conn.execute(
            text("SELECT gb_id, id FROM camera WHERE gb_id = ANY(:gb_ids)"), {"gb_ids": gb_ids}
        ).all()
    )
    return [int(ids[gb_id]) for gb_id in gb_ids]


# -- the registry over HTTP ------------------------------------------------------------------
# A camera as the registry shows it (rounded to what the inputs mean; an azimuth of 359.996
# shows as 0, not as 360, which no input may be).
CAMERA_FIELDS = """
id, gb_id, name, kind,
round(height_m::numeric, 2)::float8 AS height_m,
mod(round(azimuth_deg::numeric, 2), 360)::float8 AS azimuth_deg,
round(hfov_deg::numeric, 2)::float8 AS hfov_deg,
resolution_h_px,
round(range_m::numeric, 2)::float8 AS range_m,
status, owner, installed_at, county_code, version, updated_at,
ST_X(geom) AS lon, ST_Y(geom) AS lat
"""
CAMERA_SELECT = f"SELECT {CAMERA_FIELDS} FROM camera\n"


@dataclass(frozen=True)
class CameraFilter:
    """Which cameras a list returns; every field optional. `bbox` is WGS84 (W, S, E, N)."""

    county_code: str | None = None
    status: str | None = None
    kind: str | None = None
    bbox: tuple[float, float, float, float] | None = None


def read_cameras(
    conn: Connection, where: CameraFilter, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Cameras in id order, as plain rows (lon/lat WGS84)."""
    clauses, params = [], {"limit": limit, "offset": offset}
    for name in ("county_code", "status", "kind"):
        if getattr(where, name) is not None:
            clauses.append(f"{name} = :{name}")
            params[name] = getattr(where, name)
    if where.bbox is not None:
        clauses.append("geom && ST_MakeEnvelope(:west, :south, :east, :north, 4326)")
        params |= dict(zip(("west", "south", "east", "north"), where.bbox, strict=True))
    sql = CAMERA_SELECT + f"WHERE {' AND '.join(clauses) or 'true'} "
    sql += "ORDER BY id LIMIT :limit OFFSET :offset"
    return [dict(row) for row in conn.execute(text(sql), params).mappings()]


def read_camera(conn: Connection, camera_id: int, *, lock: bool = False) -> dict[str, Any]:
    """One camera; `lock` holds its row until the transaction ends. 404 when absent."""
    sql = CAMERA_SELECT + "WHERE id = :id" + (" FOR UPDATE" if lock else "")
    row = conn.execute(text(sql), {"id": camera_id}).mappings().first()
    if row is None:
        raise Problem(404, f"no camera {camera_id}")
    return dict(row)


def camera_etag(row: dict[str, Any]) -> str:
    return f'W/"camera-{row["id"]}-v{row["version"]}"'


def _with_defaults(properties: dict[str, Any]) -> dict[str, Any]:
    """A camera's values with the kind's default HFOV when none is given, and the county
    from the id's first six digits."""
    kind = properties.get("kind")
    if properties.get("hfov_deg") is None and kind in DEFAULT_HFOV_DEG:
        properties = properties | {"hfov_deg": DEFAULT_HFOV_DEG[kind]}
    gb_id = str(properties.get("gb_id") or "")
    return properties | {"county_code": gb_id[:6] or None}


def camera_frame(properties: dict[str, Any], point: shapely.Geometry) -> gpd.GeoDataFrame:
    """One camera as the frame `validate_cameras` checks, with kind-dependent defaults."""
    return gpd.GeoDataFrame([_with_defaults(properties)], geometry=[point], crs=4326)


def create_camera(
    conn: Connection, properties: dict[str, Any], point: shapely.Geometry, actor: str
) -> dict[str, Any]:
    """Register one camera (WGS84 point); 422 `RowsRejected` naming each bad field."""
    begin_camera_write(conn)
    frame = camera_frame(properties, point)
    _refuse_registered(conn, frame["gb_id"].iloc[0])
    (camera_id,) = write_cameras(conn, frame)
    refresh_cameras(conn, [camera_id])
    row = read_camera(conn, camera_id)
    record_write(conn, actor, "create", "camera", camera_id, after=row)
    return row


def update_camera(
    conn: Connection,
    camera_id: int,
    changes: dict[str, Any],
    point: shapely.Geometry | None,
    if_match: str | None,
    actor: str,
) -> dict[str, Any]:
    """Edit one camera (412 when `if_match` is not its current ETag); the FOVs and the
    coverage of the grids under its old and new FOVs follow in the same transaction.

    Only the fields whose value differs from the camera as read are written (a form that
    sends back every field keeps the stored precision of those it did not touch), and
    coverage is recomputed only when the camera moved or a field its FOVs depend on
    (`FOV_FIELDS`) changed: renaming a camera writes no coverage row."""
    before = _lock_camera(conn, camera_id)
    if if_match is not None and if_match != camera_etag(before):
        raise Problem(
            412,
            f"camera {camera_id} changed since you read it: it is now version "
            f"{before['version']}; read it again and repeat your edit",
        )
    merged = {name: before[name] for name in EDITABLE} | changes
    position = point if point is not None else shapely.Point(before["lon"], before["lat"])
    if merged["gb_id"] != before["gb_id"]:
        _refuse_registered(conn, merged["gb_id"])
    values = check_camera(merged, position)
    written = {
        name: values[name] for name in EDITABLE if name in changes and values[name] != before[name]
    }
    moved = point is not None and (point.x, point.y) != (before["lon"], before["lat"])
    params = _sql_values(written) | {"id": camera_id}
    assignments = [f"{name} = %({name})s" for name in written]
    if "gb_id" in written:
        assignments.append("county_code = %(county_code)s")
        params["county_code"] = values["county_code"]
    if moved:
        assignments.append("geom = ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)")
        params |= {"lon": position.x, "lat": position.y}
    refresh = moved or any(name in written for name in FOV_FIELDS)
    edit = UPDATE_CAMERA_SQL if refresh else UPDATE_CAMERA_KEEPING_FOVS_SQL
    sql = edit.format(assignments="".join(f"{a}, " for a in assignments))
    driver = conn.connection.driver_connection
    with driver.pipeline():  # the edit and the refresh's first statements: one round trip
        edited = driver.cursor(row_factory=dict_row).execute(sql, params)
        started = start_refresh(driver, [camera_id]) if refresh else None
    after = edited.fetchone()
    audit = audit_statement(actor, "update", "camera", camera_id, before=before, after=after)
    if started is not None:
        finish_refresh(conn, started, along=[audit])
    else:
        driver.execute(*audit)
    return after


# What a PATCH may change (the position comes as the geometry; the county from the id).
EDITABLE = (
    "gb_id",
    "name",
    "kind",
    "height_m",
    "azimuth_deg",
    "hfov_deg",
    "resolution_h_px",
    "range_m",
    "status",
    "owner",
    "installed_at",
)
# The fields a camera's FOVs depend on, besides its position (`geo.coverage.FovSet`).
FOV_FIELDS = ("kind", "azimuth_deg", "hfov_deg", "resolution_h_px", "range_m", "status")
UPDATE_CAMERA_SQL = (
    "UPDATE camera SET {assignments}version = version + 1, updated_at = now() "
    f"WHERE id = %(id)s RETURNING {CAMERA_FIELDS}"
)
# An edit its FOVs do not depend on: they stay, marked as built from the new version (or a
# full recompute would rebuild them).
UPDATE_CAMERA_KEEPING_FOVS_SQL = f"""
WITH edited AS (
    UPDATE camera SET {{assignments}}version = version + 1, updated_at = now()
    WHERE id = %(id)s RETURNING *
), fovs AS (
    UPDATE camera_fov f SET camera_version = e.version FROM edited e WHERE f.camera_id = e.id
)
SELECT {CAMERA_FIELDS} FROM edited
"""


def _lock_camera(conn: Connection, camera_id: int) -> dict[str, Any]:
    """`begin_camera_write`, then `read_camera` with the row locked: one round trip."""
    driver = conn.connection.driver_connection
    try:
        with driver.pipeline():
            driver.execute(CAMERA_WRITE_LOCK_SQL, {"key": CAMERA_WRITE_LOCK_KEY})
            read = driver.cursor(row_factory=dict_row).execute(
                CAMERA_SELECT + "WHERE id = %(id)s FOR UPDATE", {"id": camera_id}
            )
    except psycopg.errors.QueryCanceled:
        raise write_lock_busy("camera") from None
    row = read.fetchone()
    if row is None:
        raise Problem(404, f"no camera {camera_id}")
    return row


def delete_camera(conn: Connection, camera_id: int, actor: str) -> dict[str, Any]:
    """Remove a camera; the grids its FOVs touched are recomputed without it."""
    begin_camera_write(conn)
    before = read_camera(conn, camera_id, lock=True)
    refresh_cameras(conn, [camera_id], deleting=True)
    conn.execute(text("DELETE FROM camera WHERE id = :id"), {"id": camera_id})
    record_write(conn, actor, "delete", "camera", camera_id, before=before)
    return before


def _sql_values(values: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars and NaN as the plain Python values psycopg binds."""
    out = {}
    for name, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and np.isnan(value):
            value = None
        out[name] = None if value is pd.NaT else value
    return out


def _refuse_registered(conn: Connection, gb_id: str) -> None:
    existing = conn.execute(
        text("SELECT id FROM camera WHERE gb_id = :gb_id"), {"gb_id": gb_id}
    ).scalar()
    if existing is not None:
        raise RowsRejected(
            "cameras",
            [
                {
                    "row": 0,
                    "field": "gb_id",
                    "reason": f"already registered as camera {existing}",
                    "id": gb_id,
                }
            ],
        )
