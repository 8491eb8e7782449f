"""Hostile and broken input across the write, import, lookup and OGC endpoints.

One table of cases: each sends something a careless or malicious client could send (NaN
and infinite coordinates, swapped lon/lat, broken rings, wrong geometry types, 3D
positions, huge coordinate counts, duplicated ids, SQL and control characters, oversized
bodies, zip bombs, garbage CQL2 and OGC parameters, useless addresses) and asserts the
status (a 4xx, never a 5xx), the RFC 7807 problem naming the field or row, and that the
row counts of every table a write could touch are unchanged. The app runs on a copy of
the small demo world with small limits (body, upload, vertices) so that the oversized
cases stay small.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from api.auth import ASSIGNABLE_ROLES, create_api_key
from api.db import drop_scratch_database, make_engine
from api.settings import Settings
from tests.api.test_incidents import small_world_copy

MAX_BODY_BYTES = 128 * 1024
MAX_UPLOAD_BYTES = 256 * 1024
MAX_VERTICES = 2000
TABLES = (
    "admin_area",
    "grid",
    "camera",
    "camera_fov",
    "coverage",
    "incident",
    "incident_event",
    "audit_log",
)
SWAPPED = "lon/lat look swapped"


@dataclass
class Context:
    """What the cases refer to: a current grid, a camera and an incident of the world."""

    client: TestClient
    engine: Engine
    headers: dict[str, dict[str, str]]
    grid_code: str
    village_code: str
    grid: shapely.Polygon
    camera_id: int
    camera_gb_id: str
    incident_id: int

    @property
    def point(self) -> tuple[float, float]:
        inside = self.grid.representative_point()
        return round(inside.x, 6), round(inside.y, 6)

    def square(self, size_deg: float = 0.0005) -> list[list[list[float]]]:
        """A small closed square ring around the grid's inner point."""
        x, y = self.point
        return [
            [[x, y], [x + size_deg, y], [x + size_deg, y + size_deg], [x, y + size_deg], [x, y]]
        ]


@pytest.fixture(scope="module")
def ctx(server_url: str) -> Iterator[Context]:
    url = small_world_copy(server_url, "gridcover_hostile")
    settings = Settings(
        database_url=url,
        max_body_bytes=MAX_BODY_BYTES,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_geometry_vertices=MAX_VERTICES,
    )
    engine = make_engine(url, settings)
    try:
        with engine.begin() as conn:
            keys = {r: create_api_key(conn, r, f"hostile {r}")[1] for r in ASSIGNABLE_ROLES}
            grid = conn.execute(
                text(
                    "SELECT code, village_code, ST_AsBinary(geom) AS wkb FROM grid "
                    "WHERE valid_to IS NULL ORDER BY code LIMIT 1"
                )
            ).one()
            camera = conn.execute(text("SELECT id, gb_id FROM camera ORDER BY id LIMIT 1")).one()
        headers = {"anonymous": {}} | {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
        with TestClient(create_app(settings, engine)) as client:
            polygon = shapely.from_wkb(grid.wkb).geoms[0]
            inside = polygon.representative_point()
            incident = client.post(
                "/v1/incidents",
                json={"category": "environment", "lon": inside.x, "lat": inside.y},
                headers=headers["dispatcher"],
            )
            assert incident.status_code == 201, incident.text
            yield Context(
                client,
                engine,
                headers,
                grid.code,
                grid.village_code,
                polygon,
                camera.id,
                camera.gb_id,
                incident.json()["id"],
            )
        engine.dispose()
    finally:
        drop_scratch_database(server_url, url)


def row_counts(engine: Engine) -> dict[str, int]:
    sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES)
    with engine.connect() as conn:
        return dict(conn.execute(text(sql)).one()._mapping)


# -- request builders ---------------------------------------------------------------------
Request = dict[str, Any]


def raw_json(body: Any) -> Request:
    """A JSON body as Python's json writes it: NaN and Infinity stay bare words."""
    return {
        "content": json.dumps(body, allow_nan=True).encode(),
        "headers": {"content-type": "application/json"},
    }


def grid_body(c: Context, coordinates: Any = None, geometry: Any = None, **properties) -> Any:
    return {
        "type": "Feature",
        "geometry": geometry
        if geometry is not None
        else {"type": "Polygon", "coordinates": coordinates or c.square()},
        "properties": {"code": c.village_code + "998", "name": "测试网格"} | properties,
    }


def camera_body(c: Context, coordinates: Any = None, geometry: Any = None, **properties) -> Any:
    gb_id = c.camera_gb_id[:13] + "9999990"
    return {
        "type": "Feature",
        "geometry": geometry
        if geometry is not None
        else {"type": "Point", "coordinates": coordinates or list(c.point)},
        "properties": {"gb_id": gb_id, "name": "测试枪机", "kind": "bullet"} | properties,
    }


def incident_body(c: Context, **fields) -> Any:
    lon, lat = c.point
    return {"category": "environment", "lon": lon, "lat": lat} | fields


