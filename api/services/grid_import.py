"""Importing grid and admin-area files, and the 全域覆盖 check (village parts no grid covers).

An import maps the file's columns onto ours, optionally repairs invalid geometries, then
collects every error of every stage (reading, row checks, checks against the stored
villages and grids) before deciding anything: by default one bad row rejects the whole
file (`ImportRejected`, nothing written); with `skip_invalid` the good rows are written
through the entity's one write path (`write_grids`, `write_admin_areas`) and the bad
ones come back in the report. `api.services.imports.import_file` reads a file and runs
these in one transaction. Errors name rows as the user's file numbers them: the
frame's index (see `api.services.files`), `feature` (1-based) or CSV `line`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import mapping
from sqlalchemy import Connection, text

from api.errors import GridcoverError
from api.services.admin_areas import LEVELS, validate_admin_areas, write_admin_areas
from api.services.bulk import copy_frame
from api.services.grids import (
    AREA_TOLERANCE_M2,
    GRID_KINDS,
    SLIVER_HALF_WIDTH_M,
    check_grid_placement,
    validate_grids,
    write_grids,
)
from api.services.validation import RowsRejected, as_multi

Progress = Callable[[str, float], None]

# Column names seen in grid and division files (matched case-insensitively, first wins),
# including shapefile names cut to 10 characters and the pinyin initials of GIS tables.
GRID_COLUMNS: dict[str, tuple[str, ...]] = {
    "code": ("code", "grid_code", "gridcode", "wgbm", "wgdm", "网格编码", "网格代码", "网格编号"),
    "name": ("name", "grid_name", "gridname", "wgmc", "网格名称", "名称"),
    "village_code": (
        "village_code",
        "village_co",
        "villagecode",
        "cjbm",
        "村编码",
        "村代码",
        "村(社区)编码",
        "村（社区）编码",
        "所属村编码",
    ),
    "kind": ("kind", "grid_kind", "type", "wglx", "网格类型", "类型"),
    "households": ("households", "hs", "户数"),
    "population": ("population", "rk", "人口", "人口数"),
    "worker_name": ("worker_name", "worker_nam", "worker", "wgy", "网格员", "网格员姓名"),
    "worker_phone": (
        "worker_phone",
        "worker_pho",
        "phone",
        "lxdh",
        "网格员电话",
        "联系电话",
        "电话",
    ),
}
ADMIN_COLUMNS: dict[str, tuple[str, ...]] = {
    "code": ("code", "adcode", "xzqdm", "区划代码", "行政区划代码", "代码", "编码"),
    "name": ("name", "xzqmc", "区划名称", "行政区划名称", "名称"),
    "level": ("level", "jb", "级别", "层级"),
    "parent_code": ("parent_code", "parent_cod", "parent", "sjdm", "上级代码", "上级区划代码"),
}
KIND_SYNONYMS = {"综合": "综合网格", "专属": "专属网格"}
LEVEL_SYNONYMS = {
    "州": "prefecture",
    "市州": "prefecture",
    "县": "county",
    "县级": "county",
    "县市区": "county",
    "乡": "township",
    "镇": "township",
    "乡镇": "township",
    "街道": "township",
    "乡级": "township",
    "村": "village",
    "社区": "village",
    "村级": "village",
}
# How many leading digits of a code are its parent's (a county shares the prefecture's 4).
PARENT_PREFIX = {"county": 4, "township": 6, "village": 9}
# Geometry and identity errors keep a row out of the checks against stored data: an
# invalid polygon would make PostGIS raise, and a row without a code cannot be matched.
_UNPLACEABLE_FIELDS = {"geometry", "code", "village_code", "level"}


class ImportRejected(RowsRejected):
    """Rows of an import failed; nothing was written. `errors` use the file's row numbers."""

    def __init__(self, entity: str, errors: list[dict[str, Any]], row_kind: str, read: int):
        errors = sorted(errors, key=_error_order)
        super().__init__(entity, errors)
        self.row_kind = row_kind
        self.read = read
        bad_rows = {e["row"] for e in errors}
        first = errors[0]
        where = f"{row_kind} {first['row']} " if first["row"] is not None else ""
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        rejected = (
            f"{len(bad_rows - {None})} of {read} {row_kind}s rejected"
            if None not in bad_rows
            else "the file was rejected"
        )
        self.args = (
            f"{entity}: {rejected}, nothing was written: "
            f"{where}{first['field']}: {first['reason']}{more}",
        )


