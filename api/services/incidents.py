"""Incidents: SQL for the category catalogue, bulk intake and grid assignment."""

from __future__ import annotations

from collections.abc import Callable

import geopandas as gpd
from sqlalchemy import Connection, text

from api.services.bulk import copy_frame, select_columns
from api.services.validation import RowErrors
from geo.catalogue import INCIDENT_CATEGORIES

CHANNELS = ("hotline", "grid_app", "wechat", "walk_in", "open311", "import")
COLUMNS = [
    "category",
    "description",
    "channel",
    "address",
    "reported_at",
    "raw_lon",
    "raw_lat",
    "raw_coord_sys",
    "accuracy_m",
]


def ensure_default_categories(conn: Connection) -> None:
    """Insert the shipped catalogue; categories already present are left as configured."""
    conn.execute(
        text(
            "INSERT INTO incident_category (code, name, department, time_limit_hours) "
            "VALUES (:code, :name, :department, :time_limit_hours) ON CONFLICT (code) DO NOTHING"
        ),
        [category.__dict__ for category in INCIDENT_CATEGORIES],
    )


def write_incidents(
    conn: Connection, incidents: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> int:
    """Store reported incidents (WGS84 points) and assign each to the grid valid at its time.

    Incidents whose point lies in no grid stay unassigned (grid_id NULL), never dropped.
    """
    known = set(conn.execute(text("SELECT code FROM incident_category")).scalars())
    errors = RowErrors("incidents")
    errors.require_columns(incidents, ["category", "reported_at", "geometry"])
    errors.require_values(incidents, ["category", "reported_at"])
    errors.check_choice(incidents, "category", tuple(sorted(known)))
    if "channel" in incidents.columns:
        errors.check_choice(incidents, "channel", CHANNELS)
    errors.check_text(incidents)
    errors.check_geometry(incidents, "geometry", ("Point",))
    errors.raise_if_any()

    first_id = conn.execute(text("SELECT coalesce(max(id), 0) + 1 FROM incident")).scalar_one()
    frame = select_columns(incidents, COLUMNS, {"channel": "import", "description": ""})
    frame["location"] = incidents.geometry.to_numpy()
    written = copy_frame(conn, "incident", frame, {"location": 4326}, progress)
    assign_incidents(conn, first_id)
    return written


def assign_incidents(conn: Connection, from_id: int = 1) -> None:
    """Set grid, grid code and department of incidents from `from_id` on.

    A point on a shared edge is covered by both grids; the smaller code wins, so the answer
    is deterministic.
    """
    conn.execute(
        text(
            """
            UPDATE incident i
            SET grid_id = m.grid_id, grid_code = m.grid_code,
                assignment = jsonb_build_object('method', 'point')
            FROM (
                SELECT i2.id, g.id AS grid_id, g.code AS grid_code
                FROM incident i2
                CROSS JOIN LATERAL (
                    SELECT id, code FROM grid g
                    WHERE ST_Covers(g.geom, i2.location)
                      AND g.valid_from <= i2.reported_at
                      AND (g.valid_to IS NULL OR g.valid_to > i2.reported_at)
                    ORDER BY g.code LIMIT 1
                ) g
                WHERE i2.id >= :from_id
            ) m
            WHERE i.id = m.id
            """
        ),
        {"from_id": from_id},
    )
    conn.execute(
        text(
            "UPDATE incident i SET department = c.department FROM incident_category c "
            "WHERE i.category = c.code AND i.id >= :from_id"
        ),
        {"from_id": from_id},
    )
