"""Admin areas (prefecture, county, township, village): SQL for writing and reading them."""

from __future__ import annotations

from collections.abc import Callable

import geopandas as gpd
from sqlalchemy import Connection, text

from api.services.bulk import copy_frame, select_columns
from api.services.validation import RowErrors, as_multi

LEVELS = ("prefecture", "county", "township", "village")
CODE_DIGITS = {"prefecture": 6, "county": 6, "township": 9, "village": 12}


def validate_admin_areas(areas: gpd.GeoDataFrame) -> None:
    """Raise `RowsRejected` listing every bad row: codes, levels, parents, geometry."""
    errors = RowErrors("admin areas")
    errors.require_columns(areas, ["code", "level", "name", "parent_code", "geometry"])
    errors.require_values(areas, ["code", "level", "name"])
    errors.check_choice(areas, "level", LEVELS)
    codes = areas["code"].astype("string")
    for level, digits in CODE_DIGITS.items():
        wrong = (areas["level"] == level) & ~codes.str.fullmatch(rf"[0-9]{{{digits}}}").fillna(
            False
        )
        errors.add(wrong.to_numpy(bool), "code", f"a {level} code has {digits} digits", areas)
    errors.check_text(areas)
    errors.check_unique(areas, "code")
    errors.check_geometry(areas, "geometry", ("Polygon", "MultiPolygon"))
    errors.raise_if_any()


def write_admin_areas(
    conn: Connection, areas: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> int:
    """Insert admin areas (WGS84), parents before children; validated first, all or nothing."""
    validate_admin_areas(areas)
    order = areas["level"].map({level: i for i, level in enumerate(LEVELS)}).argsort(kind="stable")
    frame = select_columns(areas.iloc[order.to_numpy()], ["code", "level", "name", "parent_code"])
    frame["geom"] = as_multi(areas.geometry.to_numpy()[order.to_numpy()])
    return copy_frame(conn, "admin_area", frame, {"geom": 4326}, progress)


def count_admin_areas(conn: Connection) -> int:
    return conn.execute(text("SELECT count(*) FROM admin_area")).scalar_one()