def _error_order(error: dict[str, Any]) -> tuple[bool, int]:
    return (error["row"] is not None, error["row"] or 0)


@dataclass
class ImportReport:
    """What an import did. `rejected` lists `{row, code, field, reason}` per error."""

    entity: str
    row_kind: str
    read: int
    written: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    repaired: list[dict[str, Any]] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def rejected_rows(self) -> int:
        return len({e["row"] for e in self.rejected})

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "source": self.source,
            "rows": self.row_kind,
            "read": self.read,
            "written": self.written,
            "rejected_rows": self.rejected_rows,
            "rejected": self.rejected,
            "repaired": self.repaired,
            "ignored_columns": self.ignored_columns,
        }

    def summary(self) -> str:
        """One line, e.g. `grids: 12 features read, 10 written, 2 rejected, 1 repaired`."""
        parts = [f"{self.read} {self.row_kind}s read", f"{self.written} written"]
        if self.rejected:
            parts.append(f"{self.rejected_rows} rejected ({len(self.rejected)} errors)")
        if self.repaired:
            parts.append(f"{len(self.repaired)} repaired")
        return f"{self.entity}: " + ", ".join(parts)


class _Errors:
    """Errors keyed by position in the frame, turned into file row numbers at the end."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.rows = frame.index.to_numpy()
        self.row_kind = str(frame.index.name or "row")
        if frame.index.name is None:  # a plain frame: number its rows from 1
            self.rows = np.arange(1, len(frame) + 1)
        self.items: list[dict[str, Any]] = []  # {"pos", "field", "reason"}

    def add(self, position: int, field_name: str, reason: str) -> None:
        self.items.append({"pos": position, "field": field_name, "reason": reason})

    def add_stage(
        self, errors: Iterable[dict[str, Any]], positions: np.ndarray | None = None
    ) -> None:
        """Errors of a check that numbered the rows of `frame.iloc[positions]` from 0."""
        for error in errors:
            position = int(error["row"])
            if positions is not None:
                position = int(positions[position])
            self.add(position, error["field"], self._renumber(error["reason"], positions))

    def _renumber(self, reason: str, positions: np.ndarray | None) -> str:
        # check_grid_placement names the other row of an overlap by its 0-based position
        def swap(match: re.Match[str]) -> str:
            position = int(match.group(1))
            if positions is not None:
                position = int(positions[position])
            return f"({self.row_kind} {self.rows[position]})"

        return re.sub(r"\(row (\d+)\)", swap, reason)

    def add_read_errors(self, errors: Iterable[dict[str, Any]]) -> None:
        where = {int(row): i for i, row in enumerate(self.rows)}
        for error in errors:
            if error["row"] in where:
                self.add(where[error["row"]], error["field"], error["reason"])

    def bad_positions(self, fields: set[str] | None = None) -> set[int]:
        return {e["pos"] for e in self.items if fields is None or e["field"] in fields}

    def deduplicated(self) -> list[dict[str, Any]]:
        """Drop repeats, and "geometry missing" where reading already said why it is."""
        read_geometry = {
            e["pos"]
            for e in self.items
            if e["field"] == "geometry" and "missing" not in e["reason"]
        }
        seen: set[tuple[int, str, str]] = set()
        out = []
        for e in self.items:
            key = (e["pos"], e["field"], e["reason"])
            if key in seen or (
                e["reason"] == "geometry missing or empty" and e["pos"] in read_geometry
            ):
                continue
            seen.add(key)
            out.append(e)
        return out

    def as_problem_errors(self, codes: np.ndarray) -> list[dict[str, Any]]:
        """`{row, field, reason, id}`, the shape of `RowsRejected.errors`, sorted by row."""
        return sorted(
            (
                {
                    "row": int(self.rows[e["pos"]]),
                    "field": e["field"],
                    "reason": e["reason"],
                    "id": _or_none(codes[e["pos"]]),
                }
                for e in self.deduplicated()
            ),
            key=_error_order,
        )


def _or_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


# -- column mapping and coercion ------------------------------------------------------------
def map_columns(
    frame: gpd.GeoDataFrame, aliases: dict[str, tuple[str, ...]]
) -> tuple[dict[str, str], list[str]]:
    """Which file column feeds each of ours (`{ours: theirs}`), and the columns left over."""
    by_lower: dict[str, str] = {}
    for column in frame.columns:
        if column != frame.geometry.name:
            by_lower.setdefault(str(column).strip().lower(), column)
    chosen: dict[str, str] = {}
    used: set[str] = set()
    for ours, names in aliases.items():
        for name in names:
            theirs = by_lower.get(name.lower())
            if theirs is not None and theirs not in used:
                chosen[ours] = theirs
                used.add(theirs)
                break
    leftover = [str(c) for c in frame.columns if c != frame.geometry.name and c not in used]
    return chosen, leftover


def _missing_column_errors(
    chosen: dict[str, str],
    required: tuple[str, ...],
    aliases: dict[str, tuple[str, ...]],
    frame: gpd.GeoDataFrame,
) -> list[dict[str, Any]]:
    present = ", ".join(str(c) for c in frame.columns if c != frame.geometry.name) or "none"
    return [
        {
            "row": None,
            "field": name,
            "reason": f"no column for it; name one {', '.join(aliases[name][:4])} "
            f"(the file's columns: {present})",
            "id": None,
        }
        for name in required
        if name not in chosen
    ]


def _text(value: Any) -> str | None:
    """A cell as trimmed text; integral numbers without '.0' (codes read as numbers)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, bool | np.bool_):
        return str(value)
    out = str(value).strip()
    return out or None


