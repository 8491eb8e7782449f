"""The audit log: every write through the API leaves one row naming who (key name and
id), what, which record, before and after; GET /v1/audit reads it (admins only) with
filters and paging; nothing changes it, through the API or in SQL.

The writes are the samples of the access test (`tests.api.test_access.ROUTES`), sent by
an admin key of this module's own, on a copy of the small demo world.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from api.auth import create_api_key
from api.db import libpq_url
from api.routes.params import CHINA_STANDARD_TIME
from tests.api.test_access import ROUTES, Call, Demo, demo_on

ENTRY_KEYS = {"id", "at", "actor", "action", "entity", "entity_id", "before", "after"}
AUDITOR = "审计员"


def from_path(call: Call, response: Any) -> str:
    """The record's id in the request path (…/{id} or …/{id}/events)."""
    parts = call.path.rstrip("/").split("/")
    return parts[-2] if parts[-1] == "events" else parts[-1]


def from_body(call: Call, response: Any) -> str:
    return str(response.json()["id"])


def whole_file(call: Call, response: Any) -> None:
    return None


# (method, path) of each write -> the audit row it must add: entity, action, record id.
AUDITED: dict[tuple[str, str], tuple[str, str, Callable[[Call, Any], str | None]]] = {
    ("POST", "/v1/keys"): ("api_key", "create", from_body),
    ("DELETE", "/v1/keys/{key_id}"): ("api_key", "revoke", from_path),
    ("POST", "/v1/cameras"): ("camera", "create", from_body),
    ("PATCH", "/v1/cameras/{camera_id}"): ("camera", "update", from_path),
    ("DELETE", "/v1/cameras/{camera_id}"): ("camera", "delete", from_path),
    ("POST", "/v1/cameras/import"): ("camera", "import", whole_file),
    ("POST", "/v1/grids"): ("grid", "create", from_body),
    ("PATCH", "/v1/grids/{code}"): ("grid", "update", from_path),
    ("DELETE", "/v1/grids/{code}"): ("grid", "retire", from_path),
    ("POST", "/v1/grids/import"): ("grid", "import", whole_file),
    ("POST", "/v1/admin-areas/import"): ("admin_area", "import", whole_file),
    ("POST", "/v1/incidents"): ("incident", "create", from_body),
    ("POST", "/v1/incidents/{incident_id}/events"): ("incident", "accept", from_path),
    ("PATCH", "/v1/incidents/{incident_id}"): ("incident", "edit", from_path),
    ("DELETE", "/v1/incidents/{incident_id}"): ("incident", "delete", from_path),
    ("POST", "/open311/v2/requests.json"): (
        "incident",
        "create",
        lambda call, response: response.json()[0]["service_request_id"],
    ),
    ("POST", "/v1/coverage/recompute"): ("coverage", "recompute", whole_file),
}
# POSTs that only read.
READ_ONLY = {("POST", "/v1/lookup/batch")}


@pytest.fixture(scope="module")
def demo(server_url) -> Iterator[Demo]:
    with demo_on(server_url, "gridcover_audit") as world:
        yield world


@pytest.fixture(scope="module")
def auditor(demo: Demo) -> tuple[dict[str, str], str]:
    """Headers of an admin key of this module's own, and the actor the log must name."""
    with demo.world.engine.begin() as conn:
        key_id, key = create_api_key(conn, "admin", AUDITOR)
    return {"Authorization": f"Bearer {key}"}, f"{AUDITOR} (key {key_id})"


def last_id(demo: Demo) -> int:
    return demo.sql("SELECT coalesce(max(id), 0) AS id FROM audit_log").id


def read(demo: Demo, auditor: tuple[dict[str, str], str], **params: Any) -> dict[str, Any]:
    response = demo.world.client.get("/v1/audit", params=params, headers=auditor[0])
    assert response.status_code == 200, response.text
    return response.json()


# -- every write leaves its row --------------------------------------------------------------
WRITES = sorted(key for key in ROUTES if key[0] != "GET")


def test_every_write_route_is_audited_or_only_reads():
    assert set(WRITES) == set(AUDITED) | READ_ONLY


@pytest.mark.parametrize(
    "key",
    sorted(AUDITED),
    ids=lambda key: f"{key[0]} {key[1]}",
)
def test_a_write_leaves_one_audit_row(demo, auditor, key):
    entity, action, record_id = AUDITED[key]
    headers, actor = auditor
    call = ROUTES[key][0].make(demo)
    before = last_id(demo)
    response = demo.send(call, headers)
    assert response.status_code < 300, response.text
    expected_id = record_id(call, response)
    rows = read(demo, auditor, actor=actor, limit=10)["entries"]
    new = [row for row in rows if row["id"] > before]
    assert len(new) == 1, new
    entry = new[0]
    assert set(entry) == ENTRY_KEYS
    assert (entry["actor"], entry["entity"], entry["action"], entry["entity_id"]) == (
        actor,
        entity,
        action,
        expected_id,
    )
    assert datetime.now(CHINA_STANDARD_TIME) - datetime.fromisoformat(entry["at"]) < timedelta(
        minutes=5
    )
    assert entry["at"].endswith("+08:00")
    if action in ("create", "import", "recompute"):
        assert entry["before"] is None and entry["after"]
    elif action in ("delete", "retire"):
        assert entry["before"]
    else:
        assert entry["before"] and entry["after"] and entry["before"] != entry["after"]


