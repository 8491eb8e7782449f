"""`gridcover demo load` on real PostGIS: counts, codes and exact tilings, checked in SQL."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from api.db import create_scratch_database, drop_scratch_database
from api.errors import GridcoverError
from api.migrate import upgrade
from api.services.demo import load_demo
from geo.reference import load_divisions

GRIDCOVER = str(Path(sys.executable).with_name("gridcover"))

# For every parent: children area summed minus their union (overlap), parent minus union
# (gap) and union minus parent (spill), all in m² in EPSG:4546.
TILING_SQL = """
WITH children AS (
    SELECT {parent_column} AS parent, sum(ST_Area(geom_m)) AS summed, ST_Union(geom_m) AS merged
    FROM {table} WHERE {where} GROUP BY {parent_column}
)
SELECT p.code,
       c.summed - ST_Area(c.merged) AS overlap_m2,
       ST_Area(ST_Difference(p.geom_m, c.merged)) AS gap_m2,
       ST_Area(ST_Difference(c.merged, p.geom_m)) AS spill_m2
FROM admin_area p JOIN children c ON c.parent = p.code
"""
GRID_FINGERPRINT = "SELECT md5(string_agg(code || ST_AsText(geom), ',' ORDER BY code)) FROM grid"
TILINGS = {
    "townships": dict(table="admin_area", where="level = 'township'", parent_column="parent_code"),
    "villages": dict(table="admin_area", where="level = 'village'", parent_column="parent_code"),
    "grids": dict(table="grid", where="valid_to IS NULL", parent_column="village_code"),
}


def _loaded(server_url, scale):
    url = create_scratch_database(server_url, prefix=f"gridcover_demo_{scale}")
    upgrade(url)
    engine = create_engine(url)
    load_demo(engine, scale, seed=7)
    return url, engine


@pytest.fixture(scope="module", params=["small", "full"])
def demo_world(request, server_url):
    """`(scale, engine)`: the demo world at each scale, in a database of its own."""
    url, engine = _loaded(server_url, request.param)
    yield request.param, engine
    engine.dispose()
    drop_scratch_database(server_url, url)


def scalar(engine, sql):
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_loaded_counties_hold_their_official_townships_and_villages(demo_world):
    _, demo_engine = demo_world
    _, townships, villages = load_divisions()
    with demo_engine.connect() as conn:
        counties = tuple(
            conn.execute(text("SELECT code FROM admin_area WHERE level = 'county'")).scalars()
        )
        stored = dict(
            conn.execute(
                text("SELECT code, name FROM admin_area WHERE level IN ('township', 'village')")
            ).all()
        )
    official = pd.concat([townships, villages])
    official = official[official["code"].astype(str).str.startswith(counties)]
    assert stored == dict(zip(official["code"].astype(str), official["name"], strict=True))


@pytest.mark.parametrize("children", list(TILINGS))
def test_children_tile_their_parent_without_gaps_or_overlaps(demo_world, children):
    _, demo_engine = demo_world
    with demo_engine.connect() as conn:
        rows = conn.execute(text(TILING_SQL.format(**TILINGS[children]))).all()
    assert rows, f"no {children}"
    worst = {
        name: max(rows, key=lambda r: getattr(r, name))
        for name in ("overlap_m2", "gap_m2", "spill_m2")
    }
    for name, row in worst.items():
        assert getattr(row, name) < 1.0, f"{children} of {row.code}: {name} = {getattr(row, name)}"


def test_every_village_has_grids_and_codes_carry_the_village_code(demo_world):
    _, demo_engine = demo_world
    assert (
        scalar(
            demo_engine,
            """
        SELECT count(*) FROM admin_area v WHERE level = 'village'
        AND NOT EXISTS (SELECT 1 FROM grid g WHERE g.village_code = v.code)""",
        )
        == 0
    )
    assert (
        scalar(demo_engine, "SELECT count(*) FROM grid WHERE left(code, 12) <> village_code") == 0
    )
    assert (
        scalar(demo_engine, "SELECT count(*) FROM grid WHERE households NOT BETWEEN 300 AND 500")
        == 0
    )


def test_cameras_incidents_and_addresses_are_in_place(demo_world):
    _, demo_engine = demo_world
    assert scalar(demo_engine, "SELECT count(*) FROM camera") > 1000
    assert (
        scalar(
            demo_engine,
            """
        SELECT count(*) FROM camera c JOIN admin_area a ON a.code = c.county_code
        WHERE NOT ST_Covers(a.geom, c.geom)""",
        )
        == 0
    )
    offline = scalar(demo_engine, "SELECT avg((status <> 'online')::int) FROM camera")
    assert 0.01 < offline < 0.06
    assert scalar(demo_engine, "SELECT count(*) FROM incident") > 1000
    assert scalar(demo_engine, "SELECT count(*) FROM incident WHERE grid_id IS NULL") == 0
    assert (
        scalar(
            demo_engine,
            """
        SELECT count(*) FROM address a JOIN admin_area v ON v.code = a.village_code
        WHERE NOT ST_Covers(v.geom, a.geom)""",
        )
        == 0
    )
    assert scalar(demo_engine, "SELECT count(*) FROM road") > 10
    assert scalar(demo_engine, "SELECT count(*) FROM key_place") > 10


def test_counts_match_the_scale(demo_world):
    scale, demo_engine = demo_world
    with demo_engine.connect() as conn:
        counts = dict(
            conn.execute(text("SELECT level, count(*) FROM admin_area GROUP BY level")).all()
        )
    if scale == "small":
        assert (counts["prefecture"], counts["county"]) == (1, 1)
        return
    assert counts == {"prefecture": 1, "county": 8, "township": 116, "village": 1797}
    assert 9_000 <= scalar(demo_engine, "SELECT count(*) FROM grid") <= 11_000
    assert 45_000 <= scalar(demo_engine, "SELECT count(*) FROM camera") <= 55_000
    disputes = "SELECT count(*) FROM incident WHERE category = 'dispute'"
    assert scalar(demo_engine, disputes) == 11_703


def test_loading_twice_refuses_and_replace_reloads_the_same_world(server_url):
    url, demo_engine = _loaded(server_url, "small")
    before = scalar(demo_engine, GRID_FINGERPRINT)
    with pytest.raises(GridcoverError, match="already holds"):
        load_demo(demo_engine, "small", seed=7)
    load_demo(demo_engine, "small", seed=7, replace=True)
    after = scalar(demo_engine, GRID_FINGERPRINT)
    assert before == after
    demo_engine.dispose()
    drop_scratch_database(server_url, url)


def test_cli_rejects_a_bad_scale_or_seed(cli_env):
    for args, message in (
        (["--scale", "huge"], "unknown scale 'huge'"),
        (["--seed", "-1"], "seed must be 0 or more"),
    ):
        result = subprocess.run(
            [GRIDCOVER, "demo", "load", *args],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert message in result.stderr
