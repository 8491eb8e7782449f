"""Importing camera files: CSV, GeoJSON (any vector file) and GB/T 28181 Catalog XML.

Like the grid import (`api.services.grid_import`, whose machinery this reuses): the
file's columns are mapped onto ours (`CAMERA_COLUMNS`, case-insensitive, first alias
wins), every error of every stage is collected with the row number of the file (CSV line,
GeoJSON feature, catalogue item) and the camera's gb_id, and then either nothing is
written (`ImportRejected`) or, with `skip_invalid`, the good rows are, and the bad ones
come back in the report. Written cameras get their FOVs and the coverage of the grids
they touch refreshed in the same transaction (`api.services.coverage.refresh_cameras`).

Values. Numbers may carry units (`4.5m`, `4.5米`, `90°`, `90度`); an azimuth may be a
compass word (东南, 正北, SE); a resolution a width (1920), `1920x1080`, a name (1080P,
D1, 4K), megapixels (200万) or a GB/T 28181 code 1-6, several separated by `/` giving the
best (`api.services.gb28181_catalog.resolution_px`); installed_at any date pandas reads,
a date without a zone being Beijing time. Kind, status and owner accept Chinese and
common English names (`KIND_SYNONYMS`, `STATUS_SYNONYMS`, `OWNER_SYNONYMS`).

Defaults for a missing column or an empty cell (counted per field in the report's
`defaulted`), documented in DESIGN.md's spirit of "kind-dependent":

| field           | default                                                       |
|-----------------|---------------------------------------------------------------|
| name            | the gb_id                                                     |
| kind            | bullet (the commonest camera of the programme)                |
| hfov_deg        | dome and ptz 360 (a full disc), bullet 90 (`geo.camera`)      |
| height_m        | bullet 4 m (pole), dome 3 m (eave, ceiling), ptz 6 m (pole)   |
| azimuth_deg     | 0 (north; meaningless for the discs of dome and ptz cameras)  |
| resolution_h_px | 1920 (1080P)                                                  |
| status, owner   | online, public                                                |
| county_code     | digits 1-6 of the gb_id                                       |
| range_m, installed_at | none                                                    |

Errors, each naming the row and gb_id: a bad id (the reason from `geo.codes`), a county
that disagrees with the id (both codes named) or is not stored, azimuth outside
[0, 360), hfov outside (0, 360], a negative height, a point outside the prefecture, a
gb_id twice in the file or registered already (naming the camera's id), values that are
no numbers, kinds, statuses or dates.

GB/T 28181 directory entries (region nodes, NVRs, business groups, virtual
organisations: `gb28181_catalog.ITEM_TYPE_COLUMN`) are no cameras: they are skipped and
counted by type in the report's `skipped`, never errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from api.services.cameras import OWNERS, STATUSES, validate_cameras, write_cameras
from api.services.coverage import refresh_cameras
from api.services.gb28181_catalog import (
    CAMERA_ITEM,
    ITEM_TYPE_COLUMN,
    compass_azimuth,
    resolution_px,
)
from api.services.grid_import import (
    ImportRejected,
    ImportReport,
    Progress,
    _Errors,
    _missing_column_errors,
    _progress,
    _report_rows,
    _write_progress,
    map_columns,
    text_column,
)
from api.services.validation import RowsRejected
from geo.camera import DEFAULT_HFOV_DEG

# Column names seen in camera registers (matched case-insensitively, first wins),
# including shapefile names cut to 10 characters and pinyin initials of GIS tables.
CAMERA_COLUMNS: dict[str, tuple[str, ...]] = {
    "gb_id": (
        "gb_id",
        "gbid",
        "gb28181",
        "gb_code",
        "deviceid",
        "device_id",
        "devicecode",
        "device_code",
        "国标编码",
        "国标编号",
        "国标id",
        "国标",
        "设备编码",
        "设备编号",
        "设备国标编码",
        "摄像机编码",
        "gbbm",
        "sbbm",
    ),
    "name": (
        "name",
        "camera_name",
        "device_name",
        "devicename",
        "名称",
        "设备名称",
        "摄像机名称",
        "点位名称",
        "监控点名称",
        "sbmc",
        "dwmc",
    ),
    "kind": (
        "kind",
        "camera_kind",
        "camera_type",
        "type",
        "ptztype",
        "ptz_type",
        "类型",
        "摄像机类型",
        "设备类型",
        "相机类型",
        "sxjlx",
        "sblx",
    ),
    "height_m": ("height_m", "height", "mount_height", "安装高度", "高度", "架设高度", "azgd"),
    "azimuth_deg": (
        "azimuth_deg",
        "azimuth_de",
        "azimuth",
        "direction",
        "heading",
        "bearing",
        "方位角",
        "朝向",
        "拍摄方向",
        "监视方向",
        "方向",
        "fwj",
    ),
    "hfov_deg": (
        "hfov_deg",
        "hfov",
        "fov",
        "h_fov",
        "field_of_view",
        "水平视场角",
        "视场角",
        "水平视角",
        "视角",
        "spscj",
    ),
    "resolution_h_px": (
        "resolution_h_px",
        "resolution",
        "resolution_h",
        "res",
        "分辨率",
        "水平分辨率",
        "像素",
        "fbl",
    ),
    "range_m": ("range_m", "range", "max_range", "视距", "监控距离", "可视距离", "最大距离"),
    "status": ("status", "state", "状态", "设备状态", "在线状态", "zt"),
    "owner": ("owner", "ownership", "建设主体", "归属", "权属", "所属类型"),
    "installed_at": (
        "installed_at",
        "installed_",
        "installed",
        "install_date",
        "installation_date",
        "安装日期",
        "安装时间",
        "建设时间",
        "启用时间",
    ),
    "county_code": (
        "county_code",
        "county_cod",
        "county",
        "civilcode",
        "civil_code",
        "行政区划代码",
        "行政区划",
        "区划代码",
        "县区代码",
        "所属区县代码",
    ),
}
KIND_SYNONYMS = {
    name: kind
    for names, kind in (
        (
            ("bullet", "box", "fixed", "枪机", "枪式", "枪型", "筒机", "固定枪机", "遥控枪机"),
            "bullet",
        ),
        (("dome", "fixed dome", "半球", "半球机", "半球型", "半球摄像机"), "dome"),
        (
            ("ptz", "speed dome", "speeddome", "球机", "球型", "快球", "高速球", "智能球", "云台"),
            "ptz",
        ),
        # GB/T 28181 Info/PTZType codes, as catalogues exported to CSV carry them
        (("1",), "ptz"),
        (("2",), "dome"),
        (("3", "4"), "bullet"),
    )
    for name in names
}
STATUS_SYNONYMS = {
    name: status
    for names, status in (
        (("online", "on", "ok", "在线", "正常"), "online"),
        (("offline", "off", "离线", "停用"), "offline"),
        (("fault", "faulty", "error", "故障", "损坏", "异常"), "fault"),
    )
    for name in names
}
OWNER_SYNONYMS = {
    name: owner
    for names, owner in (
        (("public", "公共", "公安", "政府", "党政机关", "公安自建"), "public"),
        (("industry", "行业", "行业部门"), "industry"),
        (("enterprise", "企业", "企事业", "企事业单位", "单位"), "enterprise"),
        (("residential", "居民", "民用", "个人", "住宅", "小区"), "residential"),
    )
    for name in names
}

DEFAULT_KIND = "bullet"
DEFAULT_HEIGHT_M = {"bullet": 4.0, "dome": 3.0, "ptz": 6.0}
DEFAULT_AZIMUTH_DEG = 0.0
DEFAULT_RESOLUTION_H_PX = 1920
LOCAL_ZONE = ZoneInfo("Asia/Shanghai")
_GB_ID = re.compile(r"[0-9]{20}")
_COUNTY = re.compile(r"[0-9]{6}")
_UNITS = re.compile(r"\s*(m|米|°|度|deg|degrees?)$", re.I)


@dataclass
class CameraImportReport(ImportReport):
    """`ImportReport` plus the directory entries skipped (by type) and the defaults
    applied to the written cameras (by field)."""

    skipped: dict[str, int] = field(default_factory=dict)
    defaulted: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"skipped": self.skipped, "defaulted": self.defaulted}

    def summary(self) -> str:
        line = super().summary()
        if self.skipped:
            kinds = ", ".join(f"{what}: {n}" for what, n in sorted(self.skipped.items()))
            line += f"; {sum(self.skipped.values())} directory entries skipped ({kinds})"
        if self.defaulted:
            fields = ", ".join(f"{name} {n}" for name, n in self.defaulted.items())
            line += f"; defaults used: {fields}"
        return line


def import_cameras(
    conn: Connection,
    frame: gpd.GeoDataFrame,
    *,
    skip_invalid: bool = False,
    repair: bool = False,
    read_errors: Iterable[dict[str, Any]] = (),
    progress: Progress | None = None,
) -> CameraImportReport:
    """Check every camera of a file, then write all (or, with `skip_invalid`, the good)
    and refresh their coverage. `frame` is in WGS84 with the file's row numbers as index
    (`api.services.files.read_vector_file`). Raises `ImportRejected` listing every error
    when any row is bad and `skip_invalid` is false. Runs in the caller's transaction,
    which should hold the camera write lock (`begin_camera_write`). `repair` is accepted
    for the importers' common signature; points need none."""
    del repair
    frame, skipped = _without_directory_entries(frame)
    errors = _Errors(frame)
    errors.add_read_errors(read_errors)
    chosen, leftover = map_columns(frame, CAMERA_COLUMNS)
    missing = _missing_column_errors(chosen, ("gb_id",), CAMERA_COLUMNS, frame)
    if missing:
        raise ImportRejected("cameras", missing, errors.row_kind, len(frame))
    _progress(progress, "validating", 0.0)
    cameras, defaulted = _camera_frame(frame, chosen, errors)
    errors.add_stage(check_against_stored(conn, cameras))
    _progress(progress, "validating", 0.3)
    report = CameraImportReport(
        "cameras", errors.row_kind, len(frame), ignored_columns=leftover, skipped=skipped
    )
    try:
        if not errors.items:
            # Every value parsed and nothing clashes with the database: the write path's
            # own validation (the costly one) then runs once, raising before any write.
            return _write(conn, cameras, defaulted, report, progress)
        validate_cameras(cameras)
    except RowsRejected as exc:
        # a missing id leaves the county missing too: one error says so
        gb_ids = cameras["gb_id"].to_numpy()
        errors.add_stage(
            e for e in exc.errors if not (e["field"] == "county_code" and gb_ids[e["row"]] is None)
        )
    _progress(progress, "validating", 1.0)
    problem_errors = errors.as_problem_errors(cameras["gb_id"].to_numpy())
    report.rejected = _report_rows(problem_errors)
    if not skip_invalid:
        raise ImportRejected("cameras", problem_errors, errors.row_kind, len(frame))
    good = np.setdiff1d(np.arange(len(cameras)), sorted(errors.bad_positions()))
    defaulted = {name: mask[good] for name, mask in defaulted.items()}
    return _write(conn, cameras.iloc[good], defaulted, report, progress)


