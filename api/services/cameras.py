"""Cameras: SQL for writing and reading the camera registry."""

from __future__ import annotations

from collections.abc import Callable

import geopandas as gpd
import numpy as np
import shapely
from sqlalchemy import Connection

from api.services.bulk import copy_frame, select_columns
from api.services.validation import RowErrors
from geo.codes import validate_camera_gb_id
from geo.reference import load_prefecture

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
    errors.raise_if_any()


def write_cameras(
    conn: Connection, cameras: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> int:
    """Insert cameras (WGS84 points) after validating them; all or nothing."""
    validate_cameras(cameras)
    frame = select_columns(cameras, COLUMNS, {"status": STATUSES[0], "owner": OWNERS[0]})
    frame["geom"] = cameras.geometry.to_numpy()
    return copy_frame(conn, "camera", frame, {"geom": 4326}, progress)
