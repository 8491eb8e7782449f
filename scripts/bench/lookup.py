"""Benchmark: point -> grid lookup on the full demo, ours against geopandas and PostGIS.

In one run, on one scratch database holding the full demo world (dropped afterwards):
- in-process batch: our index (`locate`, and the whole answer pipeline of
  `resolve_points`) vs geopandas `sjoin` vs a PostGIS `ST_Contains` join, same points;
- agreement of ours with an independent PostGIS `ST_Covers` check on 100,000 points;
- HTTP: `GET /v1/lookup` p50/p99 under 20 concurrent clients (wrk, loopback only,
  bounded in time), next to a plain PostGIS single-point query round trip;
- how long a grid edit takes to reach the answers of the running server.

    .venv/bin/python scripts/bench/lookup.py [--points 1000000] [--seconds 15] [--workers 2]
                                             [--scale full|small]
Needs `wrk` (Debian: apt-get install wrk) for the HTTP part.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

import geopandas as gpd
import httpx
import numpy as np
import psycopg
import shapely
from harness import demo_database, open_loop_latency, percentiles_ms, served, timed, wrk

from api.auth import create_api_key
from api.db import libpq_url
from api.services.lookup import load_snapshot, resolve_points


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
            times.append(time.perf_counter() - start)
    return percentiles_ms(times)


def wrk_latency(base: str, key: str, paths: list[str], seconds: int) -> dict[str, float]:
    """p50/p99 (ms) and requests/s of GET /v1/lookup with 20 connections."""
    script = (
        "paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n"
        "i = 0\nrequest = function()\n  i = i % #paths + 1\n"
        f'  return wrk.format("GET", paths[i], {{["Authorization"] = "Bearer {key}"}})\n'
        "end\n"
    )
    return wrk(base, script, seconds)


def http_bench(
    url: str, engine, lon: np.ndarray, lat: np.ndarray, seconds: int, workers: int
) -> dict:
    """Serve the scratch database, then measure lookups and how fast an edit shows."""
    with engine.begin() as conn:
        dispatcher = create_api_key(conn, "dispatcher", "bench")[1]
        admin = create_api_key(conn, "admin", "bench admin")[1]
    with (
        served(url, workers) as base,
        httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {dispatcher}"}
        ) as client,
    ):
        first = client.get("/v1/lookup", params={"lon": lon[0], "lat": lat[0]}).json()
        paths = [f"/v1/lookup?lon={x:.7f}&lat={y:.7f}" for x, y in zip(lon, lat, strict=True)]
        # A starting server builds its address matcher and camera index and opens its
        # sessions in the background for a few seconds: measure the steady state after.
        open_loop_latency(base, dispatcher, paths, 20, 5.0, 5)
        result = {"steady": open_loop_latency(base, dispatcher, paths, 20, 10.0, seconds)}
        if shutil.which("wrk"):
            result["saturated"] = wrk_latency(base, dispatcher, paths, seconds)
        # Edits through the API, each polled until 10 answers in a row show it (with
        # several server processes the requests reach all of them).
        code = first["grid"]["code"]
        params = {"lon": lon[0], "lat": lat[0]}
        patch_s, visible_s = [], []
        for name in ("新网格员", "王网格员", "李网格员"):
            start = time.perf_counter()
            client.patch(
                f"/v1/grids/{code}",
                json={"properties": {"worker_name": name}},
                headers={"Authorization": f"Bearer {admin}"},
            ).raise_for_status()
            answered = time.perf_counter()
            shown = 0
            while shown < 10:
                found = client.get("/v1/lookup", params=params).json()["grid"]["worker_name"]
                shown = shown + 1 if found == name else 0
                if not shown:
                    time.sleep(0.005)
            patch_s.append(answered - start)
            visible_s.append(time.perf_counter() - answered)
        result["edit_patch_s"] = max(patch_s)
        result["edit_visible_s"] = max(visible_s)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=15, help="duration of each HTTP run")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument(
        "--scale", choices=("small", "full"), default="full", help="demo world (small: one county)"
    )
    args = parser.parse_args()

    with demo_database(args.scale) as (url, engine):
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

    n = args.points
    ours_rate = n / locate_s
    print(
        f"\npoint -> grid on the {args.scale} demo ({len(grids):,} grids), {n:,} points "
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
    print(
        f"grid edit (worker name) -> visible in every server process's lookups, worst of 3: "
        f"{http['edit_visible_s']:.2f} s after the PATCH answered "
        f"(the PATCH itself: {http['edit_patch_s']:.2f} s)"
    )


if __name__ == "__main__":
    main()
