"""Cameras: the registry's SQL (read, create, edit, delete) and the evidence lookup.

Every write runs in the caller's transaction, takes the camera write lock, records an
audit row and, before it returns, brings the FOVs and the coverage of the grids they
touch up to date (`api.services.coverage.refresh_cameras`), so no read sees a camera
whose coverage is stale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from api.audit import record_write
from api.errors import Problem
from api.services.bulk import copy_frame, select_columns
from api.services.coverage import ARC_PAD_SHARE, begin_camera_write, refresh_cameras
from api.services.validation import RowErrors, RowsRejected
from geo.camera import DEFAULT_HFOV_DEG, DORI_LEVELS, level_ranges_m, visible_from
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


def validate_cameras(cameras: gpd.GeoDataFrame) -> None:
    """Raise `RowsRejected` listing every bad row: ids, ranges, choices, position."""
    errors = RowErrors("cameras")
    errors.require_columns(
        cameras,
        [
            "gb_id",
            "name",
            "kind",
            "height_m",
            "azimuth_deg",
            "hfov_deg",
            "resolution_h_px",
            "county_code",
            "geometry",
        ],
    )
    errors.require_values(cameras, ["gb_id", "name", "kind", "county_code"])
    gb_ids = cameras["gb_id"].astype("string")
    plausible = (
        gb_ids.str.fullmatch(r"\d{20}").fillna(False)
        & gb_ids.str[10:13].isin(["131", "132"])
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
    ranges = {
        "height_m": (lambda v: v >= 0, "must be 0 m or more"),
        "azimuth_deg": (lambda v: (v >= 0) & (v < 360), "must be in [0, 360) degrees"),
        "hfov_deg": (lambda v: (v > 0) & (v <= 360), "must be in (0, 360] degrees"),
        "resolution_h_px": (lambda v: v > 0, "must be a positive pixel count"),
        "range_m": (lambda v: np.isnan(v) | (v > 0), "must be more than 0 m when given"),
    }
    for name, (ok, reason) in ranges.items():
        if name in cameras.columns:
            values = cameras[name].astype(float).to_numpy()
            nullable = name == "range_m"
            bad = ~ok(values) if nullable else (~np.isfinite(values) | ~ok(values))
            errors.add(bad, name, reason, cameras)
    errors.check_geometry(cameras, "geometry", ("Point",))
    points = cameras.geometry.to_numpy()
    present = ~(shapely.is_missing(points) | shapely.is_empty(points))
    prefecture = load_prefecture()
    shapely.prepare(prefecture)
    outside = present & ~shapely.covers(prefecture, points)
    errors.add(outside, "geometry", "point lies outside Xiangxi prefecture", cameras)
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
                    "reason": f"the camera stands in county {county} ({COUNTY_NAMES[county]}) "
                    f"but its id says county {code}: fix the id's first 6 digits or the position",
                    "id": str(cameras["gb_id"].iloc[position]),
                }
            )
    errors.raise_if_any()


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
CAMERA_SELECT = """
SELECT id, gb_id, name, kind,
       round(height_m::numeric, 2)::float8 AS height_m,
       round(azimuth_deg::numeric, 2)::float8 AS azimuth_deg,
       round(hfov_deg::numeric, 2)::float8 AS hfov_deg,
       resolution_h_px,
       round(range_m::numeric, 2)::float8 AS range_m,
       status, owner, installed_at, county_code, version, updated_at,
       ST_X(geom) AS lon, ST_Y(geom) AS lat