def _write(
    conn: Connection,
    cameras: gpd.GeoDataFrame,
    defaulted: dict[str, np.ndarray],
    report: CameraImportReport,
    progress: Progress | None,
) -> CameraImportReport:
    """Write the cameras (`write_cameras` validates them first: `RowsRejected` before any
    write), bring their FOVs and coverage up to date, and complete the report."""
    if len(cameras):
        ids = write_cameras(conn, cameras, progress=_write_progress(progress, len(cameras)))
        _progress(progress, "coverage", 0.0)
        refresh_cameras(conn, ids)
        _progress(progress, "coverage", 1.0)
        report.written = len(ids)
    report.defaulted = {name: int(mask.sum()) for name, mask in defaulted.items() if mask.any()}
    _progress(progress, "writing", 1.0)
    return report


def _without_directory_entries(
    frame: gpd.GeoDataFrame,
) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
    """The camera rows of a GB/T 28181 catalogue, and how many entries of each other type
    it lists; other frames unchanged."""
    if ITEM_TYPE_COLUMN not in frame.columns:
        return frame, {}
    types = frame[ITEM_TYPE_COLUMN]
    directory = (types != CAMERA_ITEM).to_numpy()
    skipped = {str(k): int(n) for k, n in types[directory].value_counts().items()}
    return frame.loc[~directory].drop(columns=ITEM_TYPE_COLUMN), skipped


