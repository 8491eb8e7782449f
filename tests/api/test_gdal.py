"""A real GIS client against a real server: GDAL's OAPIF driver (ogrinfo, ogr2ogr) on the
small demo world served by uvicorn on a free port. A request-recording wrapper around the
app shows what GDAL pushes to the server (bbox, filter)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import geopandas as gpd
import pytest
import shapely
import uvicorn
from sqlalchemy import text

from api.app import create_app
from api.settings import Settings
from tests.api.test_ogc import COUNT_SQL, PUBLIC, World, demo_world

OGRINFO = shutil.which("ogrinfo")
OGR2OGR = shutil.which("ogr2ogr")


@dataclass
class Served:
    world: World
    url: str
    requests: list[str]

    def run(self, *args: str, key: str | None = None, timeout: float = 300) -> str:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["NO_PROXY"] = "127.0.0.1,localhost"
        if key:
            env["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {key}"
        result = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    def requested(self, since: int = 0) -> list[tuple[str, dict[str, list[str]]]]:
        return [
            (urlsplit(url).path, parse_qs(urlsplit(url).query)) for url in self.requests[since:]
        ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(small_demo_url: str) -> Iterator[Served]:
    assert OGRINFO and OGR2OGR, "gdal-bin is part of the set-up (scripts/install_system.sh)"
    with demo_world(small_demo_url, "gdal") as world:
        app = create_app(Settings(database_url=small_demo_url), world.engine)
        requests: list[str] = []

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                query = scope["query_string"].decode()
                requests.append(scope["path"] + (f"?{query}" if query else ""))
            await app(scope, receive, send)

        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(recording, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        try:
            yield Served(world, f"http://127.0.0.1:{port}", requests)
        finally:
            server.should_exit = True
            thread.join(timeout=15)


def layers(listing: str) -> list[str]:
    return re.findall(r"^\d+: (\w+)", listing, flags=re.MULTILINE)


def feature_count(summary: str) -> int:
    match = re.search(r"^Feature Count: (\d+)", summary, flags=re.MULTILINE)
    assert match, summary
    return int(match.group(1))


def test_ogrinfo_lists_every_public_collection(served):
    listing = served.run(OGRINFO, "-ro", "-so", f"OAPIF:{served.url}/")
    assert layers(listing) == PUBLIC
    assert "grids (title: Grids (网格)) (Multi Polygon)" in listing


def test_ogrinfo_lists_gated_collections_with_a_key(served):
    listing = served.run(
        OGRINFO, "-ro", "-so", f"OAPIF:{served.url}/", key=served.world.headers["planner"][
            "Authorization"
        ].removeprefix("Bearer "),
    )  # fmt: skip
    assert sorted(layers(listing)) == sorted(COUNT_SQL)


@pytest.mark.parametrize("cid", PUBLIC)
def test_feature_count_is_number_matched(served, cid):
    summary = served.run(OGRINFO, "-ro", "-so", f"OAPIF:{served.url}/", cid)
    matched = served.world.items(cid, role="anonymous", limit=1)["numberMatched"]
    assert feature_count(summary) == matched == served.world.sql(COUNT_SQL[cid])
    assert "Extent: (109." in summary


def test_ogr2ogr_copies_grids_to_geopackage(served, tmp_path: Path):
    out = tmp_path / "grids.gpkg"
    served.run(
        OGR2OGR, "-f", "GPKG", str(out), f"OAPIF:{served.url}/", "grids", "-oo", "PAGE_SIZE=250"
    )
    expected = served.world.sql(COUNT_SQL["grids"])
    assert feature_count(served.run(OGRINFO, "-ro", "-so", str(out), "grids")) == expected
    # the copy holds the same features: ids, properties and geometries
    copy = gpd.read_file(out, layer="grids").set_index("code").sort_index()
    with served.world.engine.connect() as conn:
        stored = gpd.read_postgis(
            text(
                "SELECT code, name, population, households, kind, geom FROM grid "
                "WHERE valid_to IS NULL ORDER BY code"
            ),
            conn,
            geom_col="geom",
        ).set_index("code")
    assert list(copy.index) == list(stored.index)
    for column in ("name", "population", "households", "kind"):
        assert list(copy[column]) == list(stored[column]), column
    distance = shapely.hausdorff_distance(copy.geometry.values, stored.geometry.values)
    assert distance.max() < 1e-6  # 7 decimals of a degree
    pages = [q for path, q in served.requested() if path == "/collections/grids/items"]
    assert any(q.get("limit") == ["250"] and q.get("offset") == ["1000"] for q in pages)


def test_spatial_and_attribute_filters_are_pushed_to_the_server(served, tmp_path: Path):
    out = tmp_path / "subset.gpkg"
    since = len(served.requests)
    served.run(
        OGR2OGR, "-f", "GPKG", str(out), f"OAPIF:{served.url}/", "grids",
        "-spat", "109.70", "28.15", "109.80", "28.25",
        "-where", "population > 1200 AND kind = '综合网格'",
    )  # fmt: skip
    expected = served.world.sql(
        "SELECT count(*) FROM grid WHERE valid_to IS NULL AND population > 1200 "
        "AND kind = '综合网格' AND "
        "ST_Intersects(geom, ST_MakeEnvelope(109.70, 28.15, 109.80, 28.25, 4326))"
    )
    assert expected > 0
    assert feature_count(served.run(OGRINFO, "-ro", "-so", str(out), "grids")) == expected
    pushed = [
        q
        for path, q in served.requested(since)
        if path == "/collections/grids/items" and "filter" in q and "bbox" in q
    ]
    assert pushed, served.requests[since:]
    query = pushed[0]
    assert [float(v) for v in query["bbox"][0].split(",")] == pytest.approx(
        [109.70, 28.15, 109.80, 28.25]
    )
    assert "population > 1200" in query["filter"][0] and "kind = '综合网格'" in query["filter"][0]
    # every page GDAL read was filtered on the server: it never fetched the whole layer
    fetched = [q for path, q in served.requested(since) if path == "/collections/grids/items"]
    assert all("filter" in q or q.get("limit") == ["10"] for q in fetched)
    total = sum(1 for q in fetched if "filter" in q)
    assert total <= -(-expected // 10) + 2