def many_vertices(c: Context, n: int) -> list[list[list[float]]]:
    """A closed ring of `n` vertices around the grid's inner point (a valid polygon)."""
    x, y = c.point
    ring = shapely.Point(x, y).buffer(0.001, quad_segs=n // 4).exterior.coords
    return [[list(p) for p in ring]]


def upload(name: str, data: bytes, **params) -> Request:
    return {"files": {"file": (name, data)}, "params": params}


def geojson_file(features: list[dict[str, Any]]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def feature(geometry: dict[str, Any], **properties) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def grid_file(*features: dict[str, Any]) -> Request:
    return upload("grids.geojson", geojson_file(list(features)))


def square_feature(c: Context, seq: str, offset_deg: float = 0.0, **properties) -> dict:
    ring = [[[x + offset_deg, y] for x, y in c.square()[0]]]
    props = {"code": c.village_code + seq, "name": "导入网格"} | properties
    return feature({"type": "Polygon", "coordinates": ring}, **props)


def zipped(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def lying_zip(declared_bytes: int) -> bytes:
    """A tiny zip whose directory claims its one entry unpacks to `declared_bytes`."""
    data = bytearray(zipped({"grids.geojson": b"{}"}))
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared_bytes)
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, declared_bytes)
    return bytes(data)


def camera_csv(rows: list[str], header: str = "gb_id,name,kind,lon,lat,height_m") -> Request:
    return upload("cameras.csv", ("\n".join([header, *rows]) + "\n").encode())


def gb(c: Context, serial: int) -> str:
    return c.camera_gb_id[:13] + f"{serial:07d}"


def chunks(total: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked), `total` bytes of JSON whitespace."""
    yield b"["
    for _ in range(total // 4096):
        yield b" " * 4096
    yield b"]"


def deep(depth: int) -> str:
    return "(" * depth + "population > 1" + ")" * depth


# -- the cases ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One hostile request: `build(ctx)` gives the TestClient keyword arguments."""

    id: str
    method: str
    path: str  # may name {grid}, {camera}, {incident}
    build: Callable[[Context], Request]
    status: int
    fragment: str  # expected in the problem's detail (or an Open311 description)
    role: str = "admin"
    open311: bool = False


def C(id, method, path, build, status, fragment, role="admin", **kw) -> Case:
    return Case(id, method, path, build, status, fragment, role, **kw)


GRIDS, CAMERAS, INCIDENTS = "/v1/grids", "/v1/cameras", "/v1/incidents"
GRID, CAMERA, INCIDENT = "/v1/grids/{grid}", "/v1/cameras/{camera}", "/v1/incidents/{incident}"
EVENTS = "/v1/incidents/{incident}/events"
OPEN311 = "/open311/v2/requests.json"
ITEMS = "/collections/grids/items"
D = "dispatcher"
SWAPPED_RING = [[[28.3, 109.70], [28.3, 109.71], [28.31, 109.71], [28.31, 109.70], [28.3, 109.70]]]
BOWTIE = [[[109.70, 28.30], [109.71, 28.31], [109.71, 28.30], [109.70, 28.31], [109.70, 28.30]]]


def open311_form(c: Context, **fields) -> Request:
    key = c.headers["dispatcher"]["Authorization"].removeprefix("Bearer ")
    lon, lat = c.point
    form = {"api_key": key, "service_code": "environment", "lat": str(lat), "long": str(lon)}
    return {"data": {k: v for k, v in (form | fields).items() if v is not None}}


CASES = [
    # -- POST /v1/grids -------------------------------------------------------------------
    C(
        "grid-nan",
        "POST",
        GRIDS,
        lambda c: raw_json(grid_body(c, [[[float("nan"), 28.3]] * 4])),
        422,
        "geometry.coordinates[0][0]",
    ),
    C(
        "grid-infinity",
        "POST",
        GRIDS,
        lambda c: raw_json(grid_body(c, [[[109.7, float("inf")]] * 4])),
        422,
        "not a finite number",
    ),
    C(
        "grid-huge-exponent",
        "POST",
        GRIDS,
        lambda c: {
            "content": json.dumps(grid_body(c)).replace("109.", "1e999", 1).encode(),
            "headers": {"content-type": "application/json"},
        },
        422,
        "geometry.coordinates",
    ),
    C(
        "grid-lat-out-of-range",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, [[[109.7, 95], [109.8, 95], [109.8, 96], [109.7, 95]]])},
        422,
        "[-90, 90]",
    ),
    C("grid-swapped", "POST", GRIDS, lambda c: {"json": grid_body(c, SWAPPED_RING)}, 422, SWAPPED),
    C(
        "grid-unclosed-ring",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, [c.square()[0][:-1]])},
        422,
        "not closed",
    ),
    C(
        "grid-ring-too-short",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, [[c.point, c.point]])},
        422,
        "at least 4 positions",
    ),
    C(
        "grid-self-intersecting",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, BOWTIE)},
        422,
        "self-intersection",
    ),
    C(
        "grid-point-geometry",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, geometry={"type": "Point", "coordinates": list(c.point)})},
        422,
        "Polygon",
    ),
    C(
        "grid-geometry-collection",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, geometry={"type": "GeometryCollection", "geometries": []})},
        422,
        "GeometryCollection",
    ),
    C(
        "grid-feature-as-geometry",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, geometry=grid_body(c))},
        422,
        "geometry.type",
    ),
    C(
        "grid-geometry-as-wkt",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, geometry="POLYGON((0 0,1 0,1 1,0 0))")},
        422,
        "geometry",
    ),
    C(
        "grid-3d",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, [[[*p, 300.0] for p in c.square()[0]]])},
        422,
        "3D",
    ),
    C(
        "grid-4d",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, [[[*p, 300.0, 1.0] for p in c.square()[0]]])},
        422,
        "[lon, lat]",
    ),
    C(
        "grid-string-coordinate",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, [[["109.7", 28.3]] * 4])},
        422,
        "geometry.coordinates[0][0]",
    ),
    C(
        "grid-too-many-vertices",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, many_vertices(c, MAX_VERTICES + 100))},
        422,
        f"at most {MAX_VERTICES}",
    ),
    C(
        "grid-code-sql",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, code="433101'; DROP TABLE grid; --")},
        422,
        "properties.code",
    ),
    C(
        "grid-name-control-char",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, name="网格\x07")},
        422,
        "properties.name",
    ),
    C(
        "grid-name-nul",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, name="网格\x00")},
        422,
        "properties.name",
    ),
    C(
        "grid-name-lone-surrogate",
        "POST",
        GRIDS,
        lambda c: raw_json(grid_body(c, name="\ud800")),
        422,
        "name",
    ),
    C(
        "grid-name-10k",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, name="网" * 10_000)},
        422,
        "properties.name",
    ),
    C(
        "grid-duplicate-code",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, code=c.grid_code)},
        422,
        "exists already",
    ),
    C(
        "grid-households-negative",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, households=-5)},
        422,
        "properties.households",
    ),
    C(
        "grid-population-huge",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, population=10**30)},
        422,
        "properties.population",
    ),
    C(
        "grid-not-json",
        "POST",
        GRIDS,
        lambda c: {"content": b"{not json", "headers": {"content-type": "application/json"}},
        422,
        "JSON",
    ),
    C("grid-json-array", "POST", GRIDS, lambda c: {"json": []}, 422, "body"),
    C(
        "grid-coord-sys-unknown",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c), "params": {"coord_sys": "mars"}},
        400,
        "coord_sys",
    ),
    C(
        "grid-body-too-large",
        "POST",
        GRIDS,
        lambda c: {"json": grid_body(c, name="x" * MAX_BODY_BYTES)},
        413,
        "GRIDCOVER_MAX_BODY_BYTES",
    ),
    C(
        "grid-chunked-too-large",
        "POST",
        GRIDS,
        lambda c: {
            "content": chunks(2 * MAX_BODY_BYTES),
            "headers": {"content-type": "application/json"},
        },
        413,
        "at most",
    ),
    # -- PATCH /v1/grids/{code} -----------------------------------------------------------------
    C(
        "grid-patch-code",
        "PATCH",
        GRID,
        lambda c: {"json": {"properties": {"code": "433101001001999"}}},
        422,
        "cannot edit code",
    ),
    C(
        "grid-patch-swapped",
        "PATCH",
        GRID,
        lambda c: {"json": {"geometry": {"type": "Polygon", "coordinates": SWAPPED_RING}}},
        422,
        SWAPPED,
    ),
    C(
        "grid-patch-name-escape",
        "PATCH",
        GRID,
        lambda c: {"json": {"properties": {"name": "\x1b[31m红"}}},
        422,
        "properties.name",
    ),
    C(
        "grid-patch-worker-phone-nul",
        "PATCH",
        GRID,
        lambda c: {"json": {"properties": {"worker_phone": "139\x00"}}},
        422,
        "properties.worker_phone",
    ),
    C(
        "grid-patch-stale-if-match",
        "PATCH",
        GRID,
        lambda c: {"json": {"properties": {"name": "新名"}}, "headers": {"If-Match": '"garbage"'}},
        412,
        "changed since you read it",
    ),
    C(
        "grid-patch-unknown-code-sql",
        "PATCH",
        "/v1/grids/1'%20OR%20'1'='1",
        lambda c: {"json": {"properties": {"name": "x"}}},
        404,
        "no grid",
    ),
    # -- POST/PATCH /v1/cameras ------------------------------------------------------------------
    C(
        "camera-swapped",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, [28.3, 109.7])},
        422,
        SWAPPED,
    ),
    C(
        "camera-nan",
        "POST",
        CAMERAS,
        lambda c: raw_json(camera_body(c, [float("nan"), 28.3])),
        422,
        "geometry.coordinates",
    ),
    C(
        "camera-polygon",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, geometry={"type": "Polygon", "coordinates": c.square()})},
        422,
        "Point",
    ),
    C(
        "camera-multipoint",
        "POST",
        CAMERAS,
        lambda c: {
            "json": camera_body(
                c, geometry={"type": "MultiPoint", "coordinates": [list(c.point)] * 3}
            )
        },
        422,
        "Point",
    ),
    C(
        "camera-empty-point",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, geometry={"type": "Point", "coordinates": []})},
        422,
        "geometry.coordinates",
    ),
    C(
        "camera-3d",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, [*c.point, 12.0])},
        422,
        "3D",
    ),
    C(
        "camera-gb-id-sql",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, gb_id="1 OR 1=1; --")},
        422,
        "properties.gb_id",
    ),
    C(
        "camera-duplicate-gb-id",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, gb_id=c.camera_gb_id)},
        422,
        "gb_id",
    ),
    C(
        "camera-azimuth-360",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, azimuth_deg=360)},
        422,
        "properties.azimuth_deg",
    ),
    C(
        "camera-height-infinity",
        "POST",
        CAMERAS,
        lambda c: raw_json(camera_body(c, height_m=float("inf"))),
        422,
        "properties.height_m",
    ),
    C(
        "camera-outside-xiangxi",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, [116.4, 39.9])},
        422,
        "outside Xiangxi",
    ),
    C(
        "camera-kind-unknown",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, kind="drone")},
        422,
        "properties.kind",
    ),
    C(
        "camera-name-control",
        "POST",
        CAMERAS,
        lambda c: {"json": camera_body(c, name="cam\x08")},
        422,
        "properties.name",
    ),
    C(
        "camera-patch-hfov-zero",
        "PATCH",
        CAMERA,
        lambda c: {"json": {"properties": {"hfov_deg": 0}}},
        422,
        "properties.hfov_deg",
    ),
    C(
        "camera-patch-swapped",
        "PATCH",
        CAMERA,
        lambda c: {"json": {"geometry": {"type": "Point", "coordinates": [28.3, 109.7]}}},
        422,
        SWAPPED,
    ),
    C(
        "camera-id-overflow",
        "PATCH",
        "/v1/cameras/99999999999999999999999",
        lambda c: {"json": {"properties": {"name": "x"}}},
        404,
        "camera",
    ),
    # -- POST/PATCH /v1/incidents and events -----------------------------------------------------
    C(
        "incident-swapped",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, lon=28.3, lat=109.7)},
        422,
        SWAPPED,
        D,
    ),
    C(
        "incident-nan",
        "POST",
        INCIDENTS,
        lambda c: raw_json(incident_body(c, lon=float("nan"))),
        422,
        "lon",
        D,
    ),
    C(
        "incident-lon-only",
        "POST",
        INCIDENTS,
        lambda c: {"json": {"category": "environment", "lon": 109.7}},
        422,
        "lat",
        D,
    ),
    C(
        "incident-category-unknown",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, category="'; DELETE FROM incident; --")},
        422,
        "category",
        D,
    ),
    C(
        "incident-description-nul",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, description="漏水\x00")},
        422,
        "description",
        D,
    ),
    C(
        "incident-description-escape",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, description="\x1b]0;pwned\x07")},
        422,
        "description",
        D,
    ),
    C(
        "incident-address-10k",
        "POST",
        INCIDENTS,
        lambda c: {"json": {"category": "environment", "address": "乾州" * 5000}},
        422,
        "address",
        D,
    ),
    C(
        "incident-address-empty",
        "POST",
        INCIDENTS,
        lambda c: {"json": {"category": "environment", "address": ""}},
        422,
        "address",
        D,
    ),
    C(
        "incident-address-punctuation",
        "POST",
        INCIDENTS,
        lambda c: {"json": {"category": "environment", "address": "！！？。，、……"}},
        422,
        "address",
        D,
    ),
    C(
        "incident-address-control",
        "POST",
        INCIDENTS,
        lambda c: {"json": {"category": "environment", "address": "吉首市\x00乾州"}},
        422,
        "address",
        D,
    ),
    C(
        "incident-future",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, reported_at="2999-01-01T00:00:00+08:00")},
        422,
        "reported_at",
        D,
    ),
    C(
        "incident-extra-field",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, grid_id=1)},
        422,
        "grid_id",
        D,
    ),
    C(
        "incident-photo-javascript",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, photos=["javascript:alert(1)"])},
        422,
        "photos.0",
        D,
    ),
    C(
        "incident-reporter-phone-sql",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, reporter={"phone": "1' OR '1'='1"})},
        422,
        "reporter.phone",
        D,
    ),
    C(
        "incident-coord-sys-unknown",
        "POST",
        INCIDENTS,
        lambda c: {"json": incident_body(c, coord_sys="EPSG:4326; DROP")},
        422,
        "coord_sys",
        D,
    ),
    C(
        "incident-patch-swapped",
        "PATCH",
        INCIDENT,
        lambda c: {"json": {"lon": 28.3, "lat": 109.7}},
        422,
        SWAPPED,
        D,
    ),
    C(
        "incident-patch-note-nul",
        "PATCH",
        INCIDENT,
        lambda c: {"json": {"description": "x", "note": "\x00"}},
        422,
        "note",
        D,
    ),
    C(
        "incident-id-overflow",
        "PATCH",
        "/v1/incidents/99999999999999999999999",
        lambda c: {"json": {"description": "x"}},
        404,
        "incident",
        D,
    ),
    C(
        "event-unknown-action",
        "POST",
        EVENTS,
        lambda c: {"json": {"action": "drop_table"}},
        422,
        "action",
        D,
    ),
    C(
        "event-note-nul",
        "POST",
        EVENTS,
        lambda c: {"json": {"action": "accept", "note": "ok\x00"}},
        422,
        "note",
        D,
    ),
    C(
        "event-assignee-control",
        "POST",
        EVENTS,
        lambda c: {"json": {"action": "accept", "assignee": "\x7f\x1b"}},
        422,
        "assignee",
        D,
    ),
    C(
        "event-score-6",
        "POST",
        EVENTS,
        lambda c: {"json": {"action": "evaluate", "score": 6}},
        422,
        "score",
        D,
    ),
    C(
        "event-reject-without-note",
        "POST",
        EVENTS,
        lambda c: {"json": {"action": "reject"}},
        422,
        "note",
        D,
    ),
    C(
        "event-id-overflow",
        "POST",
        "/v1/incidents/99999999999999999999999/events",
        lambda c: {"json": {"action": "accept"}},
        404,
        "incident",
        D,
    ),
    C(
        "cameras-visible-swapped",
        "GET",
        "/v1/cameras/visible",
        lambda c: {"params": {"lon": c.point[1], "lat": c.point[0]}},
        400,
        SWAPPED,
        D,
    ),
    C(
        "cameras-visible-lat-out-of-range",
        "GET",
        "/v1/cameras/visible",
        lambda c: {"params": {"lon": 10, "lat": 91}},
        400,
        "lat",
        D,
    ),
    # -- lookup ------------------------------------------------------------------------------
    C(
        "lookup-swapped",
        "GET",
        "/v1/lookup",
        lambda c: {"params": {"lon": c.point[1], "lat": c.point[0]}},
        400,
        SWAPPED,
        D,
    ),
    C(
        "lookup-lat-nan",
        "GET",
        "/v1/lookup",
        lambda c: {"params": {"lon": 109.7, "lat": "nan"}},
        400,
        "lat",
        D,
    ),
    C(
        "lookup-lon-infinity",
        "GET",
        "/v1/lookup",
        lambda c: {"params": {"lon": "inf", "lat": 28.3}},
        400,
        "lon",
        D,
    ),
    C(
        "lookup-address-2k",
        "GET",
        "/v1/lookup",
        lambda c: {"params": {"address": "乾" * 2000}},
        400,
        "address",
        D,
    ),
    C(
        "lookup-address-control",
        "GET",
        "/v1/lookup",
        lambda c: {"params": {"address": "吉首市\x1b乾州"}},
        400,
        "address",
        D,
    ),
    C(
        "lookup-address-punctuation",
        "GET",
        "/v1/lookup",
        lambda c: {"params": {"address": "?!.,;"}},
        400,
        "address",
        D,
    ),
    C(
        "lookup-address-blank",
        "GET",
        "/v1/lookup",
        lambda c: {"params": {"address": "   "}},
        400,
        "address",
        D,
    ),
    C(
        "batch-swapped",
        "POST",
        "/v1/lookup/batch",
        lambda c: {"json": [list(c.point), [28.3, 109.7]]},
        422,
        SWAPPED,
        D,
    ),
    C(
        "batch-nan",
        "POST",
        "/v1/lookup/batch",
        lambda c: raw_json([[float("nan"), 28.3]]),
        400,
        "JSON",
        D,
    ),
    C(
        "batch-3d",
        "POST",
        "/v1/lookup/batch",
        lambda c: {"json": [[*c.point, 5.0]]},
        422,
        "row 0",
        D,
    ),
    C(
        "batch-strings",
        "POST",
        "/v1/lookup/batch",
        lambda c: {"json": [{"lon": "109.7", "lat": "28.3"}]},
        422,
        "row 0",
        D,
    ),
    C(
        "batch-deep-nesting",
        "POST",
        "/v1/lookup/batch",
        lambda c: {
            "content": b"[" * 5000 + b"]" * 5000,
            "headers": {"content-type": "application/json"},
        },
        400,
        "JSON",
        D,
    ),
    C(
        "batch-too-large",
        "POST",
        "/v1/lookup/batch",
        lambda c: {"json": [list(c.point)] * 10_000},
        413,
        "at most",
        D,
    ),
    # -- imports ------------------------------------------------------------------------------
    C(
        "import-grids-duplicate-code",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(square_feature(c, "997"), square_feature(c, "997", 0.001)),
        422,
        "duplicate",
    ),
    C(
        "import-grids-self-intersecting",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(
            feature(
                {"type": "Polygon", "coordinates": BOWTIE}, code=c.village_code + "997", name="x"
            ),
        ),
        422,
        "Self-intersection",
    ),
    C(
        "import-grids-point",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(
            feature(
                {"type": "Point", "coordinates": list(c.point)},
                code=c.village_code + "997",
                name="x",
            ),
        ),
        422,
        "Polygon",
    ),
    C(
        "import-grids-swapped",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(
            feature(
                {"type": "Polygon", "coordinates": SWAPPED_RING},
                code=c.village_code + "997",
                name="x",
            ),
        ),
        422,
        SWAPPED,
    ),
    C(
        "import-grids-too-many-vertices",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(
            feature(
                {"type": "Polygon", "coordinates": many_vertices(c, MAX_VERTICES + 100)},
                code=c.village_code + "997",
                name="x",
            ),
        ),
        422,
        f"at most {MAX_VERTICES}",
    ),
    C(
        "import-grids-name-control",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(square_feature(c, "997", name="网格\x1b[2J")),
        422,
        "control character",
    ),
    C(
        "import-grids-code-sql",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(square_feature(c, "997", code="'); DROP TABLE grid; --")),
        422,
        "code",
    ),
    C(
        "import-grids-zip-bomb",
        "POST",
        "/v1/grids/import",
        lambda c: upload("grids.zip", lying_zip(4_000_000_000)),
        413,
        "grids.geojson",
    ),
    C(
        "import-grids-zip-ratio",
        "POST",
        "/v1/grids/import",
        lambda c: upload(
            "grids.zip",
            zipped({"grids.geojson": b"{}", "pad.bin": b"\0" * 3_000_000}, zipfile.ZIP_BZIP2),
        ),
        413,
        "pad.bin",
    ),
    C(
        "import-grids-zip-entries",
        "POST",
        "/v1/grids/import",
        lambda c: upload("grids.zip", zipped({f"e{i}.txt": b"" for i in range(1001)})),
        413,
        "entries",
    ),
    C(
        "import-grids-zip-escape",
        "POST",
        "/v1/grids/import",
        lambda c: upload("grids.zip", zipped({"../../etc/grids.geojson": b"{}"})),
        400,
        "outside its folder",
    ),
    C(
        "import-grids-too-large",
        "POST",
        "/v1/grids/import",
        lambda c: upload("grids.geojson", b" " * (MAX_UPLOAD_BYTES + 1)),
        413,
        "GRIDCOVER_MAX_UPLOAD_BYTES",
    ),
    C(
        "import-grids-garbage",
        "POST",
        "/v1/grids/import",
        lambda c: upload("grids.geojson", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
        400,
        "grids.geojson",
    ),
    C(
        "import-grids-kml",
        "POST",
        "/v1/grids/import",
        lambda c: upload("grids.kml", b"<kml/>"),
        415,
        "grids.kml",
    ),
    C(
        "import-admin-areas-line",
        "POST",
        "/v1/admin-areas/import",
        lambda c: upload(
            "areas.geojson",
            geojson_file(
                [
                    feature(
                        {"type": "LineString", "coordinates": [list(c.point), [109.8, 28.4]]},
                        code="433101999",
                        name="线",
                    )
                ]
            ),
        ),
        422,
        "Polygon",
    ),
    C(
        "import-cameras-duplicate-gb-id",
        "POST",
        "/v1/cameras/import",
        lambda c: camera_csv(
            [
                f"{gb(c, 9999991)},a,bullet,{c.point[0]},{c.point[1]},4",
                f"{gb(c, 9999991)},b,dome,{c.point[0]},{c.point[1]},4",
            ]
        ),
        422,
        "duplicate",
    ),
    C(
        "import-cameras-swapped",
        "POST",
        "/v1/cameras/import",
        lambda c: camera_csv([f"{gb(c, 9999992)},a,bullet,{c.point[1]},{c.point[0]},4"]),
        422,
        SWAPPED,
    ),
    C(
        "import-cameras-nan",
        "POST",
        "/v1/cameras/import",
        lambda c: camera_csv([f"{gb(c, 9999993)},a,bullet,NaN,{c.point[1]},4"]),
        422,
        "lon and lat",
    ),
    C(
        "import-cameras-height-inf",
        "POST",
        "/v1/cameras/import",
        lambda c: camera_csv([f"{gb(c, 9999994)},a,bullet,{c.point[0]},{c.point[1]},inf"]),
        422,
        "height_m",
    ),
    C(
        "import-cameras-name-control",
        "POST",
        "/v1/cameras/import",
        lambda c: camera_csv([f"{gb(c, 9999995)},\x1b[1m,bullet,{c.point[0]},{c.point[1]},4"]),
        422,
        "name",
    ),
    C(
        "import-cameras-wkt-nan",
        "POST",
        "/v1/cameras/import",
        lambda c: camera_csv(
            [f'{gb(c, 9999996)},a,bullet,"POINT (nan nan)",4'], "gb_id,name,kind,wkt,height_m"
        ),
        422,
        "not finite",
    ),
    C(
        "import-grids-unclosed-ring",
        "POST",
        "/v1/grids/import",
        lambda c: grid_file(
            feature(
                {"type": "Polygon", "coordinates": [c.square()[0][:-1]]},
                code=c.village_code + "997",
                name="x",
            )
        ),
        422,
        "do not form a closed linestring",
    ),
    C(
        "import-cameras-xml-entity",
        "POST",
        "/v1/cameras/import",
        lambda c: upload(
            "catalog.xml",
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "x">]><Response>&x;</Response>',
        ),
        400,
        "catalog.xml",
    ),
    # -- Open311 (its own error format) ---------------------------------------------------------
    C(
        "open311-swapped",
        "POST",
        OPEN311,
        lambda c: open311_form(c, lat="109.7", long="28.3"),
        400,
        SWAPPED,
        D,
        open311=True,
    ),
    C(
        "open311-lat-nan",
        "POST",
        OPEN311,
        lambda c: open311_form(c, lat="NaN"),
        400,
        "lat",
        D,
        open311=True,
    ),
    C(
        "open311-description-nul",
        "POST",
        OPEN311,
        lambda c: open311_form(c, description="x\x00y"),
        400,
        "description",
        D,
        open311=True,
    ),
    C(
        "open311-address-punctuation",
        "POST",
        OPEN311,
        lambda c: open311_form(c, lat=None, long=None, address_string="。。。！！"),
        400,
        "address_string",
        D,
        open311=True,
    ),
    C(
        "open311-service-code-sql",
        "POST",
        OPEN311,
        lambda c: open311_form(c, service_code="x' OR '1'='1"),
        400,
        "category",
        D,
        open311=True,
    ),
    C(
        "open311-json-body",
        "POST",
        OPEN311,
        lambda c: {"json": {"service_code": "environment"}},
        400,
        "service_code",
        D,
        open311=True,
    ),
    C(
        "open311-too-large",
        "POST",
        OPEN311,
        lambda c: open311_form(c, description="x" * MAX_BODY_BYTES),
        413,
        "GRIDCOVER_MAX_BODY_BYTES",
        D,
    ),
    # -- OGC API - Features parameters and CQL2 ----------------------------------------------
    C("ogc-bbox-nan", "GET", ITEMS, lambda c: {"params": {"bbox": "nan,28,110,29"}}, 400, "bbox"),
    C(
        "ogc-bbox-inverted",
        "GET",
        ITEMS,
        lambda c: {"params": {"bbox": "109,29,110,28"}},
        400,
        "bbox",
    ),
    C(
        "ogc-bbox-out-of-range",
        "GET",
        ITEMS,
        lambda c: {"params": {"bbox": "109,28,110,95"}},
        400,
        "bbox",
    ),
    C(
        "ogc-bbox-three-numbers",
        "GET",
        ITEMS,
        lambda c: {"params": {"bbox": "109,28,110"}},
        400,
        "bbox",
    ),
    C("ogc-crs-unknown", "GET", ITEMS, lambda c: {"params": {"crs": "EPSG:99999"}}, 400, "crs"),
    C("ogc-limit-negative", "GET", ITEMS, lambda c: {"params": {"limit": -1}}, 400, "limit"),
    C("ogc-limit-not-a-number", "GET", ITEMS, lambda c: {"params": {"limit": "1e3"}}, 400, "limit"),
    C("ogc-offset-huge", "GET", ITEMS, lambda c: {"params": {"offset": 10**15}}, 400, "offset"),
    C(
        "ogc-sortby-unknown",
        "GET",
        ITEMS,
        lambda c: {"params": {"sortby": "-password"}},
        400,
        "password",
    ),
    C(
        "ogc-datetime-garbage",
        "GET",
        ITEMS,
        lambda c: {"params": {"datetime": "yesterday"}},
        400,
        "datetime",
    ),
    C(
        "ogc-property-not-a-number",
        "GET",
        ITEMS,
        lambda c: {"params": {"population": "lots"}},
        400,
        "population",
    ),
    C("cql2-garbage", "GET", ITEMS, lambda c: {"params": {"filter": ")))((("}}, 400, "position"),
    C(
        "cql2-unknown-property",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "worker_phone = '1'"}},
        400,
        "worker_phone",
    ),
    C(
        "cql2-sql-text",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "name = 'x'; DROP TABLE grid; --"}},
        400,
        "position",
    ),
    C(
        "cql2-deep-nesting",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": deep(500)}},
        400,
        "nests too deeply",
    ),
    C(
        "cql2-deep-not",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "NOT " * 500 + "population > 1"}},
        400,
        "nests too deeply",
    ),
    C(
        "cql2-huge",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "population IN (" + ",".join(["1"] * 15_000) + ")"}},
        400,
        "longer than",
    ),
    C(
        "cql2-deep-functions",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "CASEI(" * 2000 + "name" + ")" * 2000 + " = 'a'"}},
        400,
        "nests too deeply",
    ),
    C(
        "cql2-number-5000-digits",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "population = " + "9" * 5000}},
        400,
        "number",
    ),
    C(
        "cql2-bbox-infinite",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "S_INTERSECTS(geometry, BBOX(109, 28, 1e999, 29))"}},
        400,
        "number",
    ),
    C(
        "cql2-number-infinite",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "population > 1e999"}},
        400,
        "number",
    ),
    C(
        "ogc-property-beyond-bigint",
        "GET",
        ITEMS,
        lambda c: {"params": {"population": "100000000000000000000000"}},
        400,
        "population",
    ),
    C(
        "cql2-bad-wkt",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "S_INTERSECTS(geometry, POLYGON((109 28, 110 28)))"}},
        400,
        "POLYGON",
    ),
    C(
        "cql2-wkt-nan",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "S_INTERSECTS(geometry, POINT(nan nan))"}},
        400,
        "nan",
    ),
    C(
        "cql2-wkt-huge-coordinates",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "S_INTERSECTS(geometry, POINT(1e308 1e308))"}},
        400,
        "out of range",
    ),
    C("cql2-nul", "GET", ITEMS, lambda c: {"params": {"filter": "name = 'a\x00'"}}, 400, "NUL"),
    C(
        "cql2-type-mismatch",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "population = 'many'"}},
        400,
        "population",
    ),
    C(
        "cql2-filter-lang",
        "GET",
        ITEMS,
        lambda c: {"params": {"filter": "population > 1", "filter-lang": "sql"}},
        400,
        "filter-lang",
    ),
    C(
        "cameras-bbox-nan",
        "GET",
        CAMERAS,
        lambda c: {"params": {"bbox": "nan,28,110,29"}},
        400,
        "bbox",
    ),
    C(
        "incidents-bbox-inverted",
        "GET",
        INCIDENTS,
        lambda c: {"params": {"bbox": "110,28,109,29"}},
        400,
        "bbox",
        D,
    ),
    C("grids-limit-huge", "GET", GRIDS, lambda c: {"params": {"limit": 10**12}}, 400, "limit"),
]


