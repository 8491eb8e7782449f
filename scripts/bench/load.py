"""Load benchmark: many concurrent clients mixing lookups, OGC items, vector tiles and
incident reports against one `gridcover serve`, on loopback.

On a scratch database holding the demo world (dropped afterwards), served by `gridcover
serve --workers N` on 127.0.0.1, `--clients` clients (one keep-alive connection each,
closed loop: a client sends its next request when the last one has been answered) run for
`--seconds` after a short warm-up, each cycling through the same fixed mix of requests:
- point lookups, `GET /v1/lookup?lon&lat` at random points inside the demo's grids;
- OGC items, `GET /collections/grids/items?bbox=...&limit=100` over random boxes of
  1-6 km around such points;
- vector tiles, `GET /collections/grids/tiles/WebMercatorQuad/{z}/{x}/{y}` at z10-z14
  under such points (the server's tile cache is on, as in production);
- incident reports, `POST /v1/incidents` at such points, random categories and channels.
It prints, per kind and in total: requests, errors (any status but 2xx and 304, and any
transport error or timeout: the run must have none, else it exits with status 1),
throughput, p50/p99/max latency; the server's resident memory (summed over the serve
process and every process under it, sampled from /proc); and CPU time.

The load generator runs on the same machine and shares its cores with the server and
PostgreSQL: its CPU time is printed next to the server's and that of the database's
backends, so the reader can judge how much of the machine it took. Latencies are
closed-loop (from sending to the whole answer read), so they do not count the time a
request would have waited to be sent under a fixed arrival rate. The run is bounded: it
stops issuing at `--seconds` (requests in flight finish, each within REQUEST_TIMEOUT_S)
or after `--max-requests`, whichever comes first.

    .venv/bin/python scripts/bench/load.py [--clients 100] [--seconds 60] [--workers 2]
                                           [--scale full|small] [--max-requests 500000]
                                           [--warmup 5] [--seed 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
import uvloop
from harness import (
    Call,
    demo_database,
    encode_request,
    host_port,
    percentiles_ms,
    read_response,
    serving,
)
from sqlalchemy import Engine, text

from api.auth import create_api_key
from api.services.incidents import INTAKE_CHANNELS

# The mix, as requests out of every 20 a client sends (dispatchers looking points up, web
# maps fetching tiles and items, reports coming in).
MIX = {"lookup": 7, "items": 3, "tiles": 8, "incidents": 2}
ENDPOINTS = {
    "lookup": "GET /v1/lookup?lon&lat",
    "items": "GET /collections/grids/items?bbox&limit=100",
    "tiles": "GET /collections/grids/tiles/WebMercatorQuad/{z}/{x}/{y}, z10-14",
    "incidents": "POST /v1/incidents",
}
REQUESTS_PER_KIND = 10_000  # distinct requests prepared for each kind
TILE_ZOOMS = range(10, 15)
BBOX_HALF_SIDE_DEG = (0.005, 0.03)  # about 0.5-3 km each way at 28 degrees north
REQUEST_TIMEOUT_S = 30.0
RSS_SAMPLE_EVERY_S = 0.5


# -- what the clients send ---------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """Prepared requests per kind."""

    requests: dict[str, list[Call]]
    schedule: list[str]  # the order of kinds a client cycles through

    def request(self, kind: str, number: int) -> Call:
        prepared = self.requests[kind]
        return prepared[number % len(prepared)]


def points_in_grids(engine: Engine, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random (lon, lat) points, each inside a random current grid."""
    with engine.connect() as conn:
        wkbs = conn.execute(
            text("SELECT ST_AsBinary(geom) FROM grid WHERE valid_to IS NULL ORDER BY code")
        ).scalars()
        grids = shapely.from_wkb([bytes(wkb) for wkb in wkbs])
    chosen = grids[rng.integers(0, len(grids), n)]
    bounds = shapely.bounds(chosen)
    points = np.empty((n, 2))
    todo = np.arange(n)
    while todo.size:  # rejection sampling inside each grid's bounding box
        lon = rng.uniform(bounds[todo, 0], bounds[todo, 2])
        lat = rng.uniform(bounds[todo, 1], bounds[todo, 3])
        inside = shapely.contains_xy(chosen[todo], lon, lat)
        points[todo[inside]] = np.c_[lon[inside], lat[inside]]
        todo = todo[~inside]
    return points


