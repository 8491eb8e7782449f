"""Coverage over HTTP on the small demo world: per grid, summaries, recompute, agreement."""

from __future__ import annotations

from itertools import pairwise

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.auth import create_api_key
from api.db import make_engine
from api.settings import Settings


@pytest.fixture(scope="module")
def demo(small_demo_url):
    """(client, engine, headers by role) on the shared small demo world."""
    settings = Settings(database_url=small_demo_url)
    engine = make_engine(small_demo_url, settings)
    with engine.begin() as conn:
        keys = {
            role: create_api_key(conn, role, f"coverage {role}")[1]
            for role in ("viewer", "dispatcher", "planner", "admin")
        }
    headers = {"anonymous": {}} | {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
    with TestClient(create_app(settings, engine)) as client:
        yield client, engine, headers
    engine.dispose()


def busiest_grid(engine) -> str:
    """The grid with the most cameras at detect level (a town grid with roads and places)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT g.code FROM coverage c JOIN grid g ON g.id = c.grid_id "
                "WHERE c.level = 'detect' AND c.places_total > 0 AND c.road_length_m > 0 "
                "ORDER BY c.camera_count DESC, g.code LIMIT 1"
            )
        ).scalar_one()


def test_every_grid_has_nested_coverage_at_four_levels(demo):
    _, engine, _ = demo
    with engine.connect() as conn:
        grids = conn.execute(text("SELECT count(*) FROM grid WHERE valid_to IS NULL")).scalar()
        rows = conn.execute(
            text(
                "SELECT g.code, array_agg(c.covered_m2 ORDER BY array_position("
                "ARRAY['detect','observe','recognize','identify'], c.level)) AS covered "
                "FROM coverage c JOIN grid g ON g.id = c.grid_id GROUP BY g.code"
            )
        ).all()
    assert len(rows) == grids
    for code, covered in rows:
        assert len(covered) == 4, code
        assert all(a >= b - 1e-6 for a, b in pairwise(covered)), code


def test_a_grid_report_has_levels_and_planners_get_gaps(demo):
    client, engine, headers = demo
    code = busiest_grid(engine)
    viewer = client.get(f"/v1/grids/{code}/coverage", headers=headers["viewer"])
    assert viewer.status_code == 200
    body = viewer.json()
    assert [level["level"] for level in body["levels"]] == [
        "detect",
        "observe",
        "recognize",
        "identify",
    ]
    detect = body["levels"][0]
    assert 0 < detect["ratio"] < 1 and detect["camera_count"] > 0
    assert 0 <= detect["public_ratio"] <= 1
    assert "gaps" not in body
    planner = client.get(
        f"/v1/grids/{code}/coverage", params={"level": "observe"}, headers=headers["planner"]
    ).json()
    assert [level["level"] for level in planner["levels"]] == ["observe"]
    kinds = {f["properties"]["kind"] for f in planner["gaps"]["features"]}
    assert "area" in kinds
    area = next(f for f in planner["gaps"]["features"] if f["properties"]["kind"] == "area")
    assert area["geometry"]["type"] == "MultiPolygon"
    lon, lat = area["geometry"]["coordinates"][0][0][0]
    assert 109 < lon < 110.5 and 27.5 < lat < 29.5  # WGS84, not metres


def test_coverage_needs_a_viewer_and_unknown_grids_are_404(demo):
    client, engine, headers = demo
    code = busiest_grid(engine)
    assert client.get(f"/v1/grids/{code}/coverage").status_code == 401
    assert (
        client.get("/v1/grids/433101999999999/coverage", headers=headers["viewer"]).status_code
        == 404
    )
    bad = client.get(
        f"/v1/grids/{code}/coverage", params={"level": "glimpse"}, headers=headers["viewer"]
    )
    assert bad.status_code in (400, 422)


def test_summary_ranks_worst_first_and_county_level_is_public(demo):
    client, _, headers = demo
    county = client.get("/v1/coverage/summary", params={"by": "county"})
    assert county.status_code == 200
    units = county.json()["units"]
    assert len(units) == 1 and units[0]["code"] == "433101"  # the small world is one county
    assert client.get("/v1/coverage/summary", params={"by": "village"}).status_code == 401
    villages = client.get(
        "/v1/coverage/summary",
        params={"by": "village", "level": "recognize"},
        headers=headers["viewer"],
    ).json()["units"]
    assert len(villages) > 10
    ratios = [unit["public_ratio"] for unit in villages]
    assert ratios == sorted(ratios)
    township = villages[0]["code"][:9]
    inside = client.get(
        "/v1/coverage/summary",
        params={"by": "village", "parent": township},
        headers=headers["viewer"],
    ).json()["units"]
    assert inside and all(unit["code"].startswith(township) for unit in inside)


def test_summary_totals_are_area_weighted(demo):
    client, engine, _ = demo
    county = client.get("/v1/coverage/summary", params={"by": "county"}).json()["units"][0]
    with engine.connect() as conn:
        covered, area = conn.execute(
            text("SELECT sum(covered_m2), sum(area_m2) FROM coverage WHERE level = 'detect'")
        ).one()
    assert county["ratio"] == pytest.approx(covered / area, abs=1e-4)


def test_ratios_agree_with_postgis_from_the_stored_fovs(demo):
    """Independent check: PostGIS unions the stored FOV polygons and intersects each grid.
    The polygons approximate the arcs (area-preserving), so 0.5 % of the grid is plenty."""
    _, engine, _ = demo
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT g.code, c.ratio, COALESCE(ST_Area(ST_Intersection(g.geom_m, u.geom)), 0) "
                "  / ST_Area(g.geom_m) AS theirs "
                "FROM (SELECT * FROM grid WHERE valid_to IS NULL ORDER BY md5(code) LIMIT 100) g "
                "JOIN coverage c ON c.grid_id = g.id AND c.level = 'detect' "
                "CROSS JOIN LATERAL (SELECT ST_Union(f.geom_m) AS geom FROM camera_fov f "
                "  WHERE f.level = 'detect' AND ST_Intersects(f.geom_m, g.geom_m)) u"
            )
        ).all()
    assert len(rows) == 100
    worst = max(abs(ours - theirs) for _, ours, theirs in rows)
    assert worst < 0.005, worst


def test_recompute_is_for_admins_and_gives_the_same_answers(demo):
    client, engine, headers = demo

    def snapshot():
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT grid_id, level, round(covered_m2::numeric, 3), camera_count "
                    "FROM coverage ORDER BY 1, 2"
                )
            ).all()

    before = snapshot()
    assert client.post("/v1/coverage/recompute", headers=headers["planner"]).status_code == 403
    response = client.post("/v1/coverage/recompute", headers=headers["admin"])
    assert response.status_code == 200
    done = response.json()
    assert done["fovs_rebuilt"] == 0  # nothing changed since the demo load
    assert done["coverage_rows"] == len(before)
    assert snapshot() == before
