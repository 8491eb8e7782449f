"""The web map: served at / to browsers and at /map, with its assets from /static; and the
page itself in real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against uvicorn on the small demo world: it loads without console errors, draws
grid tiles coloured by coverage, a click on a grid shows its chain and coverage, and the
search box resolves a demo address. The screenshot is kept in tests/artifacts/map.png."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import text

from api.app import create_app
from api.embedded import free_port
from api.routes.web import STATIC
from api.settings import Settings
from tests.api.test_ogc import World, demo_world

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
BACKGROUND = (0xE9, 0xED, 0xF1)  # the page's map background


@pytest.fixture(scope="session", autouse=True)
def web_built() -> None:
    """The built page and MapLibre (make web: npm ci + web/build.mjs, a no-op when current)."""
    subprocess.run(["make", "-s", "web"], cwd=ROOT, check=True, timeout=600)
    assert (STATIC / "index.html").is_file() and (STATIC / ".built").is_file()


# --- served by the app ------------------------------------------------------------------------


def test_browsers_get_the_map_at_the_root_and_everyone_else_json(client: TestClient):
    page = client.get("/", headers={"Accept": BROWSER_HTML})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/map.js"' in page.text and "Accept" in page.headers["vary"]
    for accept in ("application/json", "*/*", "", "text/html;q=0.5,application/json"):
        landing = client.get("/", headers={"Accept": accept})
        assert landing.headers["content-type"] == "application/json", accept
        assert "Accept" in landing.headers["vary"]
    links = {link["rel"]: link for link in client.get("/").json()["links"]}
    assert links["alternate"]["href"].endswith("/map")
    assert links["alternate"]["type"] == "text/html"
    # ?f= wins over the Accept header, both ways
    assert client.get("/", params={"f": "json"}, headers={"Accept": BROWSER_HTML}).json()["links"]
    assert client.get("/", params={"f": "html"}).headers["content-type"].startswith("text/html")
    assert client.get("/map").text == page.text


def test_the_page_s_assets_come_from_this_service(client: TestClient):
    script = client.get("/static/map.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert '"./vendor/maplibre-gl/maplibre-gl.mjs"' in script.text
    for asset in ("maplibre-gl.mjs", "maplibre-gl-worker.mjs", "maplibre-gl.css"):
        response = client.get(f"/static/vendor/maplibre-gl/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000, asset
    page = client.get("/map").text
    assert "http://" not in page and "https://" not in page  # nothing from another host
    assert "https://" not in script.text.replace("https://github.com/", "")


# --- in Chromium -----------------------------------------------------------------------------


@dataclass
class Site:
    world: World
    url: str
    driver: webdriver.Chrome

    def open(self, role: str | None) -> None:
        """The map page with `role`'s key in localStorage (None: no key), loaded afresh."""
        self.driver.get(f"{self.url}/")
        key = self.world.headers[role]["Authorization"].removeprefix("Bearer ") if role else None
        if key:
            self.driver.execute_script(
                "localStorage.setItem('gridcover.apiKey', arguments[0])", key
            )
        else:
            self.driver.execute_script("localStorage.clear()")
        self.driver.get_log("browser")  # drop what the previous page said
        self.driver.refresh()
        self.wait("document.body.dataset.ready === 'true'")
        self.wait(
            "const m = window.gridcover.map;"
            "return m.areTilesLoaded() && !m.isMoving() &&"
            " m.queryRenderedFeatures({layers: ['grids-fill']}).length > 0",
            statement=True,
        )

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: str, timeout: float = 60, statement: bool = False) -> Any:
        script = condition if statement else f"return ({condition})"
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda driver: driver.execute_script(script),
            message=f"timed out waiting for {condition}",
        )

    def settle(self) -> None:
        self.wait(
            "const m = window.gridcover.map; return m.areTilesLoaded() && !m.isMoving()",
            statement=True,
        )

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


