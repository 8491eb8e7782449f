"""Benchmark: incident intake, statistics and bulk import on the full demo, ours vs PostGIS.

In one run, on one scratch database holding the full demo world (dropped afterwards):
- single intake with assignment over HTTP (`POST /v1/incidents`, a real server with
  `--workers` processes): p50/p99 with 20 clients each reporting `--rate` incidents a
  second on a fixed schedule (open loop; 40/s in all by default, some 15,000 times the
  prefecture's yearly average of 82,000 cases), and 20 connections flat out (wrk:
  the throughput ceiling); the mix is 75 % WGS84 points, 10 % GCJ-02 points, 15 %
  gazetteer addresses, categories as the demo's; next to the baseline: a plain PostGIS
  INSERT whose grid comes from a `ST_Contains` subquery, 20 connections flat out;
- statistics of the demo year (`GET /v1/stats/incidents`) per level after a simulated
  lifecycle, asked again (a cached answer) and right after a write (computed afresh),
  next to the baseline: a spatial join of incidents to grids with the gap test and the
  event history aggregated at query time;
- bulk import of the demo's 82,000 incidents from a GeoJSON file (`import_incident_file`,
  what `gridcover import incidents` runs) next to the baseline: COPY into a staging
  table and INSERT ... SELECT with a `ST_Contains` grid subquery;
- how long `refresh_incident_gaps` takes over the whole year (the coverage hook).

    .venv/bin/python scripts/bench/incidents.py [--seconds 15] [--workers 2] [--rate 2]
                                                [--scale full|small]
Needs `wrk` (Debian: apt-get install wrk) for the saturated row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import psycopg
import shapely
from harness import (
    Call,
    checkpoint,
    demo_database,
    open_loop,
    percentiles_ms,
    served,
    settle_database,
    timed,
    wrk,
)
from sqlalchemy import text

from api.auth import create_api_key
from api.db import libpq_url
from api.services.incidents import import_incident_file, refresh_incident_gaps
from geo.crs import convert

YEAR = {"from": "2025-01-01T00:00:00+08:00", "to": "2026-01-01T00:00:00+08:00"}


# -- intake bodies ------------------------------------------------------------------------
def intake_bodies(engine, n: int, seed: int = 5) -> list[dict]:
    """Report bodies like the demo's: points where incidents happen, some GCJ-02, some
    addresses instead of points."""
    rng = np.random.default_rng(seed)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT category, ST_X(location) AS lon, ST_Y(location) AS lat, description "
                "FROM incident TABLESAMPLE SYSTEM (10) LIMIT :n"
            ),
            {"n": n},
        ).all()
        addresses = (
            conn.execute(
                text("SELECT full_text FROM address TABLESAMPLE SYSTEM (10) LIMIT :n"),
                {"n": n},
            )
            .scalars()
            .all()
        )
    bodies = []
    for i, row in enumerate(rows):
        body = {"category": row.category, "description": row.description, "channel": "grid_app"}
        draw = rng.random()
        if draw < 0.15 and addresses:
            body["address"] = addresses[i % len(addresses)]
        elif draw < 0.25:
            glon, glat = convert(row.lon, row.lat, "wgs84", "gcj02")
            body |= {"lon": round(float(glon), 7), "lat": round(float(glat), 7)}
            body |= {"coord_sys": "gcj02", "accuracy_m": 10}
        else:
            body |= {"lon": round(row.lon, 7), "lat": round(row.lat, 7), "accuracy_m": 5}
        bodies.append(body)
    return bodies


def open_loop_intake(
    base: str, key: str, bodies: list[dict], clients: int, rate: float, seconds: float
) -> dict[str, float]:
    """`open_loop` of POST /v1/incidents cycling through `bodies`."""
    encoded = [json.dumps(body, ensure_ascii=False).encode() for body in bodies]
    return open_loop(
        base,
        key,
        lambda i: Call("POST", "/v1/incidents", encoded[i % len(encoded)]),
        clients,
        rate,
        seconds,
    )


def wrk_post(base: str, key: str, bodies: list[dict], seconds: int) -> dict[str, float]:
    """p50/p99 (ms) and requests/s of POST /v1/incidents with 20 connections (wrk)."""
    script = (
        "bodies = {\n"
        + "".join("[==[" + json.dumps(body, ensure_ascii=False) + "]==],\n" for body in bodies)
        + "}\n"
        "i = 0\nrequest = function()\n  i = i % #bodies + 1\n"
        '  return wrk.format("POST", "/v1/incidents", {["Authorization"] = "Bearer '
        + key
        + '", ["Content-Type"] = "application/json"}, bodies[i])\nend\n'
    )
    return wrk(base, script, seconds)


BASELINE_INSERT = """
INSERT INTO incident (category, description, channel, location, grid_id, grid_code,
                      department, reported_at)
