"""What the HTTP benchmarks share: a scratch database with the demo, a server, latencies.

Everything runs on loopback against a scratch database that is dropped afterwards; the
database of `make run` is never touched.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import Engine, create_engine

from api.db import create_scratch_database, drop_scratch_database, resolve_database_url
from api.embedded import free_port
from api.migrate import upgrade
from api.services.demo import load_demo
from api.settings import get_settings

GRIDCOVER = str(Path(sys.executable).with_name("gridcover"))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """`(fn(), seconds)`."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p99 in milliseconds of durations in seconds."""
    ms = np.asarray(seconds) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


@contextmanager
def demo_database(scale: str = "full", seed: int = 0) -> Iterator[tuple[str, Engine]]:
    """A scratch database holding the demo world: `(url, engine)`; dropped afterwards."""
    server = resolve_database_url(get_settings())
    url = create_scratch_database(server, prefix="gridcover_bench")
    engine = None
    try:
        upgrade(url)
        engine = create_engine(url)
        print(f"loading the {scale} demo world ...", file=sys.stderr)
        load_demo(engine, scale, seed)
        yield url, engine
    finally:
        if engine is not None:
            engine.dispose()
        drop_scratch_database(server, url)


@contextmanager
def served(url: str, workers: int = 2) -> Iterator[str]:
    """`gridcover serve` on `url` on a free loopback port; yields its base URL."""
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
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not come up")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def open_loop_latency(
    base: str, key: str, paths: list[str], clients: int, rate_per_client: float, seconds: float
) -> dict[str, float]:
    """Latency (ms) of GETs with `clients` each sending `rate_per_client` requests/s on a
    fixed schedule, measured from the scheduled start (no coordinated omission)."""

    async def client(number: int, http: httpx.AsyncClient, start: float, out: list[float]):
        for k in range(int(seconds * rate_per_client)):
            due = start + (k + number / clients) / rate_per_client
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            path = paths[(number * 7919 + k) % len(paths)]
            response = await http.get(path)
            response.raise_for_status()
            out.append(time.perf_counter() - due)

    async def run() -> list[float]:
        latencies: list[float] = []
        async with httpx.AsyncClient(
            base_url=base,
            limits=httpx.Limits(max_connections=clients),
            timeout=30,
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            start = time.perf_counter() + 0.1
            await asyncio.gather(*(client(n, http, start, latencies) for n in range(clients)))
        return latencies

    return percentiles_ms(asyncio.run(run())) | {"rps": clients * rate_per_client}
