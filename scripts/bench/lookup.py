"""Benchmark: point -> grid lookup on the full demo, ours against geopandas and PostGIS.

In one run, on one scratch database holding the full demo world (dropped afterwards):
- in-process batch: our index (`locate`, and the whole answer pipeline of
  `resolve_points`) vs geopandas `sjoin` vs a PostGIS `ST_Contains` join, same points;
- agreement of ours with an independent PostGIS `ST_Covers` check on 100,000 points;
- HTTP: `GET /v1/lookup` p50/p99 under 20 concurrent clients (wrk, loopback only,
  bounded in time), next to a plain PostGIS single-point query round trip;
- how long a grid edit takes to reach the answers of the running server.

    .venv/bin/python scripts/bench/lookup.py [--points 1000000] [--seconds 15] [--workers 2]
Needs `wrk` (Debian: apt-get install wrk) for the HTTP part.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import psycopg
import shapely
from sqlalchemy import create_engine

from api.auth import create_api_key
from api.db import (
    create_scratch_database,
    drop_scratch_database,
    libpq_url,
    resolve_database_url,
)
from api.embedded import free_port
from api.migrate import upgrade
from api.services.demo import load_demo
from api.services.lookup import load_snapshot, resolve_points
from api.settings import get_settings

GRIDCOVER = str(Path(sys.executable).with_name("gridcover"))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def sample_points(grids: gpd.GeoDataFrame, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """70 % inside random grids (where people are), 30 % uniform over the extent."""
    rng = np.random.default_rng(seed)
    inside = int(n * 0.7)
    bounds = shapely.bounds(grids.geometry.to_numpy()[rng.integers(0, len(grids), inside)])
    lon = np.r_[
        rng.uniform(bounds[:, 0], bounds[:, 2]),
        rng.uniform(*grids.total_bounds[[0, 2]], n - inside),
    ]
    lat = np.r_[
        rng.uniform(bounds[:, 1], bounds[:, 3]),
        rng.uniform(*grids.total_bounds[[1, 3]], n - inside),
    ]
    return lon, lat


def postgis_join(url: str, lon: np.ndarray, lat: np.ndarray) -> tuple[int, float]:
    """Points COPYed into a table, then one ST_Contains join; returns (matched, seconds)."""
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("CREATE TEMP TABLE pts (i int, geom geometry(Point, 4326))")
        with conn.cursor().copy("COPY pts (i, geom) FROM STDIN") as copy:
            hexes = shapely.to_wkb(
                shapely.set_srid(shapely.points(lon, lat), 4326), hex=True, include_srid=True
            )
            copy.write("".join(f"{i}\t{h}\n" for i, h in enumerate(hexes)))
        conn.execute("CREATE INDEX ON pts USING gist (geom)")
        conn.execute("ANALYZE pts")
        start = time.perf_counter()
        matched = conn.execute(
            "SELECT count(*) FROM pts p JOIN grid g ON g.valid_to IS NULL "
            "AND ST_Contains(g.geom, p.geom)"
        ).fetchone()[0]
        return matched, time.perf_counter() - start


def postgis_agreement(url: str, snapshot, lon: np.ndarray, lat: np.ndarray) -> int:
    """Points where ours and PostGIS ST_Covers (smallest code wins) disagree."""
    found = snapshot.index.locate(lon, lat)
    ours = np.where(found >= 0, snapshot.column("code")[found], None)
    with psycopg.connect(libpq_url(url)) as conn:
        theirs = [
            row[0]
            for row in conn.execute(
                "SELECT (SELECT min(g.code) FROM grid g WHERE g.valid_to IS NULL "
                "AND ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326))) "
                "FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS p(lon, lat, n) "
                "ORDER BY n",
                (lon.tolist(), lat.tolist()),
            ).fetchall()
        ]
    return int(sum(a != b for a, b in zip(ours, theirs, strict=True)))


def postgis_single_latency(url: str, lon: np.ndarray, lat: np.ndarray) -> dict[str, float]:
    """p50/p99 (ms) of one point per query, sequentially, over one connection."""
    times = []
    with psycopg.connect(libpq_url(url)) as conn:
        for x, y in zip(lon, lat, strict=True):
            start = time.perf_counter()
            conn.execute(
                "SELECT code FROM grid WHERE valid_to IS NULL AND "
                "ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326)) ORDER BY code LIMIT 1",
                (float(x), float(y)),
            ).fetchone()
            times.append((time.perf_counter() - start) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def wrk_latency(port: int, key: str, paths: list[str], seconds: int) -> dict[str, float]:
    """p50/p99 (ms) and requests/s of GET /v1/lookup with 20 connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n")
        script.write(
            "i = 0\nrequest = function()\n  i = i % #paths + 1\n"
            f'  return wrk.format("GET", paths[i], {{["Authorization"] = "Bearer {key}"}})\n'
            "end\n"
        )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c20",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script.name,
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50": ms("50"),
        "p99": ms("99"),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
    }


def open_loop_latency(
    port: int, key: str, paths: list[str], clients: int, rate_per_client: float, seconds: float
) -> dict[str, float]:
    """Latency (ms) with `clients` each sending `rate_per_client` requests/s on a fixed
    schedule, measured from the scheduled start (no coordinated omission)."""

    async def client(number: int, http: httpx.AsyncClient, start: float, out: list[float]):
        for k in range(int(seconds * rate_per_client)):
            due = start + (k + number / clients) / rate_per_client
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            path = paths[(number * 7919 + k) % len(paths)]
            response = await http.get(path)
            response.raise_for_status()
            out.append((time.perf_counter() - due) * 1e3)

    async def run() -> list[float]:
        latencies: list[float] = []
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            limits=limits,
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            start = time.perf_counter() + 0.1
            await asyncio.gather(*(client(n, http, start, latencies) for n in range(clients)))
        return latencies

    latencies = asyncio.run(run())
    return {
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "rps": clients * rate_per_client,
    }


