"""Benchmark: OGC API – Features items and vector tiles, ours against tipg, on the full demo.

In one run, on one scratch database holding the demo world (dropped afterwards), three
servers on loopback, each with the same number of worker processes:
- ours (`gridcover serve`), with its in-process tile cache;
- ours with the tile cache off (GRIDCOVER_TILE_CACHE_MB=0): what every tile costs to make;
- tipg (PyPI; `uvicorn tipg.main:app`), reading the same tables (`public.grid`, ...).
Each scenario cycles through many distinct requests (bboxes, filter values, features,
tiles) with wrk (or, without wrk, a Python load generator), one server at a time in
interleaved rounds, and prints requests/s, p50 and p99 latency.

tipg is taken from this venv (`pip install -e '.[bench]'`); when it is missing the script
installs it there, and if that fails, into a venv of its own under .gridcover/bench/.

    .venv/bin/python scripts/bench/ogc.py [--seconds 12] [--rounds 3] [--connections 16]
                                          [--workers 2] [--scale full|small]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import mapbox_vector_tile
import numpy as np
from sqlalchemy import create_engine, text

from api.auth import create_api_key
from api.db import create_scratch_database, drop_scratch_database, libpq_url, resolve_database_url
from api.embedded import free_port
from api.migrate import upgrade
from api.services.demo import load_demo
from api.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
GRIDCOVER = str(Path(sys.executable).with_name("gridcover"))


# --- servers -------------------------------------------------------------------------------


def tipg_python() -> str:
    """A Python that can import tipg (and uvicorn)."""

    def importable(python: str) -> bool:
        check = [python, "-c", "import tipg.main, uvicorn"]
        return subprocess.run(check, capture_output=True).returncode == 0

    if importlib.util.find_spec("tipg") is not None or importable(sys.executable):
        return sys.executable
    print("installing tipg into this venv (the bench extra) ...", file=sys.stderr)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "tipg>=1.0"]
    if subprocess.run(pip).returncode == 0 and importable(sys.executable):
        return sys.executable
    venv = ROOT / ".gridcover" / "bench" / "tipg-venv"
    python = str(venv / "bin" / "python")
    if not (venv / "bin" / "python").exists() or not importable(python):
        print(f"tipg does not install beside our pins; using its own venv {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "tipg", "uvicorn"], check=True)
    return python


@dataclass
class Server:
    name: str
    base: str
    process: subprocess.Popen
    headers: dict[str, str]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(name: str, command: list[str], env: dict[str, str], port: int, **kw) -> Server:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    server = Server(name, f"http://127.0.0.1:{port}", process, kw.get("headers", {}))
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{server.base}/collections", timeout=30).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            server.stop()
            raise SystemExit(f"{name} did not come up")
        time.sleep(0.3)


# --- load ----------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50: float
    p99: float
    errors: int


def wrk(base: str, paths: list[str], headers: dict[str, str], seconds: int, conns: int) -> Result:
    lua = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
    header_lua = ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f"local paths = {{{lua}}}\n"
            "local i = 0\n"
            "request = function()\n"
            "  i = i % #paths + 1\n"
            f'  return wrk.format("GET", paths[i], {{{header_lua}}})\n'
            "end\n"
        )
    try:
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(conns), "-d", f"{seconds}s", "--latency", "--timeout",
             "30s", "-s", script.name, base],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"Socket errors:.*timeout (\d+)", out)
    return Result(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50=ms("50"),
        p99=ms("99"),
        errors=(int(errors.group(1)) if errors else 0)
        + (int(timeouts.group(1)) if timeouts else 0),
    )


def python_load(
    base: str, paths: list[str], headers: dict[str, str], seconds: int, conns: int
) -> Result:
    """Closed-loop load from `conns` concurrent clients (when wrk is not installed)."""

    async def run() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds
        counter = iter(range(10**9))

        async def client(http: httpx.AsyncClient) -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                path = paths[next(counter) % len(paths)]
                began = time.perf_counter()
                response = await http.get(path)
                latencies.append((time.perf_counter() - began) * 1e3)
                errors += response.status_code >= 400

        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=60, limits=httpx.Limits(max_connections=conns)
        ) as http:
            began = time.perf_counter()
            await asyncio.gather(*(client(http) for _ in range(conns)))
            return latencies, errors, time.perf_counter() - began

    latencies, errors, elapsed = asyncio.run(run())
    return Result(
        len(latencies) / elapsed,
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        errors,
    )


def combined(results: list[Result]) -> Result:
    """Rounds of one server: mean throughput, median p50, worst p99, all errors."""
    return Result(
        rps=float(np.mean([r.rps for r in results])),
        p50=float(np.median([r.p50 for r in results])),
        p99=max(r.p99 for r in results),
        errors=sum(r.errors for r in results),
    )


# --- what is asked -------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    ours: list[str]
    tipg: list[str]
    key: bool = False  # ours needs a key for it (tipg has no access control)
    tiles: bool = False


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2 * n)
    return z, x, y


def scenarios(engine, rng: random.Random) -> list[Scenario]:
    with engine.connect() as conn:
        grids = conn.execute(
            text(
                "SELECT id, code, ST_X(p), ST_Y(p) FROM (SELECT id, code, "
                "ST_PointOnSurface(geom) AS p FROM grid WHERE valid_to IS NULL) g ORDER BY code"
            )
        ).all()
        cameras = conn.execute(
            text("SELECT ST_X(geom), ST_Y(geom) FROM camera ORDER BY id")
        ).all()  # fmt: skip
        populations = conn.execute(
            text(
                "SELECT DISTINCT population FROM grid WHERE valid_to IS NULL "
                "AND population IS NOT NULL ORDER BY 1"
            )
        ).scalars().all()  # fmt: skip
    sample = rng.sample(grids, min(500, len(grids)))
    found: list[Scenario] = []

    bboxes = []
    for _, _, lon, lat in sample[:200]:
        w = rng.uniform(0.02, 0.08)
        bboxes.append(f"{lon - w:.4f},{lat - w:.4f},{lon + w:.4f},{lat + w:.4f}")
    found.append(
        Scenario(
            "items grids limit=100 bbox",
            [f"/collections/grids/items?limit=100&bbox={b}" for b in bboxes],
            [f"/collections/public.grid/items?limit=100&bbox={b}" for b in bboxes],
        )
    )
    pages = range(0, len(grids), 1000)
    found.append(
        Scenario(
            "items grids limit=1000 (paging)",
            [f"/collections/grids/items?limit=1000&offset={o}" for o in pages],
            [f"/collections/public.grid/items?limit=1000&offset={o}" for o in pages],
        )
    )
    values = rng.sample(populations, min(100, len(populations)))
    filters = [quote(f"population > {p} AND kind = '综合网格'") for p in values]
    found.append(
        Scenario(
            "items grids CQL2 filter limit=100",
            [f"/collections/grids/items?limit=100&filter={f}" for f in filters],
            [
                f"/collections/public.grid/items?limit=100&filter-lang=cql2-text&filter={f}"
                for f in filters
            ],
        )
    )
    found.append(
        Scenario(
            "single grid",
            [f"/collections/grids/items/{code}" for _, code, _, _ in sample],
            [f"/collections/public.grid/items/{gid}" for gid, _, _, _ in sample],
        )
    )
    for z, count in ((8, 50), (10, 200), (11, 300), (14, 500)):
        tiles = sorted({tile_of(lon, lat, z) for _, _, lon, lat in grids})
        tiles = rng.sample(tiles, min(count, len(tiles)))
        found.append(
            Scenario(
                f"tiles grids z{z} ({len(tiles)} tiles)",
                [f"/collections/grids/tiles/WebMercatorQuad/{z}/{x}/{y}" for z, x, y in tiles],
                [
                    f"/collections/public.grid/tiles/WebMercatorQuad/{z}/{x}/{y}"
                    for z, x, y in tiles
                ],
                tiles=True,
            )
        )
    tiles = sorted({tile_of(lon, lat, 14) for lon, lat in rng.sample(cameras, 2000)})[:500]
    found.append(
        Scenario(
            f"tiles cameras z14 ({len(tiles)} tiles)",
            [f"/collections/cameras/tiles/WebMercatorQuad/{z}/{x}/{y}" for z, x, y in tiles],
            [f"/collections/public.camera/tiles/WebMercatorQuad/{z}/{x}/{y}" for z, x, y in tiles],
            key=True,
            tiles=True,
        )
    )
    return found


def agreement(ours: Server, tipg: Server, planner: dict[str, str]) -> list[str]:
    """A few answers both ought to agree on, so the race is between equals."""
    notes = []
    with httpx.Client(timeout=120) as http:
        a = http.get(f"{ours.base}/collections/grids/items?limit=1&bbox=109.6,28.2,109.9,28.4")
        b = http.get(
            f"{tipg.base}/collections/public.grid/items?limit=1&bbox=109.6,28.2,109.9,28.4"
        )
        notes.append(
            f"grids in a bbox: ours {a.json()['numberMatched']}, tipg {b.json()['numberMatched']}"
        )
        z, x, y = tile_of(109.74, 28.31, 12)
        counts = []
        for base, cid, headers in ((ours.base, "grids", planner), (tipg.base, "public.grid", {})):
            tile = http.get(
                f"{base}/collections/{cid}/tiles/WebMercatorQuad/{z}/{x}/{y}", headers=headers
            )
            layers = mapbox_vector_tile.decode(tile.content) if tile.content else {}
            counts.append(sum(len(layer["features"]) for layer in layers.values()))
        notes.append(f"features in grid tile {z}/{x}/{y}: ours {counts[0]}, tipg {counts[1]}")
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=12, help="load per server and scenario")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs making it up")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="processes per server")
    parser.add_argument("--scale", choices=("small", "full"), default="full")
    parser.add_argument(
        "--database-url", help="bench this database (holding a demo world) instead of loading one"
    )
    args = parser.parse_args()
    load: Callable[..., Result] = wrk if shutil.which("wrk") else python_load
    if load is python_load:
        print("wrk not found: using the Python load generator (apt-get install wrk)")
    python = tipg_python()

    server_url = resolve_database_url(get_settings())
    url = args.database_url or create_scratch_database(server_url, prefix="gridcover_bench_ogc")
    servers: list[Server] = []
    try:
        engine = create_engine(url)
        if not args.database_url:
            upgrade(url)
            print(f"loading the {args.scale} demo world ...", file=sys.stderr)
            started = time.perf_counter()
            load_demo(engine, args.scale, 0)
            print(f"loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        with engine.begin() as conn:
            planner = {"Authorization": f"Bearer {create_api_key(conn, 'planner', 'bench')[1]}"}
        plan = scenarios(engine, random.Random(7))
        with engine.connect() as conn:
            n_grids = conn.execute(text("SELECT count(*) FROM grid")).scalar_one()
            n_cameras = conn.execute(text("SELECT count(*) FROM camera")).scalar_one()
        engine.dispose()

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
        ours_env = base_env | {"GRIDCOVER_DATABASE_URL": url, "GRIDCOVER_LOG_LEVEL": "warning"}
        workers = str(args.workers)
        for name, extra in (
            ("ours", {}),
            ("ours, no tile cache", {"GRIDCOVER_TILE_CACHE_MB": "0"}),
        ):
            port = free_port()
            servers.append(
                start(
                    name,
                    [GRIDCOVER, "serve", "--port", str(port), "--workers", workers],
                    ours_env | extra,
                    port,
                    headers=planner,
                )
            )
        port = free_port()
        tipg_env = base_env | {
            "DATABASE_URL": libpq_url(url),
            "TIPG_DB_SCHEMAS": '["public"]',
        }
        tipg_cmd = [python, "-m", "uvicorn", "tipg.main:app", "--port", str(port)]
        tipg_cmd += ["--workers", workers, "--log-level", "warning"]
        servers.append(start("tipg", tipg_cmd, tipg_env, port))
        ours, uncached, tipg = servers
        notes = agreement(ours, tipg, planner)

        rows = []
        slice_s = max(1, args.seconds // args.rounds)
        for scenario in plan:
            print(f"  {scenario.name} ...", file=sys.stderr)
            runs: dict[str, list[Result]] = {}
            candidates = [ours, uncached] if scenario.tiles else [ours]
            for _ in range(args.rounds):  # interleaved, so a busy moment hits every server
                for server in [*candidates, tipg]:
                    paths, headers = scenario.ours, planner if scenario.key else {}
                    if server is tipg:
                        paths, headers = scenario.tipg, {}
                    runs.setdefault(server.name, []).append(
                        load(server.base, paths, headers, slice_s, args.connections)
                    )
            rows.append((scenario, {name: combined(r) for name, r in runs.items()}))
    finally:
        for server in servers:
            server.stop()
        if not args.database_url:
            drop_scratch_database(server_url, url)

    print(
        f"\nOGC API on the {'given' if args.database_url else args.scale} demo "
        f"({n_grids:,} grids, {n_cameras:,} cameras): "
        f"{args.connections} connections, {args.rounds} interleaved runs of {slice_s} s per "
        f"server, {args.workers} worker processes a server, loopback, "
        f"{'wrk' if load is wrk else 'Python load generator'}; req/s the mean of the runs, "
        "p50 their median, p99 the worst"
    )
    for note in notes:
        print(f"  {note}")
    header = f"{'scenario':<36}{'server':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print("\n" + header + f"{'vs tipg':>9}\n" + "-" * (len(header) + 9))
    for scenario, results in rows:
        peer = results["tipg"].rps
        for i, (name, r) in enumerate(results.items()):
            label = scenario.name if i == 0 else ""
            ratio = f"{r.rps / peer:8.1f}x" if name != "tipg" and peer else ""
            print(
                f"{label:<36}{name:<22}{r.rps:>9,.0f}{r.p50:>9.1f}{r.p99:>9.1f}{r.errors:>8}{ratio}"
            )


if __name__ == "__main__":
    main()
