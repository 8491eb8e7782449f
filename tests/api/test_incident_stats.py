"""GET /v1/stats/incidents: a hand-made set with known numbers, and the demo year against
counts computed independently from the event history with SQL."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import text

from api.services.incident_stats import incident_stats
from api.services.incidents import (
    TRANSITIONS,
    Event,
    apply_event,
    refresh_incident_gaps,
)
from tests.api.test_incidents import act, grid_rows, payload, point_in, report, world_on

SHANGHAI = ZoneInfo("Asia/Shanghai")
# The hand-made set lives in 2019, away from the demo year (2025).
WINDOW = {"from": "2019-01-01T00:00:00+08:00", "to": "2020-01-01T00:00:00+08:00"}
MAIN = ["accept", "dispatch", "start", "feedback", "verify", "close"]
WITH_RETURN = [
    "accept",
    "dispatch",
    "start",
    "feedback",
    "return",
    "start",
    "feedback",
    "verify",
    "close",
    "evaluate",
]


@pytest.fixture(scope="module")
def world(server_url):
    with world_on(server_url, "gridcover_incident_stats") as w:
        yield w


def walk(world, incident_id, path):
    for action in path:
        response = act(world, incident_id, action, **payload(action))
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def hand_made(world):
    """Seven incidents in 2019: grid A (three), grid B of another township (two), one
    unassigned, one in grid A outside the window; closing times set by hand."""
    rows = grid_rows(world.engine, 400)
    a = rows[0]
    b = next(r for r in rows if r[1][:9] != a[1][:9])
    at = "2019-03-04T10:00:00+08:00"  # a Monday
    made = {}
    made["closed"] = report(world, category="dispute", reported_at=at, **point_in(a[4]))["id"]
    made["returned"] = report(world, category="traffic", reported_at=at, **point_in(a[4]))["id"]
    made["rejected"] = report(world, category="dispute", reported_at=at, **point_in(a[4]))["id"]
    made["waiting"] = report(world, category="dispute", reported_at=at, **point_in(b[4]))["id"]
    made["feedback"] = report(world, category="dispute", reported_at=at, **point_in(b[4]))["id"]
    made["nowhere"] = report(world, category="dispute", reported_at=at, lon=116.39, lat=39.9)["id"]
    made["later"] = report(
        world, category="dispute", reported_at="2020-02-03T10:00:00+08:00", **point_in(a[4])
    )["id"]
    walk(world, made["closed"], MAIN)
    walk(world, made["returned"], WITH_RETURN)
    walk(world, made["rejected"], ["reject"])
    walk(world, made["feedback"], MAIN[:4])
    with world.engine.begin() as conn:
        # closed 2 h and 6 h after the report: the median is 4 h
        for key, hours in (("closed", 2), ("returned", 6)):
            conn.execute(
                text(
                    "UPDATE incident SET closed_at = reported_at + make_interval(hours => :h) "
                    "WHERE id = :id"
                ),
                {"h": hours, "id": made[key]},
            )
    return a[1], b[1], made


def stats(world, **params):
    response = world.client.get(
        "/v1/stats/incidents", params=params, headers=world.headers["dispatcher"]
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_hand_made_numbers_by_grid(world, hand_made):
    code_a, code_b, _ = hand_made
    body = stats(world, by="grid", **WINDOW)
    groups = {g["code"]: g for g in body["groups"]}
    assert set(groups) == {code_a, code_b}
    a, b = groups[code_a], groups[code_b]
    assert a["name"] and a["total"] == 3
    assert a["counts"]["closed"] == 1 and a["counts"]["evaluated"] == 1
    assert a["counts"]["rejected"] == 1 and sum(a["counts"].values()) == 3
    assert a["received"] == 2 and a["handled"] == 2 and a["handling_rate"] == 1.0
    assert a["succeeded"] == 1 and a["success_rate"] == 0.5 and a["closed"] == 2
    assert a["median_hours_to_close"] == pytest.approx(4.0)
    assert a["overdue"] == 0
    assert b["total"] == 2 and b["received"] == 2 and b["handled"] == 1
    assert b["handling_rate"] == 0.5 and b["succeeded"] == 0 and b["success_rate"] == 0.0
    assert b["median_hours_to_close"] is None
    assert b["overdue"] == 2  # waiting and in feedback, both due in 2019
    unassigned = body["unassigned"]
    assert unassigned["total"] == 1 and unassigned["overdue"] == 1
    total = body["total"]
    assert total["total"] == 6 and total["received"] == 5 and total["handled"] == 3
    assert total["handling_rate"] == 0.6 and total["success_rate"] == pytest.approx(0.3333)
    assert body["definitions"]["handled"].startswith("reached feedback")


def test_levels_sum_to_the_same_total(world, hand_made):
    code_a, code_b, _ = hand_made
    totals = {by: stats(world, by=by, **WINDOW) for by in ("grid", "village", "township", "county")}
    for by, body in totals.items():
        assert body["total"] == totals["grid"]["total"], by
        assert sum(g["total"] for g in body["groups"]) == 5, by
    townships = {g["code"] for g in totals["township"]["groups"]}
    assert townships == {code_a[:9], code_b[:9]}
    [county] = totals["county"]["groups"]
    assert county["code"] == code_a[:6] and county["name"]


def test_category_and_window_filters(world, hand_made):
    code_a, _, _ = hand_made
    traffic = stats(world, by="grid", category="traffic", **WINDOW)
    assert traffic["total"]["total"] == 1 and traffic["total"]["succeeded"] == 0
    assert traffic["total"]["counts"]["evaluated"] == 1
    later = stats(world, by="grid", **{"from": "2020-01-01", "to": "2021-01-01"})
    assert later["total"]["total"] == 1 and later["groups"][0]["code"] == code_a


def test_coverage_gaps_follow_the_fovs(world, hand_made):
    _, _, made = hand_made
    ids = list(made.values())
    with world.engine.begin() as conn:
        refresh_incident_gaps(conn)
        expected = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM camera_fov f "
                "WHERE f.level = 'detect' AND ST_Intersects(f.geom, i.location))) "
                "FROM incident i WHERE id = ANY(:ids) AND reported_at < '2020-01-01'"
            ),
            {"ids": ids},
        ).scalar_one()
    assert stats(world, by="county", **WINDOW)["total"]["in_coverage_gap"] == expected
    # A detect FOV laid over the first incident takes it out of the gaps; the refresh of
    # its grid alone is enough.
    with world.engine.begin() as conn:
        camera, grid_id = conn.execute(
            text("SELECT (SELECT min(id) FROM camera), grid_id FROM incident WHERE id = :id"),
            {"id": made["closed"]},
        ).one()
        conn.execute(text("DELETE FROM camera_fov WHERE camera_id = :c"), {"c": camera})
        conn.execute(
            text(
                "INSERT INTO camera_fov (camera_id, level, range_m, geom_m) "
                "SELECT :c, 'detect', 50, ST_Buffer(ST_Transform(location, 4546), 20) "
                "FROM incident WHERE id = :id"
            ),
            {"c": camera, "id": made["closed"]},
        )
        refresh_incident_gaps(conn, [grid_id])
        flag = conn.execute(
            text("SELECT in_gap FROM incident WHERE id = :id"), {"id": made["closed"]}
        ).scalar_one()
    assert flag is False
    # Coverage never computed (no FOVs, no coverage rows): unknown, not "all in gaps".
    with world.engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(text("DELETE FROM camera_fov"))
        conn.execute(text("DELETE FROM coverage"))
        refresh_incident_gaps(conn)
        unknown = incident_stats(conn, "county")["total"]
        transaction.rollback()
    assert unknown["in_coverage_gap"] == 0 and unknown["coverage_unknown"] == unknown["total"]


INDEPENDENT_SQL = """
WITH e AS (
    SELECT incident_id,
           bool_or(action = 'feedback') AS fed_back,
           bool_or(action = 'return') AS returned,
           max(at) FILTER (WHERE action = 'close') AS closed
    FROM incident_event GROUP BY incident_id
)
SELECT left(i.grid_code, 9) AS code,
       count(*) AS total,
       count(*) FILTER (WHERE i.status <> 'rejected') AS received,
       count(*) FILTER (WHERE e.fed_back) AS handled,
       count(*) FILTER (WHERE e.closed IS NOT NULL AND NOT e.returned) AS succeeded,
       count(*) FILTER (WHERE i.status = 'in_progress') AS in_progress,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM e.closed - i.reported_at))
           AS median_s,
       count(*) FILTER (WHERE i.due_at < now()
                        AND i.status NOT IN ('closed', 'evaluated', 'rejected')) AS overdue,
       count(*) FILTER (WHERE i.location IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM camera_fov f WHERE f.level = 'detect'
           AND ST_Intersects(f.geom, i.location))) AS in_gap
