"""Incidents over HTTP on a scratch database holding the small demo world (one county).

Intake and assignment (point, GCJ-02 point, address, nearest grid, unresolvable), due
times in working hours, duplicate hints, every legal path of the lifecycle and every
illegal (state, action) pair, reassignment, soft delete, roles, the race of two events,
lists and filters, bulk import (CLI) through the same assignment.
"""

from __future__ import annotations

import atexit
import csv
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import psycopg
import pytest
import shapely
import shapely.ops
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from api.app import create_app
from api.auth import ASSIGNABLE_ROLES, create_api_key
from api.db import create_scratch_database, drop_scratch_database, libpq_url, make_engine
from api.errors import Problem
from api.migrate import upgrade
from api.services.demo import load_demo
from api.services.incidents import (
    ACTIONS,
    STATES,
    TRANSITIONS,
    Event,
    apply_event,
    write_incidents,
)
from api.services.validation import RowsRejected
from api.settings import Settings
from geo.crs import convert

SHANGHAI = ZoneInfo("Asia/Shanghai")
GRIDCOVER = str(Path(sys.executable).with_name("gridcover"))


@dataclass
class World:
    client: TestClient
    engine: Engine
    headers: dict[str, dict[str, str]]
    url: str


_TEMPLATES: dict[str, str] = {}


def small_world_copy(server_url: str, prefix: str) -> str:
    """A new scratch database holding the small demo world (seed 7), cloned from a
    template database built once per test run (dropped when the run ends); the incident
    test modules each write to a copy of their own."""
    if server_url not in _TEMPLATES:
        url = create_scratch_database(server_url, prefix="gridcover_inctpl")
        atexit.register(drop_scratch_database, server_url, url)
        upgrade(url)
        loader = create_engine(url, poolclass=NullPool)
        load_demo(loader, "small", seed=7)
        loader.dispose()
        _TEMPLATES[server_url] = url
    template = make_url(_TEMPLATES[server_url]).database
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def world_on(server_url: str, prefix: str) -> Iterator[World]:
    """An app on a fresh copy of the small demo world, with a key of every role."""
    url = small_world_copy(server_url, prefix)
    try:
        settings = Settings(database_url=url)
        engine = make_engine(url, settings)
        with engine.begin() as conn:
            keys = {r: create_api_key(conn, r, f"incidents {r}")[1] for r in ASSIGNABLE_ROLES}
        headers = {"anonymous": {}} | {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
        with TestClient(create_app(settings, engine)) as client:
            yield World(client, engine, headers, url)
        engine.dispose()
    finally:
        drop_scratch_database(server_url, url)


@pytest.fixture(scope="module")
def world(server_url):
    """The small demo world in a database of this module's own (it writes), dropped after."""
    with world_on(server_url, "gridcover_incidents") as w:
        yield w


def grid_rows(engine, n=40):
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, code, village_code, worker_name, ST_AsBinary(geom) AS wkb FROM grid "
                "WHERE valid_to IS NULL ORDER BY code LIMIT :n"
            ),
            {"n": n},
        ).all()
    return [(r.id, r.code, r.village_code, r.worker_name, shapely.from_wkb(r.wkb)) for r in rows]


def report(world, headers="dispatcher", **body):
    body.setdefault("category", "environment")
    response = world.client.post("/v1/incidents", json=body, headers=world.headers[headers])
    assert response.status_code == 201, response.text
    return response.json()


def act(world, incident_id, action, headers="dispatcher", **extra):
    return world.client.post(
        f"/v1/incidents/{incident_id}/events",
        json={"action": action, **extra},
        headers=world.headers[headers],
    )


def point_in(polygon):
    point = polygon.representative_point()
    return {"lon": point.x, "lat": point.y}