FROM camera
"""


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


def _frame(properties: dict[str, Any], point: shapely.Geometry) -> gpd.GeoDataFrame:
    """One camera as the frame `validate_cameras` checks, with kind-dependent defaults."""
    kind = properties.get("kind")
    if properties.get("hfov_deg") is None and kind in DEFAULT_HFOV_DEG:
        properties = properties | {"hfov_deg": DEFAULT_HFOV_DEG[kind]}
    gb_id = str(properties.get("gb_id") or "")
    return gpd.GeoDataFrame(
        [properties | {"county_code": gb_id[:6] or None}], geometry=[point], crs=4326
    )


def create_camera(
    conn: Connection, properties: dict[str, Any], point: shapely.Geometry, actor: str
) -> dict[str, Any]:
    """Register one camera (WGS84 point); 422 `RowsRejected` naming each bad field."""
    begin_camera_write(conn)
    frame = _frame(properties, point)
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
    coverage of the grids under its old and new FOVs follow in the same transaction."""
    begin_camera_write(conn)
    before = read_camera(conn, camera_id, lock=True)
    if if_match is not None and if_match != camera_etag(before):
        raise Problem(
            412,
            f"camera {camera_id} changed since you read it: it is now version "
            f"{before['version']}; read it again and repeat your edit",
        )
    merged = {name: before[name] for name in EDITABLE} | changes
    position = point if point is not None else shapely.Point(before["lon"], before["lat"])
    frame = _frame(merged, position)
    if merged["gb_id"] != before["gb_id"]:
        _refuse_registered(conn, merged["gb_id"])
    validate_cameras(frame)
    values = {name: frame[name].iloc[0] for name in EDITABLE}
    conn.execute(
        text(
            "UPDATE camera SET "
            + ", ".join(f"{name} = :{name}" for name in EDITABLE)
            + ", county_code = :county_code, geom = ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), "
            "version = version + 1, updated_at = now() WHERE id = :id"
        ),
        _sql_values(values)
        | {
            "county_code": frame["county_code"].iloc[0],
            "lon": position.x,
            "lat": position.y,
            "id": camera_id,
        },
    )
    refresh_cameras(conn, [camera_id])
    after = read_camera(conn, camera_id)
    record_write(conn, actor, "update", "camera", camera_id, before=before, after=after)
    return after


def delete_camera(conn: Connection, camera_id: int, actor: str) -> dict[str, Any]:
    """Remove a camera; the grids its FOVs touched are recomputed without it."""
    begin_camera_write(conn)
    before = read_camera(conn, camera_id, lock=True)
    refresh_cameras(conn, [camera_id], deleting=True)
    conn.execute(text("DELETE FROM camera WHERE id = :id"), {"id": camera_id})
    record_write(conn, actor, "delete", "camera", camera_id, before=before)
    return before


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


# -- evidence: which cameras see a point -----------------------------------------------------
# The stored FOV polygons run up to 0.13 % of the range inside the true arcs: candidates
# are the detect FOVs within that share of the longest detect range (an index lookup).
VISIBLE_CANDIDATES_SQL = """
SELECT c.id, c.gb_id, c.kind, c.azimuth_deg, c.hfov_deg, c.resolution_h_px, c.range_m,
       ST_X(c.geom_m) AS x, ST_Y(c.geom_m) AS y
FROM camera_fov f JOIN camera c ON c.id = f.camera_id
WHERE f.level = 'detect' AND ST_DWithin(
    f.geom_m, ST_SetSRID(ST_Point(:x, :y), 4546),
    (SELECT max(range_m) FROM camera_fov WHERE level = 'detect') * :share + 0.01)
"""


def cameras_visible(conn: Connection, x_m: float, y_m: float) -> list[dict[str, Any]]:
    """Cameras whose FOV holds the EPSG:4546 point, with distance, bearing (clockwise from
    true north) and the finest DORI level they reach there: best level first, then nearest.

    Candidates come from the stored detect-level FOVs (one index lookup; only working
    cameras have FOVs); the exact sector geometry (`geo.camera.visible_from`) then
    decides, so the polygons' arc approximation never adds or drops a camera. A handful
    of rows: plain arrays, no DataFrame (whose overhead would be most of the time).
    """
    rows = conn.execute(
        text(VISIBLE_CANDIDATES_SQL), {"x": x_m, "y": y_m, "share": ARC_PAD_SHARE}
    ).all()
    if not rows:
        return []
    ids, gb_ids, kinds, azimuth, hfov, resolution, range_m, x, y = zip(*rows, strict=True)
    hfov_deg = np.array(hfov, dtype=np.float64)
    ranges = level_ranges_m(
        np.array(kinds, dtype=object),
        np.array(resolution, dtype=np.float64),
        hfov_deg,
        np.array([np.nan if r is None else r for r in range_m], dtype=np.float64),
    )
    distance, bearing, level = visible_from(
        x_m,
        y_m,
        np.array(x, dtype=np.float64),
        np.array(y, dtype=np.float64),
        np.array(azimuth, dtype=np.float64),
        hfov_deg,
        ranges,
    )
    seen = np.flatnonzero(level >= 0)
    order = seen[np.lexsort((distance[seen], -level[seen]))]
    return [
        {
            "camera_id": int(ids[i]),
            "gb_id": str(gb_ids[i]),
            "distance_m": round(float(distance[i]), 1),
            "bearing_deg": round(float(bearing[i]), 1),
            "level": DORI_LEVELS[level[i]],
        }
        for i in order.tolist()
    ]
