"""Coverage in the database: camera FOVs, per-grid coverage rows, H3 cells, summaries.

The geometry is `geo.camera` and `geo.coverage`; this module reads their inputs from
PostGIS (EPSG:4546 generated columns) and writes their results back:

- `recompute_all` rebuilds every FOV and every grid's coverage (the CLI, the API's
  `POST /v1/coverage/recompute`, the demo load);
- `refresh_cameras` runs inside a camera write's transaction: it rebuilds the FOVs of
  the cameras written and recomputes only the grids and H3 cells their old and new FOVs
  touch, so no read ever sees coverage older than the cameras.

Rows go in by binary COPY (`_copy_rows`): geometries as EWKB bytes, numbers as numbers,
no text to format or parse; a recompute writes ~100 MB of gap polygons. (A refresh writes
its few new FOVs by one INSERT in the round trip of the statements that read them.)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import shapely
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo
from sqlalchemy import Connection, Engine, text

from api.audit import record_write
from api.services.incidents import reflag_gaps, refresh_incident_gaps
from api.services.write_locks import wait_for_write_lock
from geo import coverage as geo_coverage
from geo.camera import ACTIVE_STATUSES, DORI_LEVELS
from geo.coverage import FovSet, Places, Roads, public_ratio

Progress = Callable[[str, float], None]
# The tables a camera write or a recompute changes (for caches keyed on them).
CAMERA_TABLES = ("camera", "camera_fov", "coverage", "coverage_h3")
# Columns by name: numpy arrays (or lists) of equal length. Lighter than a DataFrame for
# the handful of rows of a camera edit, where pandas' overhead would dominate.
Columns = dict[str, Any]


@dataclass(frozen=True)
class CoverageSettings:
    """What the headline figure weighs, and which gap polygons are too small to list."""

    road_weight: float = 0.5
    place_weight: float = 0.5
    min_gap_m2: float = 25.0


# -- writing rows --------------------------------------------------------------------------------
@functools.cache
def _ewkb_dumper(geometry_oid: int) -> type[Dumper]:
    """A binary COPY dumper passing EWKB bytes as PostGIS `geometry` (its binary input)."""

    class EwkbDumper(Dumper):
        format = Format.BINARY
        oid = geometry_oid

        def dump(self, obj: bytes) -> bytes:
            return obj

    return EwkbDumper


_EWKB_SRID_FLAG = 0x20000000


def _ewkb(geoms: np.ndarray, srid: int) -> list[bytes | None]:
    """EWKB of shapely geometries (None stays None): little-endian WKB with the SRID
    spliced into its header, which costs less than `shapely.set_srid` cloning them."""
    out: list[bytes | None] = []
    tag = srid.to_bytes(4, "little")
    for wkb in shapely.to_wkb(np.asarray(geoms, dtype=object), byte_order=1).tolist():
        if wkb is None:
            out.append(None)
        else:
            kind = int.from_bytes(wkb[1:5], "little") | _EWKB_SRID_FLAG
            out.append(wkb[:1] + kind.to_bytes(4, "little") + tag + wkb[5:])
    return out


def _python_values(values: Any, kind: str) -> list[Any]:
    """A column as the Python values psycopg dumps: NaN and missing as None (NULL)."""
    if kind.startswith("geometry:"):
        return _ewkb(values, int(kind.split(":")[1]))
    if kind in ("float8", "float4"):
        floats = np.asarray(values, dtype=np.float64)
        out = floats.tolist()
        return [None if v != v else v for v in out] if np.isnan(floats).any() else out
    if kind in ("int8", "int4"):
        return np.asarray(values, dtype=np.int64).tolist()
    if kind == "int8[]":
        return [[int(i) for i in v] if v is not None else [] for v in values]
    return list(values)


def _geometry_oid(driver: psycopg.Connection) -> int:
    """The OID of PostGIS `geometry` in this connection's database (looked up once)."""
    info = driver.adapters.types.get("geometry")
    if info is None:
        info = TypeInfo.fetch(driver, "geometry")
        if info is None:
            raise RuntimeError("PostGIS is not installed in this database")
        info.register(driver)
    return info.oid


def _copy_rows(conn: Connection, table: str, columns: Columns, kinds: dict[str, str]) -> int:
    """Binary COPY of `columns` into `table` in the caller's transaction; `kinds` gives
    each column's PostgreSQL type (`geometry:SRID` for shapely geometries)."""
    names = list(kinds)
    values = [_python_values(columns[name], kinds[name]) for name in names]
    rows = len(values[0]) if values else 0
    if not rows:
        return 0
    driver = conn.connection.driver_connection
    geometry_oid = _geometry_oid(driver)
    types = [geometry_oid if kinds[n].startswith("geometry:") else kinds[n] for n in names]
    with driver.cursor() as cursor:
        cursor.adapters.register_dumper(None, _ewkb_dumper(geometry_oid))
        statement = f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in zip(*values, strict=True):
                copy.write_row(row)
    return rows


