"""The address gazetteer: entries an address text resolves to, with their precision."""

from __future__ import annotations

from collections.abc import Callable

import geopandas as gpd
from sqlalchemy import Connection

from api.services.bulk import copy_frame, select_columns
from api.services.validation import RowErrors

PRECISIONS = ("house_number", "road", "village", "township", "county")


def write_addresses(
    conn: Connection, addresses: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> int:
    """Insert gazetteer entries (WGS84 points) after validating them; all or nothing."""
    errors = RowErrors("addresses")
    errors.require_columns(addresses, ["full_text", "precision", "geometry"])
    errors.require_values(addresses, ["full_text"])
    errors.check_choice(addresses, "precision", PRECISIONS)
    errors.check_geometry(addresses, "geometry", ("Point",))
    errors.raise_if_any()
    frame = select_columns(addresses, ["full_text", "components", "village_code", "precision"])
    frame["components"] = frame["components"].map(lambda c: c if isinstance(c, dict) else {})
    frame["geom"] = addresses.geometry.to_numpy()
    return copy_frame(conn, "address", frame, {"geom": 4326}, progress)