def _camera_frame(
    frame: gpd.GeoDataFrame, chosen: dict[str, str], errors: _Errors
) -> tuple[gpd.GeoDataFrame, dict[str, np.ndarray]]:
    """Our columns from the file's, coerced, with defaults; and where each default was used."""
    defaulted: dict[str, np.ndarray] = {}

    def column(ours: str) -> np.ndarray:
        return text_column(frame, chosen.get(ours))

    def fill(ours: str, values: np.ndarray, default: Callable[[int], Any]) -> np.ndarray:
        missing = np.array([v is None for v in values], dtype=bool)
        values = values.copy()
        for position in np.flatnonzero(missing):
            values[position] = default(position)
        defaulted[ours] = missing
        return values

    gb_ids = column("gb_id")
    kinds = _choices(column("kind"), KIND_SYNONYMS)
    kinds = fill("kind", kinds, lambda _: DEFAULT_KIND)
    counties = np.array(
        [
            _county(c) if c is not None else (g[:6] if g is not None else None)
            for c, g in zip(column("county_code"), gb_ids, strict=True)
        ],
        dtype=object,
    )

    def numbers(ours: str, parse: Callable[[str], float | None]) -> np.ndarray:
        return _parsed(column(ours), ours, parse, errors)

    def by_kind(table: dict[str, float]) -> Callable[[int], float]:
        return lambda position: table.get(kinds[position], table[DEFAULT_KIND])

    cameras = gpd.GeoDataFrame(
        {
            "gb_id": gb_ids,
            "name": fill("name", column("name"), lambda position: gb_ids[position]),
            "kind": kinds,
            "height_m": fill("height_m", numbers("height_m", _number), by_kind(DEFAULT_HEIGHT_M)),
            "azimuth_deg": fill(
                "azimuth_deg", numbers("azimuth_deg", _azimuth), lambda _: DEFAULT_AZIMUTH_DEG
            ),
            "hfov_deg": fill("hfov_deg", numbers("hfov_deg", _number), by_kind(DEFAULT_HFOV_DEG)),
            "resolution_h_px": fill(
                "resolution_h_px",
                numbers("resolution_h_px", resolution_px),
                lambda _: DEFAULT_RESOLUTION_H_PX,
            ),
            "range_m": numbers("range_m", _number),
            "status": fill(
                "status", _choices(column("status"), STATUS_SYNONYMS), lambda _: STATUSES[0]
            ),
            "owner": fill("owner", _choices(column("owner"), OWNER_SYNONYMS), lambda _: OWNERS[0]),
            "installed_at": _parsed(
                _cells(frame, chosen.get("installed_at")), "installed_at", _date, errors
            ),
            "county_code": counties,
        },
        geometry=frame.geometry.to_numpy(),
        crs=4326,
    )
    for name in ("height_m", "azimuth_deg", "hfov_deg", "range_m"):
        cameras[name] = cameras[name].astype(float)
    cameras["resolution_h_px"] = cameras["resolution_h_px"].astype("int64")
    defaulted["county_code"] = np.array(
        [c is None and g is not None for c, g in zip(column("county_code"), gb_ids, strict=True)]
    )
    return cameras, defaulted