# -- cameras and their FOVs ------------------------------------------------------------------------
CAMERAS_SQL = """
SELECT id, kind, ST_X(geom_m) AS x, ST_Y(geom_m) AS y, azimuth_deg, hfov_deg,
       resolution_h_px, range_m, status, version
FROM camera
"""
CAMERAS_BY_ID_SQL = CAMERAS_SQL + " WHERE id = ANY(%(ids)s)"
CAMERA_COLUMNS = (
    "id",
    "kind",
    "x",
    "y",
    "azimuth_deg",
    "hfov_deg",
    "resolution_h_px",
    "range_m",
    "status",
    "version",
)
CAMERA_NUMBERS = ("x", "y", "azimuth_deg", "hfov_deg", "resolution_h_px", "range_m")


def _camera_columns(rows: Sequence[Any]) -> Columns:
    """Rows of `CAMERAS_SQL` as columns; a missing range override is NaN."""
    values = list(zip(*rows, strict=True)) if rows else [()] * len(CAMERA_COLUMNS)
    columns = {
        name: np.array(column, dtype=object)
        for name, column in zip(CAMERA_COLUMNS, values, strict=True)
    }
    for name in CAMERA_NUMBERS:
        columns[name] = np.array(
            [np.nan if v is None else v for v in values[CAMERA_COLUMNS.index(name)]],
            dtype=np.float64,
        )
    columns["id"] = columns["id"].astype(np.int64)
    columns["version"] = columns["version"].astype(np.int64)
    return columns


def _read_cameras(conn: Connection) -> Columns:
    return _camera_columns(conn.execute(text(CAMERAS_SQL)).all())


def fov_set(cameras: Columns) -> FovSet:
    """The analytic FOVs of the active cameras among `cameras` (columns of `CAMERAS_SQL`)."""
    return FovSet.from_cameras(
        cameras["x"],
        cameras["y"],
        cameras["kind"],
        cameras["azimuth_deg"],
        cameras["hfov_deg"],
        cameras["resolution_h_px"],
        cameras["range_m"],
        cameras["status"],
        cameras["id"],
    )


FOV_KINDS = {
    "camera_id": "int8",
    "camera_version": "int4",
    "level": "text",
    "range_m": "float4",
    "geom_m": "geometry:4546",
}


def fov_rows(fovs: FovSet, cameras: Columns) -> Columns:
    """`camera_fov` rows (`camera_id, camera_version, level, range_m, geom_m` EPSG:4546)
    of `fovs`, built from `cameras`; levels with a zero range (a range override below the
    level's distance) are left out."""
    version_of = dict(zip(cameras["id"].tolist(), cameras["version"].tolist(), strict=True))
    versions = np.array([version_of[i] for i in fovs.camera_id.tolist()], dtype=np.int64)
    n, levels = len(fovs), len(DORI_LEVELS)
    ranges = fovs.ranges_m.T.reshape(-1)
    keep = ranges > 0
    rows = {
        "camera_id": np.tile(np.asarray(fovs.camera_id, dtype=np.int64), levels),
        "camera_version": np.tile(versions, levels),
        "level": np.repeat(np.array(DORI_LEVELS, dtype=object), n),
        "range_m": ranges,
        "geom_m": fovs.polygons(DORI_LEVELS),
    }
    return {name: values[keep] for name, values in rows.items()}


def _write_fovs(conn: Connection, fovs: Columns) -> int:
    return _copy_rows(conn, "camera_fov", fovs, FOV_KINDS)


# FOVs out of date: of cameras no longer active, or built from an older version of them
# (those of deleted cameras go with them, ON DELETE CASCADE).
DROP_STALE_FOVS_SQL = """
DELETE FROM camera_fov f USING camera c
WHERE f.camera_id = c.id AND (c.status <> ALL(:active) OR f.camera_version <> c.version)
"""
MISSING_FOVS_SQL = """
SELECT c.id FROM camera c
WHERE c.status = ANY(:active) AND NOT EXISTS (SELECT 1 FROM camera_fov f WHERE f.camera_id = c.id)
"""


def sync_fovs(conn: Connection, cameras: Columns, fovs: FovSet) -> int:
    """Make `camera_fov` match `cameras` (all of them, with their `fovs`): drop stale FOVs,
    write the missing ones; returns how many cameras got new FOVs. Only cameras that
    changed since their FOVs were built cost anything."""
    active = sorted(ACTIVE_STATUSES)
    conn.execute(text(DROP_STALE_FOVS_SQL), {"active": active})
    missing = np.array(conn.execute(text(MISSING_FOVS_SQL), {"active": active}).scalars().all())
    if len(missing):
        rebuilt = fovs.subset(np.isin(fovs.camera_id, missing))
        _write_fovs(conn, fov_rows(rebuilt, cameras))
    return len(missing)


# -- the lock every coverage writer holds --------------------------------------------------------
# Camera edits, imports and recomputes wait for each other, so two refreshes of grids
# under the same FOVs never interleave.
CAMERA_WRITE_LOCK_KEY = 0x67_63_63_61
CAMERA_WRITE_LOCK_SQL = "SELECT pg_advisory_xact_lock(%(key)s)"  # psycopg's parameter style


def begin_camera_write(conn: Connection) -> None:
    """Wait for other camera writers; the lock is held until the transaction ends."""
    wait_for_write_lock(conn, CAMERA_WRITE_LOCK_KEY, "camera")


# -- inputs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoverageInputs:
    """Everything `geo.coverage.grid_coverage` needs for a set of grids (EPSG:4546)."""

    grid_ids: np.ndarray
    grid_polygons: np.ndarray
    fovs: FovSet
    roads: Roads
    places: Places


