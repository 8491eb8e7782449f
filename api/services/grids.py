"""Grids (网格): SQL for writing and reading the versioned grid table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Connection

from api.services.bulk import copy_frame, select_columns
from api.services.validation import RowErrors, as_multi

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
    errors.check_pattern(grids, "code", r"\d{15}", "a grid code has 15 digits")
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
    errors.check_unique(grids, "code")
    errors.check_geometry(grids, "geometry", ("Polygon", "MultiPolygon"))
    errors.raise_if_any()


def write_grids(
    conn: Connection,
    grids: gpd.GeoDataFrame,
    valid_from: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Insert new grids (first versions, WGS84) after validating them; all or nothing."""
    validate_grids(grids)
    frame = select_columns(grids, COLUMNS, {"kind": GRID_KINDS[0]})
    for name in ("households", "population"):
        frame[name] = frame[name].map(lambda v: None if pd.isna(v) else int(v))
    if valid_from is not None:
        frame["valid_from"] = np.full(len(frame), valid_from, dtype=object)
    frame["geom"] = as_multi(grids.geometry.to_numpy())
    return copy_frame(conn, "grid", frame, {"geom": 4326}, progress)
