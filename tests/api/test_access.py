"""The access matrix, walked: every route of the app and every OGC collection, with every
role, against `api.auth.PERMISSIONS` (the one table that says who may do what).

`ROUTES` holds a sample request for each (method, path template) of the app and the
permission it needs; the routes under /collections/{collectionId} are walked once per
collection (`PER_COLLECTION`), needing that collection's permission. A route added
without an entry here fails `test_every_route_has_a_sample`, and an entry whose permission
differs from the `require(...)` the route declares fails `test_samples_match_what_routes_declare`.

Allowed: the sample's success status (writes use valid bodies and throw-away records, on
a copy of the small demo world of this module's own). Not allowed: a 401 problem with
`WWW-Authenticate: Bearer` without a key, a 403 problem with one. Also here: hidden
collections stay out of every list, and grid workers' phones are masked below dispatcher.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import shapely
from fastapi.routing import iter_route_contexts
from sqlalchemy import text
from starlette.routing import Mount

from api.app import create_app
from api.auth import PERMISSIONS, Principal, Role, create_api_key, mask_phone, show_worker
from api.routes.ogc import collection_dependency
from api.routes.tiles import tiled_dependency
from api.services.features import COLLECTIONS
from api.services.grids import retire_grid
from api.services.tiles import TILE_ONLY, TILED, tiled_collection
from api.settings import Settings
from geo.codes import make_gb28181
from tests.api.test_incidents import World, world_on

ROLES = ("anonymous", "viewer", "dispatcher", "planner", "admin")
# Routes that declare no `require(...)`: public by nature, or gated inside (Open311 reads
# its `api_key` parameter; the coverage summary is public at county level only).
GATED_INSIDE = {
    ("GET", "/health"),
    ("GET", "/api"),
    ("GET", "/api.html"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/"),
    ("GET", "/conformance"),
    ("GET", "/collections"),
    ("GET", "/map"),
    ("GET", "/static"),
    ("GET", "/v1/coverage/summary"),
    ("GET", "/open311/v2/services.json"),
    ("GET", "/open311/v2/services/{service_code}.json"),
    ("POST", "/open311/v2/requests.json"),
    ("GET", "/open311/v2/requests.json"),
    ("GET", "/open311/v2/requests/{service_request_id}.json"),
}
ALL_TILED = sorted(TILED)


@dataclass
class Call:
    """One HTTP request (the caller's Authorization header is added when sent)."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Demo:
    """The world and the ids the samples use (real rows of the small demo world)."""

    world: World
    grid_code: str
    village_code: str
    lon: float
    lat: float
    camera_id: int
    incident_id: int
    features: dict[str, tuple[str, tuple[int, int, int]]]  # cid -> (a feature id, its tile)
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def sql(self, query: str, **params: Any) -> Any:
        with self.world.engine.begin() as conn:
            return conn.execute(text(query), params).first()

    def send(self, call: Call, headers: dict[str, str]) -> Any:
        return self.world.client.request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            data=call.data,
            files=call.files,
            headers=headers | call.headers,
        )

    def reported_incident(self) -> int:
        """An incident still `reported` (each allowed event or delete uses one up)."""
        return self.sql(
            "SELECT id FROM incident WHERE status = 'reported' AND deleted_at IS NULL "
            "ORDER BY id LIMIT 1"
        ).id

    def spare_outline(self) -> tuple[str, dict[str, Any]]:
        """A free grid code and outline: the last current grid is retired to make room."""
        row = self.sql(
            "SELECT code, village_code, ST_AsGeoJSON(geom) AS outline FROM grid "
            "WHERE valid_to IS NULL ORDER BY code DESC LIMIT 1"
        )
        with self.world.engine.begin() as conn:
            retire_grid(conn, row.code)
        return f"{row.village_code}{900 + next(self.serial):03d}", orjson.loads(row.outline)

    def camera(self) -> dict[str, Any]:
        """A valid new camera standing at the demo point."""
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [self.lon, self.lat]},
            "properties": {
                "gb_id": make_gb28181(self.grid_code[:6], 132, 990_000 + next(self.serial)),
                "name": "权限测试枪机",
                "kind": "bullet",
            },
        }