# -- intake and assignment ----------------------------------------------------------------
def test_a_point_is_assigned_at_once_with_its_chain_worker_and_department(world):
    grid_id, code, village, worker, polygon = grid_rows(world.engine)[3]
    body = report(
        world, category="public_order", description="夜间有人聚众喧哗", **point_in(polygon)
    )
    assert body["status"] == "reported" and body["allowed_actions"] == ["accept", "reject"]
    assert body["grid"]["id"] == grid_id and body["grid"]["code"] == code
    assert body["grid"]["worker_name"] == worker and body["grid"]["worker_phone"]
    assert body["village"]["code"] == village and body["township"]["code"] == village[:9]
    assert body["county"]["code"] == village[:6] and body["county"]["name"]
    assert body["department"] == "公安派出所" and body["category_name"] == "治安"
    assert body["assignment"]["method"] == "point" and body["assignment"]["ambiguous"] is False
    assert body["channel"] == "hotline" and body["created_by"].startswith("incidents dispatcher")
    with world.engine.connect() as conn:
        in_gap = conn.execute(
            text(
                "SELECT NOT EXISTS (SELECT 1 FROM camera_fov f WHERE f.level = 'detect' "
                "AND ST_Intersects(f.geom_m, ST_Transform(i.location, 4546))) "
                "FROM incident i WHERE id = :id"
            ),
            {"id": body["id"]},
        ).scalar_one()
    assert body["in_coverage_gap"] is in_gap  # the demo load computes the FOVs
    [event] = world.client.get(
        f"/v1/incidents/{body['id']}", headers=world.headers["dispatcher"]
    ).json()["events"]
    assert event["action"] == "report" and event["to_status"] == "reported"
    assert event["actor"] == body["created_by"]


def test_a_gcj02_point_is_converted_before_assignment(world):
    _, code, _, _, polygon = grid_rows(world.engine)[7]
    point = polygon.representative_point()
    glon, glat = convert(point.x, point.y, "wgs84", "gcj02")
    body = report(world, lon=glon, lat=glat, coord_sys="gcj02", accuracy_m=5)
    assert body["grid"]["code"] == code
    assert body["point"] == pytest.approx([point.x, point.y], abs=1e-6)
    assert body["input"] == {"lon": glon, "lat": glat, "coord_sys": "gcj02", "accuracy_m": 5}


def test_an_address_is_assigned_through_its_matched_point(world):
    with world.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT a.full_text, ST_X(a.geom) AS lon, ST_Y(a.geom) AS lat, g.code "
                "FROM address a JOIN grid g ON g.valid_to IS NULL AND ST_Covers(g.geom, a.geom) "
                "WHERE a.precision = 'house_number' ORDER BY a.id LIMIT 1"
            )
        ).one()
    body = report(world, address=row.full_text)
    assignment = body["assignment"]
    assert assignment["method"] == "address" and assignment["precision"] == "house_number"
    assert assignment["confidence"] > 0.5
    assert body["grid"]["code"] == row.code
    assert body["point"] == pytest.approx([row.lon, row.lat], abs=1e-6)
    assert body["address"] == row.full_text and body["input"] is None


def test_a_village_level_address_is_flagged_ambiguous_among_its_grids(world):
    with world.engine.connect() as conn:
        village = conn.execute(
            text(
                "SELECT v.name, t.name AS township FROM admin_area v "
                "JOIN admin_area t ON t.code = v.parent_code "
                "WHERE v.level = 'village' AND (SELECT count(*) FROM grid g "
                "WHERE g.village_code = v.code AND g.valid_to IS NULL) > 1 ORDER BY v.code LIMIT 1"
            )
        ).one()
    body = report(world, address=f"{village.township}{village.name}")
    assignment = body["assignment"]
    assert assignment["method"] == "address" and assignment["precision"] == "village"
    assert assignment["ambiguous"] is True and len(assignment["candidates"]) > 1
    assert body["grid"]["code"] in [c["code"] for c in assignment["candidates"]]


def test_a_point_outside_every_grid_takes_the_nearest_one(world):
    with world.engine.connect() as conn:
        county = shapely.from_wkb(
            conn.execute(
                text("SELECT ST_AsBinary(geom) FROM admin_area WHERE level = 'county'")
            ).scalar_one()
        )
    outside = next(
        shapely.Point(x + dx, y + dy)
        for x, y in shapely.get_coordinates(county)[::50]
        for dx, dy in ((0.003, 0), (-0.003, 0), (0, 0.003), (0, -0.003))
        if not county.covers(shapely.Point(x + dx, y + dy))
    )
    body = report(world, lon=outside.x, lat=outside.y)
    assert body["assignment"]["method"] == "nearest"
    assert 0 < body["assignment"]["distance_m"] < 400
    assert body["grid"]["code"]


