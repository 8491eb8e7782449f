"""Camera imports (CSV, GeoJSON, GB/T 28181 Catalog XML → checks → PostGIS → coverage),
over HTTP and the CLI.

Everything runs in a scratch database of this module's own: the prefecture, its 8 real
counties and one small township/village/grid in Jishou; each test starts without cameras.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely import Point, box
from sqlalchemy import Engine, text

from api.app import create_app
from api.auth import create_api_key
from api.db import create_scratch_database, drop_scratch_database, make_engine
from api.migrate import upgrade
from api.services.admin_areas import write_admin_areas
from api.services.camera_import import CAMERA_COLUMNS, import_cameras
from api.services.camera_sights import CameraSights
from api.services.grid_import import ImportRejected
from api.services.grids import GRID_KINDS, write_grids
from api.services.imports import AUDIT_ENTITIES, IMPORTERS
from api.settings import Settings
from geo.codes import make_gb28181
from geo.crs import convert
from geo.reference import load_counties, load_prefecture
from tests.api.test_gb28181_catalog import catalog, directory_item, item

GRID = box(109.725, 28.305, 109.735, 28.315)  # township = village = grid, in Jishou
GRID_CODE = "433101001001001"
CHANGSHA = (112.94, 28.23)  # outside the prefecture
BEIJING = ZoneInfo("Asia/Shanghai")


def gb(serial: int, county: str = "433101", type_code: int = 132) -> str:
    return make_gb28181(county, type_code, serial)


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch(server_url: str) -> Iterator[tuple[str, Engine]]:
    url = create_scratch_database(server_url, prefix="gridcover_cameras")
    upgrade(url)
    engine = make_engine(url, Settings(database_url=url))
    prefecture = gpd.GeoDataFrame(
        {"code": ["433100"], "name": ["湘西州"], "level": ["prefecture"], "parent_code": [None]},
        geometry=[load_prefecture()],
        crs=4326,
    )
    below = gpd.GeoDataFrame(
        {
            "code": ["433101001", "433101001001"],
            "name": ["测试街道", "测试社区"],
            "level": ["township", "village"],
            "parent_code": ["433101", "433101001"],
        },
        geometry=[GRID, GRID],
        crs=4326,
    )
    with engine.begin() as conn:
        write_admin_areas(conn, pd.concat([prefecture, load_counties(), below], ignore_index=True))
        write_grids(
            conn,
            gpd.GeoDataFrame(
                {
                    "code": [GRID_CODE],
                    "name": ["测试网格"],
                    "village_code": ["433101001001"],
                    "kind": [GRID_KINDS[0]],
                },
                geometry=[GRID],
                crs=4326,
            ),
        )
    yield url, engine
    engine.dispose()
    drop_scratch_database(server_url, url)


@pytest.fixture(scope="module")
def db(scratch) -> Engine:
    return scratch[1]


@pytest.fixture(scope="module")
def client(scratch) -> Iterator[TestClient]:
    url, engine = scratch
    with TestClient(create_app(Settings(database_url=url), engine)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def auth(db) -> dict[str, dict[str, str]]:
    with db.begin() as conn:
        keys = {
            role: create_api_key(conn, role, f"test {role}")[1]
            for role in ("viewer", "planner", "admin")
        }
    return {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}


@pytest.fixture(autouse=True)
def no_cameras(db) -> None:
    with db.begin() as conn:
        conn.execute(text("TRUNCATE camera, coverage RESTART IDENTITY CASCADE"))


@pytest.fixture
def cli_run(scratch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env["GRIDCOVER_DATABASE_URL"] = scratch[0]

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from api.cli import main; main()", *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run


# -- helpers --------------------------------------------------------------------------------
def stored(db: Engine) -> dict[str, dict]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, gb_id, name, kind, height_m, azimuth_deg, hfov_deg, resolution_h_px, "
                "range_m, status, owner, installed_at, county_code, ST_X(geom) AS lon, "
                "ST_Y(geom) AS lat FROM camera"
            )
        ).mappings()
        return {r["gb_id"]: dict(r) for r in rows}


def camera_count(db: Engine) -> int:
    with db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM camera")).scalar_one()


def write_csv(path: Path, rows: list[list], encoding: str = "utf-8-sig") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        csv.writer(handle).writerows(rows)
    return path


def upload(client: TestClient, path: Path, headers: dict, **params):
    with path.open("rb") as handle:
        return client.post(
            "/v1/cameras/import",
            params=params,
            files={"file": (path.name, handle)},
            headers=headers,
        )


def metres_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.dist(convert(*a, "wgs84", "EPSG:4546"), convert(*b, "wgs84", "EPSG:4546"))


# -- formats ----------------------------------------------------------------------------------
def test_csv_with_chinese_columns_lon_lat_and_kind_defaults(client, auth, db, tmp_path):
    g1, g2, g3 = gb(1), gb(2, type_code=131), gb(3)
    header = ["国标编码", "名称", "类型", "安装高度", "方位角", "分辨率", "经度", "纬度"]
    header += ["状态", "建设主体", "安装日期", "备注"]
    rows = [
        [g1, "人民路口", "枪机", "5.5m", "东南", "1920x1080", 109.73, 28.31, "在线", "公安"],
        [g2, "广场", "球机", "", "", "", 109.731, 28.311, "", ""],
        [g3, "乾州", "半球", "", "", "200万", 109.729, 28.309, "离线", "企业"],
    ]
    rows[0] += ["2023-05-01", "新装"]
    rows[1] += ["", ""]
    rows[2] += ["", ""]
    path = write_csv(tmp_path / "cameras.csv", [header, *rows])
    response = upload(client, path, auth["admin"])
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["entity"], report["rows"], report["read"], report["written"]) == (
        "cameras",
        "line",
        3,
        3,
    )
    assert report["ignored_columns"] == ["备注"] and report["skipped"] == {}
    assert report["defaulted"] == {
        "height_m": 2,
        "azimuth_deg": 2,
        "hfov_deg": 3,
        "resolution_h_px": 1,
        "status": 1,
        "owner": 1,
        "county_code": 3,
    }
    cameras = stored(db)
    first, second, third = cameras[g1], cameras[g2], cameras[g3]
    assert (first["kind"], first["height_m"], first["azimuth_deg"], first["hfov_deg"]) == (
        "bullet",
        5.5,
        135,
        90,
    )
    assert (first["resolution_h_px"], first["status"], first["owner"]) == (1920, "online", "public")
    assert first["installed_at"] == datetime(2023, 5, 1, tzinfo=BEIJING)
    assert (first["county_code"], first["lon"], first["lat"]) == ("433101", 109.73, 28.31)
    assert (second["kind"], second["height_m"], second["hfov_deg"], second["azimuth_deg"]) == (
        "ptz",
        6,
        360,
        0,
    )
    assert second["range_m"] is None and second["installed_at"] is None
    assert (third["kind"], third["height_m"], third["hfov_deg"], third["status"]) == (
        "dome",
        3,
        360,
        "offline",
    )
    assert (third["resolution_h_px"], third["owner"]) == (1920, "enterprise")
    # the FOVs and the grid's coverage were refreshed in the import's transaction
    with db.connect() as conn:
        with_fov = set(conn.execute(text("SELECT DISTINCT camera_id FROM camera_fov")).scalars())
        counted = conn.execute(
            text(
                "SELECT c.camera_count FROM coverage c JOIN grid g ON g.id = c.grid_id "
                "WHERE g.code = :code AND c.level = 'detect'"
            ),
            {"code": GRID_CODE},
        ).scalar_one()
    assert with_fov == {first["id"], second["id"]}  # the offline camera covers nothing
    assert counted == 2


def test_geojson_through_the_cli(cli_run, db, tmp_path):
    path = tmp_path / "cameras.geojson"
    gpd.GeoDataFrame(
        {
            "gb_id": [gb(11), gb(12)],
            "name": ["dome cam", "bullet cam"],
            "kind": ["Dome", "bullet"],
            "height_m": [3.2, 4],
            "azimuth": [10, 359.5],
            "fov": [100, 58],
            "resolution": ["2560x1440", "1080P"],
            "range_m": [50, None],
            "status": ["fault", "ON"],
            "owner": ["residential", "industry"],
            "installed_at": ["2022-01-02T03:04:05+08:00", None],
        },
        geometry=[Point(109.73, 28.31), Point(109.76, 28.30)],
        crs=4326,
    ).to_file(path)
    result = cli_run("import", "cameras", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "cameras: 2 features read, 2 written; defaults used: county_code 2"
    )
    cameras = stored(db)
    dome, bullet = cameras[gb(11)], cameras[gb(12)]
    assert (dome["kind"], dome["hfov_deg"], dome["resolution_h_px"], dome["range_m"]) == (
        "dome",
        100,
        2560,
        50,
    )
    assert (dome["status"], dome["owner"], dome["height_m"]) == ("fault", "residential", 3.2)
    assert dome["installed_at"] == datetime(2022, 1, 2, 3, 4, 5, tzinfo=BEIJING)
    assert (bullet["azimuth_deg"], bullet["hfov_deg"], bullet["status"]) == (359.5, 58, "online")
    assert bullet["resolution_h_px"] == 1920


def test_gb28181_catalog_in_gb2312_and_gcj02(client, auth, db, tmp_path):
    raw = (109.732, 28.312)
    text_ = catalog(
        [
            directory_item("433101", "吉首市"),
            directory_item("43310100002160000001", "城区派出所"),
            item(
                gb(21),
                "人民路口枪机",
                civil="433101",
                lon=raw[0],
                lat=raw[1],
                ptz="3",
                resolution="6/5/4",
                direction="5",
            ),
            directory_item("43310100001180000001", "NVR-1"),
            item(gb(22, type_code=131), "广场球机", status="OFF", ptz="1", resolution="4"),
        ]
    )
    path = tmp_path / "目录.xml"
    path.write_bytes(text_.encode("gb2312"))
    # sent as the raw body, its name in `filename`
    response = client.post(
        "/v1/cameras/import",
        params={"filename": path.name, "coord_sys": "gcj02"},
        content=path.read_bytes(),
        headers=auth["admin"],
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["rows"], report["read"], report["written"]) == ("item", 2, 2)
    assert report["skipped"] == {
        "region": 1,
        "type 118 (NVR)": 1,
        "type 216 (virtual organisation)": 1,
    }
    assert report["source"]["format"] == "GB/T 28181 Catalog"
    assert report["source"]["coordinates"] == "gcj02 (coord_sys)"
    cameras = stored(db)
    bullet, ptz = cameras[gb(21)], cameras[gb(22, type_code=131)]
    assert bullet["name"] == "人民路口枪机"
    assert (bullet["kind"], bullet["resolution_h_px"], bullet["azimuth_deg"]) == (
        "bullet",
        1920,
        135,
    )
    assert (ptz["kind"], ptz["resolution_h_px"], ptz["status"], ptz["hfov_deg"]) == (
        "ptz",
        720,
        "offline",
        360,
    )
    expected = convert(*raw, "gcj02", "wgs84")
    assert math.dist((bullet["lon"], bullet["lat"]), expected) < 1e-7
    assert 500 < metres_between((bullet["lon"], bullet["lat"]), raw) < 650


# -- validation -------------------------------------------------------------------------------
HEADER = ["gb_id", "name", "kind", "height_m", "azimuth_deg", "hfov_deg", "lon", "lat"]
HEADER += ["county_code"]


def bad_rows(registered: str) -> list[list]:
    """One good camera (line 2), then a line per validation error (lines 3-12)."""
    at = [109.73, 28.31]
    good = gb(31)
    return [
        HEADER,
        [good, "好", "bullet", 4, 90, 60, *at, ""],
        [gb(32)[:19], "短号", "bullet", 4, 90, 60, *at, ""],
        [gb(33, type_code=118), "录像机", "bullet", 4, 90, 60, *at, ""],
        [gb(34), "错县", "bullet", 4, 90, 60, *at, "433122"],
        [gb(35), "方位", "bullet", 4, 360, 60, *at, ""],
        [gb(36), "零视角", "bullet", 4, 90, 0, *at, ""],
        [gb(37), "大视角", "bullet", 4, 90, 400, *at, ""],
        [gb(38), "负高", "bullet", -1, 90, 60, *at, ""],
        [gb(39), "长沙", "bullet", 4, 90, 60, *CHANGSHA, ""],
        [good, "重号", "bullet", 4, 90, 60, *at, ""],
        [registered, "已有", "bullet", 4, 90, 60, *at, ""],
    ]


EXPECTED_BAD = {
    (3, "gb_id"),
    (4, "gb_id"),
    (5, "gb_id"),
    (6, "azimuth_deg"),
    (7, "hfov_deg"),
    (8, "hfov_deg"),
    (9, "height_m"),
    (10, "geometry"),
    (11, "gb_id"),
    (12, "gb_id"),
}


def register_one(client: TestClient, auth: dict, tmp_path: Path) -> tuple[str, int]:
    registered = gb(99)
    path = write_csv(
        tmp_path / "one.csv", [["gb_id", "name", "lon", "lat"], [registered, "旧", 109.74, 28.3]]
    )
    assert upload(client, path, auth["admin"]).status_code == 201
    return registered, stored_id(client, registered)


def stored_id(client: TestClient, gb_id: str) -> int:
    with client.app.state.engine.connect() as conn:
        return conn.execute(
            text("SELECT id FROM camera WHERE gb_id = :g"), {"g": gb_id}
        ).scalar_one()


def assert_bad_rows_reported(errors: list[dict], registered: str, camera_id: int) -> None:
    assert {(e["row"], e["field"]) for e in errors} == EXPECTED_BAD, errors
    by_row: dict[int, list[str]] = {}
    for e in errors:
        by_row.setdefault(e["row"], []).append(e["reason"])
    assert by_row[3] == [
        f"GB/T 28181 id must be 20 ASCII digits, got 19 characters '{gb(32)[:19]}'"
    ]
    assert by_row[4] == [
        "type code (digits 11-13) is 118, not a camera (131 camera or 132 IP camera)"
    ]
    assert any("433101" in r and "433122" in r for r in by_row[5]), by_row[5]
    assert by_row[6] == ["must be in [0, 360) degrees"]
    assert by_row[7] == by_row[8] == ["must be in (0, 360] degrees"]
    assert by_row[9] == ["must be 0 m or more"]
    assert by_row[10] == ["point lies outside Xiangxi prefecture"]
    assert by_row[11] == ["duplicate value in this file"]
    assert by_row[12] == [f"already registered as camera {camera_id}"]
    ids = {e["row"]: e.get("id", e.get("code")) for e in errors}
    assert ids[12] == registered and ids[5] == gb(34)


def test_imported_cameras_are_in_the_next_visible_answer(client, auth, db, tmp_path):
    # A copy that listens for no notice: only the import's own mark can bring them in.
    unlistening = CameraSights(db)
    unlistening.catch_up()
    listening, client.app.state.camera_sights = client.app.state.camera_sights, unlistening
    try:
        _, camera_id = register_one(client, auth, tmp_path)
        body = client.get(
            "/v1/cameras/visible", params={"lon": 109.74, "lat": 28.3}, headers=auth["admin"]
        ).json()
    finally:
        client.app.state.camera_sights = listening
    assert [c["camera_id"] for c in body["cameras"]] == [camera_id]


def test_every_bad_row_is_reported_over_http_and_nothing_is_written(client, auth, db, tmp_path):
    registered, camera_id = register_one(client, auth, tmp_path)
    path = write_csv(tmp_path / "bad.csv", bad_rows(registered))
    response = upload(client, path, auth["admin"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["detail"].startswith("cameras: 10 of 11 lines rejected, nothing was written")
    assert problem["errors_total"] == len(problem["errors"])
    assert_bad_rows_reported(problem["errors"], registered, camera_id)
    assert camera_count(db) == 1


def test_every_bad_row_is_reported_by_the_cli_and_nothing_is_written(
    client, auth, cli_run, db, tmp_path
):
    registered, camera_id = register_one(client, auth, tmp_path)
    path = write_csv(tmp_path / "bad.csv", bad_rows(registered))
    rejects = tmp_path / "rejects.csv"
    result = cli_run("import", "cameras", path, "--rejects", rejects)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "error: cameras: 10 of 11 lines rejected, nothing was written" in lines[0]
    assert lines[0].endswith("; --skip-invalid writes the good rows")
    assert f"  line 6 ({gb(35)}) azimuth_deg: must be in [0, 360) degrees" in lines
    assert len(lines) == 11  # the summary and the 10 errors, each once
    with rejects.open(encoding="utf-8-sig") as handle:
        rows = [{**r, "row": int(r["row"])} for r in csv.DictReader(handle)]
    assert_bad_rows_reported(rows, registered, camera_id)
    assert camera_count(db) == 1


def test_skip_invalid_writes_the_good_rows_and_reports_the_bad(client, auth, cli_run, db, tmp_path):
    registered, camera_id = register_one(client, auth, tmp_path)
    path = write_csv(tmp_path / "bad.csv", bad_rows(registered))
    response = upload(client, path, auth["admin"], skip_invalid="true")
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["read"], report["written"], report["rejected_rows"]) == (11, 1, 10)
    assert_bad_rows_reported(report["rejected"], registered, camera_id)
    assert set(stored(db)) == {registered, gb(31)}
    # the CLI, on a fresh table: the same good row is written, the rejects go to a file
    with db.begin() as conn:
        conn.execute(text("TRUNCATE camera RESTART IDENTITY CASCADE"))
    rejects = tmp_path / "rejects.csv"
    result = cli_run("import", "cameras", path, "--skip-invalid", "--rejects", rejects)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("cameras: 11 lines read, 2 written, 9 rejected (")
    assert summary.endswith(f"; rejects in {rejects}")
    assert "  line 10 geometry: point lies outside Xiangxi prefecture" in result.stderr.replace(
        f" ({gb(39)})", ""
    )
    assert set(stored(db)) == {registered, gb(31)}  # the "registered" one is new here
    with rejects.open(encoding="utf-8-sig") as handle:
        assert {int(r["row"]) for r in csv.DictReader(handle)} == set(range(3, 12))


def test_catalog_county_mismatch_names_both_codes(client, auth, db, tmp_path):
    path = tmp_path / "catalog.xml"
    path.write_bytes(
        catalog([item(gb(41), civil="433101"), item(gb(42), civil="433122")]).encode("gb2312")
    )
    response = upload(client, path, auth["admin"])
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["detail"].startswith("cameras: 1 of 2 items rejected, nothing was written")
    (error,) = problem["errors"]
    assert (error["row"], error["field"], error["id"]) == (2, "county_code", gb(42))
    assert "CivilCode 433122" in error["reason"] and "433101" in error["reason"]
    assert camera_count(db) == 0


@pytest.mark.parametrize(
    "body",
    [
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<Response><CmdType>Catalog</CmdType></Response>",
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]><Response>&lol2;</Response>',
    ],
)
def test_dtds_and_entities_are_refused_with_400(client, auth, cli_run, db, tmp_path, body):
    path = tmp_path / "evil.xml"
    path.write_text(body)
    response = upload(client, path, auth["admin"])
    assert response.status_code == 400, response.text
    assert "declares a DTD or entities; refused" in response.json()["detail"]
    result = cli_run("import", "cameras", path)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "declares a DTD or entities" in result.stderr
    assert camera_count(db) == 0


def test_files_without_ids_or_of_unknown_formats(client, auth, tmp_path):
    path = write_csv(tmp_path / "no_id.csv", [["名称", "lon", "lat"], ["x", 109.73, 28.31]])
    response = upload(client, path, auth["admin"])
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "gb_id" and error["reason"].startswith("no column for it; name one")
    kml = tmp_path / "cameras.kml"
    kml.write_text("<kml/>")
    assert upload(client, kml, auth["admin"]).status_code == 415
    response = upload(client, path, auth["admin"], coord_sys="mars")
    assert response.status_code == 400 and "unknown coord_sys 'mars'" in response.text


def test_values_that_are_no_numbers_kinds_or_dates(client, auth, db, tmp_path):
    path = write_csv(
        tmp_path / "values.csv",
        [
            ["gb_id", "kind", "height", "azimuth", "resolution", "installed_at", "lon", "lat"],
            [gb(51), "鱼眼", "高", "north-ish", "7", "昨天", 109.73, 28.31],
        ],
    )
    response = upload(client, path, auth["admin"])
    assert response.status_code == 422
    reasons = {e["field"]: e["reason"] for e in response.json()["errors"]}
    assert reasons == {
        "kind": "must be one of bullet, dome, ptz",
        "height_m": "must be a number, not '高'",
        "azimuth_deg": "must be degrees clockwise from north or a direction (东, 东南, NE), "
        "not 'north-ish'",
        "resolution_h_px": reasons["resolution_h_px"],
        "installed_at": "must be a date such as 2023-05-01, not '昨天'",
    }
    assert reasons["resolution_h_px"].startswith("not a resolution: '7'")
    assert camera_count(db) == 0


def test_camera_imports_are_for_admins_and_audited(client, auth, db, tmp_path):
    path = write_csv(tmp_path / "one.csv", [["gb_id", "lon", "lat"], [gb(61), 109.73, 28.31]])
    assert upload(client, path, {}).status_code == 401
    assert upload(client, path, auth["viewer"]).status_code == 403
    assert upload(client, path, auth["planner"]).status_code == 403
    assert upload(client, path, auth["admin"]).status_code == 201
    assert stored(db)[gb(61)]["name"] == gb(61)  # the id stands in for a missing name
    with db.connect() as conn:
        entity, after = conn.execute(
            text("SELECT entity, after FROM audit_log WHERE action = 'import' ORDER BY id DESC")
        ).first()
    after = after if isinstance(after, dict) else json.loads(after)
    assert entity == "camera" and (after["written"], after["file"]) == (1, "one.csv")


def test_the_registry_and_a_plain_frame(db):
    assert set(IMPORTERS) == {"grids", "admin areas", "cameras"}
    assert AUDIT_ENTITIES["cameras"] == "camera"
    assert "国标编码" in CAMERA_COLUMNS["gb_id"] and "deviceid" in CAMERA_COLUMNS["gb_id"]
    frame = gpd.GeoDataFrame(
        {"DeviceID": [gb(71), "x"]}, geometry=[Point(109.73, 28.31), Point(109.73, 28.31)], crs=4326
    )
    with db.begin() as conn, pytest.raises(ImportRejected) as caught:
        import_cameras(conn, frame)
    assert {(e["row"], e["field"]) for e in caught.value.errors} == {(2, "gb_id")}
    with db.begin() as conn:
        report = import_cameras(conn, frame, skip_invalid=True)
    assert (report.written, report.rejected_rows) == (1, 1)
    assert shapely.Point(stored(db)[gb(71)]["lon"], stored(db)[gb(71)]["lat"]).equals(
        Point(109.73, 28.31)
    )
