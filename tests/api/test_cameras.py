"""/v1/cameras: the registry, its validation, incremental coverage, and the evidence lookup."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from api.auth import create_api_key
from api.db import create_scratch_database, drop_scratch_database, make_engine
from api.migrate import upgrade
from api.services.camera_sights import CameraSights
from api.services.cameras import EDITABLE as CAMERA_EDITABLE
from api.services.cameras import FOV_FIELDS, camera_frame, check_camera, validate_cameras
from api.services.coverage import CAMERA_COLUMNS, CAMERA_WRITE_LOCK_KEY
from api.services.demo import load_demo
from api.services.validation import RowsRejected
from api.settings import Settings
from geo.codes import make_gb28181
from geo.crs import convert, from_metric, to_metric


@pytest.fixture(scope="module")
def world(server_url):
    """(client, engine, headers by role) on a small demo world of this module's own."""
    url = create_scratch_database(server_url, prefix="gridcover_cameras")
    upgrade(url)
    loader = create_engine(url)
    load_demo(loader, "small", seed=11)
    loader.dispose()
    settings = Settings(database_url=url)
    engine = make_engine(url, settings)
    with engine.begin() as conn:
        keys = {
            role: create_api_key(conn, role, f"cameras {role}")[1]
            for role in ("viewer", "dispatcher", "planner", "admin")
        }
    headers = {"anonymous": {}} | {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
    with TestClient(create_app(settings, engine)) as client:
        yield client, engine, headers
    engine.dispose()
    drop_scratch_database(server_url, url)


def quiet_grid(engine) -> tuple[str, shapely.Geometry, str]:
    """A grid with no camera near its centre: (code, centre as WGS84 point, county code)."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT g.code, ST_AsText(ST_PointOnSurface(g.geom)) AS centre, "
                "left(g.code, 6) AS county FROM grid g WHERE g.valid_to IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM camera c "
                "  WHERE ST_DWithin(c.geom_m, ST_PointOnSurface(g.geom_m), 400)) "
                "AND ST_Area(g.geom_m) > 200000 ORDER BY g.code LIMIT 1"
            )
        ).one()
    return row.code, shapely.from_wkt(row.centre), row.county


_serial = iter(range(900_000, 999_999))


def camera_body(point, county: str, **properties) -> dict:
    gb_id = make_gb28181(county, 132, next(_serial))
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [point.x, point.y]},
        "properties": {"gb_id": gb_id, "name": "测试枪机", "kind": "bullet", "azimuth_deg": 90.0}
        | properties,
    }


def coverage_of(engine, code: str, level: str = "detect") -> dict:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT c.ratio, c.covered_m2, c.camera_count FROM coverage c "
                "JOIN grid g ON g.id = c.grid_id WHERE g.code = :code AND g.valid_to IS NULL "
                "AND c.level = :level"
            ),
            {"code": code, "level": level},
        ).one()
    return dict(row._mapping)


def h3_covered_m2(engine, point, level: str = "detect") -> float:
    """Covered area of the H3 cells within 300 m of a WGS84 point."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT coalesce(sum(covered_m2), 0) FROM coverage_h3 WHERE level = :level "
                "AND ST_DWithin(geom::geography, ST_SetSRID(ST_Point(:lon, :lat), 4326)"
                "::geography, 300)"
            ),
            {"level": level, "lon": point.x, "lat": point.y},
        ).scalar_one()


def offset_point(point, east_m: float, north_m: float):
    x, y = to_metric(np.array([point.x]), np.array([point.y]))
    lon, lat = from_metric(x + east_m, y + north_m)
    return shapely.Point(float(lon[0]), float(lat[0]))


def test_a_new_camera_covers_its_grid_at_once(world):
    client, engine, headers = world
    code, centre, county = quiet_grid(engine)
    before = coverage_of(engine, code)
    h3_before = h3_covered_m2(engine, centre)
    response = client.post(
        "/v1/cameras", json=camera_body(centre, county), headers=headers["admin"]
    )
    assert response.status_code == 201, response.text
    camera = response.json()
    assert response.headers["etag"] == f'W/"camera-{camera["id"]}-v1"'
    assert camera["properties"]["hfov_deg"] == 90.0
    after = coverage_of(engine, code)
    assert after["camera_count"] == before["camera_count"] + 1
    # a 1920 px, 90° bullet detects to 38.4 m: a quarter disc of ~1,158 m²
    assert after["covered_m2"] - before["covered_m2"] == pytest.approx(1158, rel=0.02)
    with engine.connect() as conn:
        levels = conn.execute(
            text("SELECT level, range_m FROM camera_fov WHERE camera_id = :id ORDER BY range_m"),
            {"id": camera["id"]},
        ).all()
    assert [lvl for lvl, _ in levels] == ["identify", "recognize", "observe", "detect"]
    assert levels[-1][1] == pytest.approx(1920 / (2 * 25 * 1.0), rel=1e-4)
    # the heat map cells around it gained the same area
    assert h3_covered_m2(engine, centre) - h3_before == pytest.approx(1158, rel=0.02)
    client.delete(f"/v1/cameras/{camera['id']}", headers=headers["admin"])
    assert coverage_of(engine, code) == pytest.approx(before)
    assert h3_covered_m2(engine, centre) == pytest.approx(h3_before, abs=1e-6)