GRIDS_SQL = "SELECT id, ST_AsBinary(geom_m) AS wkb FROM grid WHERE valid_to IS NULL ORDER BY id"
ALL_TARGETS_SQL = "SELECT id, ST_AsBinary(geom_m) AS wkb FROM {table}"


def _geometries(
    conn: Connection, sql: str, params: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.execute(text(sql), params or {}).all()
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    wkb = np.array([bytes(row[1]) for row in rows], dtype=object)
    return ids, shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)


def read_inputs(conn: Connection, fovs: FovSet) -> CoverageInputs:
    """The inputs of a full recompute: every current grid (in id order: a key place on a
    shared edge belongs to the first), every target feature, and the cameras' `fovs`."""
    ids, polygons = _geometries(conn, GRIDS_SQL)
    road_ids, road_lines = _geometries(conn, ALL_TARGETS_SQL.format(table="road"))
    place_ids, place_geoms = _geometries(conn, ALL_TARGETS_SQL.format(table="key_place"))
    return CoverageInputs(
        ids, polygons, fovs, Roads(road_ids, road_lines), Places(place_ids, place_geoms)
    )


# -- computing and storing ----------------------------------------------------------------------
COVERAGE_KINDS = {
    "grid_id": "int8",
    "level": "text",
    "area_m2": "float8",
    "covered_m2": "float8",
    "ratio": "float8",
    "road_length_m": "float8",
    "road_covered_m": "float8",
    "road_ratio": "float8",
    "places_covered": "int4",
    "places_total": "int4",
    "public_ratio": "float8",
    "camera_count": "int4",
    "gap_m": "geometry:4546",
    "gap_area_m2": "float8",
    "road_gap_m": "geometry:4546",
    "uncovered_place_ids": "int8[]",
}
# `coverage` columns named otherwise in `geo.coverage.grid_coverage`'s rows
GEO_NAMES = {"gap_m": "gap", "road_gap_m": "road_gap", "uncovered_place_ids": "uncovered_places"}


def coverage_rows(inputs: CoverageInputs, settings: CoverageSettings, workers: int = 1) -> Columns:
    """The `coverage` rows of the grids of `inputs`, one per grid and DORI level with its
    gaps, as columns. `workers` > 1 forks: only from a process without other threads (the
    CLI), never in a request."""
    rows = geo_coverage.grid_coverage(
        inputs.grid_ids,
        inputs.grid_polygons,
        inputs.fovs,
        inputs.roads,
        inputs.places,
        min_gap_m2=settings.min_gap_m2,
        weights=(settings.road_weight, settings.place_weight),
        road_gap_lines=True,
        uncovered_places=True,
        workers=workers,
    )
    return _as_coverage_rows(rows)


def _as_coverage_rows(rows: pd.DataFrame | Columns) -> Columns:
    """`geo.coverage.grid_coverage` rows (a frame, or its columns) as the `coverage`
    table's columns."""
    columns = {name: rows[GEO_NAMES.get(name, name)] for name in COVERAGE_KINDS if name in rows}
    columns |= {name: rows[geo] for name, geo in GEO_NAMES.items()}
    columns["gap_area_m2"] = shapely.area(np.asarray(columns["gap_m"], dtype=object))
    return columns


def _write_coverage(conn: Connection, rows: Columns) -> int:
    return _copy_rows(conn, "coverage", rows, COVERAGE_KINDS)


# -- H3 heat map cells -------------------------------------------------------------------------
H3_RESOLUTION = 9
H3_KINDS = {
    "h3": "text",
    "level": "text",
    "covered_fraction": "float8",
    "covered_m2": "float8",
    "geom": "geometry:4326",
}


def h3_rows(fovs: FovSet, workers: int = 1) -> Columns:
    """`coverage_h3` rows (h3, level, covered_fraction, covered_m2, geom WGS84 hexagon) of
    every cell the FOVs reach, at each DORI level."""
    return _as_h3_rows(
        geo_coverage.coverage_h3(fovs, DORI_LEVELS, res=H3_RESOLUTION, workers=workers)
    )


def _as_h3_rows(cells_at: pd.DataFrame | Columns) -> Columns:
    """`geo.coverage.coverage_h3` rows (a frame, or its columns) as the `coverage_h3`
    table's columns."""
    names = np.asarray(cells_at["h3"], dtype=object)
    unique, which = np.unique(names.astype(str), return_inverse=True)
    return {
        "h3": names,
        "level": np.asarray(cells_at["level"], dtype=object),
        "covered_fraction": np.clip(np.asarray(cells_at["ratio"], dtype=float), 0, 1),
        "covered_m2": np.asarray(cells_at["covered_m2"], dtype=float),
        "geom": geo_coverage.h3_polygons(unique.tolist(), metric=False)[which],
    }


def _write_h3(conn: Connection, rows: Columns) -> int:
    return _copy_rows(conn, "coverage_h3", rows, H3_KINDS)


def coverage_settings() -> CoverageSettings:
    """The weights and gap threshold of this deployment (GRIDCOVER_COVERAGE_*)."""
    from api.settings import get_settings

    config = get_settings()
    return CoverageSettings(
        config.coverage_road_weight, config.coverage_place_weight, config.coverage_min_gap_m2
    )


