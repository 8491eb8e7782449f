"""Grids (网格): SQL for writing and reading the versioned grid table."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from api.audit import record_write
from api.errors import Problem
from api.services.bulk import copy_frame, select_columns
from api.services.coverage import carry_coverage, refresh_grids
from api.services.lookup import GRID_CHANGED_CHANNEL
from api.services.validation import RowErrors, RowsRejected, as_multi
from api.services.write_locks import wait_for_write_lock

GRID_KINDS = ("综合网格", "专属网格")
COLUMNS = [
    "code",
    "name",
    "village_code",
    "kind",
    "households",
    "population",
    "worker_name",
    "worker_phone",
]


def validate_grids(grids: gpd.GeoDataFrame) -> None:
    """Raise `RowsRejected` listing every bad row (code, village prefix, kind, counts, geometry)."""
    errors = RowErrors("grids")
    errors.require_columns(grids, ["code", "name", "village_code", "geometry"])
    errors.require_values(grids, ["code", "name", "village_code"])
    errors.check_pattern(grids, "code", r"[0-9]{15}", "a grid code has 15 digits")
    prefix_wrong = grids["code"].astype("string").str[:12] != grids["village_code"].astype("string")
    errors.add(
        prefix_wrong.fillna(True).to_numpy(bool),
        "code",
        "must start with its 12-digit village code",
        grids,
    )
    if "kind" in grids.columns:
        errors.check_choice(grids, "kind", GRID_KINDS)
    for name in ("households", "population"):
        if name in grids.columns:
            negative = grids[name].fillna(0).to_numpy() < 0
            errors.add(negative, name, "must not be negative", grids)
    errors.check_text(grids)
    errors.check_unique(grids, "code")
    errors.check_geometry(grids, "geometry", ("Polygon", "MultiPolygon"))
    errors.raise_if_any()


# An overlap or spill counts when it exceeds this area (m², EPSG:4546) and is more than a
# sliver: coordinate conversions (GCJ-02 inverses, reprojection) move vertices by
# millimetres, which along a 2 km shared edge adds up to several m² of zero-width slivers.
AREA_TOLERANCE_M2 = 1.0
SLIVER_HALF_WIDTH_M = 0.02

# Set operations run in the storage CRS, where shared edges of imported tilings coincide
# exactly; only the resulting slivers are measured in metres (EPSG:4546).
PLACEMENT_CHECKS = """
WITH checked AS (
    SELECT s.row, s.code, 'village_code' AS field,
           'village ' || s.village_code || ' is not a known village' AS reason
    FROM grid_stage s LEFT JOIN admin_area v ON v.code = s.village_code AND v.level = 'village'
    WHERE v.code IS NULL
    UNION ALL
    SELECT s.row, s.code, 'geometry',
           format('extends %s m² outside its village %s', round(d.area_m2::numeric, 1), v.code)
    FROM grid_stage s JOIN admin_area v ON v.code = s.village_code AND v.level = 'village'
    CROSS JOIN LATERAL (
        SELECT ST_Area(m) AS area_m2, ST_Area(ST_Buffer(m, -:sliver)) AS core_m2
        FROM ST_Transform(ST_Difference(s.geom, v.geom), 4546) AS m
    ) d
    WHERE NOT ST_CoveredBy(s.geom, v.geom) AND d.area_m2 > :tolerance AND d.core_m2 > 0
    UNION ALL
    SELECT s.row, s.code, 'geometry',
           format('overlaps grid %s by %s m²', g.code, round(o.area_m2::numeric, 1))
    FROM grid_stage s JOIN grid g
      ON g.valid_to IS NULL AND g.code <> s.code AND ST_Intersects(g.geom, s.geom)
    CROSS JOIN LATERAL (
        SELECT ST_Area(m) AS area_m2, ST_Area(ST_Buffer(m, -:sliver)) AS core_m2
        FROM ST_Transform(ST_Intersection(s.geom, g.geom), 4546) AS m
    ) o
    WHERE NOT (g.code = ANY(:replaced)) AND o.area_m2 > :tolerance AND o.core_m2 > 0
    UNION ALL
    SELECT b.row, b.code, 'geometry',
           format('overlaps grid %s (row %s) by %s m²', a.code, a.row, round(o.area_m2::numeric, 1))
    FROM grid_stage a JOIN grid_stage b ON a.row < b.row AND ST_Intersects(a.geom, b.geom)
    CROSS JOIN LATERAL (
        SELECT ST_Area(m) AS area_m2, ST_Area(ST_Buffer(m, -:sliver)) AS core_m2
        FROM ST_Transform(ST_Intersection(a.geom, b.geom), 4546) AS m
    ) o
    WHERE o.area_m2 > :tolerance AND o.core_m2 > 0
    UNION ALL
    SELECT s.row, s.code, 'code', 'grid ' || s.code || ' exists already; edit it instead'
    FROM grid_stage s JOIN grid g ON g.code = s.code AND g.valid_to IS NULL
    WHERE NOT (s.code = ANY(:replaced))
)
SELECT * FROM checked ORDER BY row
"""


# One advisory lock serialises every write to the grid table (single edits, imports, demo):
# placement checks read what other writers are about to change.
GRID_WRITE_LOCK_KEY = 0x67_63_69_6D


def begin_grid_write(conn: Connection) -> None:
    """Wait for other grid writers (the lock is held until the caller's transaction ends)
    and, should the transaction commit, wake every process's lookup index at once."""
    wait_for_write_lock(conn, GRID_WRITE_LOCK_KEY, "grid")
    conn.execute(text(f"NOTIFY {GRID_CHANGED_CHANNEL}"))


def check_grid_placement(
    conn: Connection, grids: gpd.GeoDataFrame, replaced: Sequence[str] = ()
) -> list[dict[str, object]]:
    """Errors against what is stored: unknown village, outside it, overlapping a sibling
    or another row by more than `AREA_TOLERANCE_M2`, code already taken.

    `replaced` names current grids this write retires (they may be overlapped and reused).
    """
    conn.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS grid_stage "
            "(row integer, code text, village_code text, geom geometry(MultiPolygon, 4326)) "
            "ON COMMIT DROP"
        )
    )
    conn.execute(text("TRUNCATE grid_stage"))
    stage = pd.DataFrame(
        {
            "row": np.arange(len(grids)),
            "code": grids["code"].to_numpy(),
            "village_code": grids["village_code"].to_numpy(),
            "geom": as_multi(grids.geometry.to_numpy()),
        }
    )
    copy_frame(conn, "grid_stage", stage, {"geom": 4326})
    conn.execute(text("CREATE INDEX ON grid_stage USING gist (geom)"))
    conn.execute(text("ANALYZE grid_stage"))
    rows = conn.execute(
        text(PLACEMENT_CHECKS),
        {"tolerance": AREA_TOLERANCE_M2, "sliver": SLIVER_HALF_WIDTH_M, "replaced": list(replaced)},
    ).all()
    conn.execute(text("DROP TABLE grid_stage"))
    return [{"row": r.row, "field": r.field, "reason": r.reason, "id": r.code} for r in rows]