@dataclass(frozen=True)
class Sample:
    permission: str
    make: Callable[[Demo], Call]
    status: int = 200  # what an allowed caller gets


def get(path: str | Callable[[Demo], str], **params: Any) -> Callable[[Demo], Call]:
    """A GET of `path` (a format string over the Demo's fields, or a function of it)."""

    def make(demo: Demo) -> Call:
        url = path(demo) if callable(path) else path.format(**vars(demo))
        return Call("GET", url, params={k: v.format(**vars(demo)) for k, v in params.items()})

    return make


def new_key(demo: Demo) -> Call:
    with demo.world.engine.begin() as conn:
        key_id, _ = create_api_key(conn, "viewer", "access test, to revoke")
    return Call("DELETE", f"/v1/keys/{key_id}")


def new_camera_to_delete(demo: Demo) -> Call:
    created = demo.world.client.post(
        "/v1/cameras", json=demo.camera(), headers=demo.world.headers["admin"]
    )
    assert created.status_code == 201, created.text
    return Call("DELETE", f"/v1/cameras/{created.json()['id']}")


def new_grid(demo: Demo) -> Call:
    code, outline = demo.spare_outline()
    body = {"type": "Feature", "geometry": outline, "properties": {"code": code, "name": "新网格"}}
    return Call("POST", "/v1/grids", json=body)


def grid_file(demo: Demo) -> Call:
    code, outline = demo.spare_outline()
    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": outline, "properties": {"code": code, "name": "导入"}}
        ],
    }
    upload = {"file": ("grids.geojson", orjson.dumps(collection), "application/geo+json")}
    return Call("POST", "/v1/grids/import", files=upload)


def county_file(demo: Demo) -> Call:
    """A county the small demo world lacks, deep inside the prefecture outside its county."""
    centre = demo.sql(
        "SELECT ST_X(c) AS lon, ST_Y(c) AS lat FROM ("
        "  SELECT (ST_MaximumInscribedCircle(ST_Difference(p.geom, c.geom))).center AS c"
        "  FROM admin_area p, admin_area c"
        "  WHERE p.level = 'prefecture' AND c.code = left(:grid, 6)) x",
        grid=demo.grid_code,
    )
    outline = shapely.box(
        centre.lon - 0.01, centre.lat - 0.01, centre.lon + 0.01, centre.lat + 0.01
    )
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": shapely.geometry.mapping(outline),
                "properties": {"code": "433130", "name": "龙山县", "level": "county"},
            }
        ],
    }
    upload = {"file": ("areas.geojson", orjson.dumps(collection), "application/geo+json")}
    return Call("POST", "/v1/admin-areas/import", files=upload)


def camera_file(demo: Demo) -> Call:
    gb_id = make_gb28181(demo.grid_code[:6], 132, 980_000 + next(demo.serial))
    csv = f"gb_id,name,lon,lat\n{gb_id},导入枪机,{demo.lon},{demo.lat}\n".encode()
    return Call("POST", "/v1/cameras/import", files={"file": ("cameras.csv", csv, "text/csv")})


def grid_to_edit(demo: Demo) -> Call:
    """The last grid: editing one drops its coverage rows until the next recompute, and
    the collection samples read the first grid's."""
    last = demo.sql("SELECT max(code) AS code FROM grid WHERE valid_to IS NULL").code
    return Call("PATCH", f"/v1/grids/{last}", json={"properties": {"households": 321}})


def grid_to_retire(demo: Demo) -> Call:
    last = demo.sql("SELECT max(code) AS code FROM grid WHERE valid_to IS NULL").code
    return Call("DELETE", f"/v1/grids/{last}")


def incident_event(demo: Demo) -> Call:
    return Call(
        "POST", f"/v1/incidents/{demo.reported_incident()}/events", json={"action": "accept"}
    )