@pytest.mark.parametrize(
    "where",
    [
        {"lon": 116.39, "lat": 39.9},  # Beijing: no grid within 5 km
        {"address": "北京市海淀区中关村大街27号"},  # nothing in the gazetteer
    ],
)
def test_an_unresolvable_incident_is_kept_in_the_unassigned_queue(world, where):
    body = report(world, **where)
    assert body["grid"] is None and body["village"] is None and body["status"] == "reported"
    assert body["assignment"]["method"] == "none" and body["assignment"]["reason"]
    queue = world.client.get(
        "/v1/incidents",
        params={"unassigned": "true", "limit": 1000},
        headers=world.headers["dispatcher"],
    ).json()
    assert body["id"] in [i["id"] for i in queue["incidents"]]
    assert all(i["grid"] is None for i in queue["incidents"])


def test_a_township_level_address_stays_unassigned(world):
    with world.engine.connect() as conn:
        township = conn.execute(
            text("SELECT name FROM admin_area WHERE level = 'township' ORDER BY code LIMIT 1")
        ).scalar_one()
    body = report(world, address=township)
    assignment = body["assignment"]
    assert body["grid"] is None
    assert assignment["method"] == "none" and assignment["precision"] in ("township", "county")


def test_a_point_near_a_boundary_with_its_accuracy_is_ambiguous(world):
    _, code, _, _, polygon = grid_rows(world.engine)[12]
    inner = polygon.representative_point()
    edge = shapely.ops.nearest_points(polygon.boundary, inner)[0]
    # most of the way from inside to the edge: a few metres from the neighbour
    point = shapely.Point(inner.x + (edge.x - inner.x) * 0.98, inner.y + (edge.y - inner.y) * 0.98)
    body = report(world, lon=point.x, lat=point.y, accuracy_m=500)
    assert body["assignment"]["ambiguous"] is True
    assert len(body["assignment"]["candidates"]) >= 2
    assert body["grid"]["code"] == code


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"category": "nonsense", "lon": 109.7, "lat": 28.3}, 422, "category"),
        ({"category": "traffic"}, 422, "lon"),
        ({"category": "traffic", "lon": 109.7}, 422, "lat"),
        ({"category": "traffic", "lon": 109.7, "lat": 28.3, "coord_sys": "mars"}, 422, None),
        (
            {"category": "traffic", "lon": 109.7, "lat": 28.3, "photos": ["ftp://x/y.jpg"]},
            422,
            "photos.0",
        ),
        (
            {"category": "traffic", "lon": 109.7, "lat": 28.3, "photos": ["https://a.b/c"] * 11},
            422,
            None,
        ),
        ({"category": "traffic", "lon": 109.7, "lat": 28.3, "channel": "fax"}, 422, None),
        (
            {"category": "traffic", "lon": 109.7, "lat": 28.3, "reported_at": "2099-01-01T00:00"},
            422,
            "reported_at",
        ),
        ({"category": "traffic", "lon": 109.7, "lat": 28.3, "colour": "red"}, 422, None),
    ],
)
def test_bad_intakes_are_refused_with_a_problem(world, body, status, field):
    with world.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM incident")).scalar_one()
    response = world.client.post("/v1/incidents", json=body, headers=world.headers["dispatcher"])
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field:
        assert field in [e["field"].removeprefix("body.") for e in response.json()["errors"]]
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incident")).scalar_one() == before


def test_photos_are_kept(world):
    _, _, _, _, polygon = grid_rows(world.engine)[1]
    photos = ["https://img.example.cn/a.jpg", "http://10.0.0.2/b.png"]
    body = report(world, photos=photos, channel="wechat", **point_in(polygon))
    assert body["photos"] == photos and body["channel"] == "wechat"