def test_domes_default_to_a_full_disc(world):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    body = camera_body(centre, county, kind="dome")
    created = client.post("/v1/cameras", json=body, headers=headers["admin"]).json()
    try:
        assert created["properties"]["hfov_deg"] == 360.0
        with engine.connect() as conn:
            area = conn.execute(
                text(
                    "SELECT ST_Area(geom_m) FROM camera_fov WHERE camera_id = :id "
                    "AND level = 'detect'"
                ),
                {"id": created["id"]},
            ).scalar_one()
        # dome lens 90°: 38.4 m at detect, a full disc
        assert area == pytest.approx(np.pi * 38.4**2, rel=0.005)
    finally:
        client.delete(f"/v1/cameras/{created['id']}", headers=headers["admin"])


def test_moving_a_camera_updates_the_old_and_the_new_grid(world):
    client, engine, headers = world
    code, centre, county = quiet_grid(engine)
    created = client.post(
        "/v1/cameras", json=camera_body(centre, county), headers=headers["admin"]
    ).json()
    with engine.connect() as conn:
        other_code, other_centre = conn.execute(
            text(
                "SELECT code, ST_AsText(ST_PointOnSurface(geom)) FROM grid "
                "WHERE valid_to IS NULL AND code <> :code AND left(code, 6) = :county "
                "AND NOT EXISTS (SELECT 1 FROM camera c "
                "  WHERE ST_DWithin(c.geom_m, ST_PointOnSurface(grid.geom_m), 400)) "
                "ORDER BY code DESC LIMIT 1"
            ),
            {"code": code, "county": county},
        ).one()
    old_before, new_before = coverage_of(engine, code), coverage_of(engine, other_code)
    target = shapely.from_wkt(other_centre)
    moved = client.patch(
        f"/v1/cameras/{created['id']}",
        json={"geometry": {"type": "Point", "coordinates": [target.x, target.y]}},
        headers=headers["admin"] | {"If-Match": f'W/"camera-{created["id"]}-v1"'},
    )
    try:
        assert moved.status_code == 200, moved.text
        assert moved.headers["etag"].endswith('-v2"')
        assert coverage_of(engine, code)["camera_count"] == old_before["camera_count"] - 1
        assert coverage_of(engine, other_code)["camera_count"] == new_before["camera_count"] + 1
        assert coverage_of(engine, other_code)["covered_m2"] > new_before["covered_m2"]
    finally:
        client.delete(f"/v1/cameras/{created['id']}", headers=headers["admin"])


def test_an_offline_camera_covers_nothing(world):
    client, engine, headers = world
    code, centre, county = quiet_grid(engine)
    before = coverage_of(engine, code)
    created = client.post(
        "/v1/cameras", json=camera_body(centre, county), headers=headers["admin"]
    ).json()
    try:
        response = client.patch(
            f"/v1/cameras/{created['id']}",
            json={"properties": {"status": "offline"}},
            headers=headers["admin"],
        )
        assert response.status_code == 200
        assert coverage_of(engine, code) == pytest.approx(before)
        visible = client.get(
            "/v1/cameras/visible",
            params={"lon": centre.x, "lat": centre.y},
            headers=headers["dispatcher"],
        ).json()
        assert created["id"] not in [c["camera_id"] for c in visible["cameras"]]
    finally:
        client.delete(f"/v1/cameras/{created['id']}", headers=headers["admin"])