ROUTES: dict[tuple[str, str], list[Sample]] = {
    ("GET", "/health"): [Sample("read:public", get("/health"))],
    ("GET", "/api"): [Sample("read:public", get("/api"))],
    ("GET", "/api.html"): [Sample("read:public", get("/api.html"))],
    ("GET", "/docs/oauth2-redirect"): [Sample("read:public", get("/docs/oauth2-redirect"))],
    ("GET", "/"): [Sample("read:public", get("/"))],
    ("GET", "/conformance"): [Sample("read:public", get("/conformance"))],
    ("GET", "/collections"): [Sample("read:public", get("/collections"))],
    ("GET", "/map"): [Sample("read:public", get("/map"))],
    ("GET", "/static"): [Sample("read:public", get("/static/index.html"))],
    ("GET", "/v1/keys"): [Sample("manage:keys", get("/v1/keys"))],
    ("POST", "/v1/keys"): [
        Sample(
            "manage:keys",
            lambda d: Call("POST", "/v1/keys", json={"name": "access test", "role": "viewer"}),
            201,
        )
    ],
    ("DELETE", "/v1/keys/{key_id}"): [Sample("manage:keys", new_key, 204)],
    ("GET", "/v1/audit"): [Sample("read:audit", get("/v1/audit", limit="5"))],
    ("GET", "/v1/lookup"): [
        Sample("lookup", get("/v1/lookup", lon="{lon}", lat="{lat}")),
        Sample("lookup", get("/v1/lookup", address="吉首市")),
    ],
    ("POST", "/v1/lookup/batch"): [
        Sample("lookup", lambda d: Call("POST", "/v1/lookup/batch", json=[[d.lon, d.lat]]))
    ],
    ("POST", "/v1/grids/import"): [Sample("write:grids", grid_file, 201)],
    ("POST", "/v1/admin-areas/import"): [Sample("write:grids", county_file, 201)],
    ("GET", "/v1/villages/{code}/uncovered"): [
        Sample("read:public", get("/v1/villages/{village_code}/uncovered"))
    ],
    ("POST", "/v1/cameras/import"): [Sample("write:cameras", camera_file, 201)],
    ("GET", "/v1/cameras"): [Sample("read:cameras", get("/v1/cameras", limit="3"))],
    ("GET", "/v1/cameras/visible"): [
        Sample("read:cameras_visible", get("/v1/cameras/visible", lon="{lon}", lat="{lat}"))
    ],
    ("GET", "/v1/cameras/{camera_id}"): [Sample("read:cameras", get("/v1/cameras/{camera_id}"))],
    ("POST", "/v1/cameras"): [
        Sample("write:cameras", lambda d: Call("POST", "/v1/cameras", json=d.camera()), 201)
    ],
    ("PATCH", "/v1/cameras/{camera_id}"): [
        Sample(
            "write:cameras",
            lambda d: Call(
                "PATCH", f"/v1/cameras/{d.camera_id}", json={"properties": {"name": "改名"}}
            ),
        )
    ],
    ("DELETE", "/v1/cameras/{camera_id}"): [Sample("write:cameras", new_camera_to_delete, 204)],
    ("GET", "/v1/grids/{code}/coverage"): [
        Sample("read:coverage", get("/v1/grids/{grid_code}/coverage"))
    ],
    ("GET", "/v1/coverage/summary"): [
        Sample("read:public", get("/v1/coverage/summary", by="county")),
        Sample("read:coverage", get("/v1/coverage/summary", by="grid", limit="5")),
    ],
    ("POST", "/v1/coverage/recompute"): [
        Sample("write:cameras", lambda d: Call("POST", "/v1/coverage/recompute"))
    ],
    ("GET", "/v1/grids"): [Sample("read:public", get("/v1/grids", village_code="{village_code}"))],
    ("GET", "/v1/grids/{code}"): [Sample("read:public", get("/v1/grids/{grid_code}"))],
    ("GET", "/v1/grids/{code}/versions"): [
        Sample("read:public", get("/v1/grids/{grid_code}/versions"))
    ],
    ("POST", "/v1/grids"): [Sample("write:grids", new_grid, 201)],
    ("PATCH", "/v1/grids/{code}"): [Sample("write:grids", grid_to_edit)],
    ("DELETE", "/v1/grids/{code}"): [Sample("write:grids", grid_to_retire, 204)],
    ("POST", "/v1/incidents"): [
        Sample(
            "write:incidents",
            lambda d: Call(
                "POST",
                "/v1/incidents",
                json={"category": "environment", "lon": d.lon, "lat": d.lat},
            ),
            201,
        )
    ],
    ("GET", "/v1/incidents"): [Sample("read:incidents", get("/v1/incidents", limit="3"))],
    ("GET", "/v1/incidents/categories"): [Sample("read:public", get("/v1/incidents/categories"))],
    ("GET", "/v1/incidents/{incident_id}"): [
        Sample("read:incidents", get("/v1/incidents/{incident_id}"))
    ],
    ("POST", "/v1/incidents/{incident_id}/events"): [Sample("write:incidents", incident_event)],
    ("PATCH", "/v1/incidents/{incident_id}"): [
        Sample(
            "write:incidents",
            lambda d: Call(
                "PATCH", f"/v1/incidents/{d.reported_incident()}", json={"description": "核实"}
            ),
        )
    ],
    ("DELETE", "/v1/incidents/{incident_id}"): [
        Sample(
            "delete:incidents",
            lambda d: Call("DELETE", f"/v1/incidents/{d.reported_incident()}"),
            204,
        )
    ],
    ("GET", "/v1/stats/incidents"): [Sample("read:incidents", get("/v1/stats/incidents"))],
    ("GET", "/open311/v2/services.json"): [Sample("read:public", get("/open311/v2/services.json"))],
    ("GET", "/open311/v2/services/{service_code}.json"): [
        Sample("read:public", get("/open311/v2/services/environment.json"))
    ],
    ("POST", "/open311/v2/requests.json"): [
        Sample(
            "write:incidents",
            lambda d: Call(
                "POST",
                "/open311/v2/requests.json",
                data={"service_code": "environment", "lat": str(d.lat), "long": str(d.lon)},
            ),
        )
    ],
    ("GET", "/open311/v2/requests.json"): [
        Sample("read:incidents", get("/open311/v2/requests.json"))
    ],
    ("GET", "/open311/v2/requests/{service_request_id}.json"): [
        Sample("read:incidents", get("/open311/v2/requests/{incident_id}.json"))
    ],
}

