"""What the HTTP benchmarks share: a scratch database with the demo, a server, latencies.

Everything runs on loopback against a scratch database that is dropped afterwards; the
database of `make run` is never touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
# A full-scale server builds its grid index and address matcher before it answers /health.
SERVER_START_TIMEOUT_S = 120


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


@dataclass(frozen=True)
class Server:
    """A running `gridcover serve`: its base URL and the process (parent of its workers)."""

    base: str
    process: subprocess.Popen


@contextmanager
def serving(url: str, workers: int = 2) -> Iterator[Server]:
    """`gridcover serve` on `url` on a free loopback port, up and answering /health."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env |= {"GRIDCOVER_DATABASE_URL": url, "GRIDCOVER_LOG_LEVEL": "warning"}
    command = [GRIDCOVER, "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the server did not come up")
            time.sleep(0.2)
        yield Server(base, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def served(url: str, workers: int = 2) -> Iterator[str]:
    """`gridcover serve` on `url` on a free loopback port; yields its base URL."""
    with serving(url, workers) as server:
        yield server.base


def open_loop(
    base: str,
    key: str,
    send: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    clients: int,
    rate_per_client: float,
    seconds: float,
) -> dict[str, float]:
    """Latency (ms) of requests with `clients` each sending `rate_per_client` requests/s on
    a fixed schedule, measured from the scheduled start (no coordinated omission).
    `send(http, i)` makes request number `i`; anything but a 2xx ends the run."""

    async def client(number: int, http: httpx.AsyncClient, start: float, out: list[float]):
        for k in range(int(seconds * rate_per_client)):
            due = start + (k + number / clients) / rate_per_client
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            response = await send(http, number * 7919 + k)
            if not response.is_success:
                raise SystemExit(
                    f"{response.request.method} {response.request.url.path} failed: "
                    f"{response.status_code} {response.text[:500]}"
                )
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


def open_loop_latency(
    base: str, key: str, paths: list[str], clients: int, rate_per_client: float, seconds: float
) -> dict[str, float]:
    """`open_loop` of GETs cycling through `paths`."""
    return open_loop(
        base,
        key,
        lambda http, i: http.get(paths[i % len(paths)]),
        clients,
        rate_per_client,
        seconds,
    )


def wrk(base: str, lua_script: str, seconds: int, connections: int = 20) -> dict[str, float]:
    """p50/p99 (ms), requests/s and non-2xx/3xx count of `wrk` driving `base` flat out with
    `connections` connections and `lua_script` (which builds the requests)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua_script)
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
             base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
    finally:
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
