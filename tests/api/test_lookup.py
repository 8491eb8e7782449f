"""GET /v1/lookup and POST /v1/lookup/batch on the small demo world."""

import gc
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from api.app import create_app
from api.auth import create_api_key
from api.db import libpq_url, make_engine
from api.services.addresses import AddressBook
from api.services.grids import retire_grid
from api.services.lookup import GridLocator, load_snapshot
from api.settings import Settings
from geo.crs import convert


@pytest.fixture(scope="module")
def demo(small_demo_url):
    """(client, engine, keys) for an app on the small demo world."""
    settings = Settings(database_url=small_demo_url)
    engine = make_engine(small_demo_url, settings)
    with engine.begin() as conn:
        keys = {
            role: create_api_key(conn, role, f"lookup {role}")[1]
            for role in ("viewer", "dispatcher")
        }
    with TestClient(create_app(settings, engine)) as client:
        yield client, engine, {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
    engine.dispose()


def grids(engine, where="true"):
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT code, village_code, ST_AsBinary(geom) AS wkb FROM grid "
                f"WHERE valid_to IS NULL AND {where} ORDER BY code"
            )
        ).all()
    return [(r.code, r.village_code, shapely.from_wkb(r.wkb)) for r in rows]


def test_a_point_resolves_to_its_grid_and_whole_chain(demo):
    client, engine, headers = demo
    code, village, polygon = grids(engine)[10]
    point = polygon.representative_point()
    response = client.get(
        "/v1/lookup", params={"lon": point.x, "lat": point.y}, headers=headers["dispatcher"]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["grid"]["code"] == code
    assert body["grid"]["worker_name"] and body["grid"]["worker_phone"].startswith("199")
    assert body["village"]["code"] == village
    assert body["township"]["code"] == village[:9]
    assert body["county"]["code"] == village[:6] and body["county"]["name"]
    assert body["outside"] is False and body["ambiguous"] is False
    assert body["distance_to_boundary_m"] > 0
    assert [c["code"] for c in body["candidates"]] == [code]


def test_a_point_on_a_shared_edge_is_ambiguous_and_the_smaller_code_wins(demo):
    client, engine, headers = demo
    with engine.connect() as conn:
        row = conn.execute(
            text("""
            SELECT a.code AS a, b.code AS b,
                   ST_AsBinary(ST_PointN(
                       ST_GeometryN(ST_LineMerge(ST_Intersection(a.geom, b.geom)), 1), 2)) AS p
            FROM grid a JOIN grid b ON a.code < b.code AND ST_Touches(a.geom, b.geom)
            WHERE ST_Dimension(ST_Intersection(a.geom, b.geom)) = 1 LIMIT 1""")
        ).one()
    point = shapely.from_wkb(row.p)
    body = client.get(
        "/v1/lookup", params={"lon": point.x, "lat": point.y}, headers=headers["dispatcher"]
    ).json()
    candidates = [c["code"] for c in body["candidates"]]
    assert body["ambiguous"] is True
    assert set(candidates) >= {row.a, row.b}
    assert body["grid"]["code"] == min(candidates) == candidates[0]


def test_accuracy_makes_nearby_grids_candidates(demo):
    client, engine, headers = demo
    _, _, polygon = grids(engine)[20]
    point = polygon.representative_point()
    exact = client.get(
        "/v1/lookup", params={"lon": point.x, "lat": point.y}, headers=headers["dispatcher"]
    ).json()
    fuzzy = client.get(
        "/v1/lookup",
        params={"lon": point.x, "lat": point.y, "accuracy_m": exact["distance_to_boundary_m"] + 5},
        headers=headers["dispatcher"],
    ).json()
    assert fuzzy["ambiguous"] is True and len(fuzzy["candidates"]) >= 2
    assert fuzzy["grid"]["code"] == exact["grid"]["code"]
    assert all(c["distance_m"] <= exact["distance_to_boundary_m"] + 5 for c in fuzzy["candidates"])


def test_gcj02_input_is_converted_before_lookup(demo):
    client, engine, headers = demo
    code, _, polygon = grids(engine)[5]
    point = polygon.representative_point()
    glon, glat = convert(point.x, point.y, "wgs84", "gcj02")
    body = client.get(
        "/v1/lookup",
        params={"lon": glon, "lat": glat, "coord_sys": "gcj02"},
        headers=headers["dispatcher"],
    ).json()
    assert body["grid"]["code"] == code
    assert body["point"] == pytest.approx([point.x, point.y], abs=1e-6)


def test_outside_every_grid_answers_the_nearest_or_404(demo):
    client, engine, headers = demo
    with engine.connect() as conn:
        county = shapely.from_wkb(
            conn.execute(
                text("SELECT ST_AsBinary(geom) FROM admin_area WHERE level = 'county'")
            ).scalar_one()
        )
    # a point ~300 m outside the county, next to one of its boundary vertices
    outside = next(
        shapely.Point(x + dx, y + dy)
        for x, y in shapely.get_coordinates(county)[::50]
        for dx, dy in ((0.003, 0), (-0.003, 0), (0, 0.003), (0, -0.003))
        if not county.covers(shapely.Point(x + dx, y + dy))
    )
    near = client.get(
        "/v1/lookup", params={"lon": outside.x, "lat": outside.y}, headers=headers["dispatcher"]
    )
    body = near.json()
    assert near.status_code == 200, body
    assert body["outside"] is True and 0 < body["distance_m"] < 400
    assert body["grid"]["code"] and body["distance_to_boundary_m"] is None
    far = client.get(
        "/v1/lookup", params={"lon": 116.39, "lat": 39.9}, headers=headers["dispatcher"]
    )
    assert far.status_code == 404
    assert far.headers["content-type"] == "application/problem+json"
    assert "no grid within 5000 m" in far.json()["detail"]


def test_swapped_lon_lat_is_called_out(demo):
    client, engine, headers = demo
    code, _, polygon = grids(engine)[0]
    point = polygon.representative_point()
    response = client.get(
        "/v1/lookup", params={"lon": point.y, "lat": point.x}, headers=headers["dispatcher"]
    )
    assert response.status_code == 400
    problem = response.json()
    assert problem["errors"][0]["field"] == "lat"
    assert f"with lon and lat swapped it lies in grid {code}" in problem["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lon": "abc", "lat": 28.3}, "lon"),
        ({"lon": 109.7}, "lat"),
        ({"lon": 109.7, "lat": 28.3, "coord_sys": "mars"}, "coord_sys"),
        ({"lon": 109.7, "lat": 28.3, "accuracy_m": -1}, "accuracy_m"),
        ({"lon": "nan", "lat": 28.3}, "lon"),
        ({"lon": 181, "lat": 28.3}, "lon"),
    ],
)
def test_bad_parameters_are_400_problems_naming_the_field(demo, params, field):
    client, _, headers = demo
    response = client.get("/v1/lookup", params=params, headers=headers["dispatcher"])
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_lookup_needs_a_dispatcher_key(demo):
    client, _, headers = demo
    params = {"lon": 109.7, "lat": 28.3}
    assert client.get("/v1/lookup", params=params).status_code == 401
    assert client.get("/v1/lookup", params=params, headers=headers["viewer"]).status_code == 403