def test_a_read_only_post_leaves_no_row(demo, auditor):
    before = last_id(demo)
    for key in READ_ONLY:
        response = demo.send(ROUTES[key][0].make(demo), auditor[0])
        assert response.status_code == 200, response.text
    assert last_id(demo) == before


def test_a_camera_s_history_reads_newest_first_with_what_changed(demo, auditor):
    headers, actor = auditor
    created = demo.send(ROUTES[("POST", "/v1/cameras")][0].make(demo), headers).json()
    camera_id = created["id"]
    patch = {"properties": {"name": "东门枪机", "azimuth_deg": 180.0}}
    assert demo.send(Call("PATCH", f"/v1/cameras/{camera_id}", json=patch), headers).is_success
    assert demo.send(Call("DELETE", f"/v1/cameras/{camera_id}"), headers).status_code == 204
    page = read(demo, auditor, entity="camera", entity_id=str(camera_id))
    entries = page["entries"]
    assert page["numberReturned"] == 3
    assert [e["action"] for e in entries] == ["delete", "update", "create"]
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    deleted, updated, made = entries
    assert made["before"] is None and made["after"]["gb_id"] == created["properties"]["gb_id"]
    assert updated["before"]["name"] == "权限测试枪机" and updated["after"]["name"] == "东门枪机"
    assert updated["before"]["azimuth_deg"] == 0 and updated["after"]["azimuth_deg"] == 180
    assert deleted["before"]["name"] == "东门枪机" and deleted["after"] is None
    assert {e["actor"] for e in entries} == {actor}


def test_each_kind_of_camera_edit_is_logged(demo, auditor):
    """Renamed (its FOVs stay), turned (FOVs and coverage recomputed) and turned while
    offline (nothing covered before or after): each edit leaves its row."""
    headers, _ = auditor
    created = demo.send(ROUTES[("POST", "/v1/cameras")][0].make(demo), headers).json()
    path = f"/v1/cameras/{created['id']}"
    edits = [
        {"name": "南门球机"},
        {"azimuth_deg": 90.0},
        {"status": "offline"},
        {"azimuth_deg": 270.0},
    ]
    for properties in edits:
        response = demo.send(Call("PATCH", path, json={"properties": properties}), headers)
        assert response.is_success, response.text
    page = read(demo, auditor, entity="camera", entity_id=str(created["id"]), action="update")
    after = [entry["after"] for entry in reversed(page["entries"])]
    assert len(after) == len(edits)
    assert [{name: a[name] for name in edit} for a, edit in zip(after, edits, strict=True)] == edits


def test_a_key_s_creation_and_revocation_are_logged_with_its_state(demo, auditor):
    headers, actor = auditor
    body = {"name": "巡查终端", "role": "dispatcher"}
    created = demo.send(Call("POST", "/v1/keys", json=body), headers).json()
    assert demo.send(Call("DELETE", f"/v1/keys/{created['id']}"), headers).status_code == 204
    revoked, made = read(demo, auditor, entity="api_key", entity_id=str(created["id"]))["entries"]
    assert made["action"] == "create" and made["after"]["role"] == "dispatcher"
    assert created["key"] not in str(made)  # the key itself is never logged
    assert revoked["action"] == "revoke" and revoked["actor"] == actor
    assert revoked["before"]["revoked_at"] is None and revoked["after"]["revoked_at"]


def test_an_incident_edit_logs_what_it_changed(demo, auditor):
    headers, _ = auditor
    incident_id = demo.reported_incident()
    old = demo.sql("SELECT description FROM incident WHERE id = :id", id=incident_id)
    edit = {"description": "现场核实：占道经营"}
    assert demo.send(Call("PATCH", f"/v1/incidents/{incident_id}", json=edit), headers).is_success
    move = {"lon": demo.lon, "lat": demo.lat}
    assert demo.send(Call("PATCH", f"/v1/incidents/{incident_id}", json=move), headers).is_success
    moved, edited = read(demo, auditor, entity="incident", entity_id=str(incident_id))["entries"][
        :2
    ]
    assert edited["before"]["description"] == old.description
    assert edited["after"]["description"] == "现场核实：占道经营"
    assert moved["action"] in ("edit", "reassign")
    assert moved["after"]["lon"] == pytest.approx(demo.lon)
    assert moved["after"]["lat"] == pytest.approx(demo.lat)
    assert "lon" in moved["before"] and "description" not in moved["before"]