def stored_state(engine, camera_id: int, code: str) -> dict:
    """What an edit may rewrite: the camera's raw azimuth, its FOVs (version, shape) and
    when its grid's coverage rows were computed."""
    with engine.connect() as conn:
        azimuth = conn.execute(
            text("SELECT azimuth_deg FROM camera WHERE id = :id"), {"id": camera_id}
        ).scalar_one()
        fovs = conn.execute(
            text(
                "SELECT level, camera_version, ST_AsText(geom_m) FROM camera_fov "
                "WHERE camera_id = :id ORDER BY level"
            ),
            {"id": camera_id},
        ).all()
        computed = conn.execute(
            text(
                "SELECT array_agg(c.computed_at ORDER BY c.level) FROM coverage c "
                "JOIN grid g ON g.id = c.grid_id WHERE g.code = :code AND g.valid_to IS NULL"
            ),
            {"code": code},
        ).scalar_one()
        stale = conn.execute(
            text(
                "SELECT count(*) FROM camera_fov f JOIN camera c ON c.id = f.camera_id "
                "WHERE f.camera_version <> c.version"
            )
        ).scalar_one()
    return {
        "azimuth": azimuth,
        "versions": {level: version for level, version, _ in fovs},
        "shapes": {level: shape for level, _, shape in fovs},
        "computed": computed,
        "stale_fovs": stale,
    }


def test_the_fields_that_skip_a_recompute_are_none_the_fovs_read():
    """An edit recomputes coverage only when the camera moved or one of `FOV_FIELDS`
    changed: they must be every camera column the FOVs are built from."""
    built_from = set(CAMERA_COLUMNS) - {"id", "version", "x", "y"}  # x, y: the position
    assert set(FOV_FIELDS) == built_from


def test_a_rename_writes_no_coverage_but_a_turn_does(world):
    """A form sends back every field as it read it (rounded to 2 decimals) with the name
    changed: the stored azimuth keeps its precision, no coverage row is rewritten, and the
    FOVs stay, marked as current (a full recompute would rebuild none). Turning the camera
    then rewrites its FOVs and its grid's coverage."""
    client, engine, headers = world
    code, centre, county = quiet_grid(engine)
    created = client.post(
        "/v1/cameras",
        json=camera_body(centre, county, azimuth_deg=123.456),
        headers=headers["admin"],
    ).json()
    url = f"/v1/cameras/{created['id']}"
    try:
        before = stored_state(engine, created["id"], code)
        read = client.get(url, headers=headers["planner"]).json()["properties"]
        assert read["azimuth_deg"] == 123.46
        form = {name: read[name] for name in CAMERA_EDITABLE} | {"name": "北门枪机"}
        renamed = client.patch(url, json={"properties": form}, headers=headers["admin"])
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["properties"]["name"] == "北门枪机"
        assert renamed.json()["properties"]["version"] == 2
        after = stored_state(engine, created["id"], code)
        assert after["azimuth"] == before["azimuth"] != 123.46
        assert after["computed"] == before["computed"]
        assert after["shapes"] == before["shapes"]
        assert set(after["versions"].values()) == {2}
        assert after["stale_fovs"] == 0
        turned = client.patch(
            url, json={"properties": {"azimuth_deg": 300.0}}, headers=headers["admin"]
        )
        assert turned.status_code == 200, turned.text
        last = stored_state(engine, created["id"], code)
        assert all(a > b for a, b in zip(last["computed"], before["computed"], strict=True))
        assert all(last["shapes"][lvl] != before["shapes"][lvl] for lvl in before["shapes"])
        assert set(last["versions"].values()) == {3}
        assert last["stale_fovs"] == 0
    finally:
        client.delete(url, headers=headers["admin"])