# -- a camera edit -------------------------------------------------------------------------------
# The FOV polygons run up to 0.13 % of the range inside the true arcs (geo.camera), and
# coverage follows the arcs: a polygon padded by this share of its range holds the arc.
ARC_PAD_SHARE = 0.002
# Ranges are stored as float4: compare them with this much to spare (metres).
RANGE_SLACK_M = 1.0
# A refresh of up to this many cameras is an edit (not an import): see `refresh_cameras`.
EDIT_CAMERAS = 10

# An edit's statements go to psycopg directly, the independent ones in one pipeline (one
# round trip): a camera edit must answer within tens of milliseconds. Arrays of WKB go as
# binary parameters (`%(...)b`): as text, each polygon's bytes are hex-encoded here and
# decoded by the server.
# The detect FOVs (the widest) the cameras had before this write; all their levels go.
DROP_FOVS_SQL = """
WITH gone AS (
    DELETE FROM camera_fov WHERE camera_id = ANY(%(ids)s) RETURNING level, range_m, geom_m
)
SELECT range_m, ST_AsBinary(geom_m) FROM gone WHERE level = 'detect'
"""
# The current grids within `pad` of one of the changed FOV polygons (WKB, EPSG:4546).
FOV_ZONE_SQL = """
SELECT g.id FROM unnest(%(fovs)b::bytea[]) AS f(wkb)
JOIN grid g ON ST_DWithin(g.geom_m, ST_GeomFromWKB(f.wkb, 4546), %(pad)s)
WHERE g.valid_to IS NULL
"""
# The current grids meeting one of the grids `edited` (new versions, or versions just
# closed): a neighbour may gain or lose a key place on the shared edge.
GRID_ZONE_SQL = """
SELECT g.id FROM grid e
JOIN grid g ON g.valid_to IS NULL AND ST_Intersects(g.geom_m, e.geom_m)
WHERE e.id = ANY(%(edited)s)
"""


@dataclass(frozen=True)
class ZoneQueries:
    """What recomputing the grids of one zone (`zone_sql`: their ids) reads; `grids` also
    deletes their coverage rows."""

    grids: str
    cameras: str
    targets: str


def zone_queries(zone_sql: str) -> ZoneQueries:
    """The statements reading a zone's grids, the cameras reaching them or the H3 cells
    `%(cells)s` (WKB), and their roads and key places."""
    # Every working camera standing within its detect range of a grid or cell: the
    # longest detect range bounds an index search, each camera's own (only working
    # cameras have FOVs) decides.
    cameras = (
        CAMERAS_SQL
        + f"""
WHERE id IN (
    SELECT c.id
    FROM (
        SELECT geom_m FROM grid WHERE id IN ({zone_sql})
        UNION ALL
        SELECT ST_GeomFromWKB(h.wkb, 4546) FROM unnest(%(cells)b::bytea[]) AS h(wkb)
    ) zone
    JOIN camera c ON ST_DWithin(c.geom_m, zone.geom_m, (
        SELECT max(range_m) FROM camera_fov WHERE level = 'detect') + %(slack)s)
    WHERE ST_DWithin(c.geom_m, zone.geom_m, (
        SELECT f.range_m FROM camera_fov f WHERE f.camera_id = c.id AND f.level = 'detect'
    ) + %(slack)s)
)
"""
    )
    # The roads and key places meeting a grid, whole (as a full recompute reads them),
    # and for a point place the grid a full recompute gives it: the first in id order
    # holding it (a place on the edge of a grid not recomputed stays with that grid).
    # (Each feature once by DISTINCT ON over the join itself: an `id IN (...)` lets the
    # planner hash-join the whole table when it overestimates the join.)
    targets = f"""
WITH touched AS MATERIALIZED (SELECT id, geom_m FROM grid WHERE id IN ({zone_sql}))
(SELECT DISTINCT ON (t.id) 'road', t.id, ST_AsBinary(t.geom_m), NULL::bigint
 FROM touched g JOIN road t ON ST_Intersects(t.geom_m, g.geom_m) ORDER BY t.id)
UNION ALL
(SELECT DISTINCT ON (p.id) 'place', p.id, ST_AsBinary(p.geom_m),
        CASE WHEN GeometryType(p.geom_m) = 'POINT' THEN (
            SELECT min(o.id) FROM grid o
            WHERE o.valid_to IS NULL AND ST_Intersects(o.geom_m, p.geom_m)
        ) END
 FROM touched g JOIN key_place p ON ST_Intersects(p.geom_m, g.geom_m) ORDER BY p.id)
"""
    # their coverage rows go in the same statement (the zone read once): they are
    # written anew from what the other two statements read
    grids = f"""
WITH zone AS MATERIALIZED ({zone_sql}),
cleared AS (DELETE FROM coverage WHERE grid_id IN (SELECT id FROM zone))
SELECT id, ST_AsBinary(geom_m) FROM grid WHERE id IN (SELECT id FROM zone) ORDER BY id
"""
    return ZoneQueries(grids, cameras, targets)