def test_batch_accepts_pairs_objects_and_feature_collections(demo):
    client, engine, headers = demo
    sample = grids(engine)[:30]
    points = [p.representative_point() for _, _, p in sample]
    expected = [code for code, _, _ in sample]
    pairs = [[p.x, p.y] for p in points]
    objects = [{"lon": p.x, "lat": p.y, "id": f"call-{i}"} for i, p in enumerate(points)]
    features = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": i,
                "properties": {},
                "geometry": {"type": "Point", "coordinates": [p.x, p.y]},
            }
            for i, p in enumerate(points)
        ],
    }
    for body, ids in (
        (pairs, None),
        (objects, [o["id"] for o in objects]),
        (features, list(range(len(points)))),
    ):
        response = client.post("/v1/lookup/batch", json=body, headers=headers["dispatcher"])
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["grid"]["code"] for r in results] == expected
        assert [r.get("id") for r in results] == (ids or [None] * len(points))


def test_batch_rejects_bad_items_with_their_row(demo):
    client, _, headers = demo
    cases = [
        ([[109.7, 28.3], [109.7], "x"], 422, 1),
        ([[109.7, 28.3], [200.0, 28.3]], 422, 1),
        ({"type": "FeatureCollection", "features": [{"geometry": {"type": "LineString"}}]}, 422, 0),
        ({"points": []}, 422, None),
    ]
    for body, status, row in cases:
        response = client.post("/v1/lookup/batch", json=body, headers=headers["dispatcher"])
        assert response.status_code == status, body
        if row is not None:
            assert response.json()["errors"][0]["row"] == row
    response = client.post(
        "/v1/lookup/batch",
        content=b"{not json",
        headers=headers["dispatcher"] | {"content-type": "application/json"},
    )
    assert response.status_code == 400
    too_many = [[109.7, 28.3]] * 100_001
    response = client.post("/v1/lookup/batch", json=too_many, headers=headers["dispatcher"])
    assert response.status_code == 413


