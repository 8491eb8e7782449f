"""Grid and admin-area imports (files → checks → PostGIS), over HTTP and the CLI, and the
全域覆盖 check of uncovered village parts.

Everything runs in a scratch database of this module's own (the session database is
shared with other tests); each test starts from the same two villages. Test files are
written at test time with geopandas/pyogrio into `tmp_path`.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely import LineString, Point, Polygon, box
from sqlalchemy import Engine, text

from api.app import create_app
from api.auth import create_api_key
from api.db import create_scratch_database, drop_scratch_database, make_engine
from api.migrate import upgrade
from api.routes import grid_import as grid_import_routes
from api.services import files
from api.services.admin_areas import write_admin_areas
from api.services.files import (
    BadCoordSys,
    LayerChoice,
    UnreadableFile,
    UnsupportedFormat,
    read_vector_file,
)
from api.services.grid_import import (
    ImportRejected,
    import_grids,
    uncovered_parts,
)
from api.services.grids import retire_grid
from api.settings import Settings
from geo.crs import convert_geometry, to_metric

pytestmark = pytest.mark.filterwarnings(
    "ignore:Column names longer than 10 characters",  # writing test shapefiles
    "ignore:Normalized/laundered field name",
)

COUNTY = box(109.60, 28.20, 109.80, 28.35)
V1 = box(109.70, 28.26, 109.72, 28.28)  # 433101002001, ~1.96 km x 2.2 km
V2 = box(109.72, 28.26, 109.74, 28.28)  # 433101002002, east of V1
TOWNSHIP = box(109.70, 28.26, 109.74, 28.28)  # 433101002, the two villages
WEST = box(109.70, 28.26, 109.71, 28.28)  # the two halves of V1
EAST = box(109.71, 28.26, 109.72, 28.28)
V1_CODE, V2_CODE = "433101002001", "433101002002"
BOWTIE = Polygon([(109.712, 28.262), (109.716, 28.266), (109.716, 28.262), (109.712, 28.266)])

CLI = """
from api.cli import app, main
from api.cli_import import grids_app, import_app
registered = {group.name for group in app.registered_groups}
if "import" not in registered:
    app.add_typer(import_app, name="import")
if "grids" not in registered:
    app.add_typer(grids_app, name="grids")