TILES = "/collections/{collectionId}/tiles/WebMercatorQuad"
# Per collection: the request, given the collection id (None: the route does not apply).
PER_COLLECTION: dict[tuple[str, str], Callable[[Demo, str], Call | None]] = {
    ("GET", "/collections/{collectionId}"): lambda d, cid: (
        Call("GET", f"/collections/{cid}") if cid in COLLECTIONS else None
    ),
    ("GET", "/collections/{collectionId}/queryables"): lambda d, cid: (
        Call("GET", f"/collections/{cid}/queryables") if cid in COLLECTIONS else None
    ),
    ("GET", "/collections/{collectionId}/schema"): lambda d, cid: (
        Call("GET", f"/collections/{cid}/schema") if cid in COLLECTIONS else None
    ),
    ("GET", "/collections/{collectionId}/items"): lambda d, cid: (
        Call("GET", f"/collections/{cid}/items", params={"limit": 2})
        if cid in COLLECTIONS
        else None
    ),
    ("GET", "/collections/{collectionId}/items/{featureId}"): lambda d, cid: (
        Call("GET", f"/collections/{cid}/items/{d.features[cid][0]}")
        if cid in COLLECTIONS
        else None
    ),
    ("GET", TILES): lambda d, cid: Call("GET", TILES.format(collectionId=cid)),
    ("GET", TILES + "/{z}/{x}/{y}"): lambda d, cid: Call(
        "GET", TILES.format(collectionId=cid) + "/{}/{}/{}".format(*d.features[cid][1])
    ),
}
EVERY_COLLECTION = sorted({*COLLECTIONS, *TILE_ONLY})