def write_grids(
    conn: Connection,
    grids: gpd.GeoDataFrame,
    valid_from: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    replace_existing: bool = False,
    refresh_coverage: bool = True,
) -> int:
    """Insert grids (WGS84) after validating them; all or nothing.

    Rows are checked alone first, then against the stored villages and grids. With
    `replace_existing`, a row whose code is current closes that version at `valid_from`
    (default: the transaction's time) and becomes the next version; otherwise an existing
    code is an error. The coverage of the new grids and their neighbours is computed in
    the same transaction, unless `refresh_coverage` is false (a caller that recomputes
    everything afterwards).
    """
    validate_grids(grids)
    begin_grid_write(conn)
    codes = grids["code"].astype(str).tolist()
    replaced = codes if replace_existing else []
    placement_errors = check_grid_placement(conn, grids, replaced)
    if placement_errors:
        raise RowsRejected("grids", placement_errors)
    # The clock, not now(): a writer that waited for the lock must stamp after the one before.
    moment = valid_from or conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    if replace_existing:
        conn.execute(
            text("UPDATE grid SET valid_to = :at WHERE code = ANY(:codes) AND valid_to IS NULL"),
            {"at": moment, "codes": codes},
        )
    # A code retired earlier and drawn again continues its version chain.
    versions = dict.fromkeys(codes, 1) | dict(
        conn.execute(
            text("SELECT code, max(version) + 1 FROM grid WHERE code = ANY(:codes) GROUP BY code"),
            {"codes": codes},
        ).all()
    )
    frame = select_columns(grids, COLUMNS, {"kind": GRID_KINDS[0]})
    for name in ("households", "population"):
        frame[name] = frame[name].map(lambda v: None if pd.isna(v) else int(v))
    frame["version"] = [versions[code] for code in codes]
    frame["valid_from"] = np.full(len(frame), moment, dtype=object)
    frame["geom"] = as_multi(grids.geometry.to_numpy())
    written = copy_frame(conn, "grid", frame, {"geom": 4326}, progress)
    if refresh_coverage:
        refresh_grids(conn, _versions_stamped(conn, codes, moment))
    return written


def _versions_stamped(conn: Connection, codes: list[str], moment: datetime) -> list[int]:
    """Ids of the versions of `codes` opened or closed at `moment`."""
    return (
        conn.execute(
            text(
                "SELECT id FROM grid WHERE code = ANY(:codes) "
                "AND (valid_from = :at OR valid_to = :at)"
            ),
            {"codes": codes, "at": moment},
        )
        .scalars()
        .all()
    )