def test_visible_lists_cameras_best_level_first(world):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    # Two bullets looking east at a point: one 3 m west of it (identify: 3.84 m), one
    # 30 m west (detect only: 38.4 m); a third 30 m east looks away from it.
    near = offset_point(centre, -3, 0)
    far = offset_point(centre, -30, 0)
    behind = offset_point(centre, 30, 0)
    ids = []
    for point in (far, near, behind):
        response = client.post(
            "/v1/cameras", json=camera_body(point, county), headers=headers["admin"]
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    try:
        body = client.get(
            "/v1/cameras/visible",
            params={"lon": centre.x, "lat": centre.y},
            headers=headers["dispatcher"],
        ).json()
        seen = [(c["camera_id"], c["level"]) for c in body["cameras"]]
        assert seen == [(ids[1], "identify"), (ids[0], "detect")]
        first = body["cameras"][0]
        assert first["distance_m"] == pytest.approx(3.0, abs=0.1)
        assert first["bearing_deg"] == pytest.approx(90.0, abs=1.5)
        assert len(first["gb_id"]) == 20
        # the same point given in GCJ-02 finds the same cameras
        lon, lat = convert(centre.x, centre.y, "wgs84", "gcj02")
        again = client.get(
            "/v1/cameras/visible",
            params={"lon": lon, "lat": lat, "coord_sys": "gcj02"},
            headers=headers["dispatcher"],
        ).json()
        assert [c["camera_id"] for c in again["cameras"]] == [ids[1], ids[0]]
    finally:
        for camera_id in ids:
            client.delete(f"/v1/cameras/{camera_id}", headers=headers["admin"])


def test_visible_follows_each_edit_at_once(world):
    """Answers come from memory; an edit made through the API shows in the very next one."""
    client, engine, headers = world
    # A copy that listens for no notice: only the edits' own marks can bring them in.
    unlistening = CameraSights(engine)
    unlistening.catch_up()
    listening, client.app.state.camera_sights = client.app.state.camera_sights, unlistening
    _, centre, county = quiet_grid(engine)
    created = client.post(
        "/v1/cameras",
        json=camera_body(offset_point(centre, -10, 0), county),
        headers=headers["admin"],
    ).json()
    url = f"/v1/cameras/{created['id']}"

    def seen() -> list[str]:
        body = client.get(
            "/v1/cameras/visible",
            params={"lon": centre.x, "lat": centre.y},
            headers=headers["dispatcher"],
        ).json()
        return [c["level"] for c in body["cameras"] if c["camera_id"] == created["id"]]

    def patch(properties: dict, **geometry) -> None:
        body = {"properties": properties} | geometry
        assert client.patch(url, json=body, headers=headers["admin"]).status_code == 200

    try:
        assert seen() == ["observe"]  # 10 m: observe reaches 15.4 m, recognize 7.7 m
        patch({"azimuth_deg": 270.0})
        assert seen() == []
        patch({"azimuth_deg": 90.0, "resolution_h_px": 3840})
        assert seen() == ["recognize"]
        west = offset_point(centre, -120, 0)
        patch({}, geometry={"type": "Point", "coordinates": [west.x, west.y]})
        assert seen() == []
        patch({"range_m": 500.0, "resolution_h_px": 100_000})
        assert seen() == ["identify"]
        client.delete(url, headers=headers["admin"])
        assert seen() == []
    finally:
        client.delete(url, headers=headers["admin"])
        client.app.state.camera_sights = listening


# A camera standing in county 433101 (吉首市) and variations of it, good and bad.
JISHOU = shapely.Point(109.7, 28.3)
GOOD = {
    "gb_id": make_gb28181("433101", 132, 1),
    "name": "枪机",
    "kind": "bullet",
    "height_m": 4.0,
    "azimuth_deg": 90.0,
    "hfov_deg": None,
    "resolution_h_px": 1920,
    "range_m": None,
    "status": "online",
    "owner": "public",
    "installed_at": None,
}


@pytest.mark.parametrize(
    ("change", "point"),
    [
        ({}, JISHOU),
        ({"kind": "dome", "range_m": 30.0}, JISHOU),
        ({"azimuth_deg": 360.0, "hfov_deg": 0.0, "height_m": float("nan")}, JISHOU),
        ({"resolution_h_px": 0, "range_m": -5.0}, JISHOU),
        ({"kind": "fisheye", "status": "broken", "owner": "nobody"}, JISHOU),
        ({"kind": None, "name": None, "status": None, "owner": None}, JISHOU),
        ({"name": "枪机\x07", "kind": "bullet\x1b"}, JISHOU),
        ({"gb_id": make_gb28181("433101", 141, 1)}, JISHOU),
        ({"gb_id": "4331010000131"}, JISHOU),
        ({"gb_id": None}, JISHOU),
        ({"gb_id": make_gb28181("433122", 132, 1)}, JISHOU),  # another county's id
        ({}, shapely.Point(112.98, 28.2)),  # Changsha
        ({"gb_id": make_gb28181("433122", 132, 1)}, shapely.Point(112.98, 28.2)),
        ({}, shapely.Point()),
        ({}, shapely.LineString([(109.7, 28.3), (109.8, 28.3)])),
        ({"height_m": -1.0}, shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])),
    ],
)
def test_one_camera_is_checked_as_a_frame_of_it_is(change, point):
    """An edit checks its one camera without a frame (`check_camera`): the same errors,
    in the same order, as `validate_cameras` of the one-row frame."""
    properties = GOOD | change
    try:
        validate_cameras(camera_frame(properties, point))
        expected = None
    except RowsRejected as rejected:
        expected = rejected.errors
    try:
        values = check_camera(properties, point)
        found = None
    except RowsRejected as rejected:
        found = rejected.errors
    assert found == expected
    if expected is None:
        assert values["county_code"] == "433101"
        assert values["hfov_deg"] == (90.0 if properties["kind"] == "bullet" else 360.0)