def text_column(frame: pd.DataFrame, column: str | None) -> np.ndarray:
    if column is None:
        return np.full(len(frame), None, dtype=object)
    return np.array([_text(v) for v in frame[column].to_numpy(dtype=object)], dtype=object)


def count_column(frame: pd.DataFrame, column: str | None, ours: str, errors: _Errors) -> np.ndarray:
    """Whole numbers (households, population); anything else is a row error and NULL."""
    out = np.full(len(frame), None, dtype=object)
    if column is None:
        return out
    for position, value in enumerate(frame[column].to_numpy(dtype=object)):
        raw = _text(value)
        if raw is None:
            continue
        try:
            number = float(raw.replace(",", ""))
        except ValueError:
            number = float("nan")
        if not np.isfinite(number) or not number.is_integer():
            errors.add(position, ours, f"must be a whole number, not {raw!r}")
            continue
        out[position] = int(number)
    return out


def _repair(
    geoms: np.ndarray, errors: _Errors, codes: np.ndarray, repair: bool
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """With `repair`, make invalid polygons valid (`make_valid`, keeping the polygonal part)
    and report which rows changed; without, return the geometries untouched."""
    present = ~shapely.is_missing(geoms)
    invalid = np.flatnonzero(present & ~shapely.is_valid(geoms))
    if not repair or not len(invalid):
        return geoms, []
    geoms = geoms.copy()
    repaired = []
    fixed = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
    for position, before, after in zip(invalid, geoms[invalid], fixed, strict=True):
        polygonal = shapely.get_parts(after)
        polygonal = polygonal[np.isin(shapely.get_type_id(polygonal), (3, 6))]
        if not len(polygonal):
            continue  # nothing polygonal left: validation reports the original problem
        if shapely.get_type_id(before) not in (3, 6):
            continue  # not a polygon to begin with: validation says so
        result = shapely.union_all(polygonal)
        geoms[position] = result
        repaired.append(
            {
                "row": int(errors.rows[position]),
                "code": _or_none(codes[position]),
                "reason": shapely.is_valid_reason(before),
            }
        )
    return geoms, repaired


def _report_rows(problem_errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"row": e["row"], "code": e["id"], "field": e["field"], "reason": e["reason"]}
        for e in problem_errors
    ]


def _progress(progress: Progress | None, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, fraction)


def _write_progress(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]

    def advance(rows: int) -> None:
        done[0] += rows
        progress("writing", done[0] / max(total, 1))

    return advance