SELECT %(category)s, %(description)s, 'hotline', p.geom, g.id, g.code, c.department, now()
FROM (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) AS geom) p
JOIN incident_category c ON c.code = %(category)s
LEFT JOIN LATERAL (SELECT id, code FROM grid WHERE valid_to IS NULL
                   AND ST_Contains(geom, p.geom) ORDER BY code LIMIT 1) g ON true
RETURNING id
"""


def baseline_inserts(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """A plain PostGIS INSERT with a ST_Contains grid subquery, one commit each, from
    `clients` connections flat out (points only: PostGIS has no address matcher)."""
    points = [b for b in bodies if "lon" in b and b.get("coord_sys", "wgs84") == "wgs84"]
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(number: int) -> None:
        mine = []
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            k = number
            while time.perf_counter() < stop:
                body = points[k % len(points)]
                k += clients
                start = time.perf_counter()
                conn.execute(BASELINE_INSERT, body).fetchone()
                mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return percentiles_ms(latencies) | {"rps": len(latencies) / seconds}


# -- statistics ---------------------------------------------------------------------------
SIMULATE_LIFECYCLE = """
SELECT setseed(0.42);
-- Where each demo incident got to by now: most closed, some returned once on the way.
CREATE TEMP TABLE fate AS
SELECT id, reported_at, r,
       CASE WHEN r < 0.03 THEN 'rejected' WHEN r < 0.05 THEN 'reported'
            WHEN r < 0.07 THEN 'in_progress' WHEN r < 0.08 THEN 'feedback'
            WHEN r < 0.80 THEN 'evaluated' ELSE 'closed' END AS status,
       random() < 0.04 AS returned,
       reported_at + (2 + 70 * random() ^ 2) * interval '1 hour' AS closed_at
FROM (SELECT id, reported_at, random() AS r FROM incident) s;
UPDATE incident i SET status = f.status,
    handled = f.status IN ('feedback', 'closed', 'evaluated'),
    return_count = CASE WHEN f.returned AND f.status IN ('closed', 'evaluated') THEN 1 ELSE 0 END,
    closed_at = CASE WHEN f.status IN ('closed', 'evaluated') THEN f.closed_at END
FROM fate f WHERE f.id = i.id;
INSERT INTO incident_event (incident_id, at, actor, action, from_status, to_status)
SELECT f.id, f.reported_at + make_interval(mins => 30), 'bench', a.action, NULL, NULL
FROM fate f CROSS JOIN LATERAL (VALUES ('feedback'), ('close'), ('return')) a(action)
WHERE (a.action = 'feedback' AND f.status IN ('feedback', 'closed', 'evaluated'))
   OR (a.action = 'close' AND f.status IN ('closed', 'evaluated'))
   OR (a.action = 'return' AND f.returned AND f.status IN ('closed', 'evaluated'));
ANALYZE incident;
ANALYZE incident_event;
"""
BASELINE_STATS = """
WITH e AS (
    SELECT incident_id, bool_or(action = 'feedback') AS fed_back,
           bool_or(action = 'return') AS returned, max(at) FILTER (WHERE action = 'close') AS closed
    FROM incident_event GROUP BY incident_id
)
SELECT v.code, count(*),
       count(*) FILTER (WHERE i.status <> 'rejected') AS received,
       count(*) FILTER (WHERE e.fed_back) AS handled,
       count(*) FILTER (WHERE e.closed IS NOT NULL AND NOT e.returned) AS succeeded,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.closed_at - i.reported_at)),
       count(*) FILTER (WHERE i.due_at < now() AND i.status NOT IN ('closed','evaluated','rejected')),
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM camera_fov f WHERE f.level = 'detect'
                                          AND ST_Intersects(f.geom, i.location)))