# -- due times ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("category", "reported", "due"),
    [
        # traffic, 4 h: Friday 17:00 -> 0.5 h Friday, 3.5 h Monday morning -> Monday 12:00
        ("traffic", "2025-06-06T17:00:00+08:00", "2025-06-09T12:00:00+08:00"),
        # public order, 8 h: Monday 11:00 -> 1 + 3 (afternoon) + 3.5 + 0.5 -> Tue 15:00
        ("public_order", "2025-06-09T11:00:00+08:00", "2025-06-10T15:00:00+08:00"),
        # reported Saturday night: counts from Monday 08:30 -> 3.5 h + 0.5 h -> Monday 15:00
        ("traffic", "2025-06-07T22:00:00+08:00", "2025-06-09T15:00:00+08:00"),
        # a naive time is China Standard Time: Tuesday 11:30 -> 0.5 h, the afternoon's
        # 3 h, then 0.5 h on Wednesday -> 09:00
        ("traffic", "2025-06-10T11:30:00", "2025-06-11T09:00:00+08:00"),
    ],
)
def test_due_times_count_working_hours(world, category, reported, due):
    _, _, _, _, polygon = grid_rows(world.engine)[2]
    body = report(world, category=category, reported_at=reported, **point_in(polygon))
    assert datetime.fromisoformat(body["due_at"]) == datetime.fromisoformat(due)
    assert body["due_at"].endswith("+08:00")
    assert body["overdue"] is True  # these are in the past


def test_categories_and_the_calendar_are_listed(world):
    body = world.client.get("/v1/incidents/categories").json()
    assert {c["code"] for c in body["categories"]} >= {"dispute", "traffic", "other"}
    assert body["working_hours"]["periods"] == "08:30-12:00,14:30-17:30"
    assert body["working_hours"]["hours_per_day"] == 6.5


# -- duplicates ---------------------------------------------------------------------------
def test_open_incidents_of_the_same_category_nearby_are_possible_duplicates(world):
    _, _, _, _, polygon = grid_rows(world.engine)[25]
    point = polygon.representative_point()
    first = report(world, category="facility", lon=point.x, lat=point.y)
    assert first["possible_duplicates"] == []
    # 30 m east: a duplicate hint, with its distance
    dlon = 30 / (111_320 * np.cos(np.radians(point.y)))
    second = report(world, category="facility", lon=point.x + dlon, lat=point.y)
    [hint] = second["possible_duplicates"]
    assert hint["id"] == first["id"] and hint["distance_m"] == pytest.approx(30, abs=1.5)
    # another category: none; 300 m away: none; reported three days earlier: none
    assert report(world, category="safety_hazard", **point_in(polygon))["possible_duplicates"] == []
    far = report(world, category="facility", lon=point.x + 10 * dlon, lat=point.y)
    assert far["possible_duplicates"] == []
    old = (datetime.now(SHANGHAI) - timedelta(days=3)).isoformat()
    assert (
        report(world, category="facility", reported_at=old, **point_in(polygon))[
            "possible_duplicates"
        ]
        == []
    )
    # a rejected one is no longer open: no hint
    for incident in (first, second):
        assert act(world, incident["id"], "reject", note="重复").status_code == 200
    assert report(world, category="facility", **point_in(polygon))["possible_duplicates"] == []


# -- the lifecycle ------------------------------------------------------------------------
LEGAL_PATHS = [
    ["reject"],
    ["accept", "dispatch", "start", "feedback", "verify", "close", "evaluate"],
    [
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
    ],
    [
        "accept",
        "dispatch",
        "start",
        "feedback",
        "return",
        "start",
        "feedback",
        "return",
        "start",
        "feedback",
        "verify",
        "close",
    ],
]


def payload(action):
    """What each action needs besides itself."""
    if action == "evaluate":
        return {"score": 4, "comment": "处理及时"}
    if action in ("reject", "return"):
        return {"note": f"{action}: 理由"}
    if action == "dispatch":
        return {"assignee": "城管中队", "note": "派往城管"}
    return {"note": f"{action} ok"}