def _choices(values: np.ndarray, synonyms: dict[str, str]) -> np.ndarray:
    """Values mapped through `synonyms` (case-insensitive); unknown ones stay as they are
    (validation names them)."""
    return np.array(
        [None if v is None else synonyms.get(v.lower(), v) for v in values], dtype=object
    )


def _county(value: str) -> str:
    """A county code from a longer division code (township, village: its first 6 digits)."""
    return value[:6] if value.isdigit() and len(value) > 6 else value


def _parsed(
    values: np.ndarray, ours: str, parse: Callable[[str], Any], errors: _Errors
) -> np.ndarray:
    """`parse` of each present value; what it refuses (ValueError) is a row error. A refused
    value becomes None like a missing one: the row is rejected, so no default is written."""
    out = np.full(len(values), None, dtype=object)
    for position, raw in enumerate(values):
        if raw is None:
            continue
        try:
            out[position] = parse(raw)
        except ValueError as exc:
            errors.add(position, ours, str(exc))
    return out


def _cells(frame: pd.DataFrame, column: str | None) -> np.ndarray:
    """The column's values as read (dates stay dates), None for missing ones (NaN, NaT)."""
    if column is None:
        return np.full(len(frame), None, dtype=object)
    values = frame[column].to_numpy(dtype=object)
    return np.array(
        [None if pd.isna(v) or (isinstance(v, str) and not v.strip()) else v for v in values],
        dtype=object,
    )


