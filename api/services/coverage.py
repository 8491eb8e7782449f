"""Coverage in the database: camera FOVs, per-grid coverage rows, H3 cells, summaries.

The geometry is `geo.camera` and `geo.coverage`; this module reads their inputs from
PostGIS (EPSG:4546 generated columns) and writes their results back:

- `recompute_all` rebuilds every FOV and every grid's coverage (the CLI, the API's
  `POST /v1/coverage/recompute`, the demo load);
- `refresh_cameras` runs inside a camera write's transaction: it rebuilds the FOVs of
  the cameras written and recomputes only the grids and H3 cells their old and new FOVs
  touch, so no read ever sees coverage older than the cameras.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from api.services.bulk import copy_frame
from api.services.incidents import refresh_incident_gaps
from geo import coverage as geo_coverage
from geo.camera import ACTIVE_STATUSES, DORI_LEVELS
from geo.coverage import FovSet, Places, Roads, public_ratio

Progress = Callable[[str, float], None]
# The tables a camera write or a recompute changes (for caches keyed on them).
CAMERA_TABLES = ("camera", "camera_fov", "coverage", "coverage_h3")

CAMERAS_SQL = """
SELECT id, kind, ST_X(geom_m) AS x, ST_Y(geom_m) AS y, azimuth_deg, hfov_deg,
       resolution_h_px, range_m, status, version
FROM camera
"""


@dataclass(frozen=True)
class CoverageSettings:
    """What the headline figure weighs, and which gap polygons are too small to list."""

    road_weight: float = 0.5
    place_weight: float = 0.5
    min_gap_m2: float = 25.0


def fov_set(cameras: pd.DataFrame) -> FovSet:
    """The analytic FOVs of the active cameras among `cameras` (columns of `CAMERAS_SQL`)."""
    return FovSet.from_cameras(
        cameras["x"].to_numpy(float),
        cameras["y"].to_numpy(float),
        cameras["kind"].to_numpy(object),
        cameras["azimuth_deg"].to_numpy(float),
        cameras["hfov_deg"].to_numpy(float),
        cameras["resolution_h_px"].to_numpy(float),
        cameras["range_m"].to_numpy(float),
        cameras["status"].to_numpy(object),
        cameras["id"].to_numpy(np.int64),
    )


def fov_rows(fovs: FovSet, cameras: pd.DataFrame) -> pd.DataFrame:
    """`camera_fov` rows (`camera_id, camera_version, level, range_m, geom_m` EPSG:4546)
    of `fovs`, built from `cameras`; levels with a zero range (a range override below the
    level's distance) are left out."""
    versions = cameras.set_index("id")["version"].reindex(fovs.camera_id).to_numpy()
    frames = [
        pd.DataFrame(
            {
                "camera_id": fovs.camera_id,
                "camera_version": versions,
                "level": level,
                "range_m": fovs.ranges_m[:, k],
                "geom_m": fovs.polygons(level),
            }
        )
        for k, level in enumerate(DORI_LEVELS)
    ]
    rows = pd.concat(frames, ignore_index=True)
    return rows[rows["range_m"] > 0].reset_index(drop=True)


CAMERA_COLUMNS = [
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
]


def _camera_frame(rows: Sequence[Any]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=CAMERA_COLUMNS)
    frame["range_m"] = pd.to_numeric(frame["range_m"], errors="coerce")
    return frame


def _read_cameras(conn: Connection, ids: Sequence[int] | None = None) -> pd.DataFrame:
    sql, params = CAMERAS_SQL, {}
    if ids is not None:
        sql += " WHERE id = ANY(:ids)"
        params = {"ids": list(ids)}
    return _camera_frame(conn.execute(text(sql), params).all())


def _write_fovs(conn: Connection, fovs: pd.DataFrame) -> int:
    columns = ["camera_id", "camera_version", "level", "range_m", "geom_m"]
    return copy_frame(conn, "camera_fov", fovs[columns], {"geom_m": 4546})


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


def sync_fovs(conn: Connection, cameras: pd.DataFrame, fovs: FovSet) -> int:
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


def begin_camera_write(conn: Connection) -> None:
    """Wait for other camera writers; the lock is held until the transaction ends."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CAMERA_WRITE_LOCK_KEY})


# -- inputs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoverageInputs:
    """Everything `geo.coverage.grid_coverage` needs for a set of grids (EPSG:4546)."""

    grid_ids: np.ndarray
    grid_polygons: np.ndarray
    fovs: FovSet
    roads: Roads
    places: Places


# Around a set of grids: every camera whose detect FOV reaches one of them, and the
# target features that meet one of them. `:ids` NULL means every current grid.
GRIDS_SQL = """
SELECT id, ST_AsBinary(geom_m) AS wkb FROM grid
WHERE valid_to IS NULL AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids)) ORDER BY id
"""
CAMERAS_NEAR_SQL = (
    CAMERAS_SQL
    + """