def camera_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM camera")).scalar_one()


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"azimuth_deg": 360}, "properties.azimuth_deg", "less than 360"),
        ({"hfov_deg": 0}, "properties.hfov_deg", "greater than 0"),
        ({"height_m": -2}, "properties.height_m", "greater than or equal to 0"),
        ({"kind": "fisheye"}, "properties.kind", "bullet"),
        ({"gb_id": "4331010000131"}, "properties.gb_id", "pattern"),
        ({"resolution_h_px": 0}, "properties.resolution_h_px", "greater than 0"),
    ],
)
def test_bad_cameras_are_422_naming_the_field(world, change, field, words):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    before = camera_count(engine)
    body = camera_body(centre, county)
    body["properties"] |= change
    response = client.post("/v1/cameras", json=body, headers=headers["admin"])
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert any(e["field"] == field and words in e["reason"] for e in problem["errors"])
    assert camera_count(engine) == before


def test_an_id_of_another_county_is_refused_naming_both(world):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    other = "433122" if county != "433122" else "433101"
    before = camera_count(engine)
    response = client.post("/v1/cameras", json=camera_body(centre, other), headers=headers["admin"])
    assert response.status_code == 422
    reason = response.json()["errors"][0]["reason"]
    assert county in reason and other in reason
    assert camera_count(engine) == before


def test_a_duplicate_id_and_a_point_outside_are_refused(world):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    body = camera_body(centre, county)
    created = client.post("/v1/cameras", json=body, headers=headers["admin"]).json()
    try:
        again = client.post("/v1/cameras", json=body, headers=headers["admin"])
        assert again.status_code == 422
        assert f"camera {created['id']}" in again.json()["errors"][0]["reason"]
        changsha = camera_body(shapely.Point(112.98, 28.2), county)
        outside = client.post("/v1/cameras", json=changsha, headers=headers["admin"])
        assert outside.status_code == 422
        assert "outside Xiangxi" in outside.text
        line = camera_body(centre, county)
        line["geometry"] = {"type": "LineString", "coordinates": [[109.7, 28.3], [109.8, 28.3]]}
        assert client.post("/v1/cameras", json=line, headers=headers["admin"]).status_code == 422
    finally:
        client.delete(f"/v1/cameras/{created['id']}", headers=headers["admin"])