@pytest.mark.parametrize("path", LEGAL_PATHS, ids=lambda p: "-".join(p))
def test_every_legal_path_walks_and_is_recorded(world, path):
    _, _, _, _, polygon = grid_rows(world.engine)[5]
    incident = report(world, category="dispute", **point_in(polygon))
    status = "reported"
    for action in path:
        response = act(world, incident["id"], action, **payload(action))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == TRANSITIONS[status][action]
        assert body["allowed_actions"] == list(TRANSITIONS[body["status"]])
        status = body["status"]
    events = body["events"]
    assert [e["action"] for e in events] == ["report", *path]
    assert all(e["actor"].startswith("incidents dispatcher") for e in events)
    previous = "reported"
    for event, action in zip(events[1:], path, strict=True):
        assert event["from_status"] == previous and event["note"] == payload(action).get("note")
        previous = event["to_status"]
    assert body["return_count"] == path.count("return")
    assert body["handled"] == ("feedback" in path)
    if "close" in path:
        assert body["closed_at"] is not None and body["overdue"] is False
    if "evaluate" in path:
        assert body["evaluation"]["score"] == 4 and body["evaluation"]["comment"] == "处理及时"
    if "dispatch" in path:
        dispatched = next(e for e in events if e["action"] == "dispatch")
        assert dispatched["data"] == {"assignee": "城管中队"}


def incident_in(world, state):
    """A new incident walked to `state` by the shortest legal path."""
    paths = {
        "reported": [],
        "rejected": ["reject"],
        "returned": ["accept", "dispatch", "start", "feedback", "return"],
        "evaluated": LEGAL_PATHS[1],
    }
    main = LEGAL_PATHS[1]
    steps = {
        TRANSITIONS_STATE: main[: i + 1]
        for i, TRANSITIONS_STATE in enumerate(
            ["accepted", "dispatched", "in_progress", "feedback", "verified", "closed", "evaluated"]
        )
    }
    path = paths.get(state, steps.get(state))
    _, _, _, _, polygon = grid_rows(world.engine)[9]
    incident = report(world, category="other", **point_in(polygon))
    for action in path:
        assert act(world, incident["id"], action, **payload(action)).status_code == 200
    return incident["id"]


@pytest.fixture(scope="module")
def one_per_state(world):
    return {state: incident_in(world, state) for state in STATES}


def snapshot(world, incident_id):
    with world.engine.connect() as conn:
        row = conn.execute(
            text("SELECT to_jsonb(i) - 'location' FROM incident i WHERE id = :id"),
            {"id": incident_id},
        ).scalar_one()
        events = conn.execute(
            text("SELECT count(*) FROM incident_event WHERE incident_id = :id"),
            {"id": incident_id},
        ).scalar_one()
    return row, events


ILLEGAL = [(s, a) for s in STATES for a in ACTIONS if a not in TRANSITIONS[s]]


def test_the_state_machine_is_what_the_issue_asks():
    assert len(ILLEGAL) == len(STATES) * len(ACTIONS) - 10
    assert TRANSITIONS["feedback"] == {"verify": "verified", "return": "returned"}
    assert TRANSITIONS["returned"] == {"start": "in_progress"}
    assert TRANSITIONS["evaluated"] == {} and TRANSITIONS["rejected"] == {}


@pytest.mark.parametrize(("state", "action"), ILLEGAL)
def test_every_illegal_transition_is_refused_and_changes_nothing(
    world, one_per_state, state, action
):
    incident_id = one_per_state[state]
    before = snapshot(world, incident_id)
    response = act(world, incident_id, action, **payload(action))
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["current_status"] == state
    assert problem["allowed_actions"] == list(TRANSITIONS[state])
    assert f"cannot {action}" in problem["detail"]
    assert snapshot(world, incident_id) == before


@pytest.mark.parametrize(
    ("action", "extra", "field"),
    [
        ("reject", {}, "note"),
        ("evaluate", {}, "score"),
        ("accept", {"score": 3}, "score"),
        ("accept", {"assignee": "x"}, "assignee"),
        ("fly", {}, None),
        ("evaluate", {"score": 6}, None),
    ],
)
def test_malformed_events_are_422_and_change_nothing(world, one_per_state, action, extra, field):
    incident_id = one_per_state["reported"]
    before = snapshot(world, incident_id)
    response = act(world, incident_id, action, **extra)
    assert response.status_code == 422, response.text
    if field:
        assert field in [e["field"].removeprefix("body.") for e in response.json()["errors"]]
    assert snapshot(world, incident_id) == before