GRID_SQL = """
SELECT g.id, g.code, g.version, g.name, g.village_code, g.kind, g.households, g.population,
       g.worker_name, g.worker_phone, g.valid_from, g.valid_to, g.area_m2,
       ST_AsGeoJSON(g.geom, 7) AS geometry
FROM grid g
WHERE {where}
ORDER BY g.code, g.version
"""
CURRENT_AT = "g.valid_from <= :at AND (g.valid_to IS NULL OR g.valid_to > :at)"


def read_grids(
    conn: Connection,
    *,
    code: str | None = None,
    village_code: str | None = None,
    at: datetime | None = None,
    all_versions: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, object]]:
    """Grid rows (GeoJSON geometry text) valid at `at` (default now), or every version."""
    where, params = [], {"limit": limit, "offset": offset}
    if not all_versions:
        where.append(CURRENT_AT)
        params["at"] = at or conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    if code is not None:
        where.append("g.code = :code")
        params["code"] = code
    if village_code is not None:
        where.append("g.village_code = :village_code")
        params["village_code"] = village_code
    sql = GRID_SQL.format(where=" AND ".join(where) or "true") + " LIMIT :limit OFFSET :offset"
    return [dict(row) for row in conn.execute(text(sql), params).mappings()]


def retire_grid(conn: Connection, code: str) -> dict[str, object] | None:
    """Close the current version of `code` now (its neighbours' coverage recomputed);
    returns it, or None when there is none."""
    begin_grid_write(conn)
    row = (
        conn.execute(
            text(
                "UPDATE grid SET valid_to = clock_timestamp() "
                "WHERE code = :code AND valid_to IS NULL "
                "RETURNING id, code, version"
            ),
            {"code": code},
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    refresh_grids(conn, [row["id"]])
    return dict(row)


# -- single-grid edits (HTTP), each audited in its own transaction -----------------------------
EDITABLE = ("name", "kind", "households", "population", "worker_name", "worker_phone")


def grid_etag(row: dict[str, Any]) -> str:
    return f'W/"{row["code"]}-v{row["version"]}"'


def _audited(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "geometry"} | {
        "geometry_md5": hashlib.md5(str(row["geometry"]).encode()).hexdigest()
    }


def create_grid(
    conn: Connection, properties: dict[str, Any], geometry: shapely.Geometry, actor: str
) -> dict[str, Any]:
    """Add one grid (WGS84 outline); its village is its code's first 12 digits."""
    frame = gpd.GeoDataFrame(
        [properties | {"village_code": properties["code"][:12]}], geometry=[geometry], crs=4326
    )
    write_grids(conn, frame)
    row = read_grids(conn, code=properties["code"], limit=1)[0]
    record_write(conn, actor, "create", "grid", row["code"], after=_audited(row))
    return row


def update_grid(
    conn: Connection,
    code: str,
    changes: dict[str, Any],
    geometry: shapely.Geometry | None,
    if_match: str | None,
    actor: str,
) -> dict[str, Any]:
    """Close the grid's current version and open the next with `changes` (and a new
    outline); 404 without a current version, 412 when `if_match` is not its ETag."""
    begin_grid_write(conn)  # so the version compared below is the one replaced
    rows = read_grids(conn, code=code, limit=1)
    if not rows:
        raise Problem(404, f"no grid {code}")
    before = rows[0]
    if if_match is not None and if_match != grid_etag(before):
        raise Problem(
            412,
            f"grid {code} changed since you read it: it is now version "
            f"{before['version']}; read it again and repeat your edit",
        )
    merged = {k: before[k] for k in (*EDITABLE, "code")} | changes
    # The stored outline itself, not its GeoJSON (rounded to 7 decimals): an edit of
    # names or the worker moves no vertex.
    outline = geometry if geometry is not None else shapely.from_wkb(_stored_outline(conn, before))
    frame = gpd.GeoDataFrame(
        [merged | {"village_code": before["village_code"]}], geometry=[outline], crs=4326
    )
    write_grids(conn, frame, replace_existing=True, refresh_coverage=geometry is not None)
    after = read_grids(conn, code=code, limit=1)[0]
    if geometry is None:  # same outline, same coverage: nothing to compute
        carry_coverage(conn, before["id"], after["id"])
    record_write(
        conn, actor, "update", "grid", code, before=_audited(before), after=_audited(after)
    )
    return after


def _stored_outline(conn: Connection, row: dict[str, Any]) -> bytes:
    return bytes(
        conn.execute(
            text("SELECT ST_AsBinary(geom) FROM grid WHERE id = :id"), {"id": row["id"]}
        ).scalar_one()
    )


def retire_grid_audited(conn: Connection, code: str, actor: str) -> dict[str, object]:
    """`retire_grid` with its audit row; 404 when the grid has no current version."""
    retired = retire_grid(conn, code)
    if retired is None:
        raise Problem(404, f"no current grid {code}")
    record_write(conn, actor, "retire", "grid", code, before=retired)
    return retired
