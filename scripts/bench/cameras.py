"""Benchmark: camera edits with their coverage, and "which cameras see this point".

On the full demo world (scratch database, dropped afterwards), served by `gridcover serve`:
- one camera edit end to end through the API (PATCH azimuth: FOVs rebuilt and the
  coverage of the grids under the old and new FOVs recomputed in the same transaction),
  sent with the standard library's HTTP client (the other HTTP rows use raw sockets; the
  same edits through httpx are timed too, to show what a client library adds),
  against plain PostGIS doing the same recompute with a lateral ST_Union(ST_Intersection)
  over the stored FOVs of the touched grids;
- `GET /v1/cameras/visible`: p50/p99 for 1 client and for 20 clients at 10 req/s each,
  against a plain PostGIS query (FOV polygons containing the point, best level first);
- both service calls in this process too (`update_camera` in a transaction rolled back,
  `CameraSights.visible` on the in-memory index, whose read from the database is timed
  too), which shows what the HTTP layer and a busy machine add.

    .venv/bin/python scripts/bench/cameras.py [--edits 100] [--seconds 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time

import httpx
import numpy as np
import psycopg
from harness import demo_database, host_port, open_loop_latency, percentiles_ms, served
from sqlalchemy import text

from api.auth import create_api_key
from api.db import libpq_url
from api.services.camera_sights import CameraSights
from api.services.cameras import read_camera, update_camera
from geo.crs import to_metric

# Plain PostGIS: recompute the area coverage of the grids a FOV touches, from the stored
# FOVs (what a trigger-based design would run on every camera edit).
POSTGIS_EDIT = """
WITH touched AS (
    SELECT DISTINCT g.id, g.geom_m FROM grid g JOIN camera_fov f
      ON ST_Intersects(f.geom_m, g.geom_m)
    WHERE g.valid_to IS NULL AND f.camera_id = %(id)s AND f.level = 'detect'
)
SELECT t.id, l.level, ST_Area(ST_Intersection(t.geom_m, u.geom)) / ST_Area(t.geom_m)
FROM touched t
CROSS JOIN unnest(ARRAY['detect', 'observe', 'recognize', 'identify']) AS l(level)
CROSS JOIN LATERAL (
    SELECT ST_Union(f.geom_m) AS geom FROM camera_fov f
    WHERE f.level = l.level AND f.geom_m && t.geom_m AND ST_Intersects(f.geom_m, t.geom_m)
) u
"""
POSTGIS_VISIBLE = """
SELECT f.camera_id, f.level, ST_Distance(c.geom_m, p.geom) AS distance_m
FROM (SELECT ST_Transform(ST_SetSRID(ST_Point(%(lon)s, %(lat)s), 4326), 4546) AS geom) p
JOIN camera_fov f ON ST_Intersects(f.geom_m, p.geom)
JOIN camera c ON c.id = f.camera_id
ORDER BY array_position(ARRAY['identify', 'recognize', 'observe', 'detect'], f.level), 3
"""


def camera_points(engine, n: int, seed: int = 3) -> tuple[list[int], np.ndarray, np.ndarray]:
    """`n` working cameras, and for each a point 5–30 m in front of it (WGS84)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, ST_X(geom) AS lon, ST_Y(geom) AS lat, azimuth_deg FROM camera "
                "WHERE status = 'online' ORDER BY md5(id::text || :seed) LIMIT :n"
            ),
            {"n": n, "seed": str(seed)},
        ).all()
    rng = np.random.default_rng(seed)
    ids = [r.id for r in rows]
    lon = np.array([r.lon for r in rows])
    lat = np.array([r.lat for r in rows])
    along = rng.uniform(5, 30, len(rows))
    azimuth = np.radians([r.azimuth_deg for r in rows])
    # metres to degrees at 28.3°N; precise enough for "somewhere in front of the camera"
    lon = lon + along * np.sin(azimuth) / (111_320 * np.cos(np.radians(28.3)))
    lat = lat + along * np.cos(azimuth) / 110_540
    return ids, lon, lat


