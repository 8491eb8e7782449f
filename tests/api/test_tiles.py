"""Vector tiles and TileJSON on the small demo world: tiles decode (mapbox-vector-tile) and
hold the features and properties the database says they should, role gating, z/x/y
validation, empty tiles, ETag/304, and a cache that follows writes (through the API, and
behind its back)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import h3
import mapbox_vector_tile
import pytest
import shapely
from sqlalchemy import text

from api.services.features import COLLECTIONS
from api.services.tiles import (
    BUFFER,
    EXTENT,
    MVT,
    TILED,
    Tile,
    TileCache,
    dori_level,
    tile_bounds,
    tiled_collection,
)
from tests.api.test_ogc import World, demo_world

GRID_FIELDS = ["code", "name", "village_code", "kind", "households", "population"]


@pytest.fixture(scope="module")
def world(small_demo_url: str) -> Iterator[World]:
    with demo_world(small_demo_url, "tiles") as w:
        cells = add_h3_cells(w)
        try:
            yield w
        finally:
            with w.engine.begin() as conn:
                conn.execute(
                    text("DELETE FROM coverage_h3 WHERE h3 = ANY(:c) AND level = 'detect'"),
                    {"c": cells},
                )


def add_h3_cells(world: World) -> list[str]:
    """A few H3 cells around the first grid, as the coverage job writes them, where it has
    not (returns the ones added, to be removed afterwards)."""
    lon, lat = point_in_grid(world, 0)
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(lat, lon, 9), 1))
    added = []
    with world.engine.begin() as conn:
        for i, cell in enumerate(cells):
            ring = [(x, y) for y, x in h3.cell_to_boundary(cell)]
            added += (
                conn.execute(
                    text(
                        "INSERT INTO coverage_h3 (h3, level, covered_fraction, covered_m2, geom) "
                        "VALUES (:h, 'detect', :f, 1000, ST_GeomFromText(:wkt, 4326)) "
                        "ON CONFLICT DO NOTHING RETURNING h3"
                    ),
                    {"h": cell, "f": i / len(cells), "wkt": shapely.Polygon(ring).wkt},
                )
                .scalars()
                .all()
            )
    return added


def point_in_grid(world: World, offset: int) -> tuple[float, float]:
    with world.engine.connect() as conn:
        x, y = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM grid "
                "WHERE valid_to IS NULL ORDER BY code LIMIT 1 OFFSET :o) g"
            ),
            {"o": offset},
        ).one()
    return x, y


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


def get_tile(world: World, cid: str, zxy: tuple[int, int, int], role: str = "admin", **params):
    z, x, y = zxy
    return world.client.get(
        f"/collections/{cid}/tiles/WebMercatorQuad/{z}/{x}/{y}",
        params=params,
        headers=world.headers[role],
    )


def features(response: Any, layer: str) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MVT
    decoded = mapbox_vector_tile.decode(response.content)
    assert list(decoded) == [layer]
    assert decoded[layer]["extent"] == EXTENT
    return decoded[layer]["features"]


def in_tile_sql(geom: str, zxy: tuple[int, int, int], margin: float = 0.0) -> str:
    z, x, y = zxy
    return (
        f"ST_Intersects(ST_Transform({geom}, 3857), "
        f"ST_TileEnvelope({z}, {x}, {y}, margin => {margin}))"
    )


# --- what tiles hold ------------------------------------------------------------------------


def test_a_grid_tile_over_the_demo_county_holds_its_grids_and_their_coverage(world: World):
    lon, lat = point_in_grid(world, 0)  # a grid with coverage (demo_world adds it)
    zxy = tile_of(lon, lat, 13)
    found = features(get_tile(world, "grids", zxy, role="viewer"), "grids")
    by_code = {f["properties"]["code"]: f for f in found}
    with world.engine.connect() as conn:
        inside = set(
            conn.execute(
                text(f"SELECT code FROM grid WHERE valid_to IS NULL AND {in_tile_sql('geom', zxy)}")
            ).scalars()
        )
        near = set(
            conn.execute(
                text(
                    "SELECT code FROM grid WHERE valid_to IS NULL AND "
                    + in_tile_sql("geom", zxy, BUFFER / EXTENT)
                )
            ).scalars()
        )
        rows = {
            row.code: row
            for row in conn.execute(
                text(
                    "SELECT g.code, g.name, g.village_code, g.kind, g.households, g.population,"
                    " g.worker_name, c.public_ratio, c.ratio, c.camera_count FROM grid g "
                    "LEFT JOIN coverage c ON c.grid_id = g.id AND c.level = 'detect' "
                    "WHERE g.valid_to IS NULL"
                )
            )
        }
    assert len(inside) > 5
    assert inside <= set(by_code) <= near
    with_coverage = 0
    for code, feature in by_code.items():
        row = rows[code]
        props = feature["properties"]
        assert feature["id"] == int(code)
        assert [props[k] for k in GRID_FIELDS] == [getattr(row, k) for k in GRID_FIELDS]
        assert props["worker_name"] == row.worker_name  # a viewer sees the worker's name
        assert "valid_from" not in props and "valid_to" not in props
        if row.ratio is None:  # LEFT JOIN: grids without coverage have no coverage fields
            assert "ratio" not in props and "public_ratio" not in props
        else:
            with_coverage += 1
            assert props["public_ratio"] == pytest.approx(row.public_ratio, abs=1e-4)
            assert props["ratio"] == pytest.approx(row.ratio, abs=1e-4)
            assert props["camera_count"] == row.camera_count
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert with_coverage >= 1


def test_grid_tiles_follow_the_level_and_hide_what_the_role_may_not_see(world: World):
    lon, lat = point_in_grid(world, 0)
    zxy = tile_of(lon, lat, 13)
    with world.engine.connect() as conn:
        code = conn.execute(
            text(
                f"SELECT min(code) FROM grid WHERE valid_to IS NULL AND {in_tile_sql('geom', zxy)}"
            )
        ).scalar_one()
        stored = dict(
            conn.execute(
                text(
                    "SELECT l, c.ratio FROM unnest(CAST(:levels AS text[])) AS l "
                    "LEFT JOIN (coverage c JOIN grid g ON g.id = c.grid_id AND g.code = :code "
                    "AND g.valid_to IS NULL) ON c.level = l"
                ),
                {"levels": ["detect", "observe", "recognize", "identify"], "code": code},
            ).all()
        )

    def props(role: str, **params: Any) -> dict[str, Any]:
        found = features(get_tile(world, "grids", zxy, role=role, **params), "grids")
        return next(f["properties"] for f in found if f["properties"]["code"] == code)

    assert stored["detect"] is not None
    for level, ratio in stored.items():
        expected = pytest.approx(ratio, abs=1e-4) if ratio is not None else None
        assert props("viewer", level=level).get("ratio") == expected, level
    assert props("viewer")["ratio"] == pytest.approx(stored["detect"], abs=1e-4)
    public = props("anonymous")
    assert list(public) == GRID_FIELDS  # no worker, no coverage for the public
    assert get_tile(world, "grids", zxy, level="nonsense").status_code == 400


@pytest.mark.parametrize("cid", list(TILED))
def test_every_tiled_collection_serves_its_layer(world: World, cid: str):
    collection = tiled_collection(cid)
    assert collection is not None
    with world.engine.connect() as conn:
        lon, lat = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p "
                f"FROM ({SAMPLE_SQL[cid]}) s) q"
            )
        ).one()
    zxy = tile_of(lon, lat, max(TILED[cid].minzoom, 14))
    found = features(get_tile(world, cid, zxy), cid)
    assert found
    names = {p.name for p in collection.properties} - set(TILED[cid].exclude)
    if TILED[cid].coverage:
        names |= {"public_ratio", "ratio", "camera_count"}
    assert all(set(f["properties"]) <= names for f in found)
    assert any(set(f["properties"]) >= names - {"public_ratio", "ratio", "camera_count",
                                                 "range_m", "name"} for f in found)  # fmt: skip
    if dori_level(collection) is not None:  # one level a tile, detect by default
        assert {f["properties"]["level"] for f in found} == {"detect"}


SAMPLE_SQL = {
    "counties": "SELECT geom FROM admin_area WHERE level = 'county' LIMIT 1",
    "townships": "SELECT geom FROM admin_area WHERE level = 'township' LIMIT 1",
    "villages": "SELECT geom FROM admin_area WHERE level = 'village' LIMIT 1",
    "grids": "SELECT geom FROM grid WHERE valid_to IS NULL LIMIT 1",
    "roads": "SELECT geom FROM road ORDER BY id LIMIT 1",
    "key_places": "SELECT geom FROM key_place ORDER BY id LIMIT 1",
    "cameras": "SELECT geom FROM camera ORDER BY id LIMIT 1",
    "camera_fov": "SELECT geom FROM camera_fov WHERE level = 'detect' LIMIT 1",
    "coverage": "SELECT g.geom FROM coverage c JOIN grid g ON g.id = c.grid_id "
    "WHERE c.level = 'detect' LIMIT 1",
    "gaps": "SELECT ST_Transform(gap_m, 4326) AS geom FROM coverage "
    "WHERE level = 'detect' AND gap_m IS NOT NULL LIMIT 1",
    "incidents": "SELECT location AS geom FROM incident WHERE location IS NOT NULL LIMIT 1",
    "coverage_h3": "SELECT geom FROM coverage_h3 WHERE level = 'detect' LIMIT 1",
}


@pytest.mark.parametrize(
    "cid,table,geom", [("cameras", "camera", "geom"), ("incidents", "incident", "location")]
)
def test_point_tiles_hold_the_points_within_the_buffered_tile(world, cid, table, geom):
    """Every point within the tile and its buffer, and none beyond (give or take the half a
    tile unit that quantisation moves a point on the buffer's edge)."""
    lon, lat = point_in_grid(world, 3)
    live = "deleted_at IS NULL AND " if table == "incident" else ""

    def ids(zxy: tuple[int, int, int], margin: float) -> set[int]:
        with world.engine.connect() as conn:
            sql = f"SELECT id FROM {table} WHERE {live}" + in_tile_sql(geom, zxy, margin)
            return set(conn.execute(text(sql)).scalars())

    for zoom in (13, 15):
        zxy = tile_of(lon, lat, zoom)
        response = get_tile(world, cid, zxy)
        got = {f["id"] for f in features(response, cid)} if response.status_code == 200 else set()
        assert ids(zxy, (BUFFER - 1) / EXTENT) <= got <= ids(zxy, (BUFFER + 1) / EXTENT)
        assert len(got) > 0 and all(isinstance(i, int) for i in got)


def test_incident_tiles_carry_iso_times_and_overdue(world: World):
    with world.engine.connect() as conn:
        lon, lat, incident_id, reported = conn.execute(
            text(
                "SELECT ST_X(location), ST_Y(location), id, reported_at FROM incident "
                "WHERE location IS NOT NULL AND deleted_at IS NULL ORDER BY id LIMIT 1"
            )
        ).one()
    found = features(get_tile(world, "incidents", tile_of(lon, lat, 15), role="dispatcher"),
                     "incidents")  # fmt: skip
    props = next(f["properties"] for f in found if f["id"] == incident_id)
    assert props["reported_at"] == reported.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert isinstance(props["overdue"], bool)


def test_tiles_below_the_minzoom_and_away_from_the_data_are_empty(world: World):
    lon, lat = point_in_grid(world, 0)
    below = get_tile(world, "cameras", tile_of(lon, lat, 12))
    assert below.status_code == 204 and below.content == b"" and below.headers["etag"]
    nowhere = get_tile(world, "grids", (10, 0, 0))  # the Arctic sea
    assert nowhere.status_code == 204
    assert get_tile(world, "counties", (0, 0, 0)).status_code == 200  # the world: the county


# --- addresses, roles, caching ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path,field",
    [
        ("25/0/0", "z"),
        ("3/8/0", "x"),
        ("3/0/8", "y"),
        ("3/-1/0", "x"),
        ("3/0/-1", "y"),
        ("a/0/0", "z"),
        ("3/0/1.5", "y"),
    ],
)
def test_a_bad_tile_address_is_a_400_problem(world: World, path: str, field: str):
    response = world.client.get(f"/collections/grids/tiles/WebMercatorQuad/{path}")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"].endswith(field)


