"""Benchmark: per-grid camera coverage on the demo world, ours against shapely and PostGIS.

In one run, on one scratch database holding the demo world (dropped afterwards), from
the same rows (grids, cameras, roads and key places read back in EPSG:4546):

- ours: :class:`geo.coverage.FovSet` from the camera rows, then
  :func:`geo.coverage.grid_coverage` for all four DORI levels (covered area, ratio,
  gap polygons, camera counts, road and key-place coverage), with 1 and with
  ``--workers`` processes; the time includes building the FOVs;
- shapely, the expert per-grid pipeline: sectors built in a Python loop, an STRtree,
  then per grid ``union_all(intersection(FOVs, grid))``, its area, the camera count
  and ``difference(grid, union)`` for the gap;
- PostGIS: the same FOV polygons (``geo.camera.fov_sectors``) COPYed into a table
  shaped like ``camera_fov`` (GiST index), then one lateral
  ``ST_Union(ST_Intersection(...))`` per grid with ``ST_Difference`` for the gap.

The two baselines run one level (detect, the heaviest: the largest FOVs overlap most)
and are reported for that level; ours is reported for all four levels and per level.
Then the agreement of our ratios with PostGIS's on 100 random grids (detect), and our
peak memory (growth of this process's peak RSS during the call, GEOS included; and
the peak RSS of the forked worker). Last, the whole recompute as `gridcover coverage
recompute` runs it (:func:`api.services.coverage.recompute_everything`): reading, FOVs,
coverage, H3 cells and writing every row back, in a transaction rolled back afterwards.

    .venv/bin/python scripts/bench/coverage.py [--scale full|small] [--seed 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import shapely
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from memory import rss_mib, settle

from api.db import (
    create_scratch_database,
    drop_scratch_database,
    libpq_url,
    resolve_database_url,
)
from api.migrate import upgrade
from api.services.coverage import recompute_everything
from api.services.demo import load_demo
from api.settings import get_settings
from geo.camera import DORI_LEVELS
from geo.coverage import FovSet, Places, Roads, grid_coverage

ARC_STEP_DEG = 10.0  # the FOV polygons of the baselines (area-exact, as camera_fov holds)


def _wkb(conn, sql: str) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.execute(text(sql)).all()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    geoms = shapely.from_wkb(np.array([bytes(r[1]) for r in rows], dtype=object))
    return ids, geoms


def read_world(engine) -> dict:
    """Grids, cameras, roads and key places as stored, in EPSG:4546."""
    with engine.connect() as conn:
        grid_ids, grids = _wkb(
            conn,
            "SELECT id, ST_AsBinary(geom_m) FROM grid WHERE valid_to IS NULL ORDER BY id",
        )
        cams = conn.execute(
            text(
                "SELECT id, ST_X(geom_m), ST_Y(geom_m), kind, azimuth_deg, hfov_deg, "
                "resolution_h_px, coalesce(range_m, 'NaN'), status FROM camera ORDER BY id"
            )
        ).all()
        road_ids, roads = _wkb(conn, "SELECT id, ST_AsBinary(geom_m) FROM road ORDER BY id")
        place_ids, places = _wkb(conn, "SELECT id, ST_AsBinary(geom_m) FROM key_place ORDER BY id")
    cols = list(zip(*cams, strict=True))
    cameras = {
        "id": np.array(cols[0], dtype=np.int64),
        "x": np.array(cols[1], dtype=float),
        "y": np.array(cols[2], dtype=float),
        "kind": np.array(cols[3], dtype=object),
        "azimuth_deg": np.array(cols[4], dtype=float),
        "hfov_deg": np.array(cols[5], dtype=float),
        "resolution_h_px": np.array(cols[6], dtype=float),
        "range_m": np.array(cols[7], dtype=float),
        "status": np.array(cols[8], dtype=object),
    }
    return {
        "grid_ids": grid_ids,
        "grids": grids,
        "cameras": cameras,
        "roads": Roads(road_ids, roads),
        "places": Places(place_ids, places),
    }


def fovset(cameras: dict) -> FovSet:
    c = cameras
    return FovSet.from_cameras(
        c["x"], c["y"], c["kind"], c["azimuth_deg"], c["hfov_deg"], c["resolution_h_px"],
        c["range_m"], c["status"], camera_id=c["id"],
    )  # fmt: skip


def run_ours(world: dict, workers: int) -> tuple[object, float, float]:
    """(rows, seconds, peak RSS growth MiB): FOVs + all four levels."""
    base = settle()
    start = time.perf_counter()
    fovs = fovset(world["cameras"])
    rows = grid_coverage(
        world["grid_ids"], world["grids"], fovs, world["roads"], world["places"], workers=workers
    )
    seconds = time.perf_counter() - start
    return rows, seconds, rss_mib("VmHWM:") - base


def run_recompute(engine, workers: int) -> tuple[dict, float, float]:
    """(stage seconds, total seconds, peak RSS growth MiB) of the whole recompute in the
    database, rolled back so every run starts from the same rows."""
    base = settle()
    with engine.connect() as conn, conn.begin() as transaction:
        start = time.perf_counter()
        done = recompute_everything(conn, workers=workers)
        seconds = time.perf_counter() - start
        transaction.rollback()
    return done, seconds, rss_mib("VmHWM:") - base


def sectors_python_loop(fovs: FovSet, level: str) -> np.ndarray:
    """The baseline's FOV polygons, one camera at a time (same vertices as ours)."""
    k = DORI_LEVELS.index(level)
    out = []
    for x, y, az, hfov, r in zip(
        fovs.x_m, fovs.y_m, fovs.azimuth_grid_deg, fovs.hfov_deg, fovs.ranges_m[:, k],
        strict=True,
    ):  # fmt: skip
        span = 360.0 if hfov >= 360.0 else hfov
        n = max(1, math.ceil(span / ARC_STEP_DEG - 1e-9))
        theta = math.radians(span / n)
        rr = r * math.sqrt(theta / math.sin(theta))  # area-exact, like fov_sectors
        start = az - span / 2.0
        arc = [
            (x + rr * math.sin(math.radians(start + span * i / n)),
             y + rr * math.cos(math.radians(start + span * i / n)))
            for i in range(n + 1)
        ]  # fmt: skip
        out.append(shapely.Polygon(arc[:-1] if span >= 360.0 else [(x, y), *arc]))
    return np.array(out, dtype=object)