WHERE id IN (
    SELECT f.camera_id FROM camera_fov f JOIN grid g ON ST_Intersects(f.geom_m, g.geom_m)
    WHERE f.level = 'detect' AND g.id = ANY(:ids)
)
"""
)
ALL_TARGETS_SQL = "SELECT id, ST_AsBinary(geom_m) AS wkb FROM {table}"
# Roads are clipped to the grids, so one crossing the prefecture costs only its stretch
# here; places stay whole (a polygon place belongs to the grid of its inner point).
TARGETS_NEAR_SQL = """
WITH area AS (SELECT ST_Union(geom_m) AS geom_m FROM grid WHERE id = ANY(:ids))
SELECT t.id, ST_AsBinary({geometry}) AS wkb
FROM {table} t, area
WHERE ST_Intersects(t.geom_m, area.geom_m)
"""
ROADS_NEAR_SQL = TARGETS_NEAR_SQL.format(
    table="road", geometry="ST_Intersection(t.geom_m, area.geom_m)"
)
PLACES_NEAR_SQL = TARGETS_NEAR_SQL.format(table="key_place", geometry="t.geom_m")


def _geometries(
    conn: Connection, sql: str, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.execute(text(sql), params).all()
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    wkb = np.array([bytes(row[1]) for row in rows], dtype=object)
    return ids, shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)


def read_inputs(
    conn: Connection, grid_ids: Sequence[int] | None = None, fovs: FovSet | None = None
) -> CoverageInputs:
    """The inputs for `grid_ids` (None: every current grid, and every camera unless their
    `fovs` are given)."""
    params = {"ids": None if grid_ids is None else list(grid_ids)}
    ids, polygons = _geometries(conn, GRIDS_SQL, params)
    if fovs is None:
        if grid_ids is None:
            cameras = _read_cameras(conn)
        else:
            cameras = _camera_frame(conn.execute(text(CAMERAS_NEAR_SQL), params).all())
        fovs = fov_set(cameras)
    everything = grid_ids is None
    roads_sql = ALL_TARGETS_SQL.format(table="road") if everything else ROADS_NEAR_SQL
    places_sql = ALL_TARGETS_SQL.format(table="key_place") if everything else PLACES_NEAR_SQL
    road_ids, road_lines = _geometries(conn, roads_sql, params)
    place_ids, place_geoms = _geometries(conn, places_sql, params)
    return CoverageInputs(
        ids,
        polygons,
        fovs,
        Roads(road_ids, road_lines),
        Places(place_ids, place_geoms),
    )


# -- computing and storing ----------------------------------------------------------------------
COVERAGE_COLUMNS = [
    "grid_id",
    "level",
    "area_m2",
    "covered_m2",
    "ratio",
    "road_length_m",
    "road_covered_m",
    "road_ratio",
    "places_covered",
    "places_total",
    "public_ratio",
    "camera_count",
    "gap_m",
    "gap_area_m2",
    "road_gap_m",
    "uncovered_place_ids",
]


def coverage_rows(inputs: CoverageInputs, settings: CoverageSettings) -> pd.DataFrame:
    """One `coverage` row per grid of `inputs` and DORI level, with its gaps."""
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
    )
    rows = rows.rename(
        columns={
            "gap": "gap_m",
            "road_gap": "road_gap_m",
            "uncovered_places": "uncovered_place_ids",
        }
    )
    rows["gap_area_m2"] = shapely.area(rows["gap_m"].to_numpy())
    return rows


def _write_coverage(conn: Connection, rows: pd.DataFrame) -> int:
    frame = rows.reindex(columns=COVERAGE_COLUMNS)
    frame["uncovered_place_ids"] = [
        "{" + ",".join(str(int(i)) for i in ids) + "}" if ids is not None else "{}"
        for ids in frame["uncovered_place_ids"]
    ]
    return copy_frame(conn, "coverage", frame, {"gap_m": 4546, "road_gap_m": 4546})


def recompute_grids(
    conn: Connection, grid_ids: Sequence[int] | None, settings: CoverageSettings
) -> int:
    """Recompute and store the coverage of `grid_ids` (None: every grid); returns rows."""
    inputs = read_inputs(conn, grid_ids)
    if grid_ids is None:
        conn.execute(text("TRUNCATE coverage"))
    else:
        conn.execute(
            text("DELETE FROM coverage WHERE grid_id = ANY(:ids)"), {"ids": list(grid_ids)}
        )
    if not len(inputs.grid_ids):
        return 0
    return _write_coverage(conn, coverage_rows(inputs, settings))


# -- H3 heat map cells -------------------------------------------------------------------------
H3_RESOLUTION = 9
# A camera edit changes the cells within two rings (~600 m) of the camera; their shares
# depend only on cameras whose FOVs reach them, all within this distance of the camera.
H3_EDIT_RINGS = 2
H3_NEIGHBOURHOOD_M = 1000.0


def h3_rows(fovs: FovSet, cells: set[str] | None = None) -> pd.DataFrame:
    """`coverage_h3` rows (h3, level, covered_fraction, covered_m2, geom WGS84 hexagon) of
    every cell the FOVs reach (or only of `cells`), at each DORI level."""
    import h3

    frames = []
    for level in DORI_LEVELS:
        cells_at = geo_coverage.coverage_h3(fovs, level, res=H3_RESOLUTION)
        if cells is not None:
            cells_at = cells_at[cells_at["h3"].isin(cells)]
        cells_at = cells_at[cells_at["covered_m2"] > 0]
        frames.append(
            pd.DataFrame(
                {
                    "h3": cells_at["h3"].to_numpy(object),
                    "level": level,
                    "covered_fraction": np.clip(cells_at["ratio"].to_numpy(float), 0, 1),
                    "covered_m2": cells_at["covered_m2"].to_numpy(float),
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    # h3 gives (lat, lng) rings; polygons want (lon, lat) and a closed ring
    rows["geom"] = [
        shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
        for cell in rows["h3"]
    ]
    return rows


def _write_h3(conn: Connection, rows: pd.DataFrame) -> int:
    columns = ["h3", "level", "covered_fraction", "covered_m2", "geom"]
    return copy_frame(conn, "coverage_h3", rows[columns], {"geom": 4326})


def _refresh_h3_near(conn: Connection, points_m: np.ndarray, leaving: Sequence[int]) -> None:
    """Recompute the H3 cells around cameras that moved or changed (EPSG:4546 points);
    `leaving` cameras (about to be deleted) no longer count."""
    import h3

    from geo.crs import from_metric

    lon, lat = from_metric(points_m[:, 0], points_m[:, 1])
    cells = {
        cell
        for la, lo in zip(lat, lon, strict=True)
        for cell in h3.grid_disk(h3.latlng_to_cell(la, lo, H3_RESOLUTION), H3_EDIT_RINGS)
    }
    near = _camera_frame(
        conn.execute(
            text(
                CAMERAS_SQL + " WHERE ST_DWithin(geom_m, ST_SetSRID(ST_GeomFromWKB(:points), "
                "4546), :distance) AND id <> ALL(:leaving)"
            ),
            {
                "points": shapely.to_wkb(shapely.multipoints(points_m)),
                "distance": H3_NEIGHBOURHOOD_M,
                "leaving": list(leaving),
            },
        ).all()
    )
    conn.execute(text("DELETE FROM coverage_h3 WHERE h3 = ANY(:cells)"), {"cells": sorted(cells)})
    rows = h3_rows(fov_set(near), cells)
    if len(rows):
        _write_h3(conn, rows)


def coverage_settings() -> CoverageSettings:
    """The weights and gap threshold of this deployment (GRIDCOVER_COVERAGE_*)."""
    from api.settings import get_settings

    config = get_settings()
    return CoverageSettings(
        config.coverage_road_weight, config.coverage_place_weight, config.coverage_min_gap_m2
    )


def refresh_cameras(conn: Connection, camera_ids: Sequence[int], *, deleting: bool = False) -> int:
    """Bring FOVs and coverage up to date after `camera_ids` were created or changed in
    this transaction (or, with `deleting`, before they are deleted): their FOVs are
    rebuilt, and every grid their old or new FOVs touch is recomputed. Returns the number
    of grids recomputed. The caller holds `begin_camera_write`."""
    ids = [int(i) for i in camera_ids]
    grids = set(conn.execute(text(TOUCHED_GRIDS_SQL), {"ids": ids}).scalars())
    centres = list(conn.execute(text(FOV_CENTRES_SQL), {"ids": ids}).all())
    conn.execute(text("DELETE FROM camera_fov WHERE camera_id = ANY(:ids)"), {"ids": ids})
    if not deleting:
        cameras = _read_cameras(conn, ids)
        _write_fovs(conn, fov_rows(fov_set(cameras), cameras))
        grids |= set(conn.execute(text(TOUCHED_GRIDS_SQL), {"ids": ids}).scalars())
        centres += conn.execute(text(FOV_CENTRES_SQL), {"ids": ids}).all()
    if grids:
        recompute_grids(conn, sorted(grids), coverage_settings())
        refresh_incident_gaps(conn, sorted(grids))
    if centres:
        _refresh_h3_near(conn, np.array(centres, dtype=float), ids if deleting else [])
    return len(grids)


TOUCHED_GRIDS_SQL = """
SELECT DISTINCT g.id FROM grid g JOIN camera_fov f ON ST_Intersects(f.geom_m, g.geom_m)
WHERE g.valid_to IS NULL AND f.level = 'detect' AND f.camera_id = ANY(:ids)
"""
# Where the cameras' (detect, so widest) FOVs are: the centres of their bounding boxes.
FOV_CENTRES_SQL = """
SELECT (ST_XMin(geom_m) + ST_XMax(geom_m)) / 2, (ST_YMin(geom_m) + ST_YMax(geom_m)) / 2
FROM camera_fov WHERE level = 'detect' AND camera_id = ANY(:ids)
"""


def recompute_all(engine: Engine, progress: Progress | None = None) -> dict[str, Any]:
    """Rebuild every FOV and every grid's coverage in one transaction; returns counts and
    seconds per stage. Readers see the old coverage until it commits."""
    with engine.begin() as conn:
        return recompute_everything(conn, progress)


def recompute_everything(conn: Connection, progress: Progress | None = None) -> dict[str, Any]:
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
    inputs = read_inputs(conn, fovs=fovs)
    rows = coverage_rows(inputs, coverage_settings())
    timings["coverage_s"] = time.perf_counter() - started
    report("H3 cells", 0.6)
    started = time.perf_counter()
    cells = h3_rows(fovs)
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
        "cameras": len(cameras),
        "active_cameras": len(fovs),
        "fovs_rebuilt": rebuilt,
        "grids": len(inputs.grid_ids),
        "coverage_rows": written,
        "h3_cells": len(cells),
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