def api_edits(base: str, admin: str, ids: list[int]) -> dict[str, float]:
    """PATCH each camera's azimuth (+30°) sequentially over one keep-alive connection of
    the standard library's lean client; latency of the whole request."""
    host, port = host_port(base)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}

    def send(method: str, path: str, body: bytes | None = None) -> bytes:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:200]!r}")
        return payload

    times = []
    for camera_id in ids:
        current = json.loads(send("GET", f"/v1/cameras/{camera_id}"))["properties"]
        body = json.dumps({"properties": {"azimuth_deg": (current["azimuth_deg"] + 30) % 360}})
        start = time.perf_counter()
        send("PATCH", f"/v1/cameras/{camera_id}", body.encode())
        times.append(time.perf_counter() - start)
    connection.close()
    return percentiles_ms(times)


def httpx_edits(base: str, admin: str, ids: list[int]) -> dict[str, float]:
    """`api_edits` through httpx: what a Python client library adds to each request."""
    times = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}) as http:
        for camera_id in ids:
            current = http.get(f"/v1/cameras/{camera_id}").json()["properties"]
            azimuth = (current["azimuth_deg"] + 30) % 360
            start = time.perf_counter()
            http.patch(
                f"/v1/cameras/{camera_id}", json={"properties": {"azimuth_deg": azimuth}}
            ).raise_for_status()
            times.append(time.perf_counter() - start)
    return percentiles_ms(times)


def edit_to_visible(
    base: str, admin: str, dispatcher: str, ids: list[int], lon: np.ndarray, lat: np.ndarray
) -> float:
    """Seconds from a PATCH's answer until `cameras/visible` shows it in 10 answers in a
    row, each on a new connection (so they reach every server process), worst of 6: each
    camera is taken offline, then back online, as seen from a point in front of it."""
    worst = 0.0
    with (
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}) as writer,
        # a new connection per request, so that the answers come from every server process
        httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {dispatcher}"},
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as reader,
    ):

        def sees(camera_id: int, x: float, y: float) -> bool:
            body = reader.get("/v1/cameras/visible", params={"lon": x, "lat": y}).json()
            return camera_id in [c["camera_id"] for c in body["cameras"]]

        # the cameras that do see their point (a range override may stop short of it)
        picked = [(i, x, y) for i, x, y in zip(ids, lon, lat, strict=True) if sees(i, x, y)]
        for camera_id, x, y in picked[:3]:
            for status in ("offline", "online"):
                writer.patch(
                    f"/v1/cameras/{camera_id}", json={"properties": {"status": status}}
                ).raise_for_status()
                answered, shown = time.perf_counter(), 0
                while shown < 10:
                    right = sees(camera_id, x, y) == (status == "online")
                    shown = shown + 1 if right else 0
                    if time.perf_counter() - answered > 30:
                        raise RuntimeError(f"camera {camera_id}'s edit not shown after 30 s")
                worst = max(worst, time.perf_counter() - answered)
    return worst


def postgis_edits(url: str, ids: list[int]) -> dict[str, float]:
    times = []
    with psycopg.connect(libpq_url(url)) as conn:
        for camera_id in ids:
            start = time.perf_counter()
            conn.execute(POSTGIS_EDIT, {"id": camera_id}).fetchall()
            times.append(time.perf_counter() - start)
    return percentiles_ms(times)


def postgis_visible(url: str, lon: np.ndarray, lat: np.ndarray) -> dict:
    times = []
    with psycopg.connect(libpq_url(url)) as conn:
        for x, y in zip(lon, lat, strict=True):
            start = time.perf_counter()
            conn.execute(POSTGIS_VISIBLE, {"lon": float(x), "lat": float(y)}).fetchall()
            times.append(time.perf_counter() - start)
    return percentiles_ms(times)


