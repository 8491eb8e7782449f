"""Load the demo world into the database through each entity's own write path."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import geopandas as gpd
import pandas as pd
from sqlalchemy import Connection, Engine, text

from api.errors import GridcoverError
from api.services.addresses import write_addresses
from api.services.admin_areas import count_admin_areas, write_admin_areas
from api.services.cameras import write_cameras
from api.services.coverage import recompute_everything
from api.services.grids import write_grids
from api.services.incidents import ensure_default_categories, write_incidents
from api.services.targets import write_key_places, write_roads
from geo.demo import build_world
from geo.reference import load_prefecture

SCALES = ("small", "full")
# Demo grids exist from before the demo year of incidents, so history assigns to them.
DEMO_GRIDS_VALID_FROM = datetime(2024, 1, 1, tzinfo=UTC)
DEMO_TABLES = (
    "incident_event",
    "incident",
    "coverage",
    "camera_fov",
    "camera",
    "grid",
    "address",
    "road",
    "key_place",
    "admin_area",
)


def clear_demo_tables(conn: Connection) -> None:
    """Empty every table the demo fills (keys, categories and the audit log stay)."""
    conn.execute(text(f"TRUNCATE {', '.join(DEMO_TABLES)} RESTART IDENTITY CASCADE"))


def load_demo(
    engine: Engine,
    scale: str = "small",
    seed: int = 0,
    replace: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, int]:
    """Build the demo world for `scale`/`seed` and store it in one transaction.

    Refuses (GridcoverError) when the database already holds admin areas, unless `replace`.
    `progress(stage, fraction)` reports building and writing, fraction in [0, 1].
    Returns the number of rows written per entity.
    """
    if scale not in SCALES:
        raise GridcoverError(f"unknown scale {scale!r}: use small (one county) or full")
    if seed < 0:
        raise GridcoverError(f"the seed must be 0 or more, not {seed}")
    report = progress or (lambda stage, fraction: None)
    with engine.connect() as conn:
        existing = count_admin_areas(conn)
    if existing and not replace:
        raise GridcoverError(
            f"the database already holds {existing} admin areas: load the demo into an empty "
            "database, or pass --replace to delete the current data first"
        )

    world = build_world(scale, seed, progress=lambda stage, f: report(stage, 0.6 * f))
    prefecture = gpd.GeoDataFrame(
        {
            "code": ["433100"],
            "name": ["湘西土家族苗族自治州"],
            "level": ["prefecture"],
            "parent_code": [None],
        },
        geometry=[load_prefecture()],
        crs=4326,
    )
    areas = pd.concat(
        [prefecture, world.counties, world.townships, world.villages], ignore_index=True
    )
    # Two processes pay for their start-up only on the full world.
    workers = 2 if scale == "full" else 1
    steps: list[tuple[str, Callable[[Connection], int]]] = [
        ("admin areas", lambda c: write_admin_areas(c, areas)),
        (
            "grids",
            lambda c: write_grids(
                c, world.grids, valid_from=DEMO_GRIDS_VALID_FROM, refresh_coverage=False
            ),
        ),
        ("roads", lambda c: write_roads(c, world.roads)),
        ("key places", lambda c: write_key_places(c, world.key_places)),
        ("cameras", lambda c: len(write_cameras(c, world.cameras))),
        ("incidents", lambda c: write_incidents(c, world.incidents)),
        ("addresses", lambda c: write_addresses(c, world.addresses)),
        ("coverage", lambda c: recompute_everything(c, workers=workers)["coverage_rows"]),
    ]
    written: dict[str, int] = {}
    with engine.begin() as conn:
        if existing:
            clear_demo_tables(conn)
        ensure_default_categories(conn)
        for done, (name, step) in enumerate(steps):
            report(f"writing {name}", 0.6 + 0.4 * done / len(steps))
            written[name] = step(conn)
        report("analysing", 0.99)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    report("done", 1.0)
    return written