FOV_ZONE = zone_queries(FOV_ZONE_SQL)
GRID_ZONE = zone_queries(GRID_ZONE_SQL)
# The same for points computed here (a polygon place's `point_on_surface`).
PLACE_GRIDS_SQL = """
SELECT (SELECT min(g.id) FROM grid g WHERE g.valid_to IS NULL
        AND ST_Intersects(g.geom_m, ST_SetSRID(ST_Point(p.x, p.y), 4546)))
FROM unnest(%(x)s::float8[], %(y)s::float8[]) WITH ORDINALITY AS p(x, y, n)
ORDER BY p.n
"""
# Incidents whose location may lie in the FOVs (bounding boxes, EPSG:4546 → WGS84; an
# envelope's straight edges bend a little in WGS84: 1 m to spare).
INCIDENTS_UNDER_SQL = """
SELECT DISTINCT i.id, ST_X(i.location), ST_Y(i.location), i.in_gap
FROM unnest(%(x0)s::float8[], %(y0)s::float8[], %(x1)s::float8[], %(y1)s::float8[])
     AS b(x0, y0, x1, y1)
JOIN incident i ON i.location && ST_Transform(
    ST_Expand(ST_MakeEnvelope(b.x0, b.y0, b.x1, b.y1, 4546), 1.0), 4326)
"""
CLEAR_CELLS_SQL = "DELETE FROM coverage_h3 WHERE h3 = ANY(%(cells)s)"
# New FOV rows (`fov_rows`, geometries as EWKB) by one INSERT: unlike COPY, it can share
# the round trip of the statements that read them.
INSERT_FOVS_SQL = """
INSERT INTO camera_fov (camera_id, camera_version, level, range_m, geom_m)
SELECT camera_id, camera_version, level, range_m, ST_GeomFromEWKB(geom_m)
FROM unnest(%(camera_id)s::int8[], %(camera_version)s::int4[], %(level)s::text[],
            %(range_m)s::float4[], %(geom_m)b::bytea[])
     AS f(camera_id, camera_version, level, range_m, geom_m)
"""


def _wkb_list(geoms: np.ndarray) -> list[bytes]:
    return [bytes(w) for w in shapely.to_wkb(geoms)]


def _from_wkb(values: Sequence[Any]) -> np.ndarray:
    wkb = np.array([bytes(v) for v in values], dtype=object)
    return shapely.from_wkb(wkb) if len(wkb) else np.zeros(0, dtype=object)


@dataclass(frozen=True)
class RefreshStart:
    """The first statements of a refresh, sent (`start_refresh`) and not yet read."""

    camera_ids: list[int]
    edit: bool  # a few cameras (`EDIT_CAMERAS`): prepared statements with generic plans
    deleting: bool
    dropped: psycopg.Cursor[Any]
    current: psycopg.Cursor[Any]


def refresh_cameras(conn: Connection, camera_ids: Sequence[int], *, deleting: bool = False) -> int:
    """Bring FOVs and coverage up to date after `camera_ids` were created or changed in
    this transaction (or, with `deleting`, before they are deleted): their FOVs are
    rebuilt; every grid and H3 cell their old or new FOVs reach is recomputed from every
    camera reaching it, as a full recompute would; the incidents under those FOVs get
    their gap flags again. Returns the number of grids recomputed. The caller holds
    `begin_camera_write`."""
    driver = conn.connection.driver_connection
    with driver.pipeline():
        started = start_refresh(driver, camera_ids, deleting=deleting)
    return finish_refresh(conn, started)


def start_refresh(
    driver: psycopg.Connection, camera_ids: Sequence[int], *, deleting: bool = False
) -> RefreshStart:
    """Send the first statements of `refresh_cameras` without waiting for them: inside a
    pipeline, a write just sent before them (a camera edit) shares their round trip. The
    cameras must be written by then; `finish_refresh` does the rest."""
    ids = sorted({int(i) for i in camera_ids})
    # An edit's statements are prepared (psycopg keeps them on the connection until a
    # rollback) with generic plans: planning them, a millisecond each, would cost more
    # than running them. An import's arrays are large enough to deserve a plan of their own.
    edit = len(ids) <= EDIT_CAMERAS
    # an edit's queries are small: parallel workers (tens of ms to start) only slow
    # them down, here and for the rest of the transaction
    driver.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    if edit:
        driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    dropped = driver.execute(DROP_FOVS_SQL, {"ids": ids}, prepare=edit)
    current = driver.execute(CAMERAS_BY_ID_SQL, {"ids": ids}, prepare=edit)
    return RefreshStart(ids, edit, deleting, dropped, current)