# -- grids -------------------------------------------------------------------------------
def import_grids(
    conn: Connection,
    frame: gpd.GeoDataFrame,
    *,
    skip_invalid: bool = False,
    repair: bool = False,
    read_errors: Iterable[dict[str, Any]] = (),
    progress: Progress | None = None,
) -> ImportReport:
    """Check every row of a grid file, then write all (or, with `skip_invalid`, the good).

    `frame` is in WGS84; its index numbers the rows as the file does (see module docs).
    Raises `ImportRejected` (a `RowsRejected`) listing every error when any row is bad and
    `skip_invalid` is false; runs inside the caller's transaction.
    """
    errors = _Errors(frame)
    errors.add_read_errors(read_errors)
    chosen, leftover = map_columns(frame, GRID_COLUMNS)
    missing = _missing_column_errors(chosen, ("code", "name"), GRID_COLUMNS, frame)
    if missing:
        raise ImportRejected("grids", missing, errors.row_kind, len(frame))
    _progress(progress, "validating", 0.0)
    codes = text_column(frame, chosen["code"])
    village_codes = text_column(frame, chosen.get("village_code"))
    # A grid code begins with its 12-digit village code, so the village can be derived.
    for position, (code, village) in enumerate(zip(codes, village_codes, strict=True)):
        if village is None and code is not None and len(code) >= 12:
            village_codes[position] = code[:12]
    kinds = text_column(frame, chosen.get("kind"))
    kinds = np.array(
        [GRID_KINDS[0] if k is None else KIND_SYNONYMS.get(k, k) for k in kinds], dtype=object
    )
    geoms, repaired = _repair(frame.geometry.to_numpy(), errors, codes, repair)
    grids = gpd.GeoDataFrame(
        {
            "code": codes,
            "name": text_column(frame, chosen["name"]),
            "village_code": village_codes,
            "kind": kinds,
            "households": count_column(frame, chosen.get("households"), "households", errors),
            "population": count_column(frame, chosen.get("population"), "population", errors),
            "worker_name": text_column(frame, chosen.get("worker_name")),
            "worker_phone": text_column(frame, chosen.get("worker_phone")),
        },
        geometry=geoms,
        crs=4326,
    )
    try:
        validate_grids(grids)
    except RowsRejected as exc:
        errors.add_stage(exc.errors)
    _progress(progress, "validating", 0.3)
    report = ImportReport(
        "grids", errors.row_kind, len(frame), repaired=repaired, ignored_columns=leftover
    )
    if not errors.items:
        # Every row passed alone: the write path's own placement check (the costly one,
        # seconds for a prefecture) then runs once, and raises before writing anything.
        try:
            report.written = write_grids(
                conn, grids, progress=_write_progress(progress, len(grids))
            )
        except RowsRejected as exc:
            errors.add_stage(exc.errors)
        else:
            _progress(progress, "writing", 1.0)
            return report
    else:
        placeable = np.setdiff1d(
            np.arange(len(grids)), sorted(errors.bad_positions(_UNPLACEABLE_FIELDS))
        )
        if len(placeable):
            errors.add_stage(check_grid_placement(conn, grids.iloc[placeable]), placeable)
    _progress(progress, "validating", 1.0)
    problem_errors = errors.as_problem_errors(codes)
    report.rejected = _report_rows(problem_errors)
    if not skip_invalid:
        raise ImportRejected("grids", problem_errors, errors.row_kind, len(frame))
    good = np.setdiff1d(np.arange(len(grids)), sorted(errors.bad_positions()))
    report.repaired = [r for r in repaired if r["row"] in set(errors.rows[good].tolist())]
    if len(good):
        report.written = write_grids(
            conn, grids.iloc[good], progress=_write_progress(progress, len(good))
        )
    _progress(progress, "writing", 1.0)
    return report