def test_tiles_are_gated_like_items(world: World):
    zxy = tile_of(*point_in_grid(world, 0), 14)
    anonymous = get_tile(world, "cameras", zxy, role="anonymous")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert get_tile(world, "cameras", zxy, role="dispatcher").status_code == 403
    assert get_tile(world, "cameras", zxy, role="planner").status_code == 200
    assert get_tile(world, "incidents", zxy, role="viewer").status_code == 403
    assert get_tile(world, "coverage_h3", zxy, role="anonymous").status_code == 401
    assert get_tile(world, "grids", zxy, role="anonymous").status_code in (200, 204)
    unknown = get_tile(world, "nothing", zxy)
    assert unknown.status_code == 404 and "grids" in unknown.json()["detail"]
    for cid in ("gaps", "camera_fov"):
        tilejson = world.client.get(f"/collections/{cid}/tiles/WebMercatorQuad")
        assert tilejson.status_code == 401


def test_etag_and_304(world: World):
    zxy = tile_of(*point_in_grid(world, 0), 12)
    first = get_tile(world, "grids", zxy, role="anonymous")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=60"
    assert "Authorization" in first.headers["vary"]
    again = get_tile(world, "grids", zxy, role="anonymous")
    assert again.headers["etag"] == etag and again.content == first.content
    cached = world.client.get(
        f"/collections/grids/tiles/WebMercatorQuad/{zxy[0]}/{zxy[1]}/{zxy[2]}",
        headers={"If-None-Match": etag},
    )
    assert cached.status_code == 304 and cached.content == b""
    keyed = get_tile(world, "grids", zxy, role="viewer")
    assert keyed.headers["cache-control"] == "private, no-cache"
    assert keyed.headers["etag"] != etag  # a viewer's tile holds more