def permission_of(cid: str) -> str:
    collection = COLLECTIONS.get(cid) or tiled_collection(cid)
    assert collection is not None, cid
    return collection.permission


def allowed(role: str, permission: str) -> bool:
    return Role[role] >= PERMISSIONS[permission]


def readable_ids(role: str, ids: list[str]) -> set[str]:
    return {cid for cid in ids if allowed(role, permission_of(cid))}


# -- the world -------------------------------------------------------------------------------
def tile_of(geometry: dict[str, Any], zoom: int = 14) -> tuple[int, int, int]:
    """The WebMercatorQuad tile at `zoom` holding a point of the geometry."""
    point = shapely.geometry.shape(geometry).point_on_surface()
    n = 1 << zoom
    x = int((point.x + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(point.y))) / math.pi) / 2.0 * n)
    return zoom, x, y


@contextmanager
def demo_on(server_url: str, prefix: str) -> Iterator[Demo]:
    """A fresh copy of the small demo world, and the ids the samples use."""
    with world_on(server_url, prefix) as world:
        with world.engine.connect() as conn:
            grid = conn.execute(
                text(
                    "SELECT code, village_code, ST_X(ST_PointOnSurface(geom)) AS lon, "
                    "ST_Y(ST_PointOnSurface(geom)) AS lat FROM grid "
                    "WHERE valid_to IS NULL AND worker_phone IS NOT NULL ORDER BY code LIMIT 1"
                )
            ).one()
            camera_id = conn.execute(text("SELECT min(id) FROM camera")).scalar_one()
            incident_id = conn.execute(
                text(
                    "SELECT min(id) FROM incident WHERE deleted_at IS NULL AND grid_id IS NOT NULL"
                )
            ).scalar_one()
            h3_cell = conn.execute(
                text("SELECT ST_AsGeoJSON(geom) FROM coverage_h3 WHERE level = 'detect' LIMIT 1")
            ).scalar_one()
        features = {}
        for cid in COLLECTIONS:
            page = world.client.get(
                f"/collections/{cid}/items", params={"limit": 1}, headers=world.headers["admin"]
            ).json()
            assert page["features"], f"the demo world has no {cid}"
            feature = page["features"][0]
            features[cid] = (str(feature["id"]), tile_of(feature["geometry"]))
        features["coverage_h3"] = ("", tile_of(orjson.loads(h3_cell)))
        yield Demo(
            world,
            grid.code,
            grid.village_code,
            grid.lon,
            grid.lat,
            camera_id,
            incident_id,
            features,
        )


@pytest.fixture(scope="module")
def demo(server_url) -> Iterator[Demo]:
    with demo_on(server_url, "gridcover_access") as world:
        yield world


# -- the route table against the app ---------------------------------------------------------
def app_routes() -> dict[tuple[str, str], Any]:
    """(method, path template) -> the route context, for every route of the app."""
    app = create_app(Settings(database_url="postgresql+psycopg://nobody@localhost/none"))
    found = {}
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            found[("GET", route.path)] = route
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found[(method, route.path)] = route
    return found


def declared_gates(route: Any) -> tuple[set[str], set[Any]]:
    """The permissions of the `require(...)` dependencies a route declares, and which of
    the collection gates it uses."""
    permissions, gates = set(), set()
    dependant = getattr(route, "dependant", None)
    stack = list(dependant.dependencies) if dependant is not None else []
    while stack:
        dependant = stack.pop()
        call = dependant.call
        if hasattr(call, "permission"):
            permissions.add(call.permission)
        if call in (collection_dependency, tiled_dependency):
            gates.add(call)
        stack.extend(dependant.dependencies)
    return permissions, gates