def in_process_edits(engine, ids: list[int]) -> dict[str, float]:
    """`update_camera` (azimuth +30°) called directly, each in a transaction rolled back."""
    times = []
    for camera_id in ids:
        with engine.connect() as conn, conn.begin() as transaction:
            azimuth = (read_camera(conn, camera_id)["azimuth_deg"] + 30) % 360
            start = time.perf_counter()
            update_camera(conn, camera_id, {"azimuth_deg": azimuth}, None, None, "bench")
            times.append(time.perf_counter() - start)
            transaction.rollback()
    return percentiles_ms(times)


def in_process_visible(engine, lon: np.ndarray, lat: np.ndarray) -> tuple[dict[str, float], float]:
    """Latencies of `CameraSights.visible`, and the seconds its first read took."""
    sights = CameraSights(engine)
    start = time.perf_counter()
    sights.catch_up()
    read_s = time.perf_counter() - start
    x, y = to_metric(lon, lat)
    times = []
    for px, py in zip(x, y, strict=True):
        start = time.perf_counter()
        sights.visible(float(px), float(py))
        times.append(time.perf_counter() - start)
    return percentiles_ms(times), read_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10, help="duration of the 20-client run")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args()

    with demo_database("full") as (url, engine):
        with engine.begin() as conn:
            admin = create_api_key(conn, "admin", "bench admin")[1]
            dispatcher = create_api_key(conn, "dispatcher", "bench")[1]
        ids, lon, lat = camera_points(engine, max(args.edits, 1000))
        print("measuring in this process ...", file=sys.stderr)
        in_process_edits(engine, ids[-10:])  # warm up
        own_edit = in_process_edits(engine, ids[: args.edits])
        own_visible, sights_read_s = in_process_visible(engine, lon, lat)
        print("measuring plain PostGIS ...", file=sys.stderr)
        pg_edit = postgis_edits(url, ids[: args.edits])
        pg_visible = postgis_visible(url, lon, lat)
        print("serving and measuring HTTP ...", file=sys.stderr)
        with served(url, args.workers) as base:
            paths = [
                f"/v1/cameras/visible?lon={x:.7f}&lat={y:.7f}"
                for x, y in zip(lon, lat, strict=True)
            ]
            open_loop_latency(base, dispatcher, paths, 20, 5.0, 5)  # warm both workers up
            visible_1 = open_loop_latency(base, dispatcher, paths, 1, 50.0, args.seconds)
            visible_20 = open_loop_latency(base, dispatcher, paths, 20, 10.0, args.seconds)
            edit = api_edits(base, admin, ids[: args.edits])
            edit_httpx = httpx_edits(base, admin, ids[: args.edits])
            shown_s = edit_to_visible(base, admin, dispatcher, ids[-20:], lon[-20:], lat[-20:])

    print(f"\ncameras on the full demo (50,000 cameras), {args.workers} server processes")
    print(f"{'what':<58}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        (f"ours: PATCH a camera + coverage, via HTTP ({args.edits} edits)", edit),
        ("ours: the same PATCHes sent with httpx", edit_httpx),
        ("ours: the same edit in this process (update_camera)", own_edit),
        ("PostGIS: lateral ST_Union recompute of its grids (SQL only)", pg_edit),
        ("ours: GET /v1/cameras/visible, 1 client x 50 req/s", visible_1),
        ("ours: GET /v1/cameras/visible, 20 clients x 10 req/s", visible_20),
        ("ours: CameraSights.visible in this process", own_visible),
        ("PostGIS: FOVs containing the point (SQL only, 1 client)", pg_visible),
    ]
    for label, stats in rows:
        print(f"{label:<58}{stats['p50']:>10.2f}{stats['p99']:>10.2f}")
    print(f"in-memory camera index read from the database: {sights_read_s:.2f} s")
    print(
        "camera edit (status) -> shown by every server process's cameras/visible, worst of 6: "
        f"{shown_s * 1000:.0f} ms after the PATCH answered"
    )


if __name__ == "__main__":
    main()