def test_events_on_unknown_or_deleted_incidents_are_404(world):
    assert act(world, 10**12, "accept").status_code == 404
    assert (
        world.client.get("/v1/incidents/999999999", headers=world.headers["dispatcher"]).status_code
        == 404
    )


def test_two_racing_events_cannot_both_leave_the_same_state(world):
    _, _, _, _, polygon = grid_rows(world.engine)[11]
    incident_id = report(world, **point_in(polygon))["id"]
    outcome: dict[str, object] = {}
    first = world.engine.connect()
    transaction = first.begin()
    apply_event(first, incident_id, Event("accept"), "first")  # holds the row lock

    def second() -> None:
        with world.engine.begin() as conn:
            try:
                outcome["second"] = apply_event(
                    conn, incident_id, Event("reject", "迟到"), "second"
                )
            except Problem as exc:
                outcome["second"] = exc

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # waiting for the lock
    transaction.commit()
    first.close()
    thread.join(10)
    refused = outcome["second"]
    assert isinstance(refused, Problem) and refused.status == 409
    assert refused.extra["current_status"] == "accepted"
    body = world.client.get(
        f"/v1/incidents/{incident_id}", headers=world.headers["dispatcher"]
    ).json()
    assert body["status"] == "accepted" and [e["action"] for e in body["events"]] == [
        "report",
        "accept",
    ]


# -- reassign and delete ------------------------------------------------------------------
def test_moving_or_recategorising_reassigns_and_is_recorded(world):
    rows = grid_rows(world.engine)
    incident = report(world, category="environment", **point_in(rows[0][4]))
    assert act(world, incident["id"], "accept").status_code == 200
    moved = world.client.patch(
        f"/v1/incidents/{incident['id']}",
        json={**point_in(rows[30][4]), "note": "位置更正"},
        headers=world.headers["dispatcher"],
    )
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert body["grid"]["code"] == rows[30][1] and body["status"] == "accepted"
    event = body["events"][-1]
    assert event["action"] == "reassign" and event["note"] == "位置更正"
    assert event["data"]["before"]["grid_code"] == rows[0][1]
    assert event["data"]["after"]["grid_code"] == rows[30][1]
    recategorised = world.client.patch(
        f"/v1/incidents/{incident['id']}",
        json={"category": "safety_hazard"},
        headers=world.headers["dispatcher"],
    ).json()
    assert recategorised["department"] == "应急管理局"
    assert recategorised["events"][-1]["action"] == "reassign"
    reported = datetime.fromisoformat(recategorised["reported_at"])
    from geo.workhours import WorkCalendar

    assert datetime.fromisoformat(recategorised["due_at"]) == WorkCalendar().add(reported, 16)
    edited = world.client.patch(
        f"/v1/incidents/{incident['id']}",
        json={"description": "补充说明"},
        headers=world.headers["dispatcher"],
    ).json()
    assert edited["description"] == "补充说明" and edited["events"][-1]["action"] == "edit"
    assert edited["grid"]["code"] == rows[30][1]


def test_finished_incidents_cannot_be_edited(world, one_per_state):
    response = world.client.patch(
        f"/v1/incidents/{one_per_state['closed']}",
        json={"description": "x"},
        headers=world.headers["dispatcher"],
    )
    assert response.status_code == 409


