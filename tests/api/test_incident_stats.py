"""GET /v1/stats/incidents: a hand-made set with known numbers, the demo year against
counts computed independently from the event history with SQL, and cached answers that
are never stale."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from sqlalchemy import text

from api.responses import ORJSON_OPTIONS
from api.services.incident_stats import RECORD, incident_stats
from api.services.incidents import (
    STATES,
    TRANSITIONS,
    Event,
    apply_event,
    refresh_incident_gaps,
)
from tests.api.test_incidents import (
    act,
    grid_rows,
    incident_in,
    payload,
    point_in,
    report,
    world_on,
)

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


# The cache tests each keep to a month of 2018 of their own.
MAY_2018 = {"from": "2018-05-01T00:00:00+08:00", "to": "2018-06-01T00:00:00+08:00"}
JUNE_2018 = {"from": "2018-06-01T00:00:00+08:00", "to": "2018-07-01T00:00:00+08:00"}


def test_a_write_shows_in_the_very_next_read(world):
    """Answers are cached, yet an event, or an edit by hand in SQL on another connection,
    shows in the next read; a write not committed yet does not show (nor stick)."""
    _, code, *_, polygon = grid_rows(world.engine, 1)[0]
    incident = report(
        world, category="dispute", reported_at="2018-05-07T10:00:00+08:00", **point_in(polygon)
    )["id"]
    first = stats(world, by="grid", **MAY_2018)
    assert stats(world, by="grid", **MAY_2018) == first
    assert [g["code"] for g in first["groups"]] == [code]
    assert first["total"]["counts"]["reported"] == 1

    assert act(world, incident, "accept", **payload("accept")).status_code == 200
    accepted = stats(world, by="grid", **MAY_2018)["total"]
    assert accepted["counts"]["reported"] == 0 and accepted["counts"]["accepted"] == 1
    for action in MAIN[1:4]:  # dispatch, start, feedback
        assert act(world, incident, action, **payload(action)).status_code == 200
    fed_back = stats(world, by="county", **MAY_2018)["total"]
    assert fed_back["handled"] == 1 and fed_back["handling_rate"] == 1.0

    with world.engine.connect() as other:
        transaction = other.begin()
        other.execute(
            text("UPDATE incident SET deleted_at = now() WHERE id = :id"), {"id": incident}
        )
        assert stats(world, by="grid", **MAY_2018)["total"]["total"] == 1
        transaction.commit()
    gone = stats(world, by="grid", **MAY_2018)
    assert gone["total"]["total"] == 0 and gone["groups"] == []


def test_an_answer_after_a_write_is_the_one_computed_from_nothing(world):
    """A fresh answer reuses the JSON of the groups that did not change since the answer
    before; byte for byte it is still the answer computed from nothing."""
    year = {"from": "2025-01-01T00:00:00+08:00", "to": "2026-01-01T00:00:00+08:00"}
    before = {g["code"]: g for g in stats(world, by="grid", **year)["groups"]}
    with world.engine.connect() as conn:
        incident, code = conn.execute(
            text(
                "SELECT id, grid_code FROM incident WHERE status = 'reported' "
                "AND grid_code IS NOT NULL AND reported_at >= '2025-01-01T00:00+08' "
                "AND reported_at < '2026-01-01T00:00+08' ORDER BY id LIMIT 1"
            )
        ).one()
    assert act(world, incident, "accept", **payload("accept")).status_code == 200
    response = world.client.get(
        "/v1/stats/incidents", params={"by": "grid", **year}, headers=world.headers["dispatcher"]
    )
    with world.engine.connect() as conn:
        expected = incident_stats(
            conn,
            "grid",
            datetime(2025, 1, 1, tzinfo=SHANGHAI),
            datetime(2026, 1, 1, tzinfo=SHANGHAI),
        )
    assert response.content == orjson.dumps(expected, option=ORJSON_OPTIONS, default=str)
    after = {g["code"]: g for g in response.json()["groups"]}
    assert after[code]["counts"]["accepted"] == before[code]["counts"]["accepted"] + 1
    assert sum(after[c] != before[c] for c in before) == 1


def test_counters_that_start_over_never_meet_an_answer_of_before(world):
    """Emptied and refilled (a restore, the migration run again), the change counters
    may reach the sum an answer was cached under; the answer is not taken for current."""
    _, _, _, _, polygon = grid_rows(world.engine, 1)[0]
    incident = report(
        world, category="dispute", reported_at="2018-07-02T10:00:00+08:00", **point_in(polygon)
    )["id"]
    july = {"from": "2018-07-01T00:00:00+08:00", "to": "2018-08-01T00:00:00+08:00"}
    assert stats(world, by="county", **july)["total"]["total"] == 1
    with world.engine.begin() as conn:
        shards, version = conn.execute(
            text("SELECT count(*), sum(version) FROM incident_stats_marker")
        ).one()
        conn.execute(
            text("UPDATE incident SET deleted_at = now() WHERE id = :id"), {"id": incident}
        )
        conn.execute(text("TRUNCATE incident_stats_marker"))
        conn.execute(
            text(
                "INSERT INTO incident_stats_marker (shard, version) "
                "SELECT s, CASE WHEN s = 0 THEN :version ELSE 0 END "
                "FROM generate_series(0, :shards - 1) s"
            ),
            {"version": version, "shards": shards},
        )
    assert stats(world, by="county", **july)["total"]["total"] == 0


def test_overdue_turns_when_the_due_time_passes_without_any_write(world):
    _, _, _, _, polygon = grid_rows(world.engine, 1)[0]
    incident = report(
        world, category="dispute", reported_at="2018-06-04T10:00:00+08:00", **point_in(polygon)
    )["id"]
    with world.engine.begin() as conn:
        due = conn.execute(
            text(
                "UPDATE incident SET due_at = now() + interval '1 second' WHERE id = :id "
                "RETURNING due_at"
            ),
            {"id": incident},
        ).scalar_one()
    assert stats(world, by="county", **JUNE_2018)["total"]["overdue"] == 0
    assert stats(world, by="county", **JUNE_2018)["total"]["overdue"] == 0
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.2)
    assert stats(world, by="county", **JUNE_2018)["total"]["overdue"] == 1


def test_the_same_instants_in_another_offset_are_answered_as_asked(world, hand_made):
    east = stats(world, by="county", **WINDOW)
    utc = stats(
        world, by="county", **{"from": "2018-12-31T16:00:00Z", "to": "2019-12-31T16:00:00Z"}
    )
    assert utc["total"] == east["total"] and utc["groups"] == east["groups"]
    assert utc["from"] == "2018-12-31T16:00:00Z" and east["from"] == "2019-01-01T00:00:00+08:00"


def test_every_stats_record_says_what_its_incident_columns_say(world, hand_made):
    """`incident.stats_record` (what the statistics read) follows every state and flag."""
    for state in STATES:
        incident_in(world, state)
    with world.engine.begin() as conn:
        conn.execute(text("UPDATE incident SET in_gap = NULL WHERE id % 5 = 0"))
        conn.execute(text("UPDATE incident SET in_gap = true WHERE id % 5 = 1"))
        rows = conn.execute(
            text(
                "SELECT stats_record, grid_code, status, handled, return_count, in_gap, "
                "CASE WHEN status IN ('closed', 'evaluated') AND closed_at IS NOT NULL "
                "THEN date_part('epoch', closed_at - reported_at) END AS seconds, "
                "date_part('epoch', due_at) AS due_s FROM incident ORDER BY id"
            )
        ).all()
    records = np.frombuffer(b"".join(row.stats_record for row in rows), RECORD)
    assert {row.status for row in rows} == set(STATES)
    assert records["grid"].tolist() == [int(row.grid_code or -1) for row in rows]
    assert [STATES[i] for i in records["state"]] == [row.status for row in rows]
    flags = [
        row.handled
        + 2 * (row.return_count == 0)
        + 4 * (row.in_gap is True)
        + 8 * (row.in_gap is None)
        for row in rows
    ]
    assert records["flags"].tolist() == flags
    assert {row.in_gap for row in rows} >= {None, True} and any(row.return_count for row in rows)
    seconds = np.array([np.nan if row.seconds is None else row.seconds for row in rows])
    np.testing.assert_array_equal(records["seconds"], seconds)
    due_s = records["due"] / 1e6 + 946684800  # microseconds since 2000-01-01 UTC
    expected = [row.due_s for row in rows]
    assert all(
        (d is None and r == 2**63 - 1) or abs(s - d) < 1e-3
        for r, s, d in zip(records["due"].tolist(), due_s.tolist(), expected, strict=True)
    )