def test_the_cache_serves_repeats_and_follows_api_writes(world: World):
    with world.engine.connect() as conn:
        grid_id, code, lon, lat = conn.execute(
            text(
                "SELECT g.id, g.code, ST_X(ST_PointOnSurface(g.geom)), "
                "ST_Y(ST_PointOnSurface(g.geom)) FROM grid g WHERE g.valid_to IS NULL "
                "ORDER BY g.code DESC LIMIT 1"
            )
        ).one()
    zxy = tile_of(lon, lat, 14)
    cache = world.client.app.state.tiles.cache
    before = get_tile(world, "grids", zxy, role="anonymous")
    hits = cache.hits
    assert get_tile(world, "grids", zxy, role="anonymous").content == before.content
    assert cache.hits == hits + 1
    assert code in {f["properties"]["code"] for f in features(before, "grids")}
    retired = world.client.delete(f"/v1/grids/{code}", headers=world.headers["admin"])
    assert retired.status_code == 204
    try:
        after = get_tile(world, "grids", zxy, role="anonymous")
        assert after.headers["etag"] != before.headers["etag"]
        assert code not in {f["properties"]["code"] for f in features(after, "grids")}
        stale = world.client.get(
            f"/collections/grids/tiles/WebMercatorQuad/{zxy[0]}/{zxy[1]}/{zxy[2]}",
            headers={"If-None-Match": before.headers["etag"]},
        )
        assert stale.status_code == 200
    finally:
        with world.engine.begin() as conn:
            conn.execute(text("UPDATE grid SET valid_to = NULL WHERE id = :id"), {"id": grid_id})


