"""Coverage over HTTP on the small demo world: per grid, summaries, recompute, agreement."""

from __future__ import annotations

from itertools import pairwise

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.auth import create_api_key
from api.db import make_engine
from api.services.cameras import create_camera, delete_camera, update_camera
from api.services.coverage import recompute_everything
from api.services.grids import create_grid, retire_grid_audited, update_grid
from api.services.incidents import refresh_incident_gaps
from api.settings import Settings
from geo.codes import make_gb28181


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


def test_edits_leave_what_a_full_recompute_gives(demo):
    """Rotate, move, rename, take offline, delete and add cameras, each recomputing only
    the grids and H3 cells under its FOVs (a rename none); then a full recompute from
    scratch changes nothing: every FOV, grid's row, gap polygon, H3 cell and incident gap
    flag was already its answer. All in one transaction, rolled back: the shared world
    stays as it was."""
    _, engine, _ = demo
    with engine.connect() as conn, conn.begin() as transaction:
        busy = conn.execute(
            text(
                "SELECT c.id, ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat, c.gb_id FROM camera c "
                "WHERE c.status = 'online' AND c.kind = 'bullet' ORDER BY "
                "(SELECT count(*) FROM camera d WHERE ST_DWithin(d.geom_m, c.geom_m, 200)) DESC, "
                "c.id LIMIT 3"
            )
        ).all()
        # the only camera seeing an incident: taking it offline puts the incident in a gap
        lone = conn.execute(
            text(
                "SELECT min(f.camera_id) FROM incident i JOIN camera_fov f "
                "ON f.level = 'detect' AND ST_Intersects(f.geom, i.location) "
                "GROUP BY i.id HAVING count(*) = 1 ORDER BY i.id LIMIT 1"
            )
        ).scalar_one()
        before = coverage_snapshot(conn)
        update_camera(conn, busy[0].id, {"azimuth_deg": 45.0, "hfov_deg": 30.0}, None, None, "t")
        moved = shapely.Point(busy[1].lon + 0.0004, busy[1].lat - 0.0003)  # ~50 m
        update_camera(conn, busy[1].id, {"azimuth_deg": 200.0}, moved, None, "t")
        update_camera(conn, busy[1].id, {"name": "改名", "height_m": 9.0}, None, None, "t")
        update_camera(conn, lone, {"status": "offline"}, None, None, "t")
        delete_camera(conn, busy[2].id, "t")
        gb_id = make_gb28181(busy[0].gb_id[:6], 132, 987_654)
        dome = {"gb_id": gb_id, "name": "新球机", "kind": "dome", "height_m": 6.0}
        dome |= {"azimuth_deg": 0.0, "resolution_h_px": 2560}
        create_camera(conn, dome, shapely.Point(busy[0].lon, busy[0].lat + 0.0002), "t")
        edited = coverage_snapshot(conn)
        changed = {key for key in before["grids"] if before["grids"][key] != edited["grids"][key]}
        assert changed and before["cells"] != edited["cells"]  # the edits did something
        assert refresh_incident_gaps(conn) == 0  # every gap flag already current
        assert recompute_everything(conn)["fovs_rebuilt"] == 0  # every FOV already current
        fresh = coverage_snapshot(conn)
        transaction.rollback()
    assert edited["grids"].keys() == fresh["grids"].keys()
    for key, ours in edited["grids"].items():
        assert ours == pytest.approx(fresh["grids"][key], rel=1e-9, abs=1e-6), key
    assert edited["places"] == fresh["places"]
    assert edited["gaps"].keys() == fresh["gaps"].keys()
    for key, gap in edited["gaps"].items():
        assert shapely.equals_exact(gap, fresh["gaps"][key], 1e-6), key
    assert edited["cells"].keys() == fresh["cells"].keys()
    for key, ours in edited["cells"].items():
        assert ours == pytest.approx(fresh["cells"][key], rel=1e-9, abs=1e-6), key


def test_grid_edits_keep_coverage_current(demo):
    """A grid created, edited (worker only, then a new outline) or retired gets its coverage
    and its neighbours' in the same transaction: no grid drops out of the coverage until the
    next recompute, and a full recompute then changes nothing for the current grids."""
    _, engine, _ = demo
    with engine.connect() as conn, conn.begin() as transaction:
        # grids with cameras, so their coverage is not trivially empty
        busy = conn.execute(
            text(
                "SELECT g.code, ST_AsBinary(g.geom) AS wkb FROM grid g "
                "WHERE g.valid_to IS NULL AND EXISTS (SELECT 1 FROM camera_fov f "
                "WHERE f.level = 'detect' AND ST_Intersects(f.geom_m, g.geom_m)) "
                "ORDER BY g.code LIMIT 3"
            )
        ).all()
        update_grid(conn, busy[0].code, {"worker_name": "新网格员"}, None, None, "t")
        outline_now = conn.execute(
            text("SELECT ST_AsBinary(geom) FROM grid WHERE code = :c AND valid_to IS NULL"),
            {"c": busy[0].code},
        ).scalar_one()
        assert bytes(outline_now) == bytes(busy[0].wkb)  # a worker edit moves no vertex
        smaller = shapely.from_wkb(bytes(busy[1].wkb)).buffer(-0.0001)  # ~10 m in
        update_grid(conn, busy[1].code, {}, smaller, None, "t")
        retire_grid_audited(conn, busy[2].code, "t")
        redrawn = {"code": busy[2].code[:12] + "999", "name": "新网格"}
        create_grid(conn, redrawn, shapely.from_wkb(bytes(busy[2].wkb)), "t")
        current = set(conn.execute(text("SELECT id FROM grid WHERE valid_to IS NULL")).scalars())
        edited = coverage_snapshot(conn)
        recompute_everything(conn)
        fresh = coverage_snapshot(conn)
        transaction.rollback()
    ours = {key: row for key, row in edited["grids"].items() if key[0] in current}
    assert {grid for grid, _ in ours} == current  # every current grid has coverage
    assert ours.keys() == fresh["grids"].keys()
    for key, row in ours.items():
        assert row == pytest.approx(fresh["grids"][key], rel=1e-9, abs=1e-6), key
        assert edited["places"][key] == fresh["places"][key], key
        assert shapely.equals_exact(edited["gaps"][key], fresh["gaps"][key], 1e-6), key


def coverage_snapshot(conn) -> dict:
    """Every stored coverage row's figures, uncovered places and gap polygon, and every H3
    cell, by key."""
    rows = conn.execute(
        text(
            "SELECT grid_id, level, area_m2, covered_m2, ratio, road_length_m, road_covered_m, "
            "coalesce(road_ratio, -1), places_covered, places_total, public_ratio, camera_count, "
            "gap_area_m2, coalesce(ST_Length(road_gap_m), 0), uncovered_place_ids, "
            "ST_AsBinary(gap_m) FROM coverage"
        )
    ).all()
    cells = conn.execute(
        text("SELECT h3, level, covered_fraction, covered_m2 FROM coverage_h3")
    ).all()
    return {
        "grids": {(r[0], r[1]): list(r[2:14]) for r in rows},
        "places": {(r[0], r[1]): sorted(r[14]) for r in rows},
        "gaps": {(r[0], r[1]): shapely.from_wkb(bytes(r[15])) for r in rows},
        "cells": {(r[0], r[1]): [r[2], r[3]] for r in cells},
    }
