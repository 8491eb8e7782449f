"""Open311 GeoReport v2 on the same incidents, with the spec's example request shapes."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text

from tests.api.test_incidents import act, grid_rows, payload, point_in, world_on

BASE = "/open311/v2"


@pytest.fixture(scope="module")
def world(server_url):
    with world_on(server_url, "gridcover_open311") as w:
        yield w


def key(world, role="dispatcher"):
    return world.headers[role]["Authorization"].removeprefix("Bearer ")


def spec_post(world, **overrides):
    """The spec's example POST (form-encoded, api_key in the body), in Xiangxi."""
    point = point_in(grid_rows(world.engine)[6][4])
    form = {
        "api_key": key(world),
        "jurisdiction_id": "433100",
        "service_code": "facility",
        "lat": f"{point['lat']:.8f}",
        "long": f"{point['lon']:.8f}",
        "address_string": "乾州街道世纪大道1号",
        "email": "smit333@sfgov.edu",
        "device_id": "tt222111",
        "account_id": "123456",
        "first_name": "john",
        "last_name": "smith",
        "phone": "111111111",
        "description": "A large sinkhole is destroying the street",
        "media_url": "http://media.example.com/asdf456",
    }
    form.update(overrides)
    form = {k: v for k, v in form.items() if v is not None}
    return world.client.post(f"{BASE}/requests.json", data=form)


def test_services_are_the_catalogue(world):
    response = world.client.get(f"{BASE}/services.json", params={"jurisdiction_id": "433100"})
    assert response.status_code == 200
    services = {s["service_code"]: s for s in response.json()}
    assert {"dispute", "traffic", "environment", "other"} <= set(services)
    traffic = services["traffic"]
    assert traffic["service_name"] == "交通事故" and traffic["group"] == "交警大队"
    assert traffic["metadata"] is False and traffic["type"] == "realtime"
    assert "4 working hours" in traffic["description"]
    definition = world.client.get(f"{BASE}/services/traffic.json").json()
    assert definition == {"service_code": "traffic", "attributes": []}


def test_a_request_round_trips_onto_an_incident(world):
    response = spec_post(world)
    assert response.status_code == 200, response.text
    [created] = response.json()
    assert created["account_id"] == "123456"
    assert "住建局" in created["service_notice"] and "expected by" in created["service_notice"]
    request_id = created["service_request_id"]
    # the incident behind it, through the native API
    incident = world.client.get(
        f"/v1/incidents/{request_id}", headers=world.headers["dispatcher"]
    ).json()
    assert incident["channel"] == "open311" and incident["category"] == "facility"
    assert incident["assignment"]["method"] == "point" and incident["grid"] is not None
    assert incident["photos"] == ["http://media.example.com/asdf456"]
    assert incident["reporter"]["first_name"] == "john"
    assert incident["reporter"]["email"] == "smit333@sfgov.edu"
    assert incident["address"] == "乾州街道世纪大道1号"
    # ... and back through Open311
    [request] = world.client.get(
        f"{BASE}/requests/{request_id}.json", params={"api_key": key(world)}
    ).json()
    assert request["service_request_id"] == request_id and request["status"] == "open"
    assert request["service_code"] == "facility" and request["service_name"] == "公共设施"
    assert request["agency_responsible"] == "住建局"
    assert request["description"] == "A large sinkhole is destroying the street"
    assert request["media_url"] == "http://media.example.com/asdf456"
    assert request["lat"] == pytest.approx(incident["point"][1])
    assert request["long"] == pytest.approx(incident["point"][0])
    assert request["status_notes"] == "reported"
    requested = datetime.fromisoformat(request["requested_datetime"])
    expected = datetime.fromisoformat(request["expected_datetime"])
    assert request["requested_datetime"].endswith("+08:00") and expected > requested
    assert "email" not in request and "phone" not in request  # personal data stays inside
    # worked through the native lifecycle, it closes in Open311 too, with the last note
    for action in ("accept", "dispatch", "start", "feedback", "verify", "close"):
        assert act(world, int(request_id), action, **payload(action)).status_code == 200
    closed = world.client.get(
        f"{BASE}/requests.json",
        params={"api_key": key(world), "status": "closed", "service_code": "facility"},
    ).json()
    [again] = [r for r in closed if r["service_request_id"] == request_id]
    assert again["status"] == "closed" and again["status_notes"] == "closed: close ok"
    still_open = world.client.get(
        f"{BASE}/requests.json", params={"api_key": key(world), "status": "open"}
    ).json()
    assert request_id not in [r["service_request_id"] for r in still_open]