def test_lookup_agrees_with_postgis_on_random_points(demo):
    """Independent check: PostGIS ST_Covers with the same smallest-code tie-break."""
    client, engine, headers = demo
    with engine.connect() as conn:
        west, south, east, north = conn.execute(
            text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                "(SELECT ST_Extent(geom) AS e FROM grid) x"
            )
        ).one()
    rng = np.random.default_rng(3)
    lon = rng.uniform(west, east, 5000)
    lat = rng.uniform(south, north, 5000)
    response = client.post(
        "/v1/lookup/batch", json=np.c_[lon, lat].tolist(), headers=headers["dispatcher"]
    )
    ours = [None if r["outside"] else r["grid"]["code"] for r in response.json()["results"]]
    with engine.connect() as conn:
        theirs = (
            conn.execute(
                text("""
            SELECT (SELECT min(g.code) FROM grid g WHERE g.valid_to IS NULL
                    AND ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)))
            FROM unnest(CAST(:lon AS float8[]), CAST(:lat AS float8[]))
                 WITH ORDINALITY AS p(lon, lat, n) ORDER BY n"""),
                {"lon": lon.tolist(), "lat": lat.tolist()},
            )
            .scalars()
            .all()
        )
    assert ours == theirs
    assert sum(code is not None for code in ours) > 1000


def _restore(engine, code):
    """Reopen the last version of `code` (by hand, as an operator in psql would)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE grid SET valid_to = NULL "
                "WHERE id = (SELECT max(id) FROM grid WHERE code = :c)"
            ),
            {"c": code},
        )


def _answered_code(client, params, headers):
    body = client.get("/v1/lookup", params=params, headers=headers).json()
    return None if body.get("outside") else body.get("grid", {}).get("code")


def _seconds_until(condition, limit_s: float) -> float:
    """Seconds until `condition()` holds, polled every 20 ms; fails after `limit_s`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit_s, f"not so within {limit_s} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_grid_edits_reach_the_index_within_a_second_and_history_stays(demo):
    client, engine, headers = demo
    code, _, polygon = grids(engine)[40]
    point = polygon.representative_point()
    params = {"lon": point.x, "lat": point.y}
    assert _answered_code(client, params, headers["dispatcher"]) == code
    before = datetime.now(UTC)
    # Written by another process (not through this app), as `gridcover import` does: the
    # writer's NOTIFY wakes the index, no poll interval to wait out.
    with engine.begin() as conn:
        assert retire_grid(conn, code) is not None
    try:
        _seconds_until(lambda: _answered_code(client, params, headers["dispatcher"]) != code, 1.0)
        past = client.get(
            "/v1/lookup", params=params | {"at": before.isoformat()}, headers=headers["dispatcher"]
        ).json()
        assert past["grid"]["code"] == code
    finally:
        _restore(engine, code)
    # A change made by hand in SQL sends no notice: the fingerprint poll catches it.
    _seconds_until(lambda: _answered_code(client, params, headers["dispatcher"]) == code, 5.0)