def test_every_route_has_a_sample():
    routes = set(app_routes())
    listed = {*ROUTES, *PER_COLLECTION}
    assert routes - listed == set(), "routes without a sample request in ROUTES"
    assert listed - routes == set(), "samples for routes the app does not have"


def test_samples_match_what_routes_declare():
    for key, route in app_routes().items():
        permissions, gates = declared_gates(route)
        if key in PER_COLLECTION:
            wanted = tiled_dependency if "/tiles/" in key[1] else collection_dependency
            assert gates == {wanted}, key
        elif key in GATED_INSIDE:
            assert not permissions, f"{key} declares {permissions}: take it out of GATED_INSIDE"
        else:
            sampled = {sample.permission for sample in ROUTES[key]}
            assert permissions == sampled, key
    for samples in ROUTES.values():
        for sample in samples:
            assert sample.permission in PERMISSIONS


# -- walking the matrix ----------------------------------------------------------------------
def check(response: Any, role: str, permission: str, status: int, what: str) -> None:
    open311 = what.startswith("/open311/")
    if allowed(role, permission):
        assert response.status_code == status, f"{role} {what}: {response.text[:300]}"
        return
    expected = 401 if role == "anonymous" else 403
    assert response.status_code == expected, f"{role} {what}: {response.text[:300]}"
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer", what
    if open311:  # Open311 answers errors in its own format (GeoReport v2)
        assert response.json() == [
            {"code": expected, "description": response.json()[0]["description"]}
        ]
        return
    assert response.headers["content-type"] == "application/problem+json", what
    problem = response.json()
    assert problem["status"] == expected and problem["detail"], what


SAMPLES = [(key, i) for key, samples in ROUTES.items() for i in range(len(samples))]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("key", "index"), SAMPLES, ids=[f"{m} {p} #{i}" for (m, p), i in SAMPLES])
def test_route_with_role(demo, key, index, role):
    sample = ROUTES[key][index]
    call = sample.make(demo)
    response = demo.send(call, demo.world.headers[role])
    check(response, role, sample.permission, sample.status, call.path)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("cid", EVERY_COLLECTION)
def test_collection_with_role(demo, cid, role):
    permission = permission_of(cid)
    for make in PER_COLLECTION.values():
        call = make(demo, cid)
        if call is not None:
            response = demo.send(call, demo.world.headers[role])
            check(response, role, permission, 200, call.path)


# -- hidden collections ----------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_hidden_collections_stay_out_of_every_list(demo, role):
    headers = demo.world.headers[role]
    client = demo.world.client
    readable = readable_ids(role, list(COLLECTIONS))
    hidden = set(COLLECTIONS) - readable
    listed = client.get("/collections", headers=headers)
    assert listed.status_code == 200
    assert {c["id"] for c in listed.json()["collections"]} == readable
    for cid in hidden:
        assert f"/collections/{cid}" not in listed.text, cid
    # the answers to unknown ids name what the caller may read, and only that
    unknown = client.get("/collections/nothing", headers=headers)
    assert unknown.status_code == 404
    named = re.search(r"\(([^)]*)\)$", unknown.json()["detail"]).group(1)
    assert set(named.split(", ")) - {""} == readable
    unknown_tiles = client.get(TILES.format(collectionId="nothing"), headers=headers)
    assert unknown_tiles.status_code == 404
    named = unknown_tiles.json()["detail"].split("tiled collections: ")[1]
    assert set(named.split(", ")) - {""} == readable_ids(role, ALL_TILED)