def finish_refresh(
    conn: Connection, started: RefreshStart, along: Sequence[tuple[str, dict[str, Any]]] = ()
) -> int:
    """`refresh_cameras` after `start_refresh`, once its pipeline has been synced. The
    statements `along` (an audit row, say) are sent with the refresh's reads."""
    driver = conn.connection.driver_connection
    edit, dropped, current = started.edit, started.dropped, started.current
    old = dropped.fetchall()
    reach = [float(r) for r, _ in old]
    changed = list(_from_wkb([w for _, w in old]))
    fovs: Columns = {}
    if not started.deleting:
        cameras = _camera_columns(current.fetchall())
        fovs = fov_rows(fov_set(cameras), cameras)
        detect = fovs["level"] == DORI_LEVELS[0]
        reach += fovs["range_m"][detect].tolist()
        changed += fovs["geom_m"][detect].tolist()
    if not changed:  # cameras that cover nothing before and after (offline, say)
        for statement in along:
            driver.execute(*statement)
        return 0
    polygons = np.array(changed, dtype=object)
    pad = ARC_PAD_SHARE * max(reach) + 0.01
    bounds = shapely.bounds(polygons)
    touched = {"fovs": _wkb_list(polygons), "pad": pad}
    with driver.pipeline():
        # sent at once: the server runs them while the H3 cells are found here
        for statement in along:
            driver.execute(*statement)
        if len(fovs.get("camera_id", ())):
            driver.execute(INSERT_FOVS_SQL, _fov_params(fovs), prepare=edit)
        grid_rows = driver.execute(FOV_ZONE.grids, touched, prepare=edit)
        target_rows = driver.execute(FOV_ZONE.targets, touched, prepare=edit)
        incident_rows = driver.execute(
            INCIDENTS_UNDER_SQL,
            dict(zip(("x0", "y0", "x1", "y1"), bounds.T.tolist(), strict=True)),
            prepare=edit,
        )
        cells, cell_polygons = _cells_under(polygons, pad)
        driver.execute(CLEAR_CELLS_SQL, {"cells": cells}, prepare=edit)
        # after the new FOVs: it reads their ranges
        camera_rows = driver.execute(
            FOV_ZONE.cameras,
            touched | {"cells": _wkb_list(cell_polygons), "slack": RANGE_SLACK_M},
            prepare=edit,
        )
    recomputed = _recompute_zone(
        conn,
        grid_rows.fetchall(),
        camera_rows.fetchall(),
        target_rows.fetchall(),
        cells,
        cell_polygons,
    )
    reflag_gaps(conn, incident_rows.fetchall())
    return recomputed


def _fov_params(fovs: Columns) -> dict[str, list[Any]]:
    """`fov_rows` as the arrays `INSERT_FOVS_SQL` takes."""
    return {name: _python_values(fovs[name], kind) for name, kind in FOV_KINDS.items()}


def refresh_grids(conn: Connection, grid_ids: Sequence[int]) -> int:
    """Bring coverage up to date after the grids `grid_ids` were created, edited (their
    new versions) or retired (the versions just closed) in this transaction: every current
    grid meeting one of them is recomputed, as a full recompute would. FOVs, H3 cells and
    incident gap flags do not depend on grids and stay. Returns the grids recomputed. The
    caller holds the grid write lock; the camera write lock is taken here (always in that
    order), so that a camera edit committing meanwhile cannot leave these grids computed
    without its new FOVs."""
    edited = sorted({int(i) for i in grid_ids})
    if not edited:
        return 0
    begin_camera_write(conn)
    driver = conn.connection.driver_connection
    zone = {"edited": edited, "cells": [], "slack": RANGE_SLACK_M}
    with driver.pipeline():
        driver.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        grid_rows = driver.execute(GRID_ZONE.grids, zone)
        camera_rows = driver.execute(GRID_ZONE.cameras, zone)
        target_rows = driver.execute(GRID_ZONE.targets, zone)
    return _recompute_zone(
        conn, grid_rows.fetchall(), camera_rows.fetchall(), target_rows.fetchall(), [], None
    )


def _recompute_zone(
    conn: Connection,
    grid_rows: Sequence[Any],
    camera_rows: Sequence[Any],
    target_rows: Sequence[Any],
    cells: list[str],
    cell_polygons: np.ndarray | None,
) -> int:
    """Write the coverage of the zone's grids and H3 `cells` (EPSG:4546 hexagons
    `cell_polygons`), whose old rows are gone, from what the `ZoneQueries` read: the
    cameras reaching them; returns the number of grids."""
    grid_ids = [row[0] for row in grid_rows]
    near = fov_set(_camera_columns(camera_rows))
    roads, places = _targets(conn.connection.driver_connection, target_rows)
    settings = coverage_settings()
    rows, cell_rows = geo_coverage.grid_and_h3_coverage(
        np.array(grid_ids, dtype=np.int64),
        _from_wkb([row[1] for row in grid_rows]),
        cells,
        near,
        roads,
        places,
        res=H3_RESOLUTION,
        min_gap_m2=settings.min_gap_m2,
        weights=(settings.road_weight, settings.place_weight),
        cell_polygons=cell_polygons,
    )
    _write_coverage(conn, _as_coverage_rows(rows))
    _write_h3(conn, _as_h3_rows(cell_rows))
    return len(grid_ids)


def _targets(driver: psycopg.Connection, rows: Sequence[Any]) -> tuple[Roads, Places]:
    """The roads and places of `ZoneQueries.targets`, each place with its grid (the points
    of polygon places computed here, as `geo.coverage` does, then located)."""
    layer, ids, wkb, owner = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 4
    geoms = _from_wkb(wkb)
    road = np.array([name == "road" for name in layer], dtype=bool)
    ids = np.array(ids, dtype=np.int64)
    owners = np.array(owner, dtype=object)[~road]
    places = geoms[~road]
    polygon = np.flatnonzero(shapely.get_type_id(places) != 0)
    if len(polygon):
        points = shapely.point_on_surface(places[polygon])
        located = driver.execute(
            PLACE_GRIDS_SQL,
            {"x": shapely.get_x(points).tolist(), "y": shapely.get_y(points).tolist()},
        ).fetchall()
        owners[polygon] = [row[0] for row in located]
    return Roads(ids[road], geoms[road]), Places(ids[~road], places, owners)