def test_an_address_resolves_to_its_grid_with_precision_and_confidence(demo):
    client, engine, headers = demo
    with engine.connect() as conn:
        entry = conn.execute(
            text(
                "SELECT a.full_text, a.village_code, a.components ->> 'township' AS township, "
                "g.code AS grid FROM address a JOIN grid g ON g.valid_to IS NULL "
                "AND ST_Covers(g.geom, a.geom) WHERE a.precision = 'house_number' "
                "ORDER BY a.id LIMIT 1"
            )
        ).one()
    body = client.get(
        "/v1/lookup", params={"address": entry.full_text}, headers=headers["dispatcher"]
    ).json()
    assert body["precision"] == "house_number" and body["confidence"] > 0.5
    assert body["village"]["code"] == entry.village_code
    assert body["grid"]["code"] == entry.grid
    assert body["address"]["matched_text"] == entry.full_text
    # the way people say it: no province or prefecture, full-width digits
    short = entry.full_text.split("自治州")[-1].translate(
        str.maketrans("0123456789", "０１２３４５６７８９")
    )
    again = client.get(
        "/v1/lookup", params={"address": short}, headers=headers["dispatcher"]
    ).json()
    assert again["village"]["code"] == entry.village_code


def test_an_address_at_township_precision_and_an_unknown_one(demo):
    client, engine, headers = demo
    with engine.connect() as conn:
        county, township, code = conn.execute(
            text(
                "SELECT c.name, t.name, t.code FROM admin_area t "
                "JOIN admin_area c ON c.code = t.parent_code WHERE t.level = 'township' "
                "ORDER BY t.code LIMIT 1"
            )
        ).one()
    body = client.get(
        "/v1/lookup", params={"address": county + township}, headers=headers["dispatcher"]
    ).json()
    assert body["precision"] == "township" and body["township"]["code"] == code
    unknown = client.get(
        "/v1/lookup",
        params={"address": "北京市海淀区中关村大街27号"},
        headers=headers["dispatcher"],
    )
    assert unknown.status_code == 404
    both = client.get(
        "/v1/lookup",
        params={"address": "吉首市", "lon": 109.7, "lat": 28.3},
        headers=headers["dispatcher"],
    )
    assert both.status_code == 400 and both.json()["errors"][0]["field"] == "address"
    neither = client.get("/v1/lookup", headers=headers["dispatcher"])
    assert neither.status_code == 400