def _number(raw: str) -> float:
    try:
        value = float(_UNITS.sub("", raw))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"must be a number, not {raw!r}")
    return value


def _azimuth(raw: str) -> float:
    """Degrees clockwise from north, or a compass word (东南, SE)."""
    compass = compass_azimuth(raw)
    if compass is not None:
        return compass
    try:
        return _number(raw)
    except ValueError:
        raise ValueError(
            f"must be degrees clockwise from north or a direction (东, 东南, NE), not {raw!r}"
        ) from None


def _date(raw: Any) -> datetime:
    """A timestamp from a date or text; without a zone, Beijing time."""
    try:
        stamp = pd.Timestamp(raw.strip() if isinstance(raw, str) else raw)
    except (ValueError, TypeError, OverflowError):
        stamp = pd.NaT
    if stamp is pd.NaT:
        raise ValueError(f"must be a date such as 2023-05-01, not {str(raw)!r}")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(LOCAL_ZONE)
    return stamp.to_pydatetime()


def check_against_stored(conn: Connection, cameras: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """Errors against the database (rows are 0-based positions): a gb_id registered
    already (naming the camera), a county that is not stored. Only well-formed ids and
    county codes are looked up: validation says what is wrong with the others."""
    gb_ids = cameras["gb_id"].to_numpy()
    counties = cameras["county_code"].to_numpy()
    ids_ok = [p for p, g in enumerate(gb_ids) if isinstance(g, str) and _GB_ID.fullmatch(g)]
    counties_ok = [p for p in ids_ok if _COUNTY.fullmatch(str(counties[p]))]
    registered = dict(
        conn.execute(
            text("SELECT gb_id, id FROM camera WHERE gb_id = ANY(:gb_ids)"),
            {"gb_ids": sorted({gb_ids[p] for p in ids_ok})},
        ).all()
    )
    stored = set(
        conn.execute(
            text("SELECT code FROM admin_area WHERE level = 'county' AND code = ANY(:codes)"),
            {"codes": sorted({counties[p] for p in counties_ok})},
        ).scalars()
    )
    out = [
        {
            "row": p,
            "field": "gb_id",
            "reason": f"already registered as camera {registered[gb_ids[p]]}",
        }
        for p in ids_ok
        if gb_ids[p] in registered
    ]
    out += [
        {
            "row": p,
            "field": "county_code",
            "reason": f"county {counties[p]} is not stored; import the counties first",
        }
        for p in counties_ok
        if counties[p] not in stored
    ]
    return out
