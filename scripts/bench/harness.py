"""What the HTTP benchmarks share: a scratch database with the demo, a server, latencies.

Everything runs on loopback against a scratch database that is dropped afterwards; the
database of `make run` is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import uvloop
from sqlalchemy import Engine, create_engine

from api.db import (
    create_scratch_database,
    drop_scratch_database,
    libpq_url,
    resolve_database_url,
)
from api.embedded import free_port
from api.migrate import upgrade
from api.services.demo import load_demo
from api.settings import get_settings

GRIDCOVER = str(Path(sys.executable).with_name("gridcover"))
# How long a full-scale server may take to answer /health (its grid index, address matcher
# and camera index are built in the background after that).
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
        settle_database(url)
        yield url, engine
    finally:
        if engine is not None:
            engine.dispose()
        drop_scratch_database(server, url)


def settle_database(url: str) -> None:
    """Vacuum and analyse every table, then flush: what autovacuum and the checkpointer
    do a while after bulk writes. Left to them, that work (and its WAL, which every
    commit then waits behind) runs during the measurements instead."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    checkpoint(url)


def checkpoint(url: str) -> None:
    """Flush what was written (when the role may ask for a checkpoint)."""
    with (
        psycopg.connect(libpq_url(url), autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


@dataclass(frozen=True)
class Server:
    """A running `gridcover serve`: its base URL and the process (parent of its workers)."""

    base: str
    process: subprocess.Popen


@contextmanager
def serving(url: str, workers: int = 2) -> Iterator[Server]:
    """`gridcover serve` on `url` on a free loopback port, up and warm: /health answered
    with nothing left `warming` (grid index, address matcher, camera index built), in
    several answers in a row over new connections, so that every worker was asked. A
    starting process builds them in the background for tens of seconds on the full demo,
    which would be measured as stalls of 100-200 ms."""
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
        warm_in_a_row = 0
        while warm_in_a_row < 5 * workers:
            try:
                response = httpx.get(f"{base}/health", timeout=5)
                warm = response.status_code == 200 and not response.json()["warming"]
            except httpx.TransportError:
                warm = False
            warm_in_a_row = warm_in_a_row + 1 if warm else 0
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the server did not come up warm")
            time.sleep(0.02 if warm else 0.2)
        yield Server(base, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def served(url: str, workers: int = 2) -> Iterator[str]:
    """`gridcover serve` on `url` on a free loopback port; yields its base URL."""
    with serving(url, workers) as server:
        yield server.base


@dataclass(frozen=True)
class Call:
    """One HTTP request of an open-loop run: `method`, `path` (with its query) and a JSON
    body (already encoded) or None."""

    method: str
    path: str
    body: bytes | None = None


def host_port(base: str) -> tuple[str, int]:
    host, port = re.match(r"https?://([^:/]+):(\d+)", base).groups()
    return host, int(port)


def encode_request(host: str, key: str, request: Call) -> bytes:
    """`request` as HTTP/1.1 bytes (keep-alive) with the key as a bearer token."""
    head = (
        f"{request.method} {request.path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {key}\r\n"
    ).encode()
    if request.body is None:
        return head + b"\r\n"
    return (
        head
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(request.body)}\r\n\r\n".encode()
        + request.body
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return status, body
    return status, await reader.readexactly(int(headers.get(b"content-length", b"0")))


def open_loop(
    base: str,
    key: str,
    call: Callable[[int], Call],
    clients: int,
    rate_per_client: float,
    seconds: float,
) -> dict[str, float]:
    """Latency (ms) of requests with `clients` each sending `rate_per_client` requests/s
    on a fixed schedule over its own keep-alive connection; `call(i)` is request `i`;
    anything but a 2xx ends the run.

    Latency counts from the scheduled start when the connection was still busy with the
    previous answer (a slow server delays the next request: no coordinated omission),
    else from the moment of sending, so the generator's own timer slack (about a
    millisecond) is not charged to the server. The generator writes requests and reads
    answers on raw sockets (uvloop), costing the shared CPU far less than an HTTP client
    library would.
    """
    host, port = host_port(base)

    async def client(number: int, start: float, out: list[float]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        free_at = start
        for k in range(int(seconds * rate_per_client)):
            request = call(number * 7919 + k)
            message = encode_request(host, key, request)
            due = start + (k + number / clients) / rate_per_client
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sent = time.perf_counter()
            writer.write(message)
            status, body = await read_response(reader)
            if not 200 <= status < 300:
                raise SystemExit(
                    f"{request.method} {request.path} failed: {status} {body[:500].decode()}"
                )
            done = time.perf_counter()
            out.append(done - (due if free_at > due else sent))
            free_at = done
        writer.close()

    async def run() -> list[float]:
        latencies: list[float] = []
        start = time.perf_counter() + 0.2
        await asyncio.gather(*(client(n, start, latencies) for n in range(clients)))
        return latencies

    return percentiles_ms(uvloop.run(run())) | {"rps": clients * rate_per_client}


def open_loop_latency(
    base: str, key: str, paths: list[str], clients: int, rate_per_client: float, seconds: float
) -> dict[str, float]:
    """`open_loop` of GETs cycling through `paths`."""
    return open_loop(
        base, key, lambda i: Call("GET", paths[i % len(paths)]), clients, rate_per_client, seconds
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