def test_a_stale_if_match_is_412_and_changes_nothing(world):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    created = client.post(
        "/v1/cameras", json=camera_body(centre, county), headers=headers["admin"]
    ).json()
    url = f"/v1/cameras/{created['id']}"
    try:
        first = client.patch(
            url,
            json={"properties": {"name": "第一"}},
            headers=headers["admin"] | {"If-Match": f'W/"camera-{created["id"]}-v1"'},
        )
        assert first.status_code == 200
        stale = client.patch(
            url,
            json={"properties": {"name": "第二"}},
            headers=headers["admin"] | {"If-Match": f'W/"camera-{created["id"]}-v1"'},
        )
        assert stale.status_code == 412
        assert client.get(url, headers=headers["planner"]).json()["properties"]["name"] == "第一"
        bad = client.patch(
            url, json={"properties": {"county_code": "433101"}}, headers=headers["admin"]
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == (
            "properties.county_code"
        )
    finally:
        client.delete(url, headers=headers["admin"])


def test_racing_writers_never_lose_an_update(world):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    created = client.post(
        "/v1/cameras", json=camera_body(centre, county), headers=headers["admin"]
    ).json()
    url = f"/v1/cameras/{created['id']}"
    statuses: list[int] = []

    def edit(properties: dict) -> None:
        response = client.patch(url, json={"properties": properties}, headers=headers["admin"])
        statuses.append(response.status_code)

    try:
        threads = [
            threading.Thread(target=edit, args=({"name": "改名"},)),
            threading.Thread(target=edit, args=({"azimuth_deg": 270.0},)),
            threading.Thread(target=edit, args=({"height_m": 9.5},)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200, 200, 200]
        after = client.get(url, headers=headers["planner"]).json()["properties"]
        assert (after["name"], after["azimuth_deg"], after["height_m"]) == ("改名", 270.0, 9.5)
        assert after["version"] == 4
    finally:
        client.delete(url, headers=headers["admin"])


@pytest.mark.parametrize(
    ("role", "list_status", "visible_status", "write_status"),
    [
        ("anonymous", 401, 401, 401),
        ("viewer", 403, 403, 403),
        ("dispatcher", 403, 200, 403),
        ("planner", 200, 200, 403),
    ],
)
def test_who_may_read_and_write_cameras(world, role, list_status, visible_status, write_status):
    client, engine, headers = world
    _, centre, county = quiet_grid(engine)
    assert client.get("/v1/cameras", headers=headers[role]).status_code == list_status
    visible = client.get(
        "/v1/cameras/visible", params={"lon": centre.x, "lat": centre.y}, headers=headers[role]
    )
    assert visible.status_code == visible_status
    posted = client.post("/v1/cameras", json=camera_body(centre, county), headers=headers[role])
    assert posted.status_code == write_status


def test_list_filters_and_audit(world):
    client, engine, headers = world
    listed = client.get(
        "/v1/cameras", params={"status": "offline", "limit": 5}, headers=headers["planner"]
    ).json()
    assert 0 < listed["numberReturned"] <= 5
    assert {f["properties"]["status"] for f in listed["features"]} == {"offline"}
    assert (
        client.get(
            "/v1/cameras", params={"bbox": "110,29,109,28"}, headers=headers["planner"]
        ).status_code
        == 400
    )
    with engine.connect() as conn:
        actions = {
            row.action
            for row in conn.execute(
                text("SELECT DISTINCT action FROM audit_log WHERE entity = 'camera'")
            )
        }
    assert {"create", "update", "delete"} <= actions


def test_an_azimuth_rounding_up_to_360_reads_as_0_and_edits_go_through(world):
    """A stored azimuth of 359.996 (imported, say) reads as 0.0, not as 360.0, which no
    input may be; a rename that does not touch it, and a form sending back every field as
    read, are both accepted."""
    client, engine, headers = world
    _code, centre, county = quiet_grid(engine)
    created = client.post(
        "/v1/cameras", json=camera_body(centre, county), headers=headers["admin"]
    ).json()
    url = f"/v1/cameras/{created['id']}"
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE camera SET azimuth_deg = 359.996 WHERE id = :id"),
                {"id": created["id"]},
            )
        read = client.get(url, headers=headers["planner"]).json()["properties"]
        assert read["azimuth_deg"] == 0.0
        renamed = client.patch(
            url, json={"properties": {"name": "南门球机"}}, headers=headers["admin"]
        )
        assert renamed.status_code == 200, renamed.text
        form = {name: read[name] for name in CAMERA_EDITABLE} | {"name": "南门枪机"}
        resent = client.patch(url, json={"properties": form}, headers=headers["admin"])
        assert resent.status_code == 200, resent.text
    finally:
        client.delete(url, headers=headers["admin"])


def test_an_edit_stuck_behind_a_long_camera_write_is_told_so(world):
    """A PATCH or DELETE waiting on the camera write lock past the statement timeout (an
    import holding it) gets a 409 saying so, not "database unavailable"; nothing changes."""
    client, engine, headers = world
    _code, centre, county = quiet_grid(engine)
    created = client.post(
        "/v1/cameras", json=camera_body(centre, county), headers=headers["admin"]
    ).json()
    url = f"/v1/cameras/{created['id']}"
    database_url = engine.url.render_as_string(hide_password=False)
    settings = Settings(database_url=database_url, statement_timeout_ms=300)
    impatient_engine = make_engine(database_url, settings)
    try:
        with (
            engine.connect() as importer,
            TestClient(create_app(settings, impatient_engine)) as impatient,
        ):
            importer.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CAMERA_WRITE_LOCK_KEY})
            patched = impatient.patch(
                url, json={"properties": {"azimuth_deg": 45.0}}, headers=headers["admin"]
            )
            deleted = impatient.delete(url, headers=headers["admin"])
            importer.rollback()
        for response in (patched, deleted):
            assert response.status_code == 409, response.text
            assert "another camera write" in response.json()["detail"]
            assert response.headers["retry-after"] == "10"
        after = client.get(url, headers=headers["planner"]).json()["properties"]
        assert after["azimuth_deg"] == created["properties"]["azimuth_deg"]
        assert after["version"] == created["properties"]["version"]
    finally:
        impatient_engine.dispose()
        client.delete(url, headers=headers["admin"])
