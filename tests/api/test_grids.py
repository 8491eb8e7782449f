"""/v1/grids: versioned create, edit and retire; reads at any moment; role-gated details."""

from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely import Point, box
from sqlalchemy import text

from api.app import create_app
from api.auth import create_api_key
from api.db import create_scratch_database, drop_scratch_database, make_engine
from api.migrate import upgrade
from api.services.admin_areas import write_admin_areas
from api.services.grids import GRID_WRITE_LOCK_KEY
from api.services.incidents import ensure_default_categories, write_incidents
from api.settings import Settings
from geo.crs import convert

VILLAGE = box(109.70, 28.26, 109.72, 28.28)
WEST = box(109.70, 28.26, 109.71, 28.28)
EAST = box(109.71, 28.26, 109.72, 28.28)


@pytest.fixture(scope="module")
def world(server_url):
    url = create_scratch_database(server_url, prefix="gridcover_grids")
    upgrade(url)
    settings = Settings(database_url=url)
    engine = make_engine(url, settings)
    with engine.begin() as conn:
        write_admin_areas(
            conn,
            gpd.GeoDataFrame(
                {
                    "code": ["433101", "433101002", "433101002001"],
                    "level": ["county", "township", "village"],
                    "name": ["吉首市", "峒河街道", "峒河社区"],
                    "parent_code": [None, "433101", "433101002"],
                },
                geometry=[VILLAGE] * 3,
                crs=4326,
            ),
        )
        ensure_default_categories(conn)
        keys = {
            role: create_api_key(conn, role, f"grids {role}")[1]
            for role in ("viewer", "dispatcher", "admin")
        }
    with TestClient(create_app(settings, engine)) as client:
        headers = {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
        yield client, engine, headers | {"anonymous": {}}
    engine.dispose()
    drop_scratch_database(server_url, url)


def feature(code, polygon, **properties):
    return {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(polygon),
        "properties": {
            "code": code,
            "name": f"网格{code[-3:]}",
            "households": 400,
            "worker_name": "张三",
            "worker_phone": "19900000001",
        }
        | properties,
    }


def test_create_read_and_role_gated_worker_details(world):
    client, _, headers = world
    response = client.post(
        "/v1/grids", json=feature("433101002001001", WEST), headers=headers["admin"]
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/v1/grids/433101002001001"
    assert response.headers["etag"] == 'W/"433101002001001-v1"'
    assert response.headers["content-type"] == "application/geo+json"
    seen = {
        role: client.get("/v1/grids/433101002001001", headers=headers[role]).json()
        for role in ("anonymous", "viewer", "dispatcher")
    }
    assert "worker_name" not in seen["anonymous"]["properties"]
    assert seen["viewer"]["properties"]["worker_name"] == "张三"
    assert seen["viewer"]["properties"]["worker_phone"] == "199****0001"
    assert seen["dispatcher"]["properties"]["worker_phone"] == "19900000001"
    assert seen["anonymous"]["properties"]["village_code"] == "433101002001"


def test_edits_make_versions_and_reads_take_at(world):
    client, engine, headers = world
    client.post("/v1/grids", json=feature("433101002001002", EAST), headers=headers["admin"])
    with engine.begin() as conn:
        write_incidents(
            conn,
            gpd.GeoDataFrame(
                {"category": ["dispute"], "reported_at": [datetime.now(UTC)]},
                geometry=[Point(109.715, 28.27)],
                crs=4326,
            ),
        )
        first_version_id = conn.execute(
            text("SELECT grid_id FROM incident ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    before = datetime.now(UTC)
    response = client.patch(
        "/v1/grids/433101002001002",
        json={"properties": {"worker_name": "李四"}},
        headers=headers["admin"] | {"If-Match": 'W/"433101002001002-v1"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["properties"]["version"] == 2
    assert response.headers["etag"] == 'W/"433101002001002-v2"'
    now = client.get("/v1/grids/433101002001002", headers=headers["viewer"]).json()
    then = client.get(
        "/v1/grids/433101002001002", params={"at": before.isoformat()}, headers=headers["viewer"]
    ).json()
    assert now["properties"]["worker_name"] == "李四"
    assert then["properties"]["worker_name"] == "张三" and then["properties"]["version"] == 1
    versions = client.get("/v1/grids/433101002001002/versions").json()["features"]
    assert [v["properties"]["version"] for v in versions] == [1, 2]
    assert versions[0]["properties"]["valid_to"] == versions[1]["properties"]["valid_from"]
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT grid_id FROM incident ORDER BY id DESC LIMIT 1")).scalar_one()
            == first_version_id
        )
        actions = (
            conn.execute(
                text(
                    "SELECT action FROM audit_log WHERE entity = 'grid' "
                    "AND entity_id = '433101002001002' ORDER BY id"
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["create", "update"]


def test_a_stale_if_match_is_412_and_changes_nothing(world):
    client, _, headers = world
    response = client.patch(
        "/v1/grids/433101002001001",
        json={"properties": {"households": 450}},
        headers=headers["admin"] | {"If-Match": 'W/"433101002001001-v0"'},
    )
    assert response.status_code == 412
    assert client.get("/v1/grids/433101002001001").json()["properties"]["households"] == 400


def test_bad_edits_are_422_problems_and_change_nothing(world):
    client, _, headers = world
    cases = [
        ({"geometry": shapely.geometry.mapping(box(109.70, 28.25, 109.71, 28.28))}, "outside"),
        ({"geometry": shapely.geometry.mapping(box(109.705, 28.26, 109.715, 28.28))}, "overlaps"),
        ({"properties": {"code": "433101002001009"}}, "cannot edit code"),
        ({"properties": {"households": -5}}, "households"),
        ({"geometry": {"type": "Point", "coordinates": [109.705, 28.27]}}, "Polygon"),
    ]
    for body, expected in cases:
        response = client.patch("/v1/grids/433101002001001", json=body, headers=headers["admin"])
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert expected in response.text, response.text
    assert client.get("/v1/grids/433101002001001").json()["properties"]["version"] == 1


def test_create_rejects_bad_codes_and_duplicates(world):
    client, _, headers = world
    wrong_village = client.post(
        "/v1/grids", json=feature("433101002009001", WEST), headers=headers["admin"]
    )
    assert wrong_village.status_code == 422
    assert "not a known village" in wrong_village.text
    duplicate = client.post(
        "/v1/grids", json=feature("433101002001001", WEST), headers=headers["admin"]
    )
    assert duplicate.status_code == 422 and "exists already" in duplicate.text
    short = client.post("/v1/grids", json=feature("43310100200100", WEST), headers=headers["admin"])
    assert short.status_code == 422
    assert short.json()["errors"][0]["field"] == "properties.code"


def test_gcj02_geometry_is_converted_on_the_way_in(world):
    client, _engine, headers = world
    client.delete("/v1/grids/433101002001001", headers=headers["admin"])
    # edges ~40 m long, as a map client draws them: straight enough in either system
    x, y = shapely.get_coordinates(shapely.segmentize(WEST, 0.0004)).T
    gx, gy = convert(x, y, "wgs84", "gcj02")
    shifted = shapely.Polygon(np.c_[gx, gy])
    response = client.post(
        "/v1/grids",
        params={"coord_sys": "gcj02"},
        json=feature("433101002001001", shifted),
        headers=headers["admin"],
    )
    assert response.status_code == 201, response.text
    stored = shapely.geometry.shape(response.json()["geometry"])
    assert stored.symmetric_difference(WEST).area < 1e-9
    assert response.json()["properties"]["version"] == 2  # the code's history goes on


def test_retire_keeps_history(world):
    client, _, headers = world
    before = datetime.now(UTC)
    assert client.delete("/v1/grids/433101002001001", headers=headers["admin"]).status_code == 204
    assert client.get("/v1/grids/433101002001001").status_code == 404
    assert (
        client.get("/v1/grids/433101002001001", params={"at": before.isoformat()}).status_code
        == 200
    )
    assert client.delete("/v1/grids/433101002001001", headers=headers["admin"]).status_code == 404


def test_writes_need_an_admin(world):
    client, _, headers = world
    body = feature("433101002001005", WEST)
    assert client.post("/v1/grids", json=body).status_code == 401
    for role in ("viewer", "dispatcher"):
        assert client.post("/v1/grids", json=body, headers=headers[role]).status_code == 403
        assert client.delete("/v1/grids/433101002001002", headers=headers[role]).status_code == 403


def test_racing_writers_never_store_overlaps_and_never_get_500(world):
    from concurrent.futures import ThreadPoolExecutor

    client, _, headers = world
    spot = box(109.700, 28.275, 109.702, 28.277)  # inside the village, on top of no grid yet
    client.delete("/v1/grids/433101002001001", headers=headers["admin"])
    codes = [f"43310100200102{i}" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(
                lambda code: (
                    client.post(
                        "/v1/grids", json=feature(code, spot), headers=headers["admin"]
                    ).status_code
                ),
                codes,
            )
        )
    assert sorted(statuses) == [201, 422, 422, 422]
    created = codes[statuses.index(201)]
    etag = client.get(f"/v1/grids/{created}").headers["etag"]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(
                lambda n: (
                    client.patch(
                        f"/v1/grids/{created}",
                        json={"properties": {"households": 300 + n}},
                        headers=headers["admin"] | {"If-Match": etag},
                    ).status_code
                ),
                range(4),
            )
        )
    assert sorted(statuses) == [200, 412, 412, 412]


@pytest.mark.parametrize(
    ("body_change", "field"),
    [
        (
            {
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[1e300, 0], [1e300, 1], [0, 1], [1e300, 0]]],
                }
            },
            "geometry.coordinates[0][0]",
        ),
        ({"properties": {"name": "bad\u0000name"}}, "properties.name"),
        ({"properties": {"households": 2**31}}, "properties.households"),
    ],
)
def test_hostile_grid_input_is_a_422_naming_the_field(world, body_change, field):
    client, _, headers = world
    body = feature("433101002001030", box(109.703, 28.275, 109.704, 28.276))
    for part, value in body_change.items():
        body[part] = value if part == "geometry" else body[part] | value
    response = client.post("/v1/grids", json=body, headers=headers["admin"])
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_a_3d_polygon_is_refused_naming_the_position(world):
    client, _, headers = world
    ring = [
        [109.705, 28.275, 300],
        [109.706, 28.275, 300],
        [109.706, 28.276, 310],
        [109.705, 28.276, 300],
        [109.705, 28.275, 300],
    ]
    body = feature("433101002001031", box(0, 0, 1, 1))
    body["geometry"] = {"type": "Polygon", "coordinates": [ring]}
    response = client.post("/v1/grids", json=body, headers=headers["admin"])
    assert response.status_code == 422, response.text
    assert "3D position" in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == "geometry.coordinates[0][0]"


def test_an_absurd_offset_is_a_400(world):
    client, _, _ = world
    assert client.get("/v1/grids", params={"offset": 10**20}).status_code == 400


def test_a_naive_at_is_china_standard_time(world):
    from datetime import timedelta, timezone

    client, _, headers = world
    client.post(
        "/v1/grids",
        json=feature("433101002001040", box(109.707, 28.277, 109.708, 28.278)),
        headers=headers["admin"],
    )
    just_before = datetime.now(timezone(timedelta(hours=8))).replace(tzinfo=None)
    assert client.delete("/v1/grids/433101002001040", headers=headers["admin"]).status_code == 204
    local = client.get("/v1/grids/433101002001040", params={"at": just_before.isoformat()})
    assert local.status_code == 200  # read as 08:00 ahead of UTC, i.e. before the retirement


def test_a_write_stuck_behind_a_long_grid_write_is_told_so(world):
    """An edit that waits on the grid write lock past the statement timeout (an import
    holding it) gets a 409 saying so, not "the database is unavailable"; nothing is kept."""
    _, engine, headers = world
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, statement_timeout_ms=300)
    impatient_engine = make_engine(url, settings)
    count = "SELECT count(*) FROM grid"
    try:
        with (
            engine.connect() as importer,
            TestClient(create_app(settings, impatient_engine)) as impatient,
        ):
            grids_before = importer.execute(text(count)).scalar_one()
            importer.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": GRID_WRITE_LOCK_KEY})
            response = impatient.post(
                "/v1/grids",
                json=feature("433101002001099", box(109.700, 28.260, 109.701, 28.261)),
                headers=headers["admin"],
            )
            importer.rollback()
            assert importer.execute(text(count)).scalar_one() == grids_before
    finally:
        impatient_engine.dispose()
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "another grid write" in response.json()["detail"]
    assert response.headers["retry-after"] == "10"