def test_the_cache_follows_writes_made_behind_its_back(world: World):
    """A write by another process (plain SQL here) shows once PostgreSQL's statistics
    counters have it: within about a second."""
    lon, lat = point_in_grid(world, 5)
    zxy = tile_of(lon, lat, 14)
    with world.engine.connect() as conn:
        code, population = conn.execute(
            text(
                "SELECT code, population FROM grid WHERE valid_to IS NULL AND "
                f"{in_tile_sql('geom', zxy)} ORDER BY code LIMIT 1"
            )
        ).one()

    def population_in_tile() -> int:
        found = features(get_tile(world, "grids", zxy, role="anonymous"), "grids")
        return next(f["properties"]["population"] for f in found if f["properties"]["code"] == code)

    assert population_in_tile() == population
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE grid SET population = population + 1 WHERE code = :c AND valid_to IS NULL"
            ),
            {"c": code},
        )
    try:
        deadline = time.monotonic() + 10
        while population_in_tile() != population + 1:
            assert time.monotonic() < deadline, "the tile never showed the write"
            time.sleep(0.2)
    finally:
        with world.engine.begin() as conn:
            conn.execute(
                text("UPDATE grid SET population = :p WHERE code = :c AND valid_to IS NULL"),
                {"p": population, "c": code},
            )