def test_only_admins_delete_softly_and_audited(world):
    _, _, _, _, polygon = grid_rows(world.engine)[4]
    incident_id = report(world, **point_in(polygon))["id"]
    path = f"/v1/incidents/{incident_id}"
    assert world.client.delete(path).status_code == 401
    assert world.client.delete(path, headers=world.headers["dispatcher"]).status_code == 403
    assert world.client.delete(path, headers=world.headers["planner"]).status_code == 403
    assert world.client.delete(path, headers=world.headers["admin"]).status_code == 204
    assert world.client.get(path, headers=world.headers["dispatcher"]).status_code == 404
    assert world.client.delete(path, headers=world.headers["admin"]).status_code == 404
    listed = world.client.get(
        "/v1/incidents", params={"limit": 1000}, headers=world.headers["dispatcher"]
    ).json()
    assert incident_id not in [i["id"] for i in listed["incidents"]]
    with world.engine.connect() as conn:
        deleted_at = conn.execute(
            text("SELECT deleted_at FROM incident WHERE id = :id"), {"id": incident_id}
        ).scalar_one()
        audit = conn.execute(
            text(
                "SELECT actor, action FROM audit_log WHERE entity = 'incident' "
                "AND entity_id = :id ORDER BY id"
            ),
            {"id": str(incident_id)},
        ).all()
    assert deleted_at is not None
    assert [a.action for a in audit] == ["create", "delete"]
    assert audit[-1].actor.startswith("incidents admin")


@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("get", "/v1/incidents", None),
        ("get", "/v1/incidents/1", None),
        ("post", "/v1/incidents", {"category": "other", "lon": 109.7, "lat": 28.3}),
        ("post", "/v1/incidents/1/events", {"action": "accept"}),
        ("patch", "/v1/incidents/1", {"description": "x"}),
        ("get", "/v1/stats/incidents", None),
    ],
)
def test_incidents_need_a_dispatcher(world, method, path, json):
    kwargs = {"json": json} if json is not None else {}
    assert getattr(world.client, method)(path, **kwargs).status_code == 401
    viewer = getattr(world.client, method)(path, headers=world.headers["viewer"], **kwargs)
    assert viewer.status_code == 403
    dispatcher = getattr(world.client, method)(path, headers=world.headers["dispatcher"], **kwargs)
    assert dispatcher.status_code in (200, 201)


# -- lists --------------------------------------------------------------------------------
def listing(world, **params):
    response = world.client.get("/v1/incidents", params=params, headers=world.headers["dispatcher"])
    assert response.status_code == 200, response.text
    return response.json()


def test_lists_filter_and_page(world):
    everything = listing(world, limit=5)
    with world.engine.connect() as conn:
        total = conn.execute(
            text("SELECT count(*) FROM incident WHERE deleted_at IS NULL")
        ).scalar_one()
        traffic_2025_q1 = conn.execute(
            text(
                "SELECT count(*) FROM incident WHERE deleted_at IS NULL AND category = 'traffic' "
                "AND reported_at >= '2025-01-01T00:00+08' AND reported_at < '2025-04-01T00:00+08'"
            )
        ).scalar_one()
        township = conn.execute(
            text("SELECT left(grid_code, 9) FROM incident WHERE grid_code IS NOT NULL LIMIT 1")
        ).scalar_one()
        in_township = conn.execute(
            text("SELECT count(*) FROM incident WHERE deleted_at IS NULL AND grid_code LIKE :p"),
            {"p": township + "%"},
        ).scalar_one()
    assert everything["total"] == total and everything["count"] == 5
    times = [i["reported_at"] for i in listing(world, limit=50)["incidents"]]
    assert times == sorted(times, reverse=True)
    quarter = listing(world, category="traffic", **{"from": "2025-01-01T00:00", "to": "2025-04-01"})
    assert quarter["total"] == traffic_2025_q1 > 0
    assert all(i["category"] == "traffic" for i in quarter["incidents"])
    assert listing(world, township=township, limit=1)["total"] == in_township
    assert listing(world, grid_code=township, limit=1)["total"] == in_township
    page = listing(world, township=township, limit=3, offset=1)["incidents"]
    assert [i["id"] for i in page] == [
        i["id"] for i in listing(world, township=township, limit=4)["incidents"][1:]
    ]
    # the demo year is long past: its incidents are all overdue, new ones are not
    overdue = listing(world, overdue="true", limit=1000)
    assert overdue["total"] >= 8000 and all(i["overdue"] for i in overdue["incidents"])
    fresh = listing(world, overdue="false", status="reported", limit=1000)["incidents"]
    assert all(not i["overdue"] and i["status"] == "reported" for i in fresh)
    rejected = listing(world, status="rejected")
    assert rejected["total"] >= 1 and all(i["status"] == "rejected" for i in rejected["incidents"])