FROM incident i JOIN e ON e.incident_id = i.id
WHERE i.deleted_at IS NULL AND i.reported_at >= '2025-01-01T00:00+08'
  AND i.reported_at < '2026-01-01T00:00+08' AND i.grid_code IS NOT NULL
GROUP BY 1 ORDER BY 1
"""


def test_the_demo_year_matches_counts_taken_from_the_event_history(world):
    rng = np.random.default_rng(3)
    with world.engine.connect() as conn:
        ids = (
            conn.execute(
                text(
                    "SELECT id FROM incident WHERE reported_at < '2026-01-01T00:00+08' "
                    "AND grid_code IS NOT NULL ORDER BY id"
                )
            )
            .scalars()
            .all()
        )
    # walk 150 demo incidents along random legal paths
    for incident_id in rng.choice(ids, 150, replace=False):
        status = "reported"
        with world.engine.begin() as conn:
            for _ in range(int(rng.integers(1, 14))):
                actions = list(TRANSITIONS[status])
                if not actions:
                    break
                # prefer going forward; return now and then
                action = str(rng.choice(actions))
                if action == "reject" and rng.random() < 0.8:
                    action = "accept"
                extra = payload(action)
                body = apply_event(
                    conn,
                    int(incident_id),
                    Event(action, extra.get("note"), extra.get("score"), extra.get("comment")),
                    "stats test",
                )
                status = body["status"]
    with world.engine.begin() as conn:
        refresh_incident_gaps(conn)  # what the coverage recompute does after its FOVs
        expected = {row.code: row for row in conn.execute(text(INDEPENDENT_SQL))}
    body = stats(world, by="township", **{"from": "2025-01-01T00:00", "to": "2026-01-01T00:00"})
    got = {g["code"]: g for g in body["groups"]}
    assert set(got) == set(expected)
    for code, row in expected.items():
        group = got[code]
        assert group["total"] == row.total
        assert group["received"] == row.received
        assert group["handled"] == row.handled
        assert group["succeeded"] == row.succeeded
        assert group["counts"]["in_progress"] == row.in_progress
        assert group["overdue"] == row.overdue
        assert group["in_coverage_gap"] == row.in_gap
        if row.median_s is None:
            assert group["median_hours_to_close"] is None
        else:
            assert group["median_hours_to_close"] == pytest.approx(row.median_s / 3600, abs=0.01)
    assert sum(g["handled"] for g in got.values()) > 20
    assert sum(g["succeeded"] for g in got.values()) > 5


def test_stats_parameters(world):
    assert (
        world.client.get(
            "/v1/stats/incidents", params={"by": "province"}, headers=world.headers["dispatcher"]
        ).status_code
        == 400
    )
    body = stats(world, by="county", category="nonexistent")
    assert body["total"]["total"] == 0 and body["groups"] == [] and body["unassigned"] is None
    assert body["total"]["handling_rate"] is None


def test_the_whole_small_demo_year_is_quick(world):
    stats(world, by="grid")  # warm
    begin = time.perf_counter()
    body = stats(world, by="grid", **{"from": "2025-01-01T00:00", "to": "2026-01-01T00:00"})
    assert time.perf_counter() - begin < 1.0
    assert body["total"]["total"] >= 8889
    assert datetime.fromisoformat(body["from"]) == datetime(2025, 1, 1, tzinfo=SHANGHAI)