def test_the_tile_cache_is_bounded_by_bytes():
    cache = TileCache(ttl_s=60, max_bytes=250)
    for i in range(5):
        cache.put(i, ("m",), Tile(b"x" * 100, str(i)))
    assert cache.bytes <= 250 and len(cache._entries) == 2
    assert cache.get(4, ("m",)).etag == "4" and cache.get(0, ("m",)) is None
    assert cache.get(4, ("other",)) is None  # another marker: the data changed
    cache.put(4, ("m",), Tile(b"y" * 10, "4b"))
    assert cache.bytes == 110


# --- TileJSON -------------------------------------------------------------------------------


def test_tilejson_describes_the_tiles(world: World):
    body = world.client.get(
        "/collections/grids/tiles/WebMercatorQuad",
        params={"level": "observe"},
        headers=world.headers["viewer"],
    ).json()
    assert body["tilejson"] == "3.0.0"
    assert body["tiles"][0].endswith(
        "/collections/grids/tiles/WebMercatorQuad/{z}/{x}/{y}?level=observe"
    )
    assert body["minzoom"] == TILED["grids"].minzoom and body["maxzoom"] >= 14
    west, south, east, north = body["bounds"]
    with world.engine.connect() as conn:
        extent = conn.execute(
            text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                "(SELECT ST_Extent(geom) AS e FROM grid WHERE valid_to IS NULL) q"
            )
        ).one()
    assert [west, south, east, north] == pytest.approx(list(extent), abs=1e-6)
    (layer,) = body["vector_layers"]
    assert layer["id"] == "grids"
    assert list(layer["fields"]) == [*GRID_FIELDS, "worker_name", "public_ratio", "ratio",
                                     "camera_count"]  # fmt: skip
    public = world.client.get("/collections/grids/tiles/WebMercatorQuad").json()
    assert list(public["vector_layers"][0]["fields"]) == GRID_FIELDS
    assert public["tiles"][0].endswith("?level=detect")
    counties = world.client.get("/collections/counties/tiles/WebMercatorQuad").json()
    assert "?" not in counties["tiles"][0] and counties["minzoom"] == 0


@pytest.mark.parametrize("cid", list(COLLECTIONS))
def test_each_collection_links_to_its_tilejson(world: World, cid: str):
    body = world.client.get(f"/collections/{cid}", headers=world.headers["admin"]).json()
    links = {link["rel"]: link for link in body["links"]}
    tiles = links["http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"]
    assert tiles["href"].endswith(f"/collections/{cid}/tiles/WebMercatorQuad")
    doc = world.client.get(tiles["href"], headers=world.headers["admin"])
    assert doc.status_code == 200 and doc.json()["vector_layers"][0]["id"] == cid


def test_tile_bounds_match_postgis(world: World):
    with world.engine.connect() as conn:
        for zxy in ((0, 0, 0), (8, 206, 107), (14, 13186, 6848)):
            expected = conn.execute(
                text(
                    "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                    "ST_Transform(ST_TileEnvelope(:z, :x, :y), 4326) AS e) q"
                ),
                dict(zip("zxy", zxy, strict=True)),
            ).one()
            got = tile_bounds(*zxy)
            if zxy[0] == 0:
                expected = (-180.0, -85.06, 180.0, 85.06)
            assert got == pytest.approx(tuple(expected), abs=1e-7 if zxy[0] else 0.01)