def test_bbox_and_bad_filters(world):
    polygon = grid_rows(world.engine)[3][4]
    west, south, east, north = polygon.bounds
    found = listing(world, bbox=f"{west},{south},{east},{north}", limit=1000)["incidents"]
    assert found and all(
        west <= i["point"][0] <= east and south <= i["point"][1] <= north for i in found
    )
    for params in (
        {"status": "lost"},
        {"bbox": "1,2,3"},
        {"county": "43"},
        {"limit": 0},
        {"county": "433101", "village": "433102001001"},
    ):
        response = world.client.get(
            "/v1/incidents", params=params, headers=world.headers["dispatcher"]
        )
        assert response.status_code == 400, params


# -- bulk ---------------------------------------------------------------------------------
def test_bulk_rows_are_checked_first_and_nothing_is_written(world):
    frame = gpd.GeoDataFrame(
        {
            "category": ["traffic", "lost", "traffic"],
            "reported_at": ["2025-03-01T10:00:00+08:00", "2025-03-01T10:00", "yesterday"],
        },
        geometry=[shapely.Point(109.7, 28.3), shapely.Point(109.7, 28.3), None],
        crs=4326,
    )
    with world.engine.begin() as conn:
        before = conn.execute(text("SELECT count(*) FROM incident")).scalar_one()
        with pytest.raises(RowsRejected) as caught:
            write_incidents(conn, frame)
        assert conn.execute(text("SELECT count(*) FROM incident")).scalar_one() == before
    fields = {(e["row"], e["field"]) for e in caught.value.errors}
    assert fields == {(1, "category"), (2, "geometry"), (2, "reported_at")}


def test_import_cli_assigns_through_the_same_path(world, tmp_path):
    rows = grid_rows(world.engine)
    with world.engine.connect() as conn:
        address = conn.execute(
            text("SELECT full_text FROM address WHERE precision = 'house_number' LIMIT 1")
        ).scalar_one()
    inside = rows[15][4].representative_point()
    glon, glat = convert(inside.x, inside.y, "wgs84", "gcj02")
    path = tmp_path / "history.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "reported_at", "lon", "lat", "address", "status", "closed_at"])
        writer.writerow(
            ["dispute", "2025-05-06 09:00", glon, glat, "", "closed", "2025-05-07 10:00"]
        )
        writer.writerow(["traffic", "2025-05-06T10:00:00+08:00", "", "", address, "", ""])
        writer.writerow(["other", "2025-05-06 11:00", 100.0, 30.0, "", "", ""])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env["GRIDCOVER_DATABASE_URL"] = world.url
    done = subprocess.run(
        [GRIDCOVER, "import", "incidents", str(path), "--coord-sys", "gcj02"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "3 of 3 written" in done.stdout and "2 assigned" in done.stdout
    with world.engine.connect() as conn:
        imported = conn.execute(
            text(
                "SELECT grid_code, status, assignment->>'method' AS method, closed_at, handled, "
                "due_at FROM incident WHERE created_by = 'cli' ORDER BY id"
            )
        ).all()
        events = conn.execute(
            text(
                "SELECT count(*) FROM incident_event e JOIN incident i ON i.id = e.incident_id "
                "WHERE i.created_by = 'cli' AND e.action = 'report'"
            )
        ).scalar_one()
    assert [r.method for r in imported] == ["point", "address", "none"]
    assert imported[0].grid_code == rows[15][1] and imported[0].status == "closed"
    assert imported[0].handled is True and imported[0].closed_at is not None
    assert imported[2].grid_code is None and imported[2].status == "reported"
    # 2025-05-06 is a Tuesday: dispute 40 h from 09:00 -> 6 days and 1 h later
    assert imported[0].due_at == datetime(2025, 5, 14, 10, 0, tzinfo=SHANGHAI)
    assert events == 3
