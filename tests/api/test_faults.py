"""Faults: PostgreSQL restarted under the running service, editors racing on one record,
and imports killed half-way.

Everything runs against a PostgreSQL cluster of this module's own (it is stopped and
started here; the shared one under `.gridcover/` is never touched) holding a small world:
the real counties, a village in Jishou cut into four grids with one camera, and an empty
village next to it. The service is the real `gridcover serve` in a subprocess, spoken to
over HTTP from several threads; the killed imports are real `gridcover import` processes.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely import box
from sqlalchemy import Engine, text

from api.auth import create_api_key
from api.db import make_engine
from api.embedded import EmbeddedCluster
from api.migrate import upgrade
from api.services import grids as grid_service
from api.services.admin_areas import write_admin_areas
from api.services.camera_sights import CAMERA_CHANGED_CHANNEL
from api.services.cameras import EDITABLE as CAMERA_EDITABLE
from api.services.cameras import create_camera
from api.services.grids import GRID_KINDS, write_grids
from api.services.lookup import GRID_CHANGED_CHANNEL
from api.settings import Settings
from geo.codes import make_gb28181
from geo.reference import load_counties, load_prefecture

# The service's connect timeout during these tests: no request may take much longer.
CONNECT_TIMEOUT_S = 3
# What a request may take beyond the connect timeout before we call it a hang.
MARGIN_S = 2.0
VILLAGE_CODE = "433101001001"
VILLAGE = box(109.70, 28.28, 109.76, 28.34)  # in Jishou (433101)
# A second village, left without grids for the grid import to fill.
EMPTY_VILLAGE_CODE = "433101001002"
EMPTY_VILLAGE = box(109.76, 28.28, 109.82, 28.34)
GRID_CELLS = {
    f"{VILLAGE_CODE}{n + 1:03d}": box(
        109.70 + 0.03 * (n // 2),
        28.28 + 0.03 * (n % 2),
        109.73 + 0.03 * (n // 2),
        28.31 + 0.03 * (n % 2),
    )
    for n in range(4)
}
# Tables an import may write, compared before and after a killed one.
IMPORTED_TABLES = ("grid", "camera", "camera_fov", "coverage", "coverage_h3", "audit_log")


@dataclass
class World:
    url: str
    engine: Engine
    headers: dict[str, dict[str, str]]
    camera_id: int

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()


def cli(url: str) -> tuple[list[str], dict[str, str]]:
    """argv prefix and environment to run `gridcover` against `url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env |= {
        "GRIDCOVER_DATABASE_URL": url,
        "GRIDCOVER_LOG_LEVEL": "warning",
        "GRIDCOVER_DB_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
    }
    return [sys.executable, "-c", "from api.cli import main; main()"], env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    managed = EmbeddedCluster(tmp_path_factory.mktemp("faults") / ".gridcover")
    managed.start()
    yield managed
    managed.stop()
    if managed.state:
        shutil.rmtree(managed.state.data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def cluster_running(cluster: EmbeddedCluster) -> None:
    """Each test starts with the cluster up, whatever the one before left."""
    cluster.start()


@pytest.fixture(scope="module")
def world(cluster: EmbeddedCluster) -> Iterator[World]:
    url = cluster.url()
    upgrade(url)
    engine = make_engine(url, Settings(database_url=url))
    prefecture = gpd.GeoDataFrame(
        {"code": ["433100"], "name": ["湘西州"], "level": ["prefecture"], "parent_code": [None]},
        geometry=[load_prefecture()],
        crs=4326,
    )
    below = gpd.GeoDataFrame(
        {
            "code": [VILLAGE_CODE[:9], VILLAGE_CODE, EMPTY_VILLAGE_CODE],
            "name": ["测试街道", "测试社区", "空白社区"],
            "level": ["township", "village", "village"],
            "parent_code": ["433101", VILLAGE_CODE[:9], VILLAGE_CODE[:9]],
        },
        geometry=[VILLAGE.union(EMPTY_VILLAGE), VILLAGE, EMPTY_VILLAGE],
        crs=4326,
    )
    grids = gpd.GeoDataFrame(
        {
            "code": list(GRID_CELLS),
            "name": [f"网格{n}" for n in range(1, 5)],
            "village_code": VILLAGE_CODE,
            "kind": GRID_KINDS[0],
            "households": 300,
            "worker_name": "张三",
        },
        geometry=list(GRID_CELLS.values()),
        crs=4326,
    )
    with engine.begin() as conn:
        write_admin_areas(conn, pd.concat([prefecture, load_counties(), below], ignore_index=True))
        write_grids(conn, grids)
        camera = create_camera(
            conn,
            {
                "gb_id": make_gb28181("433101", 132, 1),
                "name": "路口枪机",
                "kind": "bullet",
                "height_m": 4.0,
                "azimuth_deg": 90.0,
                "hfov_deg": 90.0,
                "resolution_h_px": 1920,
                "range_m": None,
                "status": "online",
                "owner": "public",
                "installed_at": None,
            },
            shapely.Point(109.715, 28.295),
            "test",
        )
        keys = {
            role: create_api_key(conn, role, f"faults {role}")[1]
            for role in ("dispatcher", "planner", "admin")
        }
    headers = {"anonymous": {}} | {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
    yield World(url, engine, headers, camera["id"])
    engine.dispose()


@dataclass
class Server:
    base: str

    def send(self, call: Call, timeout: float = 10.0) -> tuple[httpx.Response, float]:
        """One request; its response and how long it took (seconds)."""
        started = time.monotonic()
        response = httpx.request(
            call.method,
            self.base + call.path,
            headers=call.headers,
            json=call.body,
            timeout=timeout,
        )
        return response, time.monotonic() - started


@pytest.fixture(scope="module")
def served(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`gridcover serve` on the world, on a free loopback port."""
    port = free_port()
    argv, env = cli(world.url)
    log = tmp_path_factory.mktemp("faults-server") / "server.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*argv, "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not come up:\n" + log.read_text()
            time.sleep(0.2)
        yield Server(base)
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass(frozen=True)
class Call:
    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None


def calls(world: World) -> list[Call]:
    """A health check, a point lookup, an OGC items page and a write."""
    return [
        Call("health", "GET", "/health", {}),
        Call("lookup", "GET", "/v1/lookup?lon=109.715&lat=28.295", world.headers["dispatcher"]),
        Call("items", "GET", "/collections/grids/items?limit=10", {}),
        Call(
            "write",
            "PATCH",
            f"/v1/cameras/{world.camera_id}",
            world.headers["admin"],
            {"properties": {"name": "路口枪机"}},
        ),
    ]


def wait_until(check: Callable[[], bool], within_s: float, every_s: float = 0.05) -> float:
    """Seconds until `check()` held; fails after `within_s`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, f"not so within {within_s} s"
        time.sleep(every_s)
    return time.monotonic() - started


def worker_in_lookup(server: Server, world: World, lon: float, lat: float) -> str:
    response, _ = server.send(
        Call("lookup", "GET", f"/v1/lookup?lon={lon}&lat={lat}", world.headers["dispatcher"])
    )
    assert response.status_code == 200, response.text
    return response.json()["grid"]["worker_name"]


def listening_sessions(engine: Engine, channel: str = GRID_CHANGED_CHANNEL) -> int:
    """Sessions of the service listening on `channel` (their last statement was LISTEN)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query = :listen"
            ),
            {"listen": f"LISTEN {channel}"},
        ).scalar_one()


# -- PostgreSQL restarted under the service -------------------------------------------------
def test_an_outage_answers_503_problems_at_once_and_the_service_recovers_by_itself(
    cluster: EmbeddedCluster, world: World, served: Server
):
    """During the outage every request, keyed ones included (a key is trusted without the
    database only for `key_recheck_s`), gets a 503 problem with Retry-After in about the
    connect timeout at most; once PostgreSQL is back the first requests answer 200."""
    probes = calls(world)
    # several at once, so that the pool holds several connections that will all die
    with ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(lambda call: served.send(call)[0], probes * 2))
    assert [r.status_code for r in warm] == [200] * len(warm), [r.text for r in warm]

    cluster.stop()
    # Until then a key checked a moment ago is still trusted, and a lookup, answered from
    # memory, may be served during the outage.
    time.sleep(Settings().key_recheck_s)
    try:
        # twice: a client that retries at once is answered the same way
        for _ in range(2):
            for call in probes:
                response, took_s = served.send(call)
                assert response.status_code == 503, (call.label, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) > 0
                assert response.json()["status"] == 503
                assert took_s < CONNECT_TIMEOUT_S + MARGIN_S, (call.label, took_s)
    finally:
        cluster.start()

    for call in probes:
        response = served.send(call)[0]
        assert response.status_code == 200, (call.label, response.text)
    engine = world.engine  # its pooled connections died too
    # the grid index and the cameras listen for edits again, and an edit made elsewhere
    # reaches lookups
    wait_until(lambda: listening_sessions(engine) == 1, within_s=5)
    wait_until(lambda: listening_sessions(engine, CAMERA_CHANGED_CHANNEL) == 1, within_s=5)
    with engine.begin() as conn:
        grid_service.update_grid(
            conn, f"{VILLAGE_CODE}001", {"worker_name": "李四"}, None, None, "test"
        )
    wait_until(lambda: worker_in_lookup(served, world, 109.715, 28.295) == "李四", within_s=1.5)
    # API keys are checked against the database again: a new one works, a revoked one not
    with engine.begin() as conn:
        key_id, key = create_api_key(conn, "dispatcher", "after the outage")
    fresh = Call(
        "lookup", "GET", "/v1/lookup?lon=109.715&lat=28.295", {"Authorization": f"Bearer {key}"}
    )
    assert served.send(fresh)[0].status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE api_key SET revoked_at = now() WHERE id = :id"), {"id": key_id})
    wait_until(lambda: served.send(fresh)[0].status_code == 401, within_s=3)


def test_a_restart_between_requests_fails_none_of_them(
    cluster: EmbeddedCluster, world: World, served: Server
):
    """PostgreSQL restarted while nobody asked: the pooled connections are dead, yet the
    requests after it all answer 200."""
    probes = calls(world)
    with ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(lambda call: served.send(call)[0], probes * 2))
    assert [r.status_code for r in warm] == [200] * len(warm)
    cluster.stop()
    cluster.start()
    statuses = [(call.label, served.send(call)[0].status_code) for call in probes * 2]
    assert statuses == [(call.label, 200) for call in probes * 2]


# Idle sessions of the service other than LISTENers and the asking one.
IDLE_SERVICE_SESSIONS = (
    "FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND application_name = 'gridcover' "
    "AND state = 'idle' AND query NOT LIKE 'LISTEN %'"
)


def idle_service_sessions(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) {IDLE_SERVICE_SESSIONS}")).scalar_one()


def test_sessions_the_server_ended_while_idle_fail_no_request(world: World, served: Server):
    """An administrator (or `idle_session_timeout`, or a restarted pooler) ends the
    service's idle sessions: the pool notices at checkout and connects anew."""
    probes = calls(world)
    # only the server's sessions are left to end: the test's own pool closes its own
    world.engine.dispose()

    def server_holds_two_sessions() -> bool:
        with ThreadPoolExecutor(8) as pool:
            warm = list(pool.map(lambda call: served.send(call)[0], probes * 2))
        assert [r.status_code for r in warm] == [200] * len(warm)
        world.engine.dispose()
        return idle_service_sessions(world.engine) >= 2

    # how many sessions a burst leaves pooled depends on how the requests overlapped
    wait_until(server_holds_two_sessions, within_s=20, every_s=0)
    with world.engine.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                + IDLE_SERVICE_SESSIONS
            )
        ).scalar_one()
    assert ended >= 2
    with ThreadPoolExecutor(8) as pool:
        after = list(pool.map(lambda call: served.send(call)[0], probes * 2))
    assert [(r.status_code, r.text[:80]) for r in after if r.status_code != 200] == []


# -- editors racing on one record -----------------------------------------------------------
def audit_rows(world: World, entity: str, entity_id: str, action: str = "update") -> int:
    return world.scalar(
        "SELECT count(*) FROM audit_log WHERE entity = :entity AND entity_id = :id "
        "AND action = :action",
        entity=entity,
        id=entity_id,
        action=action,
    )


def test_a_stale_if_match_is_a_412_problem_and_changes_nothing(world: World, served: Server):
    admin = world.headers["admin"]
    with httpx.Client(base_url=served.base, headers=admin, timeout=30) as http:
        for path, entity, entity_id in (
            (f"/v1/cameras/{world.camera_id}", "camera", str(world.camera_id)),
            (f"/v1/grids/{VILLAGE_CODE}002", "grid", f"{VILLAGE_CODE}002"),
        ):
            stale_etag = http.get(path).headers["etag"]
            first = http.patch(
                path, json={"properties": {"name": "第一"}}, headers={"If-Match": stale_etag}
            )
            assert first.status_code == 200, first.text
            current = http.get(path)
            audited = audit_rows(world, entity, entity_id)

            stale = http.patch(
                path, json={"properties": {"name": "第二"}}, headers={"If-Match": stale_etag}
            )
            assert stale.status_code == 412, stale.text
            assert stale.headers["content-type"] == "application/problem+json"
            assert "changed since you read it" in stale.json()["detail"]
            again = http.get(path)
            assert again.headers["etag"] == current.headers["etag"] != stale_etag
            assert again.json()["properties"] == current.json()["properties"]
            assert audit_rows(world, entity, entity_id) == audited


def test_a_patch_without_if_match_changes_only_the_fields_it_names(world: World, served: Server):
    """Allowed on purpose (scripts and one-field fixes need no read first): the fields given
    are applied to the version current when the write lock is held, the others keep their
    latest values, so two blind PATCHes of different fields both survive."""
    path = f"/v1/cameras/{world.camera_id}"
    with httpx.Client(base_url=served.base, headers=world.headers["admin"], timeout=30) as http:
        before = http.get(path).json()["properties"]
        assert http.patch(path, json={"properties": {"height_m": 6.5}}).status_code == 200
        assert http.patch(path, json={"properties": {"azimuth_deg": 45.0}}).status_code == 200
        after = http.get(path).json()["properties"]
    assert (after["height_m"], after["azimuth_deg"]) == (6.5, 45.0)
    assert after["version"] == before["version"] + 2
    changed = ("height_m", "azimuth_deg", "version", "updated_at")
    assert {k: v for k, v in after.items() if k not in changed} == {
        k: v for k, v in before.items() if k not in changed
    }


def race(
    served: Server, headers: dict[str, str], path: str, edits: list[Callable[[dict], dict]]
) -> tuple[list[int], int]:
    """One thread per edit, all at once, each: read the record, apply its edit to the
    properties, PATCH them back whole with If-Match, and on 412 start over. Returns the
    version each success produced and how many 412s were answered."""
    start = threading.Barrier(len(edits))
    versions: list[int] = []
    conflicts = 0
    lock = threading.Lock()

    def writer(edit: Callable[[dict], dict]) -> None:
        nonlocal conflicts
        with httpx.Client(base_url=served.base, headers=headers, timeout=60) as http:
            start.wait()
            for _ in range(len(edits) * 3):
                read = http.get(path)
                assert read.status_code == 200, read.text
                response = http.patch(
                    path,
                    json={"properties": edit(read.json()["properties"])},
                    headers={"If-Match": read.headers["etag"]},
                )
                if response.status_code == 200:
                    with lock:
                        versions.append(response.json()["properties"]["version"])
                    return
                assert response.status_code == 412, response.text
                with lock:
                    conflicts += 1
            raise AssertionError("a writer lost every round")

    with ThreadPoolExecutor(len(edits)) as pool:
        for future in [pool.submit(writer, edit) for edit in edits]:
            future.result()
    return versions, conflicts


# What each racing camera writer changes: one field each, distinct values.
CAMERA_EDITS = {
    "name": "南门路口",
    "height_m": 7.5,
    "azimuth_deg": 123.0,
    "hfov_deg": 60.0,
    "resolution_h_px": 2560,
    "range_m": 45.0,
    "status": "offline",
    "owner": "industry",
}


def test_eight_racing_camera_writers_lose_no_update(world: World, served: Server):
    """Each writer sends the whole record back, the way a form does: without If-Match the
    later ones would put back the values the earlier ones changed."""
    path = f"/v1/cameras/{world.camera_id}"
    admin = world.headers["admin"]
    before = httpx.get(served.base + path, headers=admin).json()["properties"]
    audited = audit_rows(world, "camera", str(world.camera_id))

    def edit_of(field: str, value: Any) -> Callable[[dict], dict]:
        return lambda read: {k: read[k] for k in CAMERA_EDITABLE} | {field: value}

    versions, conflicts = race(
        served, admin, path, [edit_of(f, v) for f, v in CAMERA_EDITS.items()]
    )
    after = httpx.get(served.base + path, headers=admin).json()["properties"]
    assert {field: after[field] for field in CAMERA_EDITS} == CAMERA_EDITS
    assert sorted(versions) == list(range(before["version"] + 1, before["version"] + 9))
    assert after["version"] == before["version"] + 8
    assert conflicts > 0  # they did collide
    assert audit_rows(world, "camera", str(world.camera_id)) == audited + 8


def test_eight_racing_grid_writers_lose_no_update(world: World, served: Server):
    """Read-modify-write of the same fields: each writer adds one household and signs the
    worker's name; every addition and every signature must be there."""
    code = f"{VILLAGE_CODE}003"
    path = f"/v1/grids/{code}"
    admin = world.headers["admin"]
    before = httpx.get(served.base + path, headers=admin).json()["properties"]
    audited = audit_rows(world, "grid", code)
    signatures = "甲乙丙丁戊己庚辛"

    def edit_of(signature: str) -> Callable[[dict], dict]:
        return lambda read: {
            "households": read["households"] + 1,
            "worker_name": read["worker_name"] + signature,
        }

    versions, conflicts = race(served, admin, path, [edit_of(s) for s in signatures])
    after = httpx.get(served.base + path, headers=admin).json()["properties"]
    assert after["households"] == before["households"] + 8
    assert sorted(after["worker_name"][len(before["worker_name"]) :]) == sorted(signatures)
    assert sorted(versions) == list(range(before["version"] + 1, before["version"] + 9))
    assert conflicts > 0
    assert audit_rows(world, "grid", code) == audited + 8
    # and the lookup index took the last version
    wait_until(
        lambda: worker_in_lookup(served, world, 109.745, 28.295) == after["worker_name"],
        within_s=2,
    )


# -- imports killed half-way ----------------------------------------------------------------
def camera_file(folder: Path, count: int = 200) -> Path:
    """`count` new cameras scattered over the first village, as a register CSV."""
    rng = np.random.default_rng(5)
    lon = rng.uniform(VILLAGE.bounds[0], VILLAGE.bounds[2], count)
    lat = rng.uniform(VILLAGE.bounds[1], VILLAGE.bounds[3], count)
    path = folder / "cameras.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["gb_id", "name", "kind", "lon", "lat", "azimuth_deg"])
        for n in range(count):
            writer.writerow(
                [
                    make_gb28181("433101", 132, 100_000 + n),
                    f"导入{n}",
                    ("bullet", "dome")[n % 2],
                    f"{lon[n]:.6f}",
                    f"{lat[n]:.6f}",
                    (n * 37) % 360,
                ]
            )
    return path


def grid_file(folder: Path, side: int = 10) -> Path:
    """`side`² grids tiling the empty village, as GeoJSON."""
    west, south, east, north = EMPTY_VILLAGE.bounds
    dx, dy = (east - west) / side, (north - south) / side
    cells = [
        box(west + i * dx, south + j * dy, west + (i + 1) * dx, south + (j + 1) * dy)
        for i in range(side)
        for j in range(side)
    ]
    path = folder / "grids.geojson"
    gpd.GeoDataFrame(
        {
            "code": [f"{EMPTY_VILLAGE_CODE}{n + 1:03d}" for n in range(len(cells))],
            "name": [f"导入网格{n + 1}" for n in range(len(cells))],
        },
        geometry=cells,
        crs=4326,
    ).to_file(path)
    return path


def table_states(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row of the tables an import may write."""
    with engine.connect() as conn:
        return {
            table: tuple(
                conn.execute(
                    text(
                        f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' "
                        f"ORDER BY t::text), '')) FROM {table} t"
                    )
                ).one()
            )
            for table in IMPORTED_TABLES
        }


# The session of an import that wrote rows of :table and now waits to write its audit row.
WAITING_TO_AUDIT_SQL = """
SELECT a.pid FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
  AND a.query LIKE 'INSERT INTO audit_log%'
  AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
              WHERE l.pid = a.pid AND c.relname = :table
                AND l.mode = 'RowExclusiveLock' AND l.granted)
"""


def session_exists(engine: Engine, pid: int) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar_one()
            == 1
        )


@pytest.mark.parametrize(
    ("entity", "make_file", "table", "rows"),
    [("cameras", camera_file, "camera", 200), ("grids", grid_file, "grid", 100)],
)
def test_an_import_killed_half_way_leaves_the_database_as_before(
    world: World,
    served: Server,
    tmp_path: Path,
    entity: str,
    make_file: Callable[[Path], Path],
    table: str,
    rows: int,
):
    """The import is held at its last statement (the audit row, after every data row is
    written) by a lock this test takes, killed there with SIGKILL, and then: its session
    ends without waiting for the lock, nothing it wrote is left, and the same file
    imports at once (its advisory write lock died with the session)."""
    file = make_file(tmp_path)
    engine = world.engine
    before = table_states(engine)
    argv, env = cli(world.url)
    output = tmp_path / "import.log"
    with engine.connect() as blocker, output.open("w") as sink:
        blocker.execute(text("LOCK TABLE audit_log IN SHARE MODE"))
        process = subprocess.Popen(
            [*argv, "import", entity, str(file)], env=env, stdout=sink, stderr=sink
        )
        try:
            held: list[int] = []

            def waiting_at_the_audit_row() -> bool:
                assert process.poll() is None, output.read_text()
                with engine.connect() as conn:
                    found = conn.execute(text(WAITING_TO_AUDIT_SQL), {"table": table})
                    held[:] = found.scalars().all()
                return len(held) == 1

            wait_until(waiting_at_the_audit_row, within_s=60, every_s=0.1)
        finally:
            process.kill()
            process.wait(timeout=10)
        # the session notices its client is gone although its statement still waits
        wait_until(lambda: not session_exists(engine, held[0]), within_s=5)
        blocker.rollback()
    assert table_states(engine) == before

    # the same file again, through the running service this time
    with file.open("rb") as handle:
        again = httpx.post(
            f"{served.base}/v1/{entity}/import",
            files={"file": (file.name, handle)},
            headers=world.headers["admin"],
            timeout=120,
        )
    assert again.status_code == 201, again.text
    assert world.scalar(f"SELECT count(*) FROM {table}") == before[table][0] + rows