# -- admin areas -----------------------------------------------------------------------------
ADMIN_STAGE_CHECKS = """
WITH parents AS (
    SELECT code, level, geom FROM admin_stage
    UNION ALL
    SELECT a.code, a.level, a.geom FROM admin_area a
    WHERE NOT EXISTS (SELECT 1 FROM admin_stage s WHERE s.code = a.code)
), expected (level, parent_level) AS (
    VALUES ('county', 'prefecture'), ('township', 'county'), ('village', 'township')
), checked AS (
    SELECT s.row, 'code' AS field, 'admin area ' || s.code || ' exists already' AS reason
    FROM admin_stage s JOIN admin_area a ON a.code = s.code
    UNION ALL
    SELECT s.row, 'parent_code', 'parent ' || s.parent_code || ' is not a known admin area'
    FROM admin_stage s LEFT JOIN parents p ON p.code = s.parent_code
    WHERE s.parent_code IS NOT NULL AND p.code IS NULL
    UNION ALL
    SELECT s.row, 'parent_code',
           format('parent %s is a %s; a %s belongs to a %s', p.code, p.level, s.level,
                  e.parent_level)
    FROM admin_stage s JOIN parents p ON p.code = s.parent_code
    JOIN expected e ON e.level = s.level
    WHERE p.level <> e.parent_level
    UNION ALL
    SELECT s.row, 'geometry',
           format('extends %s m² outside its parent %s', round(d.area_m2::numeric, 1), p.code)
    FROM admin_stage s JOIN parents p ON p.code = s.parent_code
    CROSS JOIN LATERAL (
        SELECT ST_Area(ST_Transform(ST_Difference(s.geom, p.geom), 4546)) AS area_m2
    ) d
    WHERE NOT ST_IsEmpty(p.geom) AND NOT ST_CoveredBy(s.geom, p.geom)
      AND d.area_m2 > :tolerance
    UNION ALL
    SELECT s.row, 'geometry',
           format('overlaps %s %s by %s m²', a.level, a.code, round(o.area_m2::numeric, 1))
    FROM admin_stage s JOIN admin_area a
      ON a.level = s.level AND a.code <> s.code AND ST_Intersects(a.geom, s.geom)
    CROSS JOIN LATERAL (
        SELECT ST_Area(ST_Transform(ST_Intersection(s.geom, a.geom), 4546)) AS area_m2
    ) o
    WHERE o.area_m2 > :tolerance
    UNION ALL
    SELECT b.row, 'geometry',
           format('overlaps %s %s (row %s) by %s m²', a.level, a.code, a.row,
                  round(o.area_m2::numeric, 1))
    FROM admin_stage a JOIN admin_stage b
      ON a.row < b.row AND a.level = b.level AND ST_Intersects(a.geom, b.geom)
    CROSS JOIN LATERAL (
        SELECT ST_Area(ST_Transform(ST_Intersection(a.geom, b.geom), 4546)) AS area_m2
    ) o
    WHERE o.area_m2 > :tolerance
)
SELECT * FROM checked ORDER BY row
"""


def check_admin_area_placement(
    conn: Connection, areas: gpd.GeoDataFrame, spatial: np.ndarray
) -> list[dict[str, Any]]:
    """Errors against what is stored and within the file: code taken, parent unknown or of
    the wrong level, outside the parent or overlapping another area of its level by more
    than `AREA_TOLERANCE_M2`. Rows are 0-based positions; only rows where `spatial` is
    true take part in the geometric checks (the others have unusable geometry)."""
    conn.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS admin_stage (row integer, code text, level text, "
            "parent_code text, geom geometry(MultiPolygon, 4326)) ON COMMIT DROP"
        )
    )
    conn.execute(text("TRUNCATE admin_stage"))
    geoms = np.asarray(areas.geometry.to_numpy(), dtype=object).copy()
    # Rows with unusable geometry still take part in the code and parent checks; an empty
    # geometry (COPY cannot take NULL ones) intersects nothing and measures 0 m².
    geoms[~spatial] = shapely.from_wkt("MULTIPOLYGON EMPTY")
    geoms[spatial] = as_multi(geoms[spatial])
    stage = pd.DataFrame(
        {
            "row": np.arange(len(areas)),
            "code": areas["code"].to_numpy(),
            "level": areas["level"].to_numpy(),
            "parent_code": areas["parent_code"].to_numpy(),
            "geom": geoms,
        }
    )
    copy_frame(conn, "admin_stage", stage, {"geom": 4326})
    conn.execute(text("CREATE INDEX ON admin_stage USING gist (geom)"))
    conn.execute(text("ANALYZE admin_stage"))
    rows = conn.execute(text(ADMIN_STAGE_CHECKS), {"tolerance": AREA_TOLERANCE_M2}).all()
    conn.execute(text("DROP TABLE admin_stage"))
    return [{"row": r.row, "field": r.field, "reason": r.reason} for r in rows]