def web_mercator_tile(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The (x, y) of the WebMercatorQuad tile holding a point at `zoom`."""
    tiles = 2**zoom
    x = int((lon + 180.0) / 360.0 * tiles)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * tiles)
    return x, y


def items_path(west: float, south: float, east: float, north: float) -> str:
    return f"/collections/grids/items?bbox={west:.6f},{south:.6f},{east:.6f},{north:.6f}&limit=100"


def tile_path(z: int, x: int, y: int) -> str:
    return f"/collections/grids/tiles/WebMercatorQuad/{z}/{x}/{y}"


def build_workload(engine: Engine, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    with engine.connect() as conn:
        categories = (
            conn.execute(text("SELECT code FROM incident_category ORDER BY code")).scalars().all()
        )
    lookup, items, tiles, incidents = (
        points_in_grids(engine, REQUESTS_PER_KIND, rng) for _ in range(4)
    )
    half_sides = rng.uniform(*BBOX_HALF_SIDE_DEG, REQUESTS_PER_KIND)
    zooms = rng.integers(TILE_ZOOMS.start, TILE_ZOOMS.stop, REQUESTS_PER_KIND)
    requests: dict[str, list[Call]] = {
        "lookup": [Call("GET", f"/v1/lookup?lon={x:.7f}&lat={y:.7f}") for x, y in lookup],
        "items": [
            Call("GET", items_path(x - h, y - h, x + h, y + h))
            for (x, y), h in zip(items, half_sides, strict=True)
        ],
        "tiles": [
            Call("GET", tile_path(int(z), *web_mercator_tile(x, y, int(z))))
            for (x, y), z in zip(tiles, zooms, strict=True)
        ],
        "incidents": [
            Call(
                "POST",
                "/v1/incidents",
                json.dumps(
                    {
                        "category": categories[rng.integers(len(categories))],
                        "lon": round(float(x), 7),
                        "lat": round(float(y), 7),
                        "accuracy_m": 10,
                        "channel": INTAKE_CHANNELS[rng.integers(len(INTAKE_CHANNELS))],
                        "description": "负载测试：随机位置的事件上报",
                    },
                    ensure_ascii=False,
                ).encode(),
            )
            for x, y in incidents
        ],
    }
    schedule = [kind for kind, share in MIX.items() for _ in range(share)]
    random.Random(seed).shuffle(schedule)
    return Workload(requests, schedule)


# -- the clients ---------------------------------------------------------------------------
@dataclass
class Results:
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in MIX})
    errors: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in MIX})
    # the first request of each (kind, outcome) that failed, and what it got
    error_examples: dict[tuple[str, str], str] = field(default_factory=dict)
    wall_s: float = 0.0
    capped: bool = False


def succeeded(status: int) -> bool:
    return 200 <= status < 300 or status == 304


async def drive(
    base: str, key: str, workload: Workload, clients: int, seconds: float, max_requests: int
) -> Results:
    """`clients` closed-loop clients, one keep-alive connection each (raw HTTP/1.1 on
    uvloop sockets: the generator shares the CPU with the server), until `seconds` have
    passed or `max_requests` have been sent."""
    results = Results()
    sent = 0
    host, port = host_port(base)
    connections = [await asyncio.open_connection(host, port) for _ in range(clients)]
    start = time.perf_counter()
    stop_at = start + seconds

    async def client(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        nonlocal sent
        k = 0
        while time.perf_counter() < stop_at:
            if sent >= max_requests:
                results.capped = True
                break
            sent += 1
            kind = workload.schedule[(number + k) % len(workload.schedule)]
            request = workload.request(kind, number * 7919 + k)
            k += 1
            began = time.perf_counter()
            try:
                writer.write(encode_request(host, key, request))
                status, body = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
                outcome, ok = str(status), succeeded(status)
                detail = "" if ok else body[:300].decode(errors="replace")
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
                outcome, ok, detail = type(error).__name__, False, str(error)[:300]
            results.latencies_s[kind].append(time.perf_counter() - began)
            results.statuses[kind][outcome] += 1
            if not ok:
                results.errors[kind] += 1
                results.error_examples.setdefault(
                    (kind, outcome), f"{request.method} {request.path}: {detail}"
                )
                if outcome in ("ConnectionResetError", "IncompleteReadError", "TimeoutError"):
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        writer.close()

    await asyncio.gather(*(client(n, *pair) for n, pair in enumerate(connections)))
    results.wall_s = time.perf_counter() - start
    return results


def run_clients(
    base: str, key: str, workload: Workload, clients: int, seconds: float, max_requests: int
) -> Results:
    # uvloop (installed with uvicorn[standard]) costs the load generator less CPU per request.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(drive(base, key, workload, clients, seconds, max_requests))


# -- the server's processes ----------------------------------------------------------------
def process_tree(root: int) -> list[int]:
    """`root` and every process descending from it, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            line = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        parent = int(line[line.rindex(")") + 2 :].split()[1])  # the name may hold ") "
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time so far of those of `pids` running on this machine."""
    seconds = {}
    for pid in pids:
        try:
            line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = line[line.rindex(")") + 2 :].split()
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def database_backends(engine: Engine) -> list[int]:
    """The PostgreSQL backends connected to the scratch database (the server's pools)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
        )


@dataclass
class CpuMeter:
    """CPU time used from `start()` to `stop()` by this process, the server's processes and
    the scratch database's PostgreSQL backends (None when PostgreSQL runs elsewhere)."""

    server_root: int
    engine: Engine
    client_s: float = 0.0
    server_s: float = 0.0
    database_s: float | None = None
    server_start: dict[int, float] = field(default_factory=dict)
    database_start: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        self.client_s = time.process_time()
        self.server_start = cpu_seconds(process_tree(self.server_root))
        self.database_start = cpu_seconds(database_backends(self.engine))

    def stop(self) -> None:
        self.client_s = time.process_time() - self.client_s
        self.server_s = used_since(self.server_start, process_tree(self.server_root))
        backends = database_backends(self.engine)
        if cpu_seconds(backends):
            self.database_s = used_since(self.database_start, backends)


def used_since(before: dict[int, float], pids: list[int]) -> float:
    """CPU seconds `pids` used since `before` (all of it for a process started since)."""
    return sum(now - before.get(pid, 0.0) for pid, now in cpu_seconds(pids).items())


class RssSampler(threading.Thread):
    """Samples the summed RSS of a process tree every RSS_SAMPLE_EVERY_S until stopped."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stopped = threading.Event()
        tree = process_tree(root)
        self.processes = len(tree)
        self.start_bytes = self.peak_bytes = self.end_bytes = rss_bytes(tree)

    def run(self) -> None:
        while not self.stopped.wait(RSS_SAMPLE_EVERY_S):
            self.sample()

    def sample(self) -> None:
        self.end_bytes = rss_bytes(process_tree(self.root))
        self.peak_bytes = max(self.peak_bytes, self.end_bytes)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sample()


# -- the run -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients run")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument(
        "--scale", choices=("small", "full"), default="full", help="demo world (small: one county)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="stop after this many requests"
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of the same load before measuring"
    )
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1 or args.warmup < 0:
        parser.error(
            "--clients, --seconds and --max-requests must be positive, --warmup not negative"
        )

    with demo_database(args.scale) as (url, engine):
        with engine.begin() as conn:
            key = create_api_key(conn, "dispatcher", "load benchmark")[1]
            grid_count = conn.execute(
                text("SELECT count(*) FROM grid WHERE valid_to IS NULL")
            ).scalar_one()
        workload = build_workload(engine, args.seed)
        with serving(url, args.workers) as server:
            # Each worker builds its grid index and tile cache and opens its database
            # connections on demand: not what a steady load measures.
            print(f"warming up for {args.warmup:g} s ...", file=sys.stderr)
            warmup = run_clients(
                server.base, key, workload, args.clients, args.warmup, args.max_requests
            )
            print(f"measuring for {args.seconds:g} s ...", file=sys.stderr)
            load_before = os.getloadavg()[0]
            cpu = CpuMeter(server.process.pid, engine)
            sampler = RssSampler(server.process.pid)
            cpu.start()
            sampler.start()
            try:
                results = run_clients(
                    server.base, key, workload, args.clients, args.seconds, args.max_requests
                )
            finally:
                sampler.stop()
                cpu.stop()

    report(args, grid_count, warmup, results, sampler, cpu, load_before)
    if sum(results.errors.values()) or sum(warmup.errors.values()):
        raise SystemExit(1)


def report(
    args: argparse.Namespace,
    grid_count: int,
    warmup: Results,
    results: Results,
    sampler: RssSampler,
    cpu: CpuMeter,
    load_before: float,
) -> None:
    wall = results.wall_s
    mix = ", ".join(f"{kind} {share / sum(MIX.values()):.0%}" for kind, share in MIX.items())
    print(
        f"\nload: {args.clients} clients (one keep-alive connection each, closed loop) for "
        f"{args.seconds:g} s on loopback after a {args.warmup:g} s warm-up; {args.scale} demo "
        f"({grid_count:,} grids); {args.workers} server workers; {os.cpu_count()} cores "
        "shared by server, PostgreSQL and load generator"
    )
    print(f"mix of requests (fixed): {mix}")
    if results.capped:
        print(f"stopped early at --max-requests {args.max_requests:,}")
    print(
        f"\n{'kind':<11}{'endpoint':<62}{'requests':>10}{'errors':>8}{'req/s':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    everything: list[float] = []
    for kind in MIX:
        latencies = results.latencies_s[kind]
        everything += latencies
        print(f"{kind:<11}{ENDPOINTS[kind]:<62}" + row(latencies, results.errors[kind], wall))
    total_errors = sum(results.errors.values())
    print(f"{'total':<73}" + row(everything, total_errors, wall))
    statuses = "; ".join(
        f"{kind} " + ", ".join(f"{s} x {n:,}" for s, n in sorted(results.statuses[kind].items()))
        for kind in MIX
    )
    print(f"answers: {statuses}")
    mib = 1024 * 1024
    print(
        f"server RSS (gridcover serve and all under it, {sampler.processes} processes, summed): "
        f"start {sampler.start_bytes / mib:,.0f} MiB, peak {sampler.peak_bytes / mib:,.0f} MiB, "
        f"end {sampler.end_bytes / mib:,.0f} MiB"
    )
    database = "n/a (not on this machine)" if cpu.database_s is None else f"{cpu.database_s:.1f} s"
    print(
        f"CPU over the {wall:.1f} s run ({os.cpu_count()} cores: {wall * os.cpu_count():.0f} "
        f"CPU-s in all): load generator {cpu.client_s:.1f} s, server {cpu.server_s:.1f} s, "
        f"PostgreSQL backends {database}, the rest other work on the machine; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} at the end"
    )
    warmup_errors = sum(warmup.errors.values())
    print(
        f"warm-up: {sum(map(len, warmup.latencies_s.values())):,} requests, {warmup_errors} errors"
    )
    if total_errors or warmup_errors:
        print("\nFAILED: the run must have no errors. The first of each kind:")
        for phase, errors in (("run", results), ("warm-up", warmup)):
            for (kind, outcome), example in errors.error_examples.items():
                count = errors.statuses[kind][outcome]
                print(f"  {phase}, {kind}, {outcome} x {count:,}: {example}")


def row(latencies_s: list[float], errors: int, wall_s: float) -> str:
    if not latencies_s:
        return f"{0:>10}{errors:>8}"
    ms = percentiles_ms(latencies_s)
    return (
        f"{len(latencies_s):>10,}{errors:>8,}{len(latencies_s) / wall_s:>9,.1f}"
        f"{ms['p50']:>9.1f}{ms['p99']:>9.1f}{max(latencies_s) * 1e3:>9.1f}"
    )


if __name__ == "__main__":
    main()