FROM incident i
JOIN grid g ON g.valid_to IS NULL AND ST_Contains(g.geom, i.location)
JOIN admin_area v ON v.code = left(g.code, %(digits)s)
LEFT JOIN e ON e.incident_id = i.id
WHERE i.reported_at >= %(start)s AND i.reported_at < %(end)s
GROUP BY v.code
"""  # noqa: E501


# A committed write that changes no figure: it only makes the next answer a fresh one.
TOUCH_AN_INCIDENT = (
    "UPDATE incident SET updated_at = updated_at WHERE id = (SELECT min(id) FROM incident)"
)


def stats_http(
    base: str, key: str, by: str, repeats: int, write_url: str | None = None
) -> dict[str, float]:
    """p50/p99 (ms) of the demo year's statistics by `by`, each asked right after a
    write to `write_url`'s incidents when given (no cached answer), else asked again."""
    times = []
    writer = psycopg.connect(libpq_url(write_url), autocommit=True) if write_url else None
    with (
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http,
        writer or contextlib.nullcontext(),
    ):
        http.get("/v1/stats/incidents", params={"by": by, **YEAR}).raise_for_status()
        for _ in range(repeats):
            if writer is not None:
                writer.execute(TOUCH_AN_INCIDENT)
            start = time.perf_counter()
            http.get("/v1/stats/incidents", params={"by": by, **YEAR}).raise_for_status()
            times.append(time.perf_counter() - start)
    return percentiles_ms(times)


def baseline_stats(url: str, digits: int) -> float:
    with psycopg.connect(libpq_url(url)) as conn:
        start = time.perf_counter()
        conn.execute(
            BASELINE_STATS, {"digits": digits, "start": YEAR["from"], "end": YEAR["to"]}
        ).fetchall()
        return (time.perf_counter() - start) * 1e3


