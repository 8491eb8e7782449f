"""OGC API – Features on the small demo world: landing, conformance, /api, collections,
items (paging, bbox, crs, properties, sortby, datetime, filter), single features, caching
headers and role gating."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import pytest
import shapely
from fastapi.testclient import TestClient
from pyproj import Transformer
from sqlalchemy import Engine, text

from api.app import create_app
from api.auth import ASSIGNABLE_ROLES, create_api_key
from api.db import create_scratch_database, drop_scratch_database, make_engine
from api.migrate import upgrade
from api.services.admin_areas import write_admin_areas
from api.services.features import COLLECTIONS, MAX_LIMIT, invalidate_counts
from api.settings import Settings

PUBLIC = ["counties", "townships", "villages", "grids", "roads", "key_places"]
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
# The SQL that says how many features each collection holds, written independently of the
# service's own query builder.
COUNT_SQL = {
    "counties": "SELECT count(*) FROM admin_area WHERE level = 'county'",
    "townships": "SELECT count(*) FROM admin_area WHERE level = 'township'",
    "villages": "SELECT count(*) FROM admin_area WHERE level = 'village'",
    "grids": "SELECT count(*) FROM grid WHERE valid_to IS NULL",
    "roads": "SELECT count(*) FROM road",
    "key_places": "SELECT count(*) FROM key_place",
    "cameras": "SELECT count(*) FROM camera",
    "camera_fov": "SELECT count(*) FROM camera_fov",
    "coverage": "SELECT count(*) FROM coverage c JOIN grid g ON g.id = c.grid_id "
    "WHERE g.valid_to IS NULL",
    "gaps": "SELECT count(*) FROM coverage c JOIN grid g ON g.id = c.grid_id "
    "WHERE g.valid_to IS NULL AND c.gap_m IS NOT NULL AND NOT ST_IsEmpty(c.gap_m)",
    "incidents": "SELECT count(*) FROM incident WHERE deleted_at IS NULL",
}


@dataclass
class World:
    client: TestClient
    engine: Engine
    headers: dict[str, dict[str, str]]

    def sql(self, query: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).scalar()

    def items(self, cid: str, role: str = "admin", **params: Any) -> dict[str, Any]:
        response = self.client.get(
            f"/collections/{cid}/items", params=params, headers=self.headers[role]
        )
        assert response.status_code == 200, response.text
        return response.json()

    def matched(self, cid: str, filter_: str | None, role: str = "admin", **params: Any) -> int:
        if filter_ is not None:
            params["filter"] = filter_
        return self.items(cid, role, limit=1, **params)["numberMatched"]


def add_fov_and_coverage(conn: Any) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """A few FOVs and coverage rows (the demo does not compute them); returns what it added."""
    fovs = conn.execute(
        text(
            """
            INSERT INTO camera_fov (camera_id, level, range_m, geom_m)
            SELECT id, lvl, 30, ST_Buffer(geom_m, CASE lvl WHEN 'detect' THEN 30 ELSE 10 END)
            FROM (SELECT id, geom_m FROM camera ORDER BY id LIMIT 5) c,
                 unnest(ARRAY['detect', 'identify']) AS lvl
            ON CONFLICT DO NOTHING RETURNING camera_id, level
            """
        )
    ).all()
    coverage = conn.execute(
        text(
            """
            INSERT INTO coverage (grid_id, level, covered_m2, ratio, road_ratio, places_covered,
                                  places_total, public_ratio, camera_count, gap_m)
            SELECT id, lvl, area_m2 * r, r, r, 1, 2, r, 3,
                   CASE WHEN n % 2 = 0 THEN ST_Multi(ST_Difference(geom_m,
                        ST_Buffer(ST_PointOnSurface(geom_m), 60))) END
            FROM (SELECT id, geom_m, area_m2, row_number() OVER (ORDER BY code) AS n,
                         (row_number() OVER (ORDER BY code)) / 10.0 AS r
                  FROM grid WHERE valid_to IS NULL ORDER BY code LIMIT 8) g,
                 unnest(ARRAY['detect', 'observe']) AS lvl
            ON CONFLICT DO NOTHING RETURNING grid_id, level
            """
        )
    ).all()
    return [tuple(r) for r in fovs], [tuple(r) for r in coverage]


@contextmanager
def demo_world(small_demo_url: str, label: str) -> Iterator[World]:
    """An app on the small demo world with a key per role and a few FOV/coverage rows,
    removed again afterwards (the demo database is shared by the run)."""
    settings = Settings(database_url=small_demo_url)
    engine = make_engine(small_demo_url, settings)
    with engine.begin() as conn:
        keys = {role: create_api_key(conn, role, f"{label} {role}")[1] for role in ASSIGNABLE_ROLES}
        fovs, coverage = add_fov_and_coverage(conn)
    headers = {"anonymous": {}} | {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
    try:
        with TestClient(create_app(settings, engine)) as client:
            yield World(client, engine, headers)
    finally:
        with engine.begin() as conn:
            for camera_id, level in fovs:
                conn.execute(
                    text("DELETE FROM camera_fov WHERE camera_id = :c AND level = :l"),
                    {"c": camera_id, "l": level},
                )
            for grid_id, level in coverage:
                conn.execute(
                    text("DELETE FROM coverage WHERE grid_id = :g AND level = :l"),
                    {"g": grid_id, "l": level},
                )
        engine.dispose()


@pytest.fixture(scope="module")
def world(small_demo_url: str) -> Iterator[World]:
    with demo_world(small_demo_url, "ogc") as w:
        yield w


# --- landing, conformance, API definition ----------------------------------------------------


def test_landing_page_links_to_the_api_conformance_and_data(world):
    response = world.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    links = {link["rel"]: link for link in response.json()["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= set(links)
    assert links["service-desc"]["href"].endswith("/api")
    assert links["service-desc"]["type"] == "application/vnd.oai.openapi+json;version=3.0"
    assert links["data"]["href"].endswith("/collections")


def test_conformance_lists_what_is_implemented(world):
    classes = world.client.get("/conformance").json()["conformsTo"]
    for suffix in (
        "ogcapi-features-1/1.0/conf/core",
        "ogcapi-features-1/1.0/conf/geojson",
        "ogcapi-features-1/1.0/conf/oas30",
        "ogcapi-features-2/1.0/conf/crs",
        "ogcapi-features-3/1.0/conf/filter",
        "ogcapi-features-3/1.0/conf/features-filter",
        "cql2/1.0/conf/cql2-text",
        "cql2/1.0/conf/basic-cql2",
        "cql2/1.0/conf/basic-spatial-functions",
        "cql2/1.0/conf/temporal-functions",
    ):
        assert f"http://www.opengis.net/spec/{suffix}" in classes
    assert not any("html" in c or "cql2-json" in c for c in classes)


def test_api_is_openapi_30_listing_every_items_parameter(world):
    response = world.client.get("/api")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.oai.openapi+json;version=3.0"
    document = response.json()
    assert document["openapi"].startswith("3.0")
    raw = response.text
    assert '{"type":"null"}' not in raw and '"const"' not in raw
    expected = {
        "limit",
        "offset",
        "bbox",
        "bbox-crs",
        "crs",
        "properties",
        "sortby",
        "datetime",
        "filter",
        "filter-lang",
        "filter-crs",
    }
    operation = document["paths"]["/collections/{collectionId}/items"]["get"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert expected <= names
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == MAX_LIMIT and limit["schema"]["default"] == 100
    lang = next(p for p in operation["parameters"] if p["name"] == "filter-lang")
    assert "cql2-text" in lang["schema"]["enum"]
    # one path per collection, also naming the property filters
    for cid, collection in COLLECTIONS.items():
        per = document["paths"][f"/collections/{cid}/items"]["get"]
        names = {p["name"] for p in per["parameters"]}
        assert expected | {p.name for p in collection.properties} <= names
    for path in ("/", "/conformance", "/collections", "/collections/{collectionId}/queryables"):
        assert path in document["paths"]


# --- collections and role gating -------------------------------------------------------------


def test_anonymous_sees_only_public_collections(world):
    body = world.client.get("/collections").json()
    assert [c["id"] for c in body["collections"]] == PUBLIC


@pytest.mark.parametrize(
    ("role", "extra"),
    [
        ("viewer", ["coverage"]),
        ("dispatcher", ["coverage", "incidents"]),
        ("planner", ["cameras", "camera_fov", "coverage", "gaps", "incidents"]),
        ("admin", ["cameras", "camera_fov", "coverage", "gaps", "incidents"]),
    ],
)
def test_roles_see_the_collections_they_may_read(world, role, extra):
    body = world.client.get("/collections", headers=world.headers[role]).json()
    assert sorted(c["id"] for c in body["collections"]) == sorted(PUBLIC + extra)


@pytest.mark.parametrize(
    ("cid", "allowed", "denied"),
    [
        ("cameras", "planner", "dispatcher"),
        ("camera_fov", "planner", "dispatcher"),
        ("gaps", "planner", "dispatcher"),
        ("incidents", "dispatcher", "viewer"),
        ("coverage", "viewer", None),
    ],
)
def test_gated_collections_answer_401_and_403(world, cid, allowed, denied):
    fid = "1" if COLLECTIONS[cid].key_types == ("integer",) else "x-detect"
    for path in ("", "/items", f"/items/{fid}", "/queryables", "/schema"):
        url = f"/collections/{cid}{path}"
        anonymous = world.client.get(url)
        assert anonymous.status_code == 401, url
        assert anonymous.headers["content-type"] == "application/problem+json"
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        if denied:
            assert world.client.get(url, headers=world.headers[denied]).status_code == 403
    assert (
        world.client.get(f"/collections/{cid}", headers=world.headers[allowed]).status_code == 200
    )


def test_unknown_collection_is_a_404_problem(world):
    response = world.client.get("/collections/nope/items")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_collection_metadata_has_what_gdal_and_qgis_need(world):
    for cid in COLLECTIONS:
        body = world.client.get(f"/collections/{cid}", headers=world.headers["admin"]).json()
        assert body["id"] == cid and body["itemType"] == "feature"
        assert CRS84 in body["crs"] and EPSG + "4546" in body["crs"]
        assert body["storageCrs"] == CRS84
        links = {link["rel"]: link for link in body["links"]}
        assert links["items"]["type"] == "application/geo+json"
        assert links["items"]["href"].endswith(f"/collections/{cid}/items")
        queryables = links["http://www.opengis.net/def/rel/ogc/1.0/queryables"]
        assert queryables["type"] == "application/schema+json"
        assert links["describedby"]["href"].endswith("/schema")
        if world.sql(COUNT_SQL[cid]):
            xmin, ymin, xmax, ymax = body["extent"]["spatial"]["bbox"][0]
            assert 109 < xmin < xmax < 111 and 27.5 < ymin < ymax < 29.5
    incidents = world.client.get("/collections/incidents", headers=world.headers["admin"]).json()
    start, end = incidents["extent"]["temporal"]["interval"][0]
    assert start.startswith("2024-12-31") and end.startswith("2025-12-31")
    grids = world.client.get("/collections/grids").json()
    assert grids["extent"]["temporal"]["interval"][0] == ["2024-01-01T00:00:00Z", None]


def test_queryables_are_json_schema_and_hide_gated_properties(world):
    response = world.client.get("/collections/grids/queryables")
    assert response.headers["content-type"] == "application/schema+json"
    schema = response.json()
    assert schema["type"] == "object" and schema["$id"].endswith("/collections/grids/queryables")
    properties = schema["properties"]
    assert properties["geometry"]["format"] == "geometry-multipolygon"
    assert properties["population"]["type"] == "integer"
    assert properties["valid_from"] == {
        "title": "Valid from",
        "type": "string",
        "format": "date-time",
    }
    assert "worker_name" not in properties
    viewer = world.client.get("/collections/grids/queryables", headers=world.headers["viewer"])
    assert "worker_name" in viewer.json()["properties"]
    schema = world.client.get("/collections/grids/schema").json()
    assert set(schema["properties"]["properties"]["properties"]) == set(properties) - {"geometry"}


# --- items: every collection, paging ----------------------------------------------------------


@pytest.mark.parametrize("cid", list(COLLECTIONS))
def test_each_collection_pages_through_all_its_features(world, cid):
    expected = world.sql(COUNT_SQL[cid])
    assert expected > 0, f"the test world holds no {cid}"
    limit = max(1, expected // 3) if expected < 400 else 1000
    response = world.client.get(
        f"/collections/{cid}/items", params={"limit": limit}, headers=world.headers["admin"]
    )
    assert response.headers["content-type"] == "application/geo+json"
    page = response.json()
    seen: list[Any] = []
    pages = 0
    while True:
        pages += 1
        assert page["type"] == "FeatureCollection"
        assert page["numberMatched"] == expected
        assert page["numberReturned"] == len(page["features"]) <= limit
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", page["timeStamp"])
        links = {link["rel"]: link for link in page["links"]}
        assert links["self"]["type"] == "application/geo+json"
        assert links["collection"]["href"].endswith(f"/collections/{cid}")
        seen += [f["id"] for f in page["features"]]
        if pages > 1:
            previous = world.client.get(links["prev"]["href"], headers=world.headers["admin"])
            assert f"offset={len(seen) - page['numberReturned'] - limit}" in links["prev"]["href"]
            assert previous.status_code == 200
        if "next" not in links:
            break
        assert "next" in links and len(seen) < expected
        page = world.client.get(links["next"]["href"], headers=world.headers["admin"]).json()
    assert len(seen) == len(set(seen)) == expected
    assert pages == -(-expected // limit)
    feature = page["features"][-1]
    assert set(feature) == {"type", "id", "geometry", "properties"}
    assert list(feature["properties"]) == [p.name for p in COLLECTIONS[cid].properties]


def test_first_page_of_a_collection_has_no_prev_and_offset_past_the_end_is_empty(world):
    first = world.items("roads", limit=10)
    assert "prev" not in {link["rel"] for link in first["links"]}
    total = first["numberMatched"]
    past = world.items("roads", offset=total + 5, limit=10)
    assert past["numberReturned"] == 0 and past["numberMatched"] == total
    assert "next" not in {link["rel"] for link in past["links"]}


def test_limit_above_the_maximum_is_served_as_the_maximum(world):
    body = world.items("incidents", limit=MAX_LIMIT * 3, offset=5, properties="id")
    assert body["numberReturned"] == min(MAX_LIMIT, body["numberMatched"] - 5)
    prev_link = next(link for link in body["links"] if link["rel"] == "prev")
    assert f"limit={MAX_LIMIT}" in prev_link["href"] and "offset=0" in prev_link["href"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": "x"},
        {"offset": -1},
        {"bbox": "1,2,3"},
        {"bbox": "1,2,3,4,5,6"},
        {"bbox": "a,b,c,d"},
        {"bbox": "109.8,28.2,109.7,28.3"},
        {"bbox": "1,2,3,nan"},
        {"crs": "EPSG:9999"},
        {"bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/2000", "bbox": "1,2,3,4"},
        {"properties": "code,nope"},
        {"sortby": "nope"},
        {"sortby": "+"},
        {"datetime": "yesterday"},
        {"datetime": "2025-02-01/2025-01-01"},
        {"filter-lang": "cql2-json", "filter": "code = '1'"},
        {"population": "many"},
        {"population": str(10**30)},
        {"name": "nul\x00byte"},
        {"filter": "name = 'nul\x00byte'"},
    ],
)
def test_bad_items_parameters_are_400_problems(world, params):
    response = world.client.get("/collections/grids/items", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]


# --- bbox and crs ------------------------------------------------------------------------------

BOX = (109.70, 28.15, 109.80, 28.25)
BOX_SQL = (
    "SELECT count(*) FROM grid WHERE valid_to IS NULL AND "
    "ST_Intersects(geom, ST_MakeEnvelope(109.70, 28.15, 109.80, 28.25, 4326))"
)


def test_bbox_selects_the_features_that_intersect_it(world):
    expected = world.sql(BOX_SQL)
    assert 0 < expected < world.sql(COUNT_SQL["grids"])
    body = world.items("grids", bbox=",".join(map(str, BOX)), limit=1000)
    assert body["numberMatched"] == body["numberReturned"] == expected
    box = shapely.box(*BOX)
    for feature in body["features"]:
        assert shapely.geometry.shape(feature["geometry"]).intersects(box)
    # the same box with lat/lon axis order (EPSG:4326) and in metres (EPSG:4546)
    latlon = ",".join(map(str, (BOX[1], BOX[0], BOX[3], BOX[2])))
    assert world.matched("grids", None, bbox=latlon, **{"bbox-crs": EPSG + "4326"}) == expected
    to_metres = Transformer.from_crs(4326, 4546, always_xy=True)
    (e0, e1), (n0, n1) = to_metres.transform([BOX[0], BOX[2]], [BOX[1], BOX[3]])
    metric = world.matched(
        "grids", None, bbox=f"{min(n0, n1)},{min(e0, e1)},{max(n0, n1)},{max(e0, e1)}",
        **{"bbox-crs": "EPSG:4546"},
    )  # fmt: skip
    assert abs(metric - expected) <= 3  # a metric box is not quite the degree box


def test_crs_4546_answers_northing_easting_in_metres(world):
    body = world.items("cameras", crs=EPSG + "4546", limit=5, sortby="id")
    response = world.client.get(
        "/collections/cameras/items",
        params={"crs": EPSG + "4546", "limit": 5, "sortby": "id"},
        headers=world.headers["admin"],
    )
    assert response.headers["content-crs"] == f"<{EPSG}4546>"
    with world.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, ST_X(geom_m), ST_Y(geom_m) FROM camera ORDER BY id LIMIT 5")
        ).all()
    for feature, (cid, easting, northing) in zip(body["features"], rows, strict=True):
        assert feature["id"] == cid
        north, east = feature["geometry"]["coordinates"]
        assert 3.0e6 < north < 3.3e6 and 3.0e5 < east < 5.0e5
        assert north == pytest.approx(northing, abs=0.006)
        assert east == pytest.approx(easting, abs=0.006)
        assert north == round(north, 2)
    default = world.items("cameras", limit=1, sortby="id")["features"][0]["geometry"]
    lon, lat = default["coordinates"]
    assert 109 < lon < 111 and 27 < lat < 29 and lon == round(lon, 7)
    latlon = world.items("cameras", limit=1, sortby="id", crs="EPSG:4490")["features"][0]
    assert latlon["geometry"]["coordinates"] == [lat, lon]
    mercator = world.items("cameras", limit=1, sortby="id", crs=EPSG + "3857")["features"][0]
    x, y = mercator["geometry"]["coordinates"]
    expected = Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    assert (x, y) == pytest.approx(expected, abs=0.05)


def test_polygon_reprojection_keeps_rings_closed(world):
    feature = world.items("grids", crs=EPSG + "4546", limit=1)["features"][0]
    ring = feature["geometry"]["coordinates"][0][0]
    assert ring[0] == ring[-1] and all(north > 3.0e6 for north, _ in ring)


# --- properties, sortby, property filters -----------------------------------------------------


def test_properties_selects_a_subset_in_the_order_asked(world):
    body = world.items("grids", properties="population,code", limit=3)
    for feature in body["features"]:
        assert list(feature["properties"]) == ["population", "code"]
    empty = world.items("grids", properties="", limit=1)
    assert empty["features"][0]["properties"] == {}


def test_sortby_orders_ascending_and_descending_with_stable_pages(world):
    down = world.items("grids", sortby="-population,code", limit=50)["features"]
    values = [f["properties"]["population"] for f in down]
    assert values == sorted(values, reverse=True)
    assert values[0] == world.sql("SELECT max(population) FROM grid WHERE valid_to IS NULL")
    up = world.items("grids", sortby="+kind,households", limit=1000)["features"]
    keys = [(f["properties"]["kind"], f["properties"]["households"]) for f in up]
    assert keys == sorted(keys)
    # pages sorted on a non-unique value neither repeat nor skip features
    ids = []
    for offset in range(0, 120, 40):
        ids += [
            f["id"]
            for f in world.items("grids", sortby="kind", limit=40, offset=offset)["features"]
        ]
    assert len(ids) == len(set(ids)) == 120


def test_property_query_parameters_filter_by_equality(world):
    expected = world.sql("SELECT count(*) FROM road WHERE road_class = 'county'")
    body = world.items("roads", road_class="county", limit=1000)
    assert body["numberMatched"] == expected > 0
    assert {f["properties"]["road_class"] for f in body["features"]} == {"county"}
    households = world.sql(
        "SELECT households FROM grid WHERE valid_to IS NULL ORDER BY code LIMIT 1"
    )
    assert world.items("grids", households=households)["numberMatched"] == world.sql(
        "SELECT count(*) FROM grid WHERE valid_to IS NULL AND households = :h", h=households
    )


# --- datetime ----------------------------------------------------------------------------------


def test_datetime_selects_incidents_reported_in_an_interval(world):
    expected = world.sql(
        "SELECT count(*) FROM incident WHERE reported_at >= '2025-03-01T00:00:00+08:00' "
        "AND reported_at <= '2025-03-31T23:59:59.999999+08:00'"
    )
    assert (
        world.items("incidents", datetime="2025-03-01/2025-03-31", limit=1)["numberMatched"]
        == expected
        > 0
    )
    after = world.sql("SELECT count(*) FROM incident WHERE reported_at >= '2025-11-01T00:00:00Z'")
    assert world.matched("incidents", None, datetime="2025-11-01T00:00:00Z/..") == after
    first = world.sql("SELECT min(reported_at) FROM incident")
    at = world.items("incidents", datetime=first.isoformat())
    assert at["numberMatched"] >= 1


def test_datetime_reads_grids_at_an_instant(world):
    assert world.items("grids", datetime="2023-06-01T00:00:00Z")["numberMatched"] == 0
    now = world.items("grids", datetime="2025-06-01", limit=1)["numberMatched"]
    assert now == world.sql(COUNT_SQL["grids"])
    assert world.items("grids", at="2023-06-01T00:00:00")["numberMatched"] == 0
    assert world.items("grids", at="2025-06-01T00:00:00", limit=1)["numberMatched"] == now
    for params in ({"at": "2025-01-01", "datetime": "2025-01-01"}, {"at": "x"}):
        assert world.client.get("/collections/grids/items", params=params).status_code == 400
    response = world.client.get("/collections/roads/items", params={"at": "2025-01-01"})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "at"
    response = world.client.get("/collections/grids/items", params={"datetime": "2024-01-01/.."})
    assert response.status_code == 400
    response = world.client.get("/collections/roads/items", params={"datetime": "2025-01-01"})
    assert response.status_code == 400 and "no time" in response.json()["detail"]


# --- filter (the operators themselves are in test_cql2.py) --------------------------------------


def test_filter_is_pushed_into_sql_and_counted_exactly(world):
    expected = world.sql(
        "SELECT count(*) FROM grid WHERE valid_to IS NULL AND population > 1500 "
        "AND kind = '综合网格'"
    )
    body = world.items(
        "grids", filter="population > 1500 AND kind = '综合网格'", limit=10, properties="population"
    )
    assert body["numberMatched"] == expected
    assert all(f["properties"]["population"] > 1500 for f in body["features"])
    draft = world.items(
        "grids", filter="population > 1500 AND kind = '综合网格'", **{"filter-lang": "cql-text"}
    )
    assert draft["numberMatched"] == expected


def test_unknown_property_and_bad_syntax_are_400_problems_with_position(world):
    response = world.client.get("/collections/grids/items", params={"filter": "nope = 1"})
    assert response.status_code == 400
    problem = response.json()
    assert problem["property"] == "nope" and problem["position"] == 0
    assert "unknown property 'nope'" in problem["detail"]
    response = world.client.get("/collections/grids/items", params={"filter": "code = "})
    assert response.status_code == 400 and response.json()["position"] == 7


def test_worker_name_is_neither_shown_nor_filterable_without_permission(world):
    anonymous = world.items("grids", role="anonymous", limit=1)["features"][0]["properties"]
    assert "worker_name" not in anonymous
    response = world.client.get(
        "/collections/grids/items", params={"filter": "worker_name LIKE '%'"}
    )
    assert response.status_code == 400 and response.json()["property"] == "worker_name"
    sort = world.client.get("/collections/grids/items", params={"sortby": "worker_name"})
    assert sort.status_code == 400
    ignored = world.client.get("/collections/grids/items", params={"worker_name": "x", "limit": 1})
    assert ignored.json()["numberMatched"] == world.sql(COUNT_SQL["grids"])
    viewer = world.items("grids", role="viewer", limit=1)["features"][0]["properties"]
    assert viewer["worker_name"]
    named = world.items("grids", role="viewer", worker_name=viewer["worker_name"])
    assert 1 <= named["numberMatched"] < world.sql(COUNT_SQL["grids"])


@pytest.mark.parametrize(
    "filter_",
    [
        "name = 'x'' OR 1=1 --'",
        "name = 'x\\' OR ''='",
        "code = '1'' ; DROP TABLE grid; --'",
        "name LIKE '%'' OR ''1''=''1'",
    ],
)
def test_injection_looking_filters_are_only_data(world, filter_):
    body = world.items("grids", filter=filter_)
    assert body["numberMatched"] == 0
    assert world.sql(COUNT_SQL["grids"]) > 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"filter": "code = '1'; DROP TABLE grid"}, "filter"),
        ({"filter": "code = '1' OR 1=1 --"}, "filter"),
        ({"filter": "pg_sleep(5) = 1"}, "filter"),
        ({"filter": '"code; DROP TABLE grid" = 1'}, "filter"),
        ({"filter": "S_INTERSECTS(geometry, POINT(1 2); DROP TABLE grid)"}, "filter"),
        ({"sortby": "code;DROP TABLE grid"}, "sortby"),
        ({"properties": "code,(SELECT 1)"}, "properties"),
        ({"crs": "4326); DROP TABLE grid; --"}, "crs"),
    ],
)
def test_injection_looking_parameters_are_400(world, params, field):
    response = world.client.get("/collections/grids/items", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == field
    assert world.sql(COUNT_SQL["grids"]) > 0


# --- single features ---------------------------------------------------------------------------


def test_a_feature_by_id_and_404_problems(world):
    code = world.sql("SELECT code FROM grid WHERE valid_to IS NULL ORDER BY code LIMIT 1")
    response = world.client.get(f"/collections/grids/items/{code}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    feature = response.json()
    assert feature["id"] == code and feature["properties"]["code"] == code
    rels = {link["rel"] for link in feature["links"]}
    assert {"self", "collection"} <= rels
    metric = world.client.get(f"/collections/grids/items/{code}", params={"crs": "EPSG:4546"})
    assert metric.headers["content-crs"] == f"<{EPSG}4546>"
    assert metric.json()["geometry"]["coordinates"][0][0][0][0] > 3.0e6
    before = world.client.get(
        f"/collections/grids/items/{code}", params={"datetime": "2023-01-01T00:00:00Z"}
    )
    assert before.status_code == 404
    old = world.client.get(f"/collections/grids/items/{code}", params={"at": "2023-01-01T00:00"})
    assert old.status_code == 404
    assert (
        world.client.get(f"/collections/grids/items/{code}", params={"at": "2025-01-01"}).json()[
            "id"
        ]
        == code
    )
    for url in (
        "/collections/grids/items/000000000000000",
        "/collections/roads/items/abc",
        "/collections/roads/items/99999999",
        "/collections/roads/items/1-2",
        "/collections/grids/items/nul%00byte",
    ):
        missing = world.client.get(url)
        assert missing.status_code == 404, url
        assert missing.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("cid", list(COLLECTIONS))
def test_a_feature_reads_as_it_does_in_the_items(world, cid):
    """The single-feature query is its own: it must serve what the items serve, in other
    CRSs and to other roles too, when read and when served again from the cache."""
    for role, crs in (("admin", None), ("admin", "EPSG:4546"), ("planner", "EPSG:3857")):
        params = {"crs": crs} if crs else {}
        response = world.client.get(
            f"/collections/{cid}/items", params={"limit": 3, **params}, headers=world.headers[role]
        )
        if response.status_code == 403:
            continue
        assert response.status_code == 200, response.text
        for listed in response.json()["features"]:
            for _ in range(2):  # read, then served from the cache
                single = world.client.get(
                    f"/collections/{cid}/items/{listed['id']}",
                    params=params,
                    headers=world.headers[role],
                )
                assert single.status_code == 200, (cid, single.text)
                feature = single.json()
                assert feature["geometry"] == listed["geometry"], (cid, role, crs)
                assert feature["properties"] == listed["properties"], (cid, role, crs)
                assert feature["id"] == listed["id"]


def test_composite_ids_of_fovs_coverage_and_gaps(world):
    admin = world.headers["admin"]
    for cid in ("camera_fov", "coverage", "gaps"):
        first = world.items(cid, limit=1)["features"][0]
        response = world.client.get(f"/collections/{cid}/items/{first['id']}", headers=admin)
        assert response.status_code == 200, (cid, response.text)
        assert response.json()["properties"] == first["properties"]
    fov = world.items("camera_fov", limit=1)["features"][0]
    assert fov["id"] == f"{fov['properties']['camera_id']}-{fov['properties']['level']}"
    gap = world.items("gaps", limit=1)["features"][0]
    assert gap["id"] == f"{gap['properties']['grid_code']}-{gap['properties']['level']}"
    assert gap["properties"]["area_m2"] > 0


def test_key_places_carry_the_grid_they_lie_in(world):
    body = world.items("key_places", limit=20, sortby="id")
    with world.engine.connect() as conn:
        expected = dict(
            conn.execute(
                text(
                    "SELECT k.id, (SELECT g.code FROM grid g WHERE g.valid_to IS NULL AND "
                    "ST_Intersects(g.geom, ST_PointOnSurface(k.geom)) ORDER BY g.code LIMIT 1) "
                    "FROM key_place k ORDER BY k.id LIMIT 20"
                )
            ).all()
        )
    assert {f["id"]: f["properties"]["grid_code"] for f in body["features"]} == expected
    code = next(iter(expected.values()))
    in_grid = world.sql(
        "SELECT count(*) FROM key_place k JOIN grid g ON g.code = :code AND g.valid_to IS NULL "
        "AND ST_Intersects(g.geom, ST_PointOnSurface(k.geom))",
        code=code,
    )
    assert world.matched("key_places", f"grid_code = '{code}'") == in_grid >= 1


def test_incidents_have_the_design_properties(world):
    feature = world.items("incidents", limit=1)["features"][0]
    assert list(feature["properties"]) == [
        "id",
        "category",
        "status",
        "grid_code",
        "reported_at",
        "due_at",
        "overdue",
    ]
    # demo incidents are all still open, and due within days of their 2025 report
    assert feature["properties"]["overdue"] is True


# --- caching -----------------------------------------------------------------------------------


def test_etag_and_if_none_match_answer_304(world):
    url = "/collections/grids/items"
    first = world.client.get(url, params={"limit": 5})
    time.sleep(1.1)  # a new timeStamp must not change the ETag
    second = world.client.get(url, params={"limit": 5})
    assert first.json()["timeStamp"] != second.json()["timeStamp"]
    etag = first.headers["etag"]
    assert etag == second.headers["etag"] and etag.startswith('"')
    assert first.headers["cache-control"].startswith("public")
    not_modified = world.client.get(url, params={"limit": 5}, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not not_modified.content
    assert not_modified.headers["etag"] == etag
    weak = world.client.get(url, params={"limit": 5}, headers={"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304
    other = world.client.get(url, params={"limit": 6}, headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag
    code = first.json()["features"][0]["id"]
    item = world.client.get(f"/collections/grids/items/{code}")
    again = world.client.get(
        f"/collections/grids/items/{code}", headers={"If-None-Match": item.headers["etag"]}
    )
    assert again.status_code == 304


@pytest.fixture
def editable(server_url: str) -> Iterator[World]:
    """An app on a database of its own holding one village and an admin and a viewer key,
    for tests that write grids through the API."""
    url = create_scratch_database(server_url, prefix="gridcover_ogc_edits")
    upgrade(url)
    settings = Settings(database_url=url)
    engine = make_engine(url, settings)
    village = shapely.box(109.70, 28.26, 109.72, 28.28)
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
                geometry=[village] * 3,
                crs=4326,
            ),
        )
        keys = {
            role: create_api_key(conn, role, f"edits {role}")[1] for role in ("admin", "viewer")
        }
    headers = {"anonymous": {}} | {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
    try:
        with TestClient(create_app(settings, engine)) as client:
            yield World(client, engine, headers)
    finally:
        engine.dispose()
        drop_scratch_database(server_url, url)


def test_a_cached_feature_follows_edits_at_once(editable):
    """Single features are served from a per-process cache; an edit through the API shows
    in the next read, a write behind the service's back within seconds, and each role still
    sees only its own fields."""
    client, headers = editable.client, editable.headers
    code = "433101002001001"
    url = f"/collections/grids/items/{code}"
    body = {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(shapely.box(109.70, 28.26, 109.71, 28.28)),
        "properties": {"code": code, "name": "网格001", "households": 400, "worker_name": "张三"},
    }
    assert client.post("/v1/grids", json=body, headers=headers["admin"]).status_code == 201
    created = datetime.now(UTC)
    cache = client.app.state.features.features
    first = client.get(url)
    assert first.json()["properties"]["households"] == 400
    hits = cache.hits
    assert client.get(url).json() == first.json()
    assert cache.hits == hits + 1  # the second read came from the cache
    assert "worker_name" not in first.json()["properties"]
    viewer = client.get(url, headers=headers["viewer"]).json()
    assert viewer["properties"]["worker_name"] == "张三"  # not the anonymous copy

    edited = client.patch(
        f"/v1/grids/{code}", json={"properties": {"households": 450}}, headers=headers["admin"]
    )
    assert edited.status_code == 200, edited.text
    after = client.get(url)
    assert after.json()["properties"]["households"] == 450
    assert after.headers["etag"] != first.headers["etag"]
    assert client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 200
    then = client.get(url, params={"at": created.isoformat()})
    assert then.json()["properties"]["households"] == 400  # the version valid then

    # A write that calls no hook (another process, psql): the statistics marker shows it.
    with editable.engine.begin() as conn:
        conn.execute(
            text("UPDATE grid SET households = 460 WHERE code = :code AND valid_to IS NULL"),
            {"code": code},
        )
    deadline = time.monotonic() + 15
    while client.get(url).json()["properties"]["households"] != 460:
        assert time.monotonic() < deadline, "the cached feature stayed stale"
        time.sleep(0.2)

    assert client.delete(f"/v1/grids/{code}", headers=headers["admin"]).status_code == 204
    gone = client.get(url)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


def test_cache_control_is_private_for_keys_and_gated_collections(world):
    keyed = world.client.get("/collections/grids/items", headers=world.headers["viewer"])
    assert keyed.headers["cache-control"] == "private, no-cache"
    assert "Authorization" in keyed.headers["vary"]
    gated = world.client.get("/collections/cameras/items", headers=world.headers["planner"])
    assert gated.headers["cache-control"] == "private, no-cache"


def test_number_matched_follows_writes(world):
    """A cached count is dropped by the write hook at once, and by the change marker (the
    statistics counters) within a few seconds for writes that do not call the hook."""

    def matched() -> int:
        return world.items("roads", limit=1, filter="road_class = 'street'")["numberMatched"]

    before = matched()
    assert matched() == before  # now from the cache
    insert = text(
        "INSERT INTO road (road_class, name, geom) VALUES ('street', 'ogc test', "
        "ST_Multi(ST_GeomFromText('LINESTRING(109.75 28.2, 109.76 28.21)', 4326))) RETURNING id"
    )
    with world.engine.begin() as conn:
        added = conn.execute(insert).scalar_one()
    invalidate_counts("road")
    try:
        assert matched() == before + 1
        with world.engine.begin() as conn:
            conn.execute(text("DELETE FROM road WHERE id = :id"), {"id": added})
        deadline = time.monotonic() + 15
        while matched() != before:  # no hook: the statistics flush reveals the change
            assert time.monotonic() < deadline, "the count stayed stale"
            time.sleep(0.2)
    finally:
        with world.engine.begin() as conn:
            conn.execute(text("DELETE FROM road WHERE name = 'ogc test'"))