def _level_from_code(code: str | None) -> str | None:
    if code is None or not code.isdigit():
        return None
    if len(code) == 6:
        return "prefecture" if code.endswith("00") else "county"
    return {9: "township", 12: "village"}.get(len(code))


def _parent_from_code(code: str | None, level: str | None) -> str | None:
    """The parent a code implies (townships and villages only: a county's prefecture may
    not be stored, so it is never invented)."""
    if code is None or level not in ("township", "village"):
        return None
    return code[: PARENT_PREFIX[level]]


def import_admin_areas(
    conn: Connection,
    frame: gpd.GeoDataFrame,
    *,
    skip_invalid: bool = False,
    repair: bool = False,
    read_errors: Iterable[dict[str, Any]] = (),
    progress: Progress | None = None,
) -> ImportReport:
    """Like `import_grids`, for counties, townships and villages (`write_admin_areas`).

    `level` comes from the code's length when absent (6 digits: county, or prefecture
    when ending in 00; 9: township; 12: village), and so does the parent of townships
    and villages. A row whose parent in the same file is rejected is rejected too.
    """
    errors = _Errors(frame)
    errors.add_read_errors(read_errors)
    chosen, leftover = map_columns(frame, ADMIN_COLUMNS)
    missing = _missing_column_errors(chosen, ("code", "name"), ADMIN_COLUMNS, frame)
    if missing:
        raise ImportRejected("admin areas", missing, errors.row_kind, len(frame))
    _progress(progress, "validating", 0.0)
    codes = text_column(frame, chosen["code"])
    levels = text_column(frame, chosen.get("level"))
    parents = text_column(frame, chosen.get("parent_code"))
    for position, code in enumerate(codes):
        level = levels[position]
        level = _level_from_code(code) if level is None else LEVEL_SYNONYMS.get(level, level)
        levels[position] = level.lower() if isinstance(level, str) else level
        if parents[position] is None:
            parents[position] = _parent_from_code(code, levels[position])
        parent, level = parents[position], levels[position]
        if (
            parent is not None
            and code is not None
            and level in PARENT_PREFIX
            and code[: PARENT_PREFIX[level]] != parent[: PARENT_PREFIX[level]]
        ):
            errors.add(position, "code", f"must start with its parent's code {parent}")
    geoms, repaired = _repair(frame.geometry.to_numpy(), errors, codes, repair)
    areas = gpd.GeoDataFrame(
        {
            "code": codes,
            "level": levels,
            "name": text_column(frame, chosen["name"]),
            "parent_code": parents,
        },
        geometry=geoms,
        crs=4326,
    )
    try:
        validate_admin_areas(areas)
    except RowsRejected as exc:
        errors.add_stage(exc.errors)
    _progress(progress, "validating", 0.3)
    spatial = np.ones(len(areas), dtype=bool)
    spatial[sorted(errors.bad_positions({"geometry"}))] = False
    unplaceable = errors.bad_positions({"code"}) | {
        p for p in range(len(areas)) if codes[p] is None or levels[p] not in LEVELS
    }
    placeable = np.setdiff1d(np.arange(len(areas)), sorted(unplaceable))
    if len(placeable):
        stage_errors = check_admin_area_placement(conn, areas.iloc[placeable], spatial[placeable])
        errors.add_stage(stage_errors, placeable)
    _cascade_rejected_parents(conn, errors, codes, parents)
    _progress(progress, "validating", 1.0)
    problem_errors = errors.as_problem_errors(codes)
    report = ImportReport(
        "admin areas",
        errors.row_kind,
        len(frame),
        rejected=_report_rows(problem_errors),
        repaired=repaired,
        ignored_columns=leftover,
    )
    if problem_errors and not skip_invalid:
        raise ImportRejected("admin areas", problem_errors, errors.row_kind, len(frame))
    good = np.setdiff1d(np.arange(len(areas)), sorted(errors.bad_positions()))
    report.repaired = [r for r in repaired if r["row"] in set(errors.rows[good].tolist())]
    if len(good):
        report.written = write_admin_areas(
            conn, areas.iloc[good], progress=_write_progress(progress, len(good))
        )
    _progress(progress, "writing", 1.0)
    return report