# -- filters and paging ----------------------------------------------------------------------
def test_filters_by_actor_action_and_entity(demo, auditor):
    headers, actor = auditor
    demo.send(ROUTES[("POST", "/v1/incidents")][0].make(demo), headers)
    by_actor = read(demo, auditor, actor=actor, limit=1000)["entries"]
    assert by_actor and {e["actor"] for e in by_actor} == {actor}
    # a key's name alone finds the entries of all its keys
    assert read(demo, auditor, actor=AUDITOR, limit=1000)["entries"] == by_actor
    assert read(demo, auditor, actor=AUDITOR[:-1], limit=1000)["entries"] == []
    creates = read(demo, auditor, action="create", entity="incident", limit=50)["entries"]
    assert creates and {(e["action"], e["entity"]) for e in creates} == {("create", "incident")}
    assert read(demo, auditor, entity="nothing")["entries"] == []


def test_from_and_to_read_naive_times_as_china_standard_time(demo, auditor):
    headers, _ = auditor
    demo.send(ROUTES[("POST", "/v1/incidents")][0].make(demo), headers)
    newest = read(demo, auditor, limit=1)["entries"][0]
    at = datetime.fromisoformat(newest["at"])
    local = at.astimezone(CHINA_STANDARD_TIME).replace(tzinfo=None)
    naive = local.isoformat()
    just_after = (local + timedelta(microseconds=1)).isoformat()
    assert newest["id"] in [e["id"] for e in read(demo, auditor, **{"from": naive})["entries"]]
    assert newest["id"] not in [e["id"] for e in read(demo, auditor, to=naive)["entries"]]
    assert read(demo, auditor, **{"from": just_after})["entries"] == []
    utc = at.astimezone(UTC).isoformat()
    window = read(demo, auditor, **{"from": utc, "to": just_after})["entries"]
    assert [e["id"] for e in window] == [newest["id"]]


def test_pages_follow_the_next_link_without_gaps_or_repeats(demo, auditor):
    everything = read(demo, auditor, limit=1000)
    assert everything["numberReturned"] > 5
    assert [link["rel"] for link in everything["links"]] == ["self"]
    seen, url, pages = [], "/v1/audit?limit=2", 0
    while url:
        response = demo.world.client.get(url, headers=auditor[0])
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["numberReturned"] <= 2
        seen += [e["id"] for e in page["entries"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        pages += 1
    assert seen == [e["id"] for e in everything["entries"]]
    assert pages == -(-len(seen) // 2)
    tail = read(demo, auditor, limit=3, offset=len(seen) - 1)
    assert tail["numberReturned"] == 1 and [link["rel"] for link in tail["links"]] == ["self"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-01-02T00:00:00", "to": "2026-01-01T00:00:00"}, "from"),
        ({"actor": "someone\x00else"}, "actor"),
        ({"entity": "x" * 201}, "entity"),
    ],
)
def test_bad_parameters_are_400_problems_naming_them(demo, auditor, params, field):
    response = demo.world.client.get("/v1/audit", params=params, headers=auditor[0])
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {e["field"] for e in response.json()["errors"]}


# -- who may read it, and that nothing changes it -------------------------------------------
def test_only_admins_read_the_log(demo):
    client, headers = demo.world.client, demo.world.headers
    anonymous = client.get("/v1/audit")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.headers["content-type"] == "application/problem+json"
    for role in ("viewer", "dispatcher", "planner"):
        refused = client.get("/v1/audit", headers=headers[role])
        assert refused.status_code == 403, role
        assert refused.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/audit", headers=headers["admin"]).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_the_api_cannot_change_the_log(demo, auditor, method):
    before = demo.sql("SELECT count(*) AS n, max(id) AS last FROM audit_log")
    body = {"actor": "someone else", "action": "create", "entity": "grid"}
    response = demo.world.client.request(method, "/v1/audit", json=body, headers=auditor[0])
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    one = demo.world.client.request(method, f"/v1/audit/{before.last}", headers=auditor[0])
    assert one.status_code in (404, 405)
    assert demo.sql("SELECT count(*) AS n, max(id) AS last FROM audit_log") == before


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("UPDATE audit_log SET actor = 'someone else'", "UPDATE"),
        ("DELETE FROM audit_log", "DELETE"),
        ("DELETE FROM audit_log WHERE false", "DELETE"),
        ("TRUNCATE audit_log", "TRUNCATE"),
    ],
)
def test_the_database_refuses_to_change_the_log(demo, statement, operation):
    before = demo.sql("SELECT count(*) AS n, max(id) AS last FROM audit_log")
    with (
        psycopg.connect(libpq_url(demo.world.url)) as conn,
        pytest.raises(psycopg.errors.RaiseException, match=f"append-only: {operation} refused"),
    ):
        conn.execute(statement)
    assert demo.sql("SELECT count(*) AS n, max(id) AS last FROM audit_log") == before


def test_log_entries_are_written_in_the_same_transaction_as_the_write(demo):
    """A write that fails leaves no audit row (the row would claim a change that never
    happened): here a camera whose id is already taken."""
    headers = demo.world.headers["admin"]
    camera = demo.camera()
    assert demo.world.client.post("/v1/cameras", json=camera, headers=headers).status_code == 201
    before = last_id(demo)
    again = demo.world.client.post("/v1/cameras", json=camera, headers=headers)
    assert 400 <= again.status_code < 500, again.text
    assert last_id(demo) == before