def add_coverage_everywhere(conn: Any) -> list[tuple[int, str]]:
    """Coverage rows of every current grid at detect (varied ratios), where there are none."""
    rows = conn.execute(
        text(
            """
            INSERT INTO coverage (grid_id, level, covered_m2, ratio, road_ratio, places_covered,
                                  places_total, public_ratio, camera_count)
            SELECT id, 'detect', area_m2 * r, r, r, 0, 0, r, 1
            FROM (SELECT id, area_m2, (abs(hashtext(code)) % 100) / 100.0 AS r
                  FROM grid WHERE valid_to IS NULL) g
            ON CONFLICT DO NOTHING RETURNING grid_id, level
            """
        )
    ).all()
    return [tuple(r) for r in rows]


@pytest.fixture(scope="module")
def site(small_demo_url: str) -> Iterator[Site]:
    assert CHROMIUM and CHROMEDRIVER, "chromium and chromium-driver are part of the set-up"
    with demo_world(small_demo_url, "web") as world:
        with world.engine.begin() as conn:
            added = add_coverage_everywhere(conn)
        app = create_app(Settings(database_url=small_demo_url), world.engine)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        profile = tempfile.mkdtemp(prefix="gridcover-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-unsafe-swiftshader",  # WebGL in software, as there is no GPU
            "--window-size=1400,900",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield Site(world, f"http://127.0.0.1:{port}", driver)
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
            server.should_exit = True
            thread.join(timeout=15)
            with world.engine.begin() as conn:
                for grid_id, level in added:
                    conn.execute(
                        text("DELETE FROM coverage WHERE grid_id = :g AND level = :l"),
                        {"g": grid_id, "l": level},
                    )


def map_pixels(site: Site) -> np.ndarray:
    """A screenshot (kept as the test artefact); the RGB pixels of the map's canvas, n x 3."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "map.png"
    site.driver.save_screenshot(str(path))
    rect = site.driver.find_element(By.CSS_SELECTOR, "#map canvas").rect
    image = Image.open(path).convert("RGB")
    ratio = image.width / site.js("return window.innerWidth")
    box = tuple(
        round(v * ratio)
        for v in (rect["x"], rect["y"], rect["x"] + rect["width"], rect["y"] + rect["height"])
    )
    return np.asarray(image.crop(box), dtype=np.int16).reshape(-1, 3)


def test_the_map_draws_coloured_grid_tiles_without_console_errors(site: Site):
    site.open("dispatcher")
    assert site.errors() == []
    # the key's layers, and none of a planner's
    sources = site.js("return Object.keys(window.gridcover.map.getStyle().sources)")
    assert {"counties", "grids", "incidents", "coverage_h3"} <= set(sources)
    assert not {"cameras", "camera_fov", "gaps"} & set(sources)
    rendered = site.js(
        "return window.gridcover.map.queryRenderedFeatures({layers: ['grids-fill']})"
        ".map(f => f.properties)"
    )
    assert len({p["code"] for p in rendered}) > 50
    assert all("public_ratio" in p for p in rendered)
    pixels = map_pixels(site)
    drawn = (np.abs(pixels - BACKGROUND).max(axis=1) > 12).sum()
    coloured = (pixels.max(axis=1) - pixels.min(axis=1) > 60).sum()
    assert drawn > 0.2 * len(pixels), "the canvas is (nearly) blank"
    assert coloured > 0.1 * len(pixels), "the grids are not coloured by coverage"
    assert site.errors() == []


def demo_grid_point(world: World) -> tuple[str, float, float]:
    with world.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT code, ST_X(p), ST_Y(p) FROM (SELECT code, ST_PointOnSurface(geom) AS p "
                "FROM grid WHERE valid_to IS NULL ORDER BY code LIMIT 1 OFFSET 40) g"
            )
        ).one()
    return row[0], row[1], row[2]


def test_a_click_on_a_grid_shows_its_chain_worker_coverage_and_incidents(site: Site):
    site.open("dispatcher")
    code, lon, lat = demo_grid_point(site.world)
    site.js(
        "window.gridcover.map.jumpTo({center: [arguments[0], arguments[1]], zoom: 15})", lon, lat
    )
    site.settle()
    ActionChains(site.driver).move_to_element(
        site.driver.find_element(By.CSS_SELECTOR, "#map canvas")
    ).click().perform()
    site.wait(f"document.getElementById('info').dataset.grid === '{code}'")
    site.wait("document.querySelector('#incident-info p') !== null")
    site.wait("document.querySelector('#coverage-info table, #coverage-info p') !== null")
    info = site.driver.find_element(By.ID, "info").text
    with site.world.engine.connect() as conn:
        names = conn.execute(
            text(
                "SELECT c.name, t.name, v.name, g.worker_name FROM grid g "
                "JOIN admin_area v ON v.code = g.village_code "
                "JOIN admin_area t ON t.code = v.parent_code "
                "JOIN admin_area c ON c.code = t.parent_code "
                "WHERE g.code = :code AND g.valid_to IS NULL"
            ),
            {"code": code},
        ).one()
        incidents = conn.execute(
            text("SELECT count(*) FROM incident WHERE grid_code = :code AND deleted_at IS NULL"),
            {"code": code},
        ).scalar_one()
    assert code in info and " › ".join(names[:3]) in info
    assert names[3] in info  # a dispatcher sees the worker
    assert f"Incidents: {incidents} reported" in info
    assert "detect" in site.driver.find_element(By.ID, "coverage-info").text
    assert site.errors() == []


def test_the_search_box_finds_a_demo_address_and_flies_to_its_grid(site: Site):
    site.open("dispatcher")
    with site.world.engine.connect() as conn:
        full_text, code = conn.execute(
            text(
                "SELECT a.full_text, g.code FROM address a JOIN grid g ON g.valid_to IS NULL "
                "AND ST_Covers(g.geom, a.geom) WHERE a.precision = 'house_number' "
                "ORDER BY a.id LIMIT 1"
            )
        ).one()
    answer = site.world.client.get(
        "/v1/lookup", params={"address": full_text}, headers=site.world.headers["dispatcher"]
    ).json()
    assert answer["grid"]["code"] == code
    box = site.driver.find_element(By.ID, "search-input")
    box.clear()
    box.send_keys(full_text)
    site.driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
    site.wait(f"document.getElementById('search-result').dataset.grid === '{code}'")
    site.settle()
    center = site.js("const c = window.gridcover.map.getCenter(); return [c.lng, c.lat]")
    assert center == pytest.approx(answer["point"], abs=1e-4)
    assert site.js("return window.gridcover.map.getZoom()") >= 15
    site.wait(f"document.getElementById('info').dataset.grid === '{code}'")
    assert answer["grid"]["name"] in site.driver.find_element(By.ID, "search-result").text
    # and by coordinates
    lon, lat = answer["point"]
    box.clear()
    box.send_keys(f"{lon:.6f}, {lat:.6f}")
    box.submit()
    site.wait(f"document.getElementById('search-result').textContent.includes('{code}')")
    assert site.errors() == []


def test_without_a_key_only_public_layers_load_and_nothing_fails(site: Site):
    site.open(None)
    sources = set(site.js("return Object.keys(window.gridcover.map.getStyle().sources)"))
    assert sources == {"counties", "townships", "villages", "grids", "roads", "key_places"}
    rendered = site.js(
        "return window.gridcover.map.queryRenderedFeatures({layers: ['grids-fill']})"
        ".map(f => f.properties)"
    )
    assert rendered and not any("public_ratio" in p for p in rendered)
    assert "needs a viewer key" in site.driver.find_element(By.ID, "ranking").text
    assert site.errors() == []


def test_the_ranking_lists_the_worst_townships_first(site: Site):
    site.open("viewer")
    site.wait("document.querySelectorAll('#ranking li[title]').length > 0")
    codes = site.js("return [...document.querySelectorAll('#ranking li')].map(li => li.title)")
    summary = site.world.client.get(
        "/v1/coverage/summary",
        params={"by": "township", "limit": 25},
        headers=site.world.headers["viewer"],
    ).json()
    assert codes == [unit["code"] for unit in summary["units"]]
    site.driver.find_element(By.CSS_SELECTOR, "#ranking li").click()
    site.wait("window.gridcover.map.getZoom() > 10 && !window.gridcover.map.isMoving()")
    assert site.errors() == []
