"""The write path every importer and the demo loader share: validate all rows, then COPY.

Each test writes inside a transaction it rolls back, so the shared test database stays
as it was.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import geopandas as gpd
import pandas as pd
import pytest
from shapely import Point, Polygon, box
from sqlalchemy import Connection, text

from api.services.admin_areas import write_admin_areas
from api.services.cameras import write_cameras
from api.services.grids import write_grids
from api.services.incidents import ensure_default_categories, write_incidents
from api.services.validation import RowsRejected
from geo.codes import make_gb28181

JISHOU = box(109.70, 28.26, 109.72, 28.28)  # inside 吉首市, ~2 km x 2.2 km
BOWTIE = Polygon([(109.70, 28.26), (109.71, 28.27), (109.71, 28.26), (109.70, 28.27)])


@pytest.fixture
def conn(engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


def areas(rows):
    return gpd.GeoDataFrame(
        rows,
        columns=["code", "level", "name", "parent_code", "geometry"],
        geometry="geometry",
        crs=4326,
    )


def jishou_village(conn):
    write_admin_areas(
        conn,
        areas(
            [
                ("433101", "county", "吉首市", None, JISHOU),
                ("433101002", "township", "峒河街道", "433101", JISHOU),
                ("433101002001", "village", "峒河社区", "433101002", JISHOU),
            ]
        ),
    )


def count(conn, table):
    return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_admin_areas_are_written_parents_first_with_metric_area(conn):
    jishou_village(conn)
    rows = conn.execute(text("SELECT code, level, area_m2 FROM admin_area ORDER BY code")).all()
    assert [r.level for r in rows] == ["county", "township", "village"]
    assert rows[0].area_m2 == pytest.approx(1956.0 * 2218.0, rel=0.01)


def test_every_bad_admin_area_row_is_reported_and_nothing_written(conn):
    bad = areas(
        [
            ("43310", "county", "短码", None, JISHOU),
            ("433101002", "township", "自相交", "433101", BOWTIE),
            ("433101002", "township", "重复", "433101", JISHOU),
            ("433101002001", "hamlet", "层级错", "433101002", JISHOU),
            ("433101002002", "village", "点", "433101002", Point(109.7, 28.27)),
        ]
    )
    with pytest.raises(RowsRejected) as caught:
        write_admin_areas(conn, bad)
    reported = {(e["row"], e["field"]) for e in caught.value.errors}
    assert reported >= {(0, "code"), (1, "geometry"), (2, "code"), (3, "level"), (4, "geometry")}
    assert any("Self-intersection" in e["reason"] for e in caught.value.errors)
    assert "nothing was written" in str(caught.value)
    assert count(conn, "admin_area") == 0


def test_grid_codes_must_carry_their_village_code(conn):
    jishou_village(conn)
    grids = gpd.GeoDataFrame(
        {
            "code": ["433101002001001", "433101002009001", "43310100200100"],
            "name": ["第1网格", "第2网格", "第3网格"],
            "village_code": ["433101002001"] * 3,
            "households": [400, -1, 350],
        },
        geometry=[JISHOU] * 3,
        crs=4326,
    )
    with pytest.raises(RowsRejected) as caught:
        write_grids(conn, grids)
    reasons = {(e["row"], e["field"], e["reason"]) for e in caught.value.errors}
    assert (1, "code", "must start with its 12-digit village code") in reasons
    assert (1, "households", "must not be negative") in reasons
    assert (2, "code", "a grid code has 15 digits") in reasons
    assert count(conn, "grid") == 0
    write_grids(conn, grids.iloc[:1])
    assert conn.execute(text("SELECT version, valid_to FROM grid")).one() == (1, None)


def camera_rows(n=1, **overrides):
    rows = {
        "gb_id": [make_gb28181("433101", 131, i) for i in range(n)],
        "name": [f"乾州{i}号" for i in range(n)],
        "kind": ["bullet"] * n,
        "height_m": [6.0] * n,
        "azimuth_deg": [90.0] * n,
        "hfov_deg": [90.0] * n,
        "resolution_h_px": [1920] * n,
        "range_m": [None] * n,
        "county_code": ["433101"] * n,
    }
    rows.update(overrides)
    return gpd.GeoDataFrame(rows, geometry=[Point(109.71, 28.27)] * n, crs=4326)


def test_cameras_are_checked_row_by_row(conn):
    jishou_village(conn)
    cameras = camera_rows(
        7,
        gb_id=[
            make_gb28181("433101", 131, 1),
            make_gb28181("433122", 131, 2),
            make_gb28181("433101", 118, 3),
            make_gb28181("433101", 131, 1),
            make_gb28181("433101", 132, 5),
            make_gb28181("433101", 132, 6),
            make_gb28181("433101", 132, 7),
        ],
        azimuth_deg=[90.0, 90.0, 90.0, 90.0, 360.0, 90.0, 90.0],
        hfov_deg=[90.0, 90.0, 90.0, 90.0, 90.0, 0.0, 90.0],
        height_m=[6.0, 6.0, 6.0, 6.0, 6.0, 6.0, -1.0],
    )
    cameras.loc[6, "geometry"] = Point(113.0, 28.2)  # Changsha, far outside Xiangxi
    with pytest.raises(RowsRejected) as caught:
        write_cameras(conn, cameras)
    by_row = {}
    for error in caught.value.errors:
        by_row.setdefault(error["row"], []).append(error["reason"])
    assert 0 not in by_row
    assert any("433122" in r and "433101" in r for r in by_row[1])
    assert any("type code" in r for r in by_row[2])
    assert by_row[3] == ["duplicate value in this file"]
    assert by_row[4] == ["must be in [0, 360) degrees"]
    assert by_row[5] == ["must be in (0, 360] degrees"]
    assert set(by_row[6]) == {"must be 0 m or more", "point lies outside Xiangxi prefecture"}
    assert count(conn, "camera") == 0


def test_good_cameras_get_defaults_and_metric_points(conn):
    jishou_village(conn)
    assert len(write_cameras(conn, camera_rows(3))) == 3
    row = conn.execute(
        text("SELECT status, owner, ST_SRID(geom_m) AS srid FROM camera LIMIT 1")
    ).one()
    assert tuple(row) == ("online", "public", 4546)


def test_incidents_are_assigned_to_the_grid_valid_when_reported(conn):
    jishou_village(conn)
    ensure_default_categories(conn)
    west, east = box(109.70, 28.26, 109.71, 28.28), box(109.71, 28.26, 109.72, 28.28)
    write_grids(
        conn,
        gpd.GeoDataFrame(
            {
                "code": ["433101002001001", "433101002001002"],
                "name": ["西", "东"],
                "village_code": ["433101002001"] * 2,
            },
            geometry=[west, east],
            crs=4326,
        ),
        valid_from=datetime(2024, 1, 1, tzinfo=UTC),
    )
    incidents = gpd.GeoDataFrame(
        {
            "category": ["dispute", "traffic", "other", "other"],
            "reported_at": [datetime(2025, 3, 1, 9, tzinfo=UTC)] * 4,
        },
        geometry=[
            Point(109.705, 28.27),
            Point(109.715, 28.27),
            Point(109.71, 28.27),  # on the shared edge: the smaller code wins
            Point(109.80, 28.27),
        ],  # in no grid: stored, unassigned
        crs=4326,
    )
    assert write_incidents(conn, incidents) == 4
    rows = conn.execute(text("SELECT grid_code, department FROM incident ORDER BY id")).all()
    assert [r.grid_code for r in rows] == [
        "433101002001001",
        "433101002001002",
        "433101002001001",
        None,
    ]
    assert rows[0].department == "综治中心"


def test_text_survives_copy_exactly_and_missing_stays_null(conn):
    from api.services.targets import write_key_places

    names = ["乾州\t小学", "back\\slash", "两行\n文字", "", None, "\\N"]
    places = gpd.GeoDataFrame(
        {"kind": ["school"] * len(names), "name": names},
        geometry=[Point(109.71, 28.27)] * len(names),
        crs=4326,
    )
    write_key_places(conn, places)
    stored = conn.execute(text("SELECT name FROM key_place ORDER BY id")).scalars().all()
    assert stored == names


def test_grids_are_checked_against_their_village_and_siblings(conn):
    jishou_village(conn)
    west, east = box(109.70, 28.26, 109.71, 28.28), box(109.71, 28.26, 109.72, 28.28)
    write_grids(
        conn,
        gpd.GeoDataFrame(
            {"code": ["433101002001001"], "name": ["西"], "village_code": ["433101002001"]},
            geometry=[west],
            crs=4326,
        ),
    )
    rows = gpd.GeoDataFrame(
        {
            "code": [
                "433101002001002",
                "433101002001003",
                "433101002001004",
                "433101002001001",
                "433101002009001",
                "433101002001006",
            ],
            "name": ["东", "越界", "压西", "重号", "无村", "压东"],
            "village_code": ["433101002001"] * 4 + ["433101002009", "433101002001"],
        },
        geometry=[
            east,
            box(109.715, 28.27, 109.73, 28.275),
            box(109.705, 28.262, 109.709, 28.264),
            box(109.701, 28.279, 109.702, 28.2799),
            east,
            box(109.711, 28.261, 109.712, 28.262),
        ],
        crs=4326,
    )
    with pytest.raises(RowsRejected) as caught:
        write_grids(conn, rows)
    reasons = {}
    for error in caught.value.errors:
        reasons.setdefault(error["row"], []).append(error["reason"])
    assert 0 not in reasons  # east touches west along an edge: fine
    assert any(
        r.startswith("extends") and r.endswith("outside its village 433101002001")
        for r in reasons[1]
    )
    assert reasons[2][0].startswith("overlaps grid 433101002001001 by")
    assert reasons[3] == ["grid 433101002001001 exists already; edit it instead"]
    assert "village 433101002009 is not a known village" in reasons[4]
    assert any(r.startswith("overlaps grid 433101002001002 (row 0)") for r in reasons[5])
    assert count(conn, "grid") == 1


def test_a_missing_geometry_is_copied_as_null(conn):
    from api.services.bulk import copy_frame

    conn.execute(text("CREATE TEMP TABLE shapes (name text, geom geometry(Point, 4326))"))
    frame = pd.DataFrame({"name": ["a", "b"], "geom": [Point(109.7, 28.3), None]})
    copy_frame(conn, "shapes", frame, {"geom": 4326})
    rows = conn.execute(text("SELECT name, geom IS NULL FROM shapes ORDER BY name")).all()
    assert [tuple(r) for r in rows] == [("a", False), ("b", True)]