def run_shapely(world: dict, fovs: FovSet, level: str) -> tuple[np.ndarray, float, float]:
    """(ratio per grid, seconds building sectors, seconds of coverage + gaps)."""
    start = time.perf_counter()
    polys = sectors_python_loop(fovs, level)
    build = time.perf_counter() - start
    start = time.perf_counter()
    tree = shapely.STRtree(polys)
    grids = world["grids"].copy()
    shapely.prepare(grids)
    ratio = np.zeros(len(grids))
    for g, grid in enumerate(grids):
        hit = tree.query(grid, predicate="intersects")
        if len(hit) == 0:
            gap = grid  # the gap is the grid
            continue
        # only FOVs crossing the grid's boundary need clipping
        fov = polys[hit]
        inside = shapely.contains_properly(grid, fov)
        pieces = np.concatenate([fov[inside], shapely.intersection(fov[~inside], grid)])
        union = shapely.union_all(pieces)
        count = int((shapely.area(pieces) > 0).sum())  # noqa: F841 - part of the work
        gap = shapely.difference(grid, union)  # noqa: F841
        ratio[g] = shapely.area(union) / shapely.area(grid)
    return ratio, build, time.perf_counter() - start


def run_postgis(url: str, fovs: FovSet, level: str) -> tuple[dict[int, float], float]:
    """({grid id: ratio}, seconds) of the lateral ST_Union(ST_Intersection) query."""
    polys = fovs.polygons(level, arc_step_deg=ARC_STEP_DEG)
    keep = ~shapely.is_empty(polys)
    hexes = shapely.to_wkb(shapely.set_srid(polys[keep], 4546), hex=True, include_srid=True)
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(
            "CREATE TEMP TABLE bench_fov (camera_id bigint, level text, "
            "geom_m geometry(Polygon, 4546))"
        )
        with conn.cursor().copy("COPY bench_fov (camera_id, level, geom_m) FROM STDIN") as cp:
            cp.write(
                "".join(
                    f"{i}\t{level}\t{h}\n" for i, h in zip(fovs.camera_id[keep], hexes, strict=True)
                )
            )
        conn.execute("CREATE INDEX ON bench_fov USING gist (geom_m)")
        conn.execute("ANALYZE bench_fov")
        start = time.perf_counter()
        conn.execute(
            """
            CREATE TEMP TABLE bench_cov AS
            SELECT g.id, c.n AS camera_count,
                   coalesce(ST_Area(c.u), 0) / ST_Area(g.geom_m) AS ratio,
                   coalesce(ST_Difference(g.geom_m, c.u), g.geom_m) AS gap
            FROM grid g
            CROSS JOIN LATERAL (
                SELECT ST_Union(ST_Intersection(g.geom_m, f.geom_m)) AS u, count(*) AS n
                FROM bench_fov f
                WHERE f.level = %s AND ST_Intersects(f.geom_m, g.geom_m)
            ) c
            WHERE g.valid_to IS NULL
            """,
            (level,),
        )
        seconds = time.perf_counter() - start
        ratios = dict(conn.execute("SELECT id, ratio FROM bench_cov").fetchall())
    return ratios, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("small", "full"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes for ours")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours (best kept)")
    args = parser.parse_args()
    level = "detect"

    server = resolve_database_url(get_settings())
    url = create_scratch_database(server, prefix="gridcover_bench")
    try:
        upgrade(url)
        engine = create_engine(url)
        print(f"loading the {args.scale} demo world ...", file=sys.stderr)
        load_demo(engine, args.scale, args.seed)
        world = read_world(engine)
        n_grids = len(world["grids"])
        cams = world["cameras"]
        online = int((cams["status"] == "online").sum())

        print("ours ...", file=sys.stderr)
        rows, ours_1 = None, math.inf
        for _ in range(args.repeat):
            rows, seconds, mem_1 = run_ours(world, 1)
            ours_1 = min(ours_1, seconds)
        ours_w, mem_w = math.inf, 0.0
        for _ in range(args.repeat):
            _, seconds, mem_w = run_ours(world, args.workers)
            ours_w = min(ours_w, seconds)
        worker_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        print("ours, in the database ...", file=sys.stderr)
        db_done, db_seconds, db_mem = run_recompute(engine, args.workers)

        fovs = fovset(cams)
        print("shapely per-grid pipeline ...", file=sys.stderr)
        shp_ratio, shp_build, shp_cov = run_shapely(world, fovs, level)
        print("PostGIS lateral query ...", file=sys.stderr)
        pg_ratio, pg_seconds = run_postgis(url, fovs, level)
        engine.dispose()
    finally:
        drop_scratch_database(server, url)

    ours = rows[rows["level"] == level].set_index("grid_id")["ratio"]
    rng = np.random.default_rng(1)
    sample = rng.choice(world["grid_ids"], min(100, n_grids), replace=False)
    diff_pg = max(abs(ours[g] - pg_ratio[g]) for g in sample)
    diff_shp = float(np.abs(ours.loc[world["grid_ids"]].to_numpy() - shp_ratio).max())
    n_gaps = int(rows["gap"].notna().sum())

    print(
        f"\nper-grid coverage, {args.scale} demo: {n_grids:,} grids, {len(cams['id']):,} "
        f"cameras ({online:,} online), EPSG:4546"
    )
    print(f"{'method':<62}{'levels':>7}{'seconds':>9}{'s/level':>9}")
    table = [
        (f"ours, {args.workers} workers: FOVs + ratio, gaps, counts, roads, places", 4, ours_w),
        ("ours, 1 process: the same", 4, ours_1),
        ("shapely per-grid clip-and-union + gaps (sectors in a loop)", 1, shp_build + shp_cov),
        ("  of which building sectors in a Python loop", 1, shp_build),
        ("PostGIS lateral ST_Union(ST_Intersection) + ST_Difference", 1, pg_seconds),
    ]
    for label, levels, seconds in table:
        print(f"{label:<62}{levels:>7}{seconds:>9.2f}{seconds / levels:>9.2f}")
    print(f"(baselines: detect level only; ours: {len(rows):,} rows, {n_gaps:,} gap polygons)")
    print(f"agreement, detect ratio: max |ours - PostGIS| on 100 random grids: {diff_pg:.2e}")
    print(f"agreement, detect ratio: max |ours - shapely| on all grids:        {diff_shp:.2e}")
    print(
        f"peak memory (RSS growth of this process): 1 process {mem_1:,.0f} MiB, "
        f"{args.workers} workers {mem_w:,.0f} MiB (+ forked worker peak RSS {worker_mib:,.0f} MiB)"
    )
    print(
        f"whole recompute in the database, {args.workers} workers (`gridcover coverage "
        f"recompute`): {db_seconds:.2f} s = FOVs {db_done['fovs_s']:.2f} + coverage "
        f"{db_done['coverage_s']:.2f} + H3 {db_done['h3_s']:.2f} + writing "
        f"{db_done['write_s']:.2f} ({db_done['coverage_rows']:,} coverage rows, "
        f"{db_done['h3_cells']:,} H3 rows, incident gap flags); peak RSS growth {db_mem:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