def test_an_address_alone_locates_the_request(world):
    with world.engine.connect() as conn:
        address = conn.execute(
            text("SELECT full_text FROM address WHERE precision = 'house_number' LIMIT 1")
        ).scalar_one()
    response = spec_post(world, lat=None, long=None, address_string=address)
    assert response.status_code == 200, response.text
    request_id = response.json()[0]["service_request_id"]
    incident = world.client.get(
        f"/v1/incidents/{request_id}", headers=world.headers["dispatcher"]
    ).json()
    assert incident["assignment"]["method"] == "address" and incident["grid"] is not None


def test_bearer_keys_work_too_and_ids_select_requests(world):
    bearer = world.headers["dispatcher"]
    first = spec_post(world, api_key=None, service_code="environment")
    assert first.status_code == 401  # no key at all
    made = [
        world.client.post(
            f"{BASE}/requests.json",
            data={
                "service_code": code,
                "lat": "28.3117",
                "long": "109.7381",
                "description": "垃圾堆放",
            },
            headers=bearer,
        )
        for code in ("environment", "other")
    ]
    assert all(r.status_code == 200 for r in made), made[0].text
    ids = [r.json()[0]["service_request_id"] for r in made]
    listed = world.client.get(
        f"{BASE}/requests.json", params={"service_request_id": ",".join(ids)}, headers=bearer
    ).json()
    assert sorted(r["service_request_id"] for r in listed) == sorted(ids)


def test_dates_bound_the_list(world):
    spec_post(world, service_code="dispute")
    recent = world.client.get(
        f"{BASE}/requests.json",
        params={"api_key": key(world), "service_code": "dispute", "status": "open"},
    ).json()
    assert recent and all(r["service_code"] == "dispute" for r in recent)
    # the default window is the last 90 days: the demo year (2025) is not in it
    assert all(r["requested_datetime"] >= "2026" for r in recent)
    demo = world.client.get(
        f"{BASE}/requests.json",
        params={
            "api_key": key(world),
            "start_date": "2025-03-01T00:00:00+08:00",
            "end_date": "2025-03-02T00:00:00Z",
        },
    ).json()
    assert 0 < len(demo) <= 1000
    assert all("2025-03-01" <= r["requested_datetime"][:10] <= "2025-03-02" for r in demo)


@pytest.mark.parametrize(
    ("overrides", "status", "words"),
    [
        ({"service_code": None}, 400, "service_code is required"),
        ({"service_code": "graffiti"}, 400, "unknown category"),
        ({"long": None}, 400, "lat and long go together"),
        ({"lat": None, "long": None, "address_string": None}, 400, "location is required"),
        ({"lat": "91"}, 400, "lat must be"),
        ({"media_url": "ftp://media.example.com/x"}, 400, "http(s) URL"),
        ({"api_key": "nonsense"}, 403, "api_key"),
        ({"jurisdiction_id": "city.gov"}, 404, "jurisdiction_id"),
    ],
)
def test_errors_come_in_the_open311_format(world, overrides, status, words):
    with world.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM incident")).scalar_one()
    response = spec_post(world, **overrides)
    assert response.status_code == status, response.text
    [error] = response.json()
    assert error["code"] == status and words in error["description"]
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incident")).scalar_one() == before


def test_roles_and_unknown_requests(world):
    viewer = key(world, "viewer")
    denied = spec_post(world, api_key=viewer)
    assert denied.status_code == 403 and denied.json()[0]["code"] == 403
    assert world.client.get(f"{BASE}/requests.json").status_code == 401
    listing = world.client.get(f"{BASE}/requests.json", params={"api_key": viewer})
    assert listing.status_code == 403
    missing = world.client.get(f"{BASE}/requests/999999999.json", params={"api_key": key(world)})
    assert missing.status_code == 404 and missing.json() == [
        {"code": 404, "description": "service_request_id 999999999 not found"}
    ]
    assert world.client.get(f"{BASE}/services/graffiti.json").status_code == 404
    not_a_form = world.client.post(
        f"{BASE}/requests.json",
        json={"service_code": "traffic"},
        headers=world.headers["dispatcher"],
    )
    assert not_a_form.status_code == 400
    bad_date = world.client.get(
        f"{BASE}/requests.json", params={"api_key": key(world), "start_date": "yesterday"}
    )
    assert bad_date.status_code == 400 and "W3C" in bad_date.json()[0]["description"]


def test_an_end_date_in_year_one_lists_without_failing(world):
    """The default start (end_date - 90 days) fell before year 1: a 500 before."""
    response = world.client.get(
        f"{BASE}/requests.json",
        params={"api_key": key(world), "end_date": "0001-01-01T00:00:00+14:00"},
    )
    assert response.status_code == 200 and response.json() == []