def _cascade_rejected_parents(
    conn: Connection, errors: _Errors, codes: np.ndarray, parents: np.ndarray
) -> None:
    """Reject rows whose parent is a rejected row of the file (and not stored already),
    down the levels, so that skipping bad rows never breaks the parent links."""
    stored = set(
        conn.execute(
            text("SELECT code FROM admin_area WHERE code = ANY(:codes)"),
            {"codes": sorted({p for p in parents if p is not None})},
        ).scalars()
    )
    while True:
        bad = errors.bad_positions()
        rejected_codes = {codes[p] for p in bad if codes[p] is not None}
        orphans = [
            p
            for p in range(len(codes))
            if p not in bad and parents[p] in rejected_codes and parents[p] not in stored
        ]
        if not orphans:
            return
        for p in orphans:
            errors.add(p, "parent_code", f"its parent {parents[p]} was rejected")


# -- 全域覆盖: the parts of villages no grid covers ------------------------------------------
class UnknownVillage(GridcoverError):
    """No village has the code asked for (HTTP 404)."""


# Set operations run in EPSG:4326, where grids and villages share their edges exactly;
# only the areas of the parts left over are measured in metres (EPSG:4546).
UNCOVERED = """
WITH village AS (
    SELECT code, name, geom FROM admin_area
    WHERE level = 'village' AND (CAST(:code AS text) IS NULL OR code = :code)
), remainder AS (
    SELECT v.code, v.name,
           ST_CollectionExtract(
               CASE WHEN c.geom IS NULL THEN v.geom ELSE ST_Difference(v.geom, c.geom) END, 3
           ) AS geom
    FROM village v
    CROSS JOIN LATERAL (
        SELECT ST_Union(g.geom) AS geom FROM grid g
        WHERE g.valid_to IS NULL AND g.geom && v.geom AND ST_Intersects(g.geom, v.geom)
    ) c
), part AS (
    SELECT r.code, r.name, d.geom, ST_Transform(d.geom, 4546) AS geom_m
    FROM remainder r CROSS JOIN LATERAL ST_Dump(r.geom) d
)
SELECT code, name, ST_AsBinary(geom) AS wkb, ST_Area(geom_m) AS area_m2 FROM part
WHERE ST_Area(geom_m) >= :min_area
  -- zero-width slivers along shared edges (vertices moved by conversions) are no gaps
  AND NOT ST_IsEmpty(ST_Buffer(geom_m, -:sliver))
ORDER BY code, area_m2 DESC
"""


@dataclass(frozen=True)
class UncoveredPart:
    """One polygon of a village that no current grid covers (WGS84; area in EPSG:4546)."""

    village_code: str
    village_name: str
    geometry: shapely.Geometry
    area_m2: float


def uncovered_parts(
    conn: Connection, village_code: str | None = None, min_area_m2: float = 1.0
) -> list[UncoveredPart]:
    """For every village (or the one named), the parts of at least `min_area_m2` that no
    current grid covers, leaving out slivers thinner than 2 x `SLIVER_HALF_WIDTH_M`.
    Raises `UnknownVillage` for a code that is no village."""
    if village_code is not None:
        known = conn.execute(
            text("SELECT 1 FROM admin_area WHERE code = :code AND level = 'village'"),
            {"code": village_code},
        ).first()
        if known is None:
            raise UnknownVillage(f"no village has code {village_code}")
    rows = conn.execute(
        text(UNCOVERED),
        {"code": village_code, "min_area": min_area_m2, "sliver": SLIVER_HALF_WIDTH_M},
    ).all()
    return [
        UncoveredPart(r.code, r.name, shapely.from_wkb(bytes(r.wkb)), float(r.area_m2))
        for r in rows
    ]


def uncovered_feature_collection(parts: list[UncoveredPart]) -> dict[str, Any]:
    """RFC 7946 FeatureCollection of uncovered parts (`village_code, village_name, area_m2`)."""
    counters: dict[str, int] = {}
    features = []
    for part in parts:
        counters[part.village_code] = counters.get(part.village_code, 0) + 1
        features.append(
            {
                "type": "Feature",
                "id": f"{part.village_code}-{counters[part.village_code]}",
                "geometry": mapping(part.geometry),
                "properties": {
                    "village_code": part.village_code,
                    "village_name": part.village_name,
                    "area_m2": round(part.area_m2, 1),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}
