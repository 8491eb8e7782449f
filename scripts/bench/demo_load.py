"""Benchmark: full demo load, and our COPY write path against geopandas `to_postgis`.

Runs on a scratch database of the embedded PostGIS (or the server of
GRIDCOVER_DATABASE_URL) and drops it afterwards. Usage:

    .venv/bin/python scripts/bench/demo_load.py [--scale full|small] [--seed N]
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import create_engine, text

from api.db import create_scratch_database, drop_scratch_database, resolve_database_url
from api.migrate import upgrade
from api.services import cameras, grids
from api.services.cameras import write_cameras
from api.services.demo import load_demo
from api.services.grids import write_grids
from api.settings import get_settings
from geo.demo import build_world

COLUMNS = {"grid": grids.COLUMNS, "camera": cameras.COLUMNS}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="full", choices=("small", "full"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    server = resolve_database_url(get_settings())
    url = create_scratch_database(server, prefix="gridcover_bench")
    try:
        upgrade(url)
        engine = create_engine(url)
        world, build_s = timed(lambda: build_world(args.scale, args.seed))
        written, load_s = timed(lambda: load_demo(engine, args.scale, args.seed))

        # Same rows into the same tables (generated columns, indexes and constraints alike),
        # two write paths: ours (validate every row, then COPY) vs geopandas to_postgis.
        rows = []
        for table, frame, ours in (
            ("grid", world.grids, write_grids),
            ("camera", world.cameras, write_cameras),
        ):
            plain = frame.rename_geometry("geom")[[*COLUMNS[table], "geom"]]
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {table} CASCADE"))
                _, our_s = timed(lambda conn=conn, frame=frame, ours=ours: ours(conn, frame))
                conn.execute(text(f"TRUNCATE {table} CASCADE"))
            _, theirs_s = timed(
                lambda plain=plain, table=table: plain.to_postgis(
                    table, engine, if_exists="append", index=False
                )
            )
            rows.append((f"write {len(frame):,} {table}s", our_s, theirs_s))
        engine.dispose()
    finally:
        drop_scratch_database(server, url)

    print(f"\ndemo world, scale={args.scale}, seed={args.seed}")
    print(", ".join(f"{count:,} {name}" for name, count in written.items()))
    print(f"\n{'stage':<28}{'seconds':>10}")
    print(f"{'build_world (in memory)':<28}{build_s:>10.2f}")
    print(f"{'gridcover demo load (all)':<28}{load_s:>10.2f}")
    print(f"\n{'write path':<28}{'ours s':>10}{'to_postgis s':>14}{'speed-up':>10}")
    for label, ours_s, theirs_s in rows:
        print(f"{label:<28}{ours_s:>10.2f}{theirs_s:>14.2f}{theirs_s / ours_s:>9.1f}x")


if __name__ == "__main__":
    main()