def http_bench(
    url: str, engine, lon: np.ndarray, lat: np.ndarray, seconds: int, workers: int
) -> dict:
    """Serve the scratch database, then measure lookups and how fast an edit shows."""
    with engine.begin() as conn:
        dispatcher = create_api_key(conn, "dispatcher", "bench")[1]
        admin = create_api_key(conn, "admin", "bench admin")[1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env |= {"GRIDCOVER_DATABASE_URL": url, "GRIDCOVER_LOG_LEVEL": "warning"}
    server = subprocess.Popen(
        [GRIDCOVER, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {dispatcher}"}
        ) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not come up")
                time.sleep(0.2)
            first = client.get("/v1/lookup", params={"lon": lon[0], "lat": lat[0]}).json()
            paths = [f"/v1/lookup?lon={x:.7f}&lat={y:.7f}" for x, y in zip(lon, lat, strict=True)]
            result = {"steady": open_loop_latency(port, dispatcher, paths, 20, 10.0, seconds)}
            if shutil.which("wrk"):
                result["saturated"] = wrk_latency(port, dispatcher, paths, seconds)
            # An edit through the API, then poll the answer until it shows.
            code = first["grid"]["code"]
            params = {"lon": lon[0], "lat": lat[0]}
            start = time.perf_counter()
            client.patch(
                f"/v1/grids/{code}",
                json={"properties": {"worker_name": "新网格员"}},
                headers={"Authorization": f"Bearer {admin}"},
            ).raise_for_status()
            while (
                client.get("/v1/lookup", params=params).json()["grid"]["worker_name"] != "新网格员"
            ):
                time.sleep(0.01)
            result["edit_visible_s"] = time.perf_counter() - start
            return result
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=15, help="duration of each HTTP run")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args()

    server = resolve_database_url(get_settings())
    url = create_scratch_database(server, prefix="gridcover_bench")
    try:
        upgrade(url)
        engine = create_engine(url)
        print("loading the full demo world ...", file=sys.stderr)
        load_demo(engine, "full", 0)
        grids = gpd.read_postgis(
            "SELECT code, geom FROM grid WHERE valid_to IS NULL ORDER BY code",
            engine,
            geom_col="geom",
        )
        lon, lat = sample_points(grids, args.points)
        snapshot, build_s = timed(lambda: load_snapshot(engine))
        _, locate_s = timed(lambda: snapshot.index.locate(lon, lat))
        n_full = min(args.points, 100_000)
        _, resolve_s = timed(lambda: resolve_points(snapshot, lon[:n_full], lat[:n_full]))
        points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs=4326)
        _, sjoin_s = timed(lambda: gpd.sjoin(points, grids, predicate="within", how="left"))
        n_pg = min(args.points, 200_000)
        _, postgis_s = postgis_join(url, lon[:n_pg], lat[:n_pg])
        mismatches = postgis_agreement(url, snapshot, lon[:100_000], lat[:100_000])
        single_pg = postgis_single_latency(url, lon[:2000], lat[:2000])
        print("serving it and measuring HTTP ...", file=sys.stderr)
        http = http_bench(url, engine, lon[:5000], lat[:5000], args.seconds, args.workers)
        engine.dispose()
    finally:
        drop_scratch_database(server, url)

    n = args.points
    ours_rate = n / locate_s
    print(
        f"\npoint -> grid on the full demo ({len(grids):,} grids), {n:,} points "
        "(70 % in grids, 30 % anywhere)"
    )
    print(f"{'method':<44}{'points/s':>14}{'vs sjoin':>10}")
    rows = [
        ("ours: GridIndex.locate (in-process batch)", ours_rate),
        ("ours: full answers (chain, candidates, ...)", n_full / resolve_s),
        ("geopandas sjoin (within)", n / sjoin_s),
        (f"PostGIS ST_Contains join ({n_pg:,} points)", n_pg / postgis_s),
    ]
    for label, rate in rows:
        print(f"{label:<44}{rate:>14,.0f}{rate / (n / sjoin_s):>9.1f}x")
    print(f"index build from the database: {build_s:.2f} s")
    print(f"agreement with PostGIS ST_Covers on 100,000 points: {mismatches} mismatches")
    print(f"\n{'HTTP / single point':<44}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    steady = http["steady"]
    print(
        f"{'ours: 20 clients x 10 req/s (steady)':<44}{steady['p50']:>10.2f}"
        f"{steady['p99']:>10.2f}{steady['rps']:>10,.0f}"
    )
    if "saturated" in http:
        full = http["saturated"]
        print(
            f"{'ours: 20 connections flat out (wrk)':<44}{full['p50']:>10.2f}"
            f"{full['p99']:>10.2f}{full['rps']:>10,.0f}   errors: {full['errors']}"
        )
    else:
        print("(install wrk for the saturated row)")
    print(
        f"{'PostGIS one-point query, 1 client':<44}{single_pg['p50']:>10.2f}"
        f"{single_pg['p99']:>10.2f}"
    )
    print(f"grid edit -> visible in lookups: {http['edit_visible_s']:.2f} s")


if __name__ == "__main__":
    main()