@pytest.mark.parametrize("role", ROLES)
def test_public_layers_show_only_the_fields_the_role_may_see(demo, role):
    """Grids are public, their worker and coverage fields are not: items, queryables and
    the TileJSON of the grid tiles leave them out below the role that may read them."""
    headers = demo.world.headers[role]
    client = demo.world.client
    items = client.get("/collections/grids/items", params={"limit": 5}, headers=headers).json()
    names = set().union(*(f["properties"] for f in items["features"]))
    queryables = client.get("/collections/grids/queryables", headers=headers).json()
    tilejson = client.get(TILES.format(collectionId="grids"), headers=headers).json()
    fields = set(tilejson["vector_layers"][0]["fields"])
    for name in ("worker_name",):
        shown = allowed(role, "read:worker_name")
        assert (name in names) is shown and (name in queryables["properties"]) is shown
        assert (name in fields) is shown
    assert ("public_ratio" in fields) is allowed(role, "read:coverage")
    assert "worker_phone" not in names | fields | set(queryables["properties"])


# -- grid workers' phones --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812345678", "138****5678"),
        ("19901000001", "199****0001"),
        ("0743-8521234", "074*-***1234"),
        ("+86 138 1234 5678", "+86 1** **** 5678"),
        ("12345", "***45"),
        ("", ""),
    ],
)
def test_phones_are_masked_like_chinese_services_do(phone, masked):
    assert mask_phone(phone) == masked


def worker_expected(role: str, name: str, phone: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    if role == "viewer":
        return {"worker_name": name, "worker_phone": phone[:3] + "****" + phone[-4:]}
    return {"worker_name": name, "worker_phone": phone}


def worker_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in ("worker_name", "worker_phone")}


@pytest.mark.parametrize("role", ROLES)
def test_grid_answers_mask_the_workers_phone_below_dispatcher(demo, role):
    row = demo.sql(
        "SELECT worker_name, worker_phone FROM grid WHERE code = :code AND valid_to IS NULL",
        code=demo.grid_code,
    )
    expected = worker_expected(role, row.worker_name, row.worker_phone)
    assert show_worker(Principal(Role[role]), dict(row._mapping)) == expected
    client, headers = demo.world.client, demo.world.headers[role]
    one = client.get(f"/v1/grids/{demo.grid_code}", headers=headers).json()
    assert worker_fields(one["properties"]) == expected
    listed = client.get(
        "/v1/grids", params={"village_code": demo.village_code}, headers=headers
    ).json()
    mine = next(f for f in listed["features"] if f["id"] == demo.grid_code)
    assert worker_fields(mine["properties"]) == expected
    versions = client.get(f"/v1/grids/{demo.grid_code}/versions", headers=headers).json()
    assert worker_fields(versions["features"][-1]["properties"]) == expected


@pytest.mark.parametrize("role", ["dispatcher", "planner", "admin"])
def test_lookup_and_incident_answers_show_the_whole_phone_to_who_may_read_them(demo, role):
    """Lookups and incidents are for dispatchers and up (viewers get 403 above), who see
    the whole phone: the same rule as the grid answers, through the same function."""
    client, headers = demo.world.client, demo.world.headers[role]
    lookup = client.get(
        "/v1/lookup", params={"lon": demo.lon, "lat": demo.lat}, headers=headers
    ).json()
    row = demo.sql(
        "SELECT worker_name, worker_phone FROM grid WHERE code = :code AND valid_to IS NULL",
        code=lookup["grid"]["code"],
    )
    assert worker_fields(lookup["grid"]) == worker_expected(role, *row)
    batch = client.post("/v1/lookup/batch", json=[[demo.lon, demo.lat]], headers=headers).json()
    assert worker_fields(batch["results"][0]["grid"]) == worker_expected(role, *row)
    incidents = [client.get(f"/v1/incidents/{demo.incident_id}", headers=headers).json()]
    incidents += client.get("/v1/incidents", params={"limit": 5}, headers=headers).json()[
        "incidents"
    ]
    for incident in incidents:
        row = demo.sql(
            "SELECT g.worker_name, g.worker_phone FROM incident i JOIN grid g ON g.id = i.grid_id "
            "WHERE i.id = :id",
            id=incident["id"],
        )
        if row is None:
            assert incident["grid"] is None
        else:
            assert worker_fields(incident["grid"]) == worker_expected(role, *row)