def test_cli_lookup_of_a_point_an_address_and_a_csv_file(demo, small_demo_url, tmp_path):
    import csv
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, engine, _ = demo
    gridcover = str(Path(sys.executable).with_name("gridcover"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env["GRIDCOVER_DATABASE_URL"] = small_demo_url
    sample = grids(engine)[:50]
    point = sample[3][2].representative_point()

    def run(*args):
        result = subprocess.run(
            [gridcover, "lookup", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert (
        json.loads(run("--lon", str(point.x), "--lat", str(point.y)))["grid"]["code"]
        == (sample[3][0])
    )
    with engine.connect() as conn:
        full_text, village = conn.execute(
            text("SELECT full_text, village_code FROM address ORDER BY id LIMIT 1")
        ).one()
    assert json.loads(run("--address", full_text))["village"]["code"] == village

    source, target = tmp_path / "calls.csv", tmp_path / "answers.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["call_id", "x", "y"])
        for i, (_, _, polygon) in enumerate(sample):
            p = polygon.representative_point()
            writer.writerow([f"c{i}", p.x, p.y])
        writer.writerow(["bad", "not a number", ""])
    run("--file", str(source), "-o", str(target), "--lon-column", "x", "--lat-column", "y")
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["grid_code"] for r in rows[:-1]] == [code for code, _, _ in sample]
    assert rows[0]["call_id"] == "c0" and rows[0]["village_code"] == sample[0][1]
    assert rows[-1]["grid_code"] == ""


def test_lookups_on_a_database_without_grids_answer_instead_of_failing(engine, settings):
    with engine.begin() as conn:
        key = create_api_key(conn, "dispatcher", "empty world")[1]
    with TestClient(create_app(settings, engine)) as client:
        auth = {"Authorization": f"Bearer {key}"}
        batch = client.post("/v1/lookup/batch", json=[[109.7, 28.27]], headers=auth)
        assert batch.status_code == 200
        assert batch.json()["results"][0]["grid"] is None
        single = client.get("/v1/lookup", params={"lon": 109.7, "lat": 28.27}, headers=auth)
        assert single.status_code == 404
        far = client.post(
            "/v1/lookup/batch", params={"accuracy_m": 5000}, json=[[109.7, 28.27]], headers=auth
        )
        assert far.status_code == 400


def test_a_patched_index_answers_like_a_fresh_one(demo):
    _, engine, _ = demo
    before = load_snapshot(engine)
    retired, reworked = before.column("code")[100], before.column("code")[200]
    with engine.begin() as conn:
        retire_grid(conn, retired)
        # A new version of another grid with a new worker (what a PATCH writes).
        conn.execute(
            text(
                "UPDATE grid SET valid_to = clock_timestamp() WHERE code = :c AND valid_to IS NULL"
            ),
            {"c": reworked},
        )
        conn.execute(
            text(
                "INSERT INTO grid (code, name, village_code, kind, households, population, "
                "worker_name, worker_phone, geom, version, valid_from) "
                "SELECT code, name, village_code, kind, households, population, '新网格员', "
                "worker_phone, geom, version + 1, clock_timestamp() FROM grid "
                "WHERE id = (SELECT max(id) FROM grid WHERE code = :c)"
            ),
            {"c": reworked},
        )
    try:
        patched, fresh = load_snapshot(engine, previous=before), load_snapshot(engine)
        rng = np.random.default_rng(5)
        west, south, east, north = shapely.total_bounds(shapely.from_wkb(before.wkb))
        lon, lat = rng.uniform(west, east, 20_000), rng.uniform(south, north, 20_000)

        def codes(snapshot):
            found = snapshot.index.locate(lon, lat)
            return np.where(found >= 0, snapshot.column("code")[found], None)

        assert (codes(patched) == codes(fresh)).all()
        assert retired not in set(patched.column("code"))
        assert len(patched.grids) == len(fresh.grids) == len(before.grids) - 1
        columns = ["code", "id", "version", "name", "worker_name", "village_name", "county_code"]
        assert patched.grids[columns].astype(str).equals(fresh.grids[columns].astype(str))
        assert (patched.wkb == fresh.wkb).all()
        assert "新网格员" in set(patched.column("worker_name"))
    finally:
        _restore(engine, retired)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM grid WHERE code = :c AND version > 1"), {"c": reworked})
        _restore(engine, reworked)


def test_built_indexes_are_out_of_the_collectors_sight(demo):
    """A process's first grid index and address matcher live as long as the process: a full
    garbage collection must not walk them (on the full demo that walk held every request
    ~100 ms). Rebuilds after edits are not frozen (see `freeze_long_lived`)."""
    _, engine, _ = demo
    index, matcher = GridLocator(engine).current(), AddressBook(engine).matcher()
    tracked = {id(o) for o in gc.get_objects()}
    assert id(index) not in tracked and id(matcher) not in tracked


def test_a_loaded_index_answers_without_converting_geometries(demo, monkeypatch):
    """The EPSG:4546 copies that distances and candidates need are made when the index is
    loaded (in the background), not by the first lookup, which otherwise held the event
    loop ~0.3 s on the full demo; an incremental reload keeps them too."""
    _, engine, _ = demo
    snapshot = load_snapshot(engine)
    reloaded = load_snapshot(engine, previous=snapshot)

    def no_conversion(*args, **kwargs):
        raise AssertionError("a lookup converted grid geometries")

    monkeypatch.setattr("geo.assign.convert_geometry", no_conversion)
    lon, lat = shapely.get_coordinates(shapely.point_on_surface(shapely.from_wkb(snapshot.wkb[0])))[
        0
    ]
    for index in (snapshot.index, reloaded.index):
        place = index.place(lon, lat, 50.0)
        assert place.index == 0 and place.distance_to_boundary_m > 0


def test_a_started_server_builds_its_address_matcher_before_the_first_address(
    small_demo_url, monkeypatch
):
    """The matcher is built in the background at start: built by the first address lookup
    instead, it held that server process for seconds while requests queued."""
    settings = Settings(database_url=small_demo_url)
    engine = make_engine(small_demo_url, settings)
    with engine.begin() as conn:
        key = create_api_key(conn, "dispatcher", "matcher at start")[1]
        address = conn.execute(text("SELECT full_text FROM address LIMIT 1")).scalar_one()
    try:
        with TestClient(create_app(settings, engine)) as client:
            book = client.app.state.address_book
            deadline = time.monotonic() + 60
            while book._matcher is None and time.monotonic() < deadline:
                time.sleep(0.05)

            def no_build(*args, **kwargs):
                raise AssertionError("the address matcher was built by a request")

            monkeypatch.setattr("api.services.addresses.load_address_matcher", no_build)
            response = client.get(
                "/v1/lookup",
                params={"address": address},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200, response.text
    finally:
        engine.dispose()


NEW_PLACE = "测试县回声镇试验村七组"


@pytest.fixture
def small_engine(small_demo_url: str) -> Iterator[Engine]:
    # A lookup that waits for the locked table fails after 2 s instead of hanging.
    engine = create_engine(small_demo_url, connect_args={"options": "-c lock_timeout=2000"})
    yield engine
    engine.dispose()


def _wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_an_address_lookup_does_not_wait_for_the_gazetteer_check(small_engine, small_demo_url):
    """While the gazetteer cannot be read (here: locked by another session), a lookup due
    for the change check answers at once with the matcher at hand; once it can be read,
    an address added meanwhile is found. Checked by the lookup itself, the check cost
    one request in every 5 s of each server process ~10 ms on the full demo, and a slow
    database held every address lookup behind it (here: until the lock went)."""
    book = AddressBook(small_engine, check_interval_s=0.0)
    matcher = book.matcher()
    with small_engine.connect() as conn:
        lon, lat = conn.execute(text("SELECT ST_X(geom), ST_Y(geom) FROM address LIMIT 1")).one()
    blocker = psycopg.connect(libpq_url(small_demo_url))
    try:
        blocker.execute("LOCK TABLE address IN ACCESS EXCLUSIVE MODE")
        blocker.execute(
            "INSERT INTO address (full_text, components, precision, geom) "
            "VALUES (%s, '{}', 'house_number', ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            (NEW_PLACE, lon, lat),
        )
        started = time.perf_counter()
        for _ in range(20):
            assert book.matcher() is matcher
        assert time.perf_counter() - started < 0.5
        blocker.commit()
        assert _wait_until(lambda: book.matcher() is not matcher)  # rebuilt with the new entry
    finally:
        blocker.rollback()
        blocker.execute("DELETE FROM address WHERE full_text = %s", (NEW_PLACE,))
        blocker.commit()
        blocker.close()