def _cells_under(polygons: np.ndarray, pad: float) -> tuple[list[str], np.ndarray]:
    """The H3 cells within `pad` of the FOV polygons, and their hexagons (EPSG:4546)."""
    bounds = shapely.bounds(polygons)
    centre_x = (bounds[:, 0] + bounds[:, 2]) / 2
    centre_y = (bounds[:, 1] + bounds[:, 3]) / 2
    radius = np.hypot(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) / 2 + pad
    candidates = geo_coverage.h3_cells_near(centre_x, centre_y, radius, res=H3_RESOLUTION)
    hexagons = geo_coverage.h3_polygons(candidates)
    hit = np.unique(shapely.STRtree(polygons).query(hexagons, predicate="dwithin", distance=pad)[0])
    return [candidates[i] for i in hit], hexagons[hit]


# -- a full recompute ------------------------------------------------------------------------------
def recompute_all(
    engine: Engine,
    progress: Progress | None = None,
    workers: int = 1,
    actor: str | None = None,
) -> dict[str, Any]:
    """Rebuild every FOV and every grid's coverage in one transaction; returns counts and
    seconds per stage. Readers see the old coverage until it commits. `workers` > 1
    computes in forked processes: for the CLI, not from a server's threads. With `actor`,
    the recompute is written to the audit log in the same transaction."""
    with engine.begin() as conn:
        done = recompute_everything(conn, progress, workers)
        if actor is not None:
            record_write(conn, actor, "recompute", "coverage", None, after=done)
        return done


def recompute_everything(
    conn: Connection, progress: Progress | None = None, workers: int = 1
) -> dict[str, Any]:
    """`recompute_all` inside the caller's transaction (the demo load uses it)."""
    timings: dict[str, float] = {}
    report = progress or (lambda stage, fraction: None)
    begin_camera_write(conn)
    started = time.perf_counter()
    report("reading cameras", 0.0)
    cameras = _read_cameras(conn)
    fovs = fov_set(cameras)
    report("updating FOVs", 0.1)
    rebuilt = sync_fovs(conn, cameras, fovs)
    timings["fovs_s"] = time.perf_counter() - started
    report("computing coverage", 0.4)
    started = time.perf_counter()
    inputs = read_inputs(conn, fovs)
    rows = coverage_rows(inputs, coverage_settings(), workers)
    timings["coverage_s"] = time.perf_counter() - started
    report("H3 cells", 0.6)
    started = time.perf_counter()
    cells = h3_rows(fovs, workers)
    timings["h3_s"] = time.perf_counter() - started
    report("writing coverage", 0.8)
    started = time.perf_counter()
    conn.execute(text("TRUNCATE coverage, coverage_h3"))
    written = _write_coverage(conn, rows)
    _write_h3(conn, cells)
    refresh_incident_gaps(conn)
    timings["write_s"] = time.perf_counter() - started
    report("done", 1.0)
    return {
        "cameras": len(cameras["id"]),
        "active_cameras": len(fovs),
        "fovs_rebuilt": rebuilt,
        "grids": len(inputs.grid_ids),
        "coverage_rows": written,
        "h3_cells": len(cells["h3"]),
        **{k: round(v, 3) for k, v in timings.items()},
    }


# -- reading ---------------------------------------------------------------------------------------
GRID_COVERAGE_SQL = """
SELECT g.code, g.name, c.level, c.area_m2, c.covered_m2, c.ratio, c.road_length_m,
       c.road_covered_m, c.road_ratio, c.places_covered, c.places_total, c.public_ratio,
       c.camera_count, c.computed_at
FROM grid g JOIN coverage c ON c.grid_id = g.id
WHERE g.code = :code AND g.valid_to IS NULL AND (CAST(:level AS text) IS NULL OR c.level = :level)
ORDER BY array_position(CAST(:levels AS text[]), c.level)
"""
GAPS_SQL = """
SELECT 'area' AS kind, ST_AsGeoJSON(ST_Transform(c.gap_m, 4326), 7) AS geometry,
       c.gap_area_m2 AS size, NULL::bigint AS id, NULL AS name, NULL AS place_kind
FROM coverage c WHERE c.grid_id = :grid_id AND c.level = :level AND NOT ST_IsEmpty(c.gap_m)
UNION ALL
SELECT 'road', ST_AsGeoJSON(ST_Transform(c.road_gap_m, 4326), 7), ST_Length(c.road_gap_m),
       NULL, NULL, NULL
FROM coverage c WHERE c.grid_id = :grid_id AND c.level = :level AND NOT ST_IsEmpty(c.road_gap_m)
UNION ALL
SELECT 'key_place', ST_AsGeoJSON(ST_PointOnSurface(p.geom), 7), NULL, p.id, p.name, p.kind
FROM coverage c JOIN key_place p ON p.id = ANY(c.uncovered_place_ids)
WHERE c.grid_id = :grid_id AND c.level = :level
"""
RATIO_FIELDS = ("ratio", "road_ratio", "public_ratio")


