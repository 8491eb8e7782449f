"""Target layers, what coverage is for: roads (lines, by class) and key places."""

from __future__ import annotations

from collections.abc import Callable

import geopandas as gpd
from sqlalchemy import Connection

from api.services.bulk import copy_frame, select_columns
from api.services.validation import RowErrors, as_multi

ROAD_CLASSES = ("national", "provincial", "county", "village", "street")
PLACE_KINDS = (
    "school",
    "hospital",
    "clinic",
    "market",
    "bus_station",
    "square",
    "village_committee",
    "other",
)


def write_roads(
    conn: Connection, roads: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> int:
    """Insert roads (WGS84 lines) after validating them; all or nothing."""
    errors = RowErrors("roads")
    errors.require_columns(roads, ["road_class", "geometry"])
    errors.check_choice(roads, "road_class", ROAD_CLASSES)
    errors.check_text(roads)
    errors.check_geometry(roads, "geometry", ("LineString", "MultiLineString"))
    errors.raise_if_any()
    frame = select_columns(roads, ["road_class", "name"])
    frame["geom"] = as_multi(roads.geometry.to_numpy())
    return copy_frame(conn, "road", frame, {"geom": 4326}, progress)


def write_key_places(
    conn: Connection, places: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> int:
    """Insert key places (WGS84 points or polygons) after validating them; all or nothing."""
    errors = RowErrors("key places")
    errors.require_columns(places, ["kind", "geometry"])
    errors.check_choice(places, "kind", PLACE_KINDS)
    errors.check_text(places)
    errors.check_geometry(places, "geometry", ("Point", "Polygon", "MultiPolygon"))
    errors.raise_if_any()
    frame = select_columns(places, ["kind", "name"])
    frame["geom"] = places.geometry.to_numpy()
    return copy_frame(conn, "key_place", frame, {"geom": 4326}, progress)