main()
"""


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch(server_url: str) -> Iterator[tuple[str, Settings, Engine]]:
    url = create_scratch_database(server_url, prefix="gridcover_import")
    upgrade(url)
    settings = Settings(database_url=url)
    engine = make_engine(url, settings)
    yield url, settings, engine
    engine.dispose()
    drop_scratch_database(server_url, url)


@pytest.fixture(scope="module")
def db(scratch) -> Engine:
    return scratch[2]


@pytest.fixture(scope="module")
def client(scratch) -> Iterator[TestClient]:
    _, settings, engine = scratch
    app = create_app(settings, engine)
    if not any(getattr(r, "path", None) == "/v1/grids/import" for r in app.routes):
        app.include_router(grid_import_routes.router)  # until api/app.py registers it
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def auth(db) -> dict[str, dict[str, str]]:
    with db.begin() as conn:
        keys = {role: create_api_key(conn, role, f"test {role}")[1] for role in ("viewer", "admin")}
    return {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}


@pytest.fixture
def villages(db) -> None:
    """A county, a township and two villages, nothing else."""
    with db.begin() as conn:
        conn.execute(text("TRUNCATE grid, admin_area CASCADE"))
        write_admin_areas(
            conn,
            gpd.GeoDataFrame(
                {
                    "code": ["433101", "433101002", V1_CODE, V2_CODE],
                    "level": ["county", "township", "village", "village"],
                    "name": ["吉首市", "峒河街道", "峒河社区", "寨阳村"],
                    "parent_code": [None, "433101", "433101002", "433101002"],
                },
                geometry=[COUNTY, TOWNSHIP, V1, V2],
                crs=4326,
            ),
        )


@pytest.fixture
def cli_run(scratch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env["GRIDCOVER_DATABASE_URL"] = scratch[0]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI, *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run


# -- helpers --------------------------------------------------------------------------------
def counts(db: Engine) -> tuple[int, int]:
    with db.connect() as conn:
        return (
            conn.execute(text("SELECT count(*) FROM grid")).scalar_one(),
            conn.execute(text("SELECT count(*) FROM admin_area")).scalar_one(),
        )


def stored_grids(db: Engine) -> dict[str, dict]:
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT code, name, village_code, kind, households, population, worker_name, "
                "worker_phone, ST_AsBinary(geom) AS wkb FROM grid WHERE valid_to IS NULL"
            )
        ).mappings()
        return {r["code"]: {**r, "geom": shapely.from_wkb(bytes(r["wkb"]))} for r in rows}


def grids(rows: list[dict]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)


def two_halves() -> gpd.GeoDataFrame:
    return grids(
        [
            {
                "code": V1_CODE + "001",
                "name": "西网格",
                "households": 400,
                "worker_name": "张三",
                "geometry": WEST,
            },
            {
                "code": V1_CODE + "002",
                "name": "东网格",
                "households": 350,
                "worker_name": "李四",
                "geometry": EAST,
            },
        ]
    )


def bad_grids() -> gpd.GeoDataFrame:
    """One good row, then one row per validation error of the issue (features 2-8)."""
    rows = [
        ("433101002001001", V1_CODE, "好", WEST),
        ("433101002001002", V1_CODE, "自相交", BOWTIE),
        ("433101002001003", V1_CODE, "线", LineString([(109.711, 28.27), (109.719, 28.27)])),
        ("433101002001004", V1_CODE, "越界", box(109.715, 28.27, 109.73, 28.275)),
        ("433101002001005", V1_CODE, "压西", box(109.705, 28.262, 109.709, 28.264)),
        ("43310100200100", V1_CODE, "短码", box(109.711, 28.276, 109.712, 28.277)),
        ("433101002002007", V1_CODE, "错村", box(109.713, 28.276, 109.714, 28.277)),
        ("433101002001001", V1_CODE, "重号", box(109.717, 28.276, 109.718, 28.277)),
    ]
    return grids([{"code": c, "village_code": v, "name": n, "geometry": g} for c, v, n, g in rows])


EXPECTED_BAD = {
    (2, "geometry"),
    (3, "geometry"),
    (4, "geometry"),
    (5, "geometry"),
    (6, "code"),
    (7, "code"),
    (8, "code"),
}


def assert_bad_rows_reported(errors: list[dict]) -> None:
    reported = {(e["row"], e["field"]) for e in errors}
    assert reported == EXPECTED_BAD, errors
    by_row = {}
    for e in errors:
        by_row.setdefault(e["row"], []).append(e["reason"])
    assert any("Self-intersection" in r for r in by_row[2])
    assert by_row[3] == ["geometry must be Polygon or MultiPolygon"]
    assert any(r.endswith(f"outside its village {V1_CODE}") for r in by_row[4])
    assert any(r.startswith("overlaps grid 433101002001001 (feature 1) by") for r in by_row[5])
    assert "a grid code has 15 digits" in by_row[6]
    assert by_row[7] == ["must start with its 12-digit village code"]
    assert by_row[8] == ["duplicate value in this file"]


def to_csv(frame: gpd.GeoDataFrame, path: Path) -> Path:
    frame.assign(wkt=frame.geometry.to_wkt()).drop(columns="geometry").to_csv(path, index=False)
    return path


def upload(client: TestClient, url: str, path: Path, headers: dict, **params):
    with path.open("rb") as handle:
        return client.post(url, params=params, files={"file": (path.name, handle)}, headers=headers)


def same_shape(a, b, tolerance: float = 1e-9) -> bool:
    return shapely.hausdorff_distance(a, b) <= tolerance


# -- the validation errors, over HTTP and the CLI ------------------------------------------
def test_every_bad_row_is_reported_over_http_and_nothing_is_written(
    client, auth, db, villages, tmp_path
):
    path = tmp_path / "grids.geojson"
    bad_grids().to_file(path)
    before = counts(db)
    response = upload(client, "/v1/grids/import", path, auth["admin"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert "nothing was written" in problem["detail"]
    assert "7 of 8 features rejected" in problem["detail"]
    assert_bad_rows_reported(problem["errors"])
    assert problem["errors_total"] == len(problem["errors"])
    assert all(set(e) == {"row", "field", "reason", "id"} for e in problem["errors"])
    assert counts(db) == before


def test_every_bad_row_is_reported_by_the_cli_and_nothing_is_written(
    cli_run, db, villages, tmp_path
):
    path = to_csv(bad_grids(), tmp_path / "grids.csv")
    rejects = tmp_path / "rejects.csv"
    before = counts(db)
    result = cli_run("import", "grids", path, "--rejects", rejects)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("gridcover: error: grids: 7 of 8 lines rejected")
    assert "--skip-invalid writes the good rows; --repair fixes invalid geometries" in lines[0]
    # CSV rows are numbered by line: the header is line 1, feature n is line n + 1
    assert any(line.startswith("  line 3 (433101002001002) geometry: invalid") for line in lines)
    with rejects.open(encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert {(int(r["row"]) - 1, r["field"]) for r in rows} == EXPECTED_BAD
    assert counts(db) == before


def test_skip_invalid_writes_the_good_rows_and_reports_the_bad(
    client, auth, db, villages, tmp_path, cli_run
):
    path = tmp_path / "grids.gpkg"
    bad_grids().to_file(path, layer="grids")
    response = upload(client, "/v1/grids/import", path, auth["admin"], skip_invalid="true")
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["written"] == 1 and report["read"] == 8 and report["rejected_rows"] == 7
    assert {(r["row"], r["field"]) for r in report["rejected"]} == EXPECTED_BAD
    assert all(set(r) == {"row", "code", "field", "reason"} for r in report["rejected"])
    assert report["source"]["format"] == "GeoPackage" and report["source"]["layer"] == "grids"
    assert list(stored_grids(db)) == ["433101002001001"]

    # the CLI: the same file again, now the first row is taken too
    rejects = tmp_path / "rejects.csv"
    result = cli_run("import", "grids", path, "--skip-invalid", "--rejects", rejects)
    assert result.returncode == 0, result.stderr
    assert "grids: 8 features read, 0 written, 8 rejected" in result.stdout
    assert "exists already" in result.stderr
    rejected = list(csv.DictReader(rejects.open(encoding="utf-8-sig")))
    assert {int(r["row"]) for r in rejected} == set(range(1, 9))


def test_invalid_geometry_is_repaired_only_when_asked(client, auth, db, villages, tmp_path):
    frame = grids(
        [
            {"code": V1_CODE + "001", "name": "西", "geometry": WEST},
            {"code": V1_CODE + "002", "name": "蝴蝶结", "geometry": BOWTIE},
        ]
    )
    path = tmp_path / "bowtie.geojson"
    frame.to_file(path)
    refused = upload(client, "/v1/grids/import", path, auth["admin"])
    assert refused.status_code == 422
    assert [(e["row"], e["field"]) for e in refused.json()["errors"]] == [(2, "geometry")]
    assert counts(db)[0] == 0

    response = upload(client, "/v1/grids/import", path, auth["admin"], repair="true")
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["written"] == 2
    assert [(r["row"], r["code"]) for r in report["repaired"]] == [(2, V1_CODE + "002")]
    assert "Self-intersection" in report["repaired"][0]["reason"]
    stored = stored_grids(db)[V1_CODE + "002"]["geom"]
    assert stored.is_valid and len(stored.geoms) == 2  # the bowtie's two triangles


def test_repair_through_the_cli(cli_run, db, villages, tmp_path):
    path = tmp_path / "bowtie.geojson"
    grids([{"code": V1_CODE + "002", "name": "蝴蝶结", "geometry": BOWTIE}]).to_file(path)
    result = cli_run("import", "grids", path, "--repair")
    assert result.returncode == 0, result.stderr
    assert "repaired feature 1: Self-intersection" in result.stderr
    assert "1 written" in result.stdout and "1 repaired" in result.stdout


def test_a_code_already_stored_is_refused(client, auth, db, villages, tmp_path):
    path = tmp_path / "grids.geojson"
    two_halves().to_file(path)
    assert upload(client, "/v1/grids/import", path, auth["admin"]).status_code == 201
    again = upload(client, "/v1/grids/import", path, auth["admin"])
    assert again.status_code == 422
    reasons = {(e["row"], e["reason"]) for e in again.json()["errors"]}
    assert (1, f"grid {V1_CODE}001 exists already; edit it instead") in reasons
    assert counts(db)[0] == 2


# -- formats ----------------------------------------------------------------------------------
def assert_two_halves_stored(db: Engine, tolerance: float = 1e-9) -> None:
    stored = stored_grids(db)
    assert sorted(stored) == [V1_CODE + "001", V1_CODE + "002"]
    west, east = stored[V1_CODE + "001"], stored[V1_CODE + "002"]
    assert (west["name"], west["households"], west["worker_name"]) == ("西网格", 400, "张三")
    assert west["village_code"] == V1_CODE and west["kind"] == "综合网格"
    assert same_shape(west["geom"], WEST, tolerance) and same_shape(east["geom"], EAST, tolerance)


def test_geojson_round_trips_over_http_and_is_audited(client, auth, db, villages, tmp_path):
    path = tmp_path / "网格.geojson"
    two_halves().to_file(path)
    response = upload(client, "/v1/grids/import", path, auth["admin"])
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["written"] == 2 and report["rejected"] == [] and report["rows"] == "feature"
    assert report["source"]["file"] == "网格.geojson"
    assert_two_halves_stored(db)
    with db.connect() as conn:
        audit = conn.execute(
            text("SELECT actor, action, entity, after FROM audit_log ORDER BY id DESC LIMIT 1")
        ).one()
    assert audit.actor.startswith("test admin (key ")
    assert audit.action == "import" and audit.entity == "grid"
    assert audit.after["written"] == 2 and audit.after["file"] == "网格.geojson"


def test_geopackage_layers_must_be_chosen(client, auth, db, villages, tmp_path):
    path = tmp_path / "grids.gpkg"
    two_halves().to_file(path, layer="grids")
    two_halves().to_file(path, layer="draft")
    ambiguous = upload(client, "/v1/grids/import", path, auth["admin"])
    assert ambiguous.status_code == 400
    assert "choose one with layer: " in ambiguous.json()["detail"]
    assert sorted(ambiguous.json()["layers"]) == ["draft", "grids"]
    unknown = upload(client, "/v1/grids/import", path, auth["admin"], layer="final")
    assert unknown.status_code == 400 and "no layer 'final'" in unknown.json()["detail"]
    response = upload(client, "/v1/grids/import", path, auth["admin"], layer="grids")
    assert response.status_code == 201, response.text
    assert_two_halves_stored(db)


def test_projected_geopackage_is_converted_from_its_declared_crs(
    client, auth, db, villages, tmp_path
):
    path = tmp_path / "grids_4546.gpkg"
    two_halves().to_crs(4546).to_file(path)
    response = client.post(
        "/v1/grids/import",
        params={"filename": path.name},
        content=path.read_bytes(),
        headers=auth["admin"] | {"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["source"]["coordinates"] == "EPSG:4546 (declared by the file)"
    assert_two_halves_stored(db, tolerance=1e-7)  # 1 cm: reprojected and densified


def test_heights_in_3d_coordinates_are_dropped_and_the_report_says_so(
    client, auth, db, villages, tmp_path
):
    path = tmp_path / "grids_3d.geojson"
    frame = two_halves()
    frame.loc[0, "geometry"] = shapely.force_3d(frame.geometry[0], 312.5)  # metres above sea
    frame.to_file(path)
    response = upload(client, "/v1/grids/import", path, auth["admin"])
    assert response.status_code == 201, response.text
    assert response.json()["source"]["coordinates"] == (
        "EPSG:4326 (declared by the file); heights (z) dropped from 1 row: only lon/lat are kept"
    )
    assert_two_halves_stored(db)


def test_zipped_shapefile_round_trips_over_http(client, auth, db, villages, tmp_path):
    (tmp_path / "shp").mkdir()
    two_halves().to_file(tmp_path / "shp" / "grids.shp")
    archive = tmp_path / "grids.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for part in sorted((tmp_path / "shp").iterdir()):
            zipped.write(part, f"export/{part.name}")
    response = upload(client, "/v1/grids/import", archive, auth["admin"])
    assert response.status_code == 201, response.text
    assert response.json()["source"]["format"] == "Shapefile"
    assert_two_halves_stored(db)


def test_plain_shapefile_round_trips_through_the_cli(cli_run, db, villages, tmp_path):
    frame = two_halves()
    frame["village_code"] = V1_CODE  # cut to 'village_co' by the format, still recognised
    frame["worker_phone"] = ["13800000001", "13800000002"]
    frame.to_file(tmp_path / "grids.shp")
    result = cli_run("import", "grids", tmp_path / "grids.shp")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "grids: 2 features read, 2 written"
    assert_two_halves_stored(db)
    assert stored_grids(db)[V1_CODE + "001"]["worker_phone"] == "13800000001"


def test_csv_with_wkt_round_trips_over_http(client, auth, db, villages, tmp_path):
    path = to_csv(two_halves(), tmp_path / "grids.csv")
    response = upload(client, "/v1/grids/import", path, auth["admin"])
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == "line"
    assert_two_halves_stored(db)


def test_gcj02_file_lands_in_the_right_village(client, auth, db, villages, tmp_path):
    true_grid = box(109.712, 28.268, 109.716, 28.272)  # WGS84, inside V1 near V2
    amap = convert_geometry(true_grid, "wgs84", "gcj02", max_segment_m=50)
    path = tmp_path / "amap.geojson"  # GeoJSON declares WGS84, falsely
    grids([{"code": V1_CODE + "009", "name": "高德", "geometry": amap}]).to_file(path)

    raw = upload(client, "/v1/grids/import", path, auth["admin"])
    assert raw.status_code == 422  # taken as WGS84 it sticks out into the next village
    assert "outside its village" in raw.json()["errors"][0]["reason"]

    response = upload(client, "/v1/grids/import", path, auth["admin"], coord_sys="gcj02")
    assert response.status_code == 201, response.text
    assert response.json()["source"]["coordinates"] == "gcj02 (coord_sys)"
    stored = stored_grids(db)[V1_CODE + "009"]["geom"]
    assert same_shape(stored, true_grid, 1e-6)  # 0.1 m
    moved = np.hypot(
        *np.subtract(to_metric(*amap.centroid.coords[0]), to_metric(*stored.centroid.coords[0]))
    )
    assert 550 < moved < 600
    assert shapely.covered_by(stored, V1)


# -- refused files ----------------------------------------------------------------------------
def shapefile_zip(tmp_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    folder = tmp_path / "shp"
    folder.mkdir(exist_ok=True)
    two_halves().to_file(folder / "grids.shp")
    archive = tmp_path / "grids.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for part in sorted(folder.iterdir()):
            zipped.write(part, part.name)
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return archive


def test_zip_bombs_and_escaping_paths_are_refused(
    client, auth, db, villages, tmp_path, monkeypatch
):
    monkeypatch.setattr(files, "MAX_UNZIPPED_BYTES", 1_000_000)
    bomb = shapefile_zip(tmp_path, {"padding.bin": b"\0" * 5_000_000})
    assert bomb.stat().st_size < 50_000
    response = upload(client, "/v1/grids/import", bomb, auth["admin"])
    assert response.status_code == 413
    assert "unpacks to more than" in response.json()["detail"]

    monkeypatch.setattr(files, "MAX_ZIP_MEMBERS", 5)
    many = shapefile_zip(tmp_path, {f"note{i}.txt": b"x" for i in range(10)})
    response = upload(client, "/v1/grids/import", many, auth["admin"])
    assert response.status_code == 413 and "entries, more than the 5" in response.text

    monkeypatch.setattr(files, "MAX_ZIP_MEMBERS", 1000)
    escaping = shapefile_zip(tmp_path, {"../../etc/evil.shp": b"\x00\x00\x27\x0a"})
    response = upload(client, "/v1/grids/import", escaping, auth["admin"])
    assert response.status_code == 400 and "points outside its folder" in response.text
    assert counts(db)[0] == 0


def test_uploads_past_the_size_limit_get_413(scratch, auth, tmp_path):
    _, settings, engine = scratch
    limited = settings.model_copy(update={"max_upload_bytes": 1024})
    path = tmp_path / "big.geojson"
    path.write_bytes(b"{" + b" " * 5000 + b"}")

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(10):
            yield b" " * 500

    with TestClient(create_app(limited, engine)) as client:
        assert upload(client, "/v1/grids/import", path, auth["admin"]).status_code == 413
        streamed = client.post(
            "/v1/grids/import",
            params={"filename": "big.geojson"},
            content=chunks(),
            headers=auth["admin"],
        )
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"


def test_unreadable_and_unknown_files_and_options(client, auth, tmp_path):
    kml = tmp_path / "grids.kml"
    kml.write_text("<kml/>")
    assert upload(client, "/v1/grids/import", kml, auth["admin"]).status_code == 415
    broken = tmp_path / "grids.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    response = upload(client, "/v1/grids/import", broken, auth["admin"])
    assert response.status_code == 400 and "cannot read grids.geojson" in response.json()["detail"]
    good = tmp_path / "ok.geojson"
    two_halves().to_file(good)
    response = upload(client, "/v1/grids/import", good, auth["admin"], coord_sys="mars")
    assert response.status_code == 400 and "unknown coord_sys 'mars'" in response.text
    empty = client.post("/v1/grids/import", headers=auth["admin"])
    assert empty.status_code == 400


def test_imports_are_for_admins(client, auth, tmp_path):
    path = tmp_path / "grids.geojson"
    two_halves().to_file(path)
    assert upload(client, "/v1/grids/import", path, {}).status_code == 401
    assert upload(client, "/v1/grids/import", path, auth["viewer"]).status_code == 403
    assert upload(client, "/v1/admin-areas/import", path, auth["viewer"]).status_code == 403


def test_cli_refuses_missing_files_and_bad_options_in_one_line(cli_run, tmp_path):
    for args, message in [
        (("import", "grids", tmp_path / "nope.geojson"), "no file at"),
        (("import", "grids", __file__), "cannot read test_grid_import.py"),
        (("grids", "uncovered", "--village", "433101002999"), "no village has code"),
    ]:
        result = cli_run(*args)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- admin areas ---------------------------------------------------------------------------
def test_admin_areas_import_derives_levels_and_parents(client, auth, db, villages, tmp_path):
    west_village, east_village = (
        box(109.62, 28.21, 109.66, 28.25),
        box(109.66, 28.21, 109.70, 28.25),
    )
    township = box(109.62, 28.21, 109.70, 28.25)
    frame = gpd.GeoDataFrame(
        {
            "区划代码": [
                "433101003",
                "433101003001",
                "433101003002",
                "433101003003",
                "433101009001",
                V1_CODE,
            ],
            "名称": ["新街道", "一村", "二村", "越界村", "无乡村", "重复"],
        },
        geometry=[
            township,
            west_village,
            east_village,
            box(109.70, 28.22, 109.75, 28.23),  # east of its township
            box(109.63, 28.30, 109.64, 28.31),
            V1,
        ],
        crs=4326,
    )
    path = tmp_path / "areas.geojson"
    frame.to_file(path)
    before = counts(db)
    refused = upload(client, "/v1/admin-areas/import", path, auth["admin"])
    assert refused.status_code == 422, refused.text
    errors = {(e["row"], e["field"]): e["reason"] for e in refused.json()["errors"]}
    assert len(errors) == len(refused.json()["errors"])
    assert errors[(4, "geometry")].endswith("outside its parent 433101003")
    assert errors[(5, "parent_code")] == "parent 433101009 is not a known admin area"
    assert errors[(6, "code")] == f"admin area {V1_CODE} exists already"
    assert {row for row, _ in errors} == {4, 5, 6}, errors
    assert counts(db) == before

    response = upload(client, "/v1/admin-areas/import", path, auth["admin"], skip_invalid="1")
    assert response.status_code == 201, response.text
    assert response.json()["written"] == 3
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT code, level, parent_code FROM admin_area WHERE code LIKE '433101003%' "
                "ORDER BY code"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("433101003", "township", "433101"),
        ("433101003001", "village", "433101003"),
        ("433101003002", "village", "433101003"),
    ]


def test_admin_areas_through_the_cli_reject_children_of_rejected_parents(
    cli_run, db, villages, tmp_path
):
    frame = gpd.GeoDataFrame(
        {
            "code": ["433101004", "433101004001"],
            "name": ["坏乡", "好村"],
            "level": ["township", "village"],
        },
        geometry=[BOWTIE, box(109.62, 28.21, 109.63, 28.22)],
        crs=4326,
    )
    path = tmp_path / "areas.gpkg"
    frame.to_file(path)
    result = cli_run("import", "admin-areas", path, "--skip-invalid")
    assert result.returncode == 0, result.stderr
    assert "admin areas: 2 features read, 0 written, 2 rejected" in result.stdout
    assert "its parent 433101004 was rejected" in result.stderr
    assert counts(db)[1] == 4


# -- 全域覆盖: uncovered parts ------------------------------------------------------------
def test_uncovered_parts_appear_when_a_grid_is_deleted(
    client, auth, db, villages, tmp_path, cli_run
):
    path = tmp_path / "grids.geojson"
    two_halves().to_file(path)
    assert upload(client, "/v1/grids/import", path, auth["admin"]).status_code == 201
    covered = client.get(f"/v1/villages/{V1_CODE}/uncovered")
    assert covered.status_code == 200
    assert covered.headers["content-type"] == "application/geo+json"
    assert covered.json() == {"type": "FeatureCollection", "features": []}

    with db.begin() as conn:
        assert retire_grid(conn, V1_CODE + "002") is not None
    east_m2 = shapely.transform(EAST, lambda xy: np.column_stack(to_metric(xy[:, 0], xy[:, 1])))
    collection = client.get(f"/v1/villages/{V1_CODE}/uncovered").json()
    [feature] = collection["features"]
    assert feature["properties"]["village_code"] == V1_CODE
    assert feature["properties"]["area_m2"] == pytest.approx(east_m2.area, rel=1e-4)
    assert same_shape(shapely.geometry.shape(feature["geometry"]), EAST)

    with db.connect() as conn:
        everywhere = uncovered_parts(conn)
    v2_m2 = shapely.transform(V2, lambda xy: np.column_stack(to_metric(xy[:, 0], xy[:, 1])))
    assert [p.village_code for p in everywhere] == [V1_CODE, V2_CODE]
    assert everywhere[0].area_m2 == pytest.approx(east_m2.area, rel=1e-4)
    assert everywhere[1].area_m2 == pytest.approx(v2_m2.area, rel=1e-4)  # no grid at all

    missing = client.get("/v1/villages/433101002999/uncovered")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"

    out = tmp_path / "uncovered.geojson"
    result = cli_run("grids", "uncovered", "--village", V1_CODE, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "1 uncovered parts in 1 villages" in result.stderr
    assert len(json.loads(out.read_text())["features"]) == 1
    listed = cli_run("grids", "uncovered")
    assert listed.stdout.splitlines()[0].startswith(f"{V1_CODE}\t峒河社区\t")


# -- reading files (no database) ------------------------------------------------------------
def test_csv_lines_count_physical_lines_and_bad_cells_become_row_errors(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text(
        'name,lon,lat\n"两行\n名字",109.71,28.27\n\n坏点,abc,28.27\n好点,109.72,28.28\n',
        encoding="gb18030",
    )
    vector = read_vector_file(path)
    assert vector.row_kind == "line" and list(vector.frame.index) == [2, 5, 6]
    assert vector.frame["name"].tolist() == ["两行\n名字", "坏点", "好点"]
    assert vector.errors == [
        {"row": 5, "field": "geometry", "reason": "lon and lat must both be numbers"}
    ]
    assert vector.frame.geometry.iloc[2].equals(Point(109.72, 28.28))


def test_csv_wkt_errors_and_ewkt_srid(tmp_path):
    x, y = to_metric(109.71, 28.27)
    path = tmp_path / "grids.csv"
    path.write_text(
        f'code;geom\n1;"SRID=4546;POINT ({x} {y})"\n2;POLYGON ((1 2, 3\n',
        encoding="utf-8-sig",
    )
    vector = read_vector_file(path)
    assert vector.coords == "EPSG:4546 (declared by the file)"
    assert same_shape(vector.frame.geometry.iloc[0], Point(109.71, 28.27), 1e-9)
    assert vector.errors == [
        {"row": 3, "field": "geometry", "reason": "not valid WKT: 'POLYGON ((1 2, 3'"}
    ]


def test_reader_errors_are_gridcover_errors(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,2\n")
    with pytest.raises(UnreadableFile, match="a CSV needs a WKT column"):
        read_vector_file(plain)
    metres = tmp_path / "metres.csv"
    metres.write_text("name,x,y\na,{},{}\n".format(*to_metric(109.71, 28.27)))
    with pytest.raises(UnreadableFile, match="look projected"):
        read_vector_file(metres)
    point = read_vector_file(metres, coord_sys="EPSG:4546").frame.geometry.iloc[0]
    assert same_shape(point, Point(109.71, 28.27), 1e-9)
    with pytest.raises(BadCoordSys, match="unknown coord_sys"):
        read_vector_file(metres, coord_sys="EPSG:999999")
    disguised = tmp_path / "grids.geojson"  # an OGR VRT would read other files
    disguised.write_text('<OGRVRTDataSource><OGRVRTLayer name="x"/></OGRVRTDataSource>')
    with pytest.raises(UnreadableFile, match="not a valid geojson file"):
        read_vector_file(disguised)
    unknown = tmp_path / "data.xyz"
    unknown.write_text("hello")
    with pytest.raises(UnsupportedFormat):
        read_vector_file(unknown)
    gpkg = tmp_path / "two.gpkg"
    two_halves().to_file(gpkg, layer="a")
    two_halves().to_file(gpkg, layer="b")
    with pytest.raises(LayerChoice) as caught:
        read_vector_file(gpkg)
    assert caught.value.layers == ["a", "b"]


def test_z_coordinates_are_dropped(tmp_path):
    path = tmp_path / "z.geojson"
    grids([{"code": "1", "geometry": shapely.force_3d(WEST, 120.0)}]).to_file(path)
    geometry = read_vector_file(path).frame.geometry.iloc[0]
    assert not geometry.has_z and geometry.equals(WEST)


def test_import_grids_on_a_plain_frame_numbers_rows_from_one(db, villages):
    frame = grids(
        [{"code": "433101002001001", "name": "x", "geometry": box(109.8, 28.0, 109.9, 28.1)}]
    )
    with db.connect() as conn, pytest.raises(ImportRejected) as caught:
        import_grids(conn, frame)
    assert caught.value.errors[0]["row"] == 1
    assert "1 of 1 rows rejected" in str(caught.value)


def test_a_file_without_a_code_column_is_refused_as_a_whole(db, villages):
    frame = grids([{"名字": "x", "geometry": WEST}])
    with db.connect() as conn, pytest.raises(ImportRejected) as caught:
        import_grids(conn, frame)
    assert str(caught.value).startswith(
        "grids: the file was rejected, nothing was written: code: no column for it; name one "
        "code, grid_code"
    )
    assert {(e["row"], e["field"]) for e in caught.value.errors} == {(None, "code"), (None, "name")}


def test_csv_reads_a_wkt_polygon_of_many_vertices(tmp_path):
    """A village outline of 20,000 vertices is ~900 KB of WKT in one CSV cell: more than
    Python's csv module accepts by default (128 KiB), which refused the whole file."""
    angles = np.linspace(0, 2 * np.pi, 20_000, endpoint=False)
    ring = np.c_[109.7 + 0.01 * np.cos(angles), 28.3 + 0.01 * np.sin(angles)]
    polygon = Polygon(ring)
    path = tmp_path / "big.csv"
    path.write_text(
        f'code,wkt\n433101001001001,"{shapely.to_wkt(polygon, rounding_precision=12)}"\n'
    )
    assert path.stat().st_size > 512 * 1024
    vector = read_vector_file(path)
    assert vector.errors == []
    assert shapely.get_num_coordinates(vector.frame.geometry.iloc[0]) == 20_001