def test_the_battery_is_large_enough():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_input_is_refused_cleanly(ctx: Context, case: Case):
    before = row_counts(ctx.engine)
    path = case.path.format(grid=ctx.grid_code, camera=ctx.camera_id, incident=ctx.incident_id)
    request = case.build(ctx)
    headers = ctx.headers[case.role] | request.pop("headers", {})
    response = ctx.client.request(case.method, path, headers=headers, **request)
    assert response.status_code == case.status, response.text[:1000]
    if case.open311:
        assert response.headers["content-type"].startswith("application/json")
        [error] = response.json()
        assert error["code"] == case.status
        assert case.fragment.lower() in error["description"].lower(), error
    else:
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == case.status and problem["title"]
        # The detail names the first error; a file's other rows are listed in `errors`.
        said = [problem["detail"]] + [
            f"{e.get('field')}: {e['reason']}" for e in problem.get("errors", [])
        ]
        assert any(case.fragment.lower() in text.lower() for text in said), problem
    assert row_counts(ctx.engine) == before


def test_sql_looking_and_multilingual_text_is_stored_verbatim(ctx: Context):
    """Values are bound, never spliced into SQL: such text is data like any other."""
    admin = ctx.headers["admin"]
    path = f"/v1/grids/{ctx.grid_code}"
    before = ctx.client.get(path, headers=admin)
    name = '\'; DROP TABLE grid; -- 网格 "引号" \\ 100% _x_'
    changed = ctx.client.patch(
        path,
        json={"properties": {"name": name}},
        headers=admin | {"If-Match": before.headers["ETag"]},
    )
    assert changed.status_code == 200, changed.text
    assert ctx.client.get(path, headers=admin).json()["properties"]["name"] == name
    quoted = name.replace("\\", "\\\\").replace("'", "''")  # CQL2 text escapes
    found = ctx.client.get(ITEMS, params={"filter": f"name = '{quoted}'"}, headers=admin).json()
    assert [f["properties"]["code"] for f in found["features"]] == [ctx.grid_code]
    ctx.client.patch(
        path,
        json={"properties": {"name": before.json()["properties"]["name"]}},
        headers=admin | {"If-Match": changed.headers["ETag"]},
    )

    description = "Robert'); DROP TABLE incident;--\n第二行\t制表"
    incident = ctx.client.post(
        "/v1/incidents",
        json=incident_body(ctx, description=description),
        headers=ctx.headers["dispatcher"],
    )
    assert incident.status_code == 201, incident.text
    assert incident.json()["description"] == description


def test_the_body_limit_holds_before_authentication_and_routing(ctx: Context):
    """An oversized body is refused from its Content-Length alone, for any caller and
    path; uploads have their own, larger limit."""
    big = b"x" * (MAX_BODY_BYTES + 1)
    for path in ("/v1/grids", "/v1/nothing-here", "/v1/lookup/batch"):
        response = ctx.client.post(path, content=big)
        assert response.status_code == 413, path
        assert response.headers["content-type"] == "application/problem+json"
    upload_sized = b" " * (MAX_BODY_BYTES + 1)  # over the body limit, under the upload one
    response = ctx.client.post(
        "/v1/grids/import",
        params={"filename": "grids.geojson"},
        content=upload_sized,
        headers=ctx.headers["admin"],
    )
    assert response.status_code == 400  # read, and found to be no GeoJSON
    # only a POST to an import path is an upload: any other method or path ending in
    # /import keeps the body limit
    for method, path in (("PATCH", "/v1/grids/import"), ("POST", "/v1/grids/x/import")):
        response = ctx.client.request(method, path, content=upload_sized)
        assert response.status_code == 413, (method, path)