def grid_coverage_report(
    conn: Connection, code: str, level: str | None, *, with_gaps: bool
) -> dict[str, Any] | None:
    """A current grid's coverage per level (or at `level`), and with `with_gaps` its gaps
    at `level` (default detect) as a WGS84 FeatureCollection; None for no such grid."""
    grid = conn.execute(
        text("SELECT id, code, name FROM grid WHERE code = :code AND valid_to IS NULL"),
        {"code": code},
    ).first()
    if grid is None:
        return None
    rows = conn.execute(
        text(GRID_COVERAGE_SQL), {"code": code, "level": level, "levels": list(DORI_LEVELS)}
    ).mappings()
    levels = [
        {k: (round(v, 4) if k in RATIO_FIELDS and v is not None else v) for k, v in row.items()}
        | {"area_m2": round(row["area_m2"], 1), "covered_m2": round(row["covered_m2"], 1)}
        for row in rows
    ]
    for entry in levels:
        del entry["code"], entry["name"]
    report: dict[str, Any] = {"grid": {"code": grid.code, "name": grid.name}, "levels": levels}
    if with_gaps:
        gap_level = level or DORI_LEVELS[0]
        features = [
            {
                "type": "Feature",
                "geometry": orjson.loads(row.geometry),
                "properties": _gap_properties(row),
            }
            for row in conn.execute(text(GAPS_SQL), {"grid_id": grid.id, "level": gap_level})
        ]
        report["gaps"] = {"type": "FeatureCollection", "level": gap_level, "features": features}
    return report


def _gap_properties(row: Any) -> dict[str, Any]:
    if row.kind == "area":
        return {"kind": "area", "area_m2": round(row.size, 1)}
    if row.kind == "road":
        return {"kind": "road", "length_m": round(row.size, 1)}
    return {"kind": "key_place", "id": row.id, "name": row.name, "place_kind": row.place_kind}


# Units of a summary: the grid code's prefix that is the unit's admin code.
UNIT_DIGITS = {"county": 6, "township": 9, "village": 12}
SUMMARY_SQL = """
SELECT {unit_code} AS code, {unit_name} AS name, count(*) AS grids,
       sum(c.area_m2) AS area_m2, sum(c.covered_m2) AS covered_m2,
       sum(c.road_length_m) AS road_length_m, sum(c.road_covered_m) AS road_covered_m,
       sum(c.places_total) AS places_total, sum(c.places_covered) AS places_covered
FROM coverage c
JOIN grid g ON g.id = c.grid_id AND g.valid_to IS NULL
{join}
WHERE c.level = :level AND (CAST(:parent AS text) IS NULL OR g.code LIKE :parent || '%')
GROUP BY 1, 2
"""


def coverage_summary(
    conn: Connection, by: str, level: str, parent: str | None, limit: int
) -> list[dict[str, Any]]:
    """Area-weighted coverage per county, township, village or grid at `level`, worst
    `public_ratio` first: ratios of the summed areas, road lengths and place counts."""
    if by == "grid":
        sql = SUMMARY_SQL.format(unit_code="g.code", unit_name="g.name", join="")
    else:
        sql = SUMMARY_SQL.format(
            unit_code="u.code",
            unit_name="u.name",
            join=f"JOIN admin_area u ON u.code = left(g.code, {UNIT_DIGITS[by]})",
        )
    frame = pd.DataFrame(
        conn.execute(text(sql), {"level": level, "parent": parent}).mappings().all(),
        columns=[
            "code",
            "name",
            "grids",
            "area_m2",
            "covered_m2",
            "road_length_m",
            "road_covered_m",
            "places_total",
            "places_covered",
        ],
    )
    if frame.empty:
        return []
    settings = coverage_settings()
    with np.errstate(invalid="ignore", divide="ignore"):
        area = frame["area_m2"].to_numpy(float)
        frame["ratio"] = np.where(area > 0, frame["covered_m2"].to_numpy(float) / area, 0.0)
        roads = frame["road_length_m"].to_numpy(float)
        frame["road_ratio"] = np.where(roads > 0, frame["road_covered_m"] / roads, np.nan)
        places = frame["places_total"].to_numpy(float)
        frame["places_ratio"] = np.where(places > 0, frame["places_covered"] / places, np.nan)
    frame["public_ratio"] = public_ratio(
        frame["road_ratio"],
        frame["places_ratio"],
        frame["ratio"],
        (settings.road_weight, settings.place_weight),
    )
    frame = frame.sort_values(["public_ratio", "code"]).head(limit)
    for column in ("ratio", "road_ratio", "places_ratio", "public_ratio"):
        frame[column] = frame[column].round(4)
    for column in ("area_m2", "covered_m2", "road_length_m", "road_covered_m"):
        frame[column] = frame[column].round(1)
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")


# -- a new grid version with the same outline ------------------------------------------------
_CARRIED = ", ".join(name for name in COVERAGE_KINDS if name != "grid_id")
CARRY_COVERAGE_SQL = (
    f"INSERT INTO coverage (grid_id, {_CARRIED}, computed_at) "
    f"SELECT :to_id, {_CARRIED}, computed_at FROM coverage WHERE grid_id = :from_id"
)


def carry_coverage(conn: Connection, from_id: int, to_id: int) -> None:
    """Give grid version `to_id` the coverage of `from_id`, its predecessor with the very
    same outline (an edit of names or the worker): what a recompute would write, without
    computing it or touching the neighbours, whose coverage an unmoved outline leaves as
    it is. The caller holds the grid write lock; the camera write lock is taken here, so
    that a camera edit committing meanwhile cannot have written to `from_id` only."""
    begin_camera_write(conn)
    conn.execute(text(CARRY_COVERAGE_SQL), {"from_id": from_id, "to_id": to_id})