# -- bulk ---------------------------------------------------------------------------------
def bulk_import(engine, url: str, folder: Path) -> dict[str, float]:
    """Ours (file -> assigned incidents) against COPY + INSERT ... SELECT ST_Contains."""
    frame = gpd.read_postgis(
        "SELECT category, description, channel, address, reported_at, location "
        "FROM incident WHERE created_by = 'import' ORDER BY id",
        engine,
        geom_col="location",
    )
    frame["reported_at"] = frame["reported_at"].map(lambda t: t.isoformat())
    path = folder / "incidents.geojson"
    frame.to_file(path, driver="GeoJSON")
    result, ours_s = timed(lambda: import_incident_file(engine, path, actor="bench import"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM incident WHERE created_by = 'bench import'"))
    geoms = shapely.set_srid(frame.geometry.to_numpy(), 4326)
    hexes = shapely.to_wkb(geoms, hex=True, include_srid=True)
    with psycopg.connect(libpq_url(url)) as conn:
        start = time.perf_counter()
        conn.execute(
            "CREATE TEMP TABLE staging (category text, description text, channel text, "
            "address text, reported_at timestamptz, geom geometry(Point, 4326))"
        )
        with conn.cursor().copy(
            "COPY staging (category, description, channel, address, reported_at, geom) FROM STDIN"
        ) as copy:
            for row, geom in zip(frame.itertuples(index=False), hexes, strict=True):
                copy.write_row(
                    (row.category, row.description, row.channel, row.address, row.reported_at,
                     geom)
                )  # fmt: skip
        conn.execute(
            "INSERT INTO incident (category, description, channel, address, reported_at, "
            "location, grid_id, grid_code, department, created_by) "
            "SELECT s.category, s.description, s.channel, s.address, s.reported_at, s.geom, "
            "g.id, g.code, c.department, 'bench baseline' FROM staging s "
            "JOIN incident_category c ON c.code = s.category "
            "LEFT JOIN LATERAL (SELECT id, code FROM grid WHERE valid_from <= s.reported_at "
            "AND (valid_to IS NULL OR valid_to > s.reported_at) AND ST_Contains(geom, s.geom) "
            "ORDER BY code LIMIT 1) g ON true"
        )
        baseline_s = time.perf_counter() - start
        conn.rollback()
    return {"rows": result.written, "ours_s": ours_s, "baseline_s": baseline_s,
            "assigned": result.assigned}  # fmt: skip


def settle(url: str) -> None:
    """Flush what the bulk steps wrote and let other work on the machine calm down a
    moment, so that the next measurement does not pay for the previous one."""
    checkpoint(url)
    time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="duration of each HTTP run")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument(
        "--rate", type=float, default=2.0, help="intakes a second per client (open loop)"
    )
    parser.add_argument(
        "--scale", choices=("small", "full"), default="full", help="demo world (small: one county)"
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="gridcover_bench_"))
    start = time.perf_counter()
    try:
        with demo_database(args.scale) as (url, engine):
            # Includes creating and migrating the scratch database (a few seconds).
            load_s = time.perf_counter() - start
            with engine.connect() as conn:
                demo_rows = conn.execute(text("SELECT count(*) FROM incident")).scalar_one()
            print("bulk import ...", file=sys.stderr)
            bulk = bulk_import(engine, url, folder)
            with engine.begin() as conn:
                gaps, gaps_s = timed(lambda: refresh_incident_gaps(conn))
            print("simulating a year of lifecycles ...", file=sys.stderr)
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                conn.execute(SIMULATE_LIFECYCLE)
            # Left to autovacuum, the vacuum after the import's delete and the simulation
            # starts during the steady run, and its WAL holds the intakes' commits up for
            # 100-300 ms.
            settle_database(url)
            with engine.begin() as conn:
                dispatcher = create_api_key(conn, "dispatcher", "bench")[1]
            bodies = intake_bodies(engine, 4000)
            settle(url)
            print("serving it and measuring HTTP ...", file=sys.stderr)
            with served(url, args.workers) as base:
                # Warm both workers (grid index, address matcher, connections, PROJ in each
                # database backend), then let the address matchers finish building.
                with httpx.Client(
                    base_url=base, headers={"Authorization": f"Bearer {dispatcher}"}, timeout=120
                ) as http:
                    for body in bodies[:200]:
                        http.post("/v1/incidents", json=body).raise_for_status()
                open_loop_intake(base, dispatcher, bodies[200:], 20, 1.0, 5)
                steady = open_loop_intake(base, dispatcher, bodies, 20, args.rate, args.seconds)
                saturated = (
                    wrk_post(base, dispatcher, bodies, args.seconds)
                    if shutil.which("wrk")
                    else None
                )
                stats = {(by, fresh): stats_http(base, dispatcher, by, 15, url if fresh else None)
                         for by in ("grid", "village", "township", "county")
                         for fresh in (False, True)}  # fmt: skip
            settle(url)
            print("baselines ...", file=sys.stderr)
            baseline = baseline_inserts(url, bodies, 20, args.seconds)
            stats_base = {by: baseline_stats(url, d) for by, d in (("village", 12), ("county", 6))}
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\n{args.scale} demo: {demo_rows:,} incidents (demo load {load_s:.0f} s); "
          f"{args.workers} server workers, {os.cpu_count()} cores, "
          f"load average at the end {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"\n{'single intake with assignment':<52}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    print(f"{f'ours: HTTP, 20 clients x {args.rate:g} req/s (steady)':<52}"
          f"{steady['p50']:>9.2f}{steady['p99']:>9.2f}{steady['rps']:>9,.0f}")  # fmt: skip
    if saturated:
        print(f"{'ours: HTTP, 20 connections flat out (wrk)':<52}"
              f"{saturated['p50']:>9.2f}{saturated['p99']:>9.2f}{saturated['rps']:>9,.0f}"
              f"   errors: {saturated['errors']}")  # fmt: skip
    print(f"{'baseline: SQL INSERT + ST_Contains, 20 conns (no HTTP)':<52}"
          f"{baseline['p50']:>9.2f}{baseline['p99']:>9.2f}{baseline['rps']:>9,.0f}")  # fmt: skip
    print(f"\n{'statistics of the demo year':<52}{'p50 ms':>9}{'p99 ms':>9}")
    for (by, fresh), t in stats.items():
        label = f"ours: GET ...?by={by}, {'right after a write' if fresh else 'asked again'}"
        print(f"{label:<52}{t['p50']:>9.1f}{t['p99']:>9.1f}")
    for by, ms in stats_base.items():
        print(f"{'baseline: spatial join + events + gap test, ' + by:<52}{ms:>9.1f}")
    print(f"\n{'bulk import':<52}{'seconds':>9}{'rows/s':>9}")
    print(f"{'ours: GeoJSON file -> assigned incidents + events':<52}"
          f"{bulk['ours_s']:>9.2f}{bulk['rows'] / bulk['ours_s']:>9,.0f}")  # fmt: skip
    print(f"{'baseline: COPY + INSERT SELECT ST_Contains':<52}"
          f"{bulk['baseline_s']:>9.2f}{bulk['rows'] / bulk['baseline_s']:>9,.0f}")  # fmt: skip
    print(f"({bulk['rows']:,} rows, {bulk['assigned']:,} assigned to a grid)")
    print(f"refresh_incident_gaps over every incident: {gaps_s:.2f} s ({gaps:,} rows changed)")


if __name__ == "__main__":
    main()
