"""API keys and roles: 401 without or with a dead key, 403 for too weak a role."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from api.auth import create_api_key, hash_key, revoke_api_key


def test_anonymous_gets_401_problem(client):
    response = client.get("/v1/keys")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "admin" in response.json()["detail"]


@pytest.mark.parametrize("role", ["viewer", "dispatcher", "planner"])
def test_weaker_roles_get_403(client, headers, role):
    response = client.get("/v1/keys", headers=headers[role])
    assert response.status_code == 403
    assert role in response.json()["detail"]


def test_admin_lists_keys_without_secrets(client, headers, keys):
    response = client.get("/v1/keys", headers=headers["admin"])
    assert response.status_code == 200
    listed = response.json()["keys"]
    assert {k["role"] for k in listed} >= {"viewer", "dispatcher", "planner", "admin"}
    serialised = response.text
    assert all(key not in serialised and hash_key(key) not in serialised for key in keys.values())


@pytest.mark.parametrize(
    "value", ["Bearer gck_not-a-key", "Bearer ", "Basic dXNlcjpwdw==", "gck_x"]
)
def test_bad_credentials_get_401(client, value):
    response = client.get("/health", headers={"Authorization": value})
    assert response.status_code == 200  # health needs no key; a bad one is not checked there
    response = client.get("/v1/keys", headers={"Authorization": value})
    assert response.status_code == 401


def _status_within(client, key: str, seconds: float, wanted: int) -> int:
    """The status of GET /v1/keys with `key`, polled until it is `wanted` or time is up."""
    deadline = time.monotonic() + seconds
    while True:
        status = client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_revoked_and_expired_keys_get_401(client, engine, settings):
    with engine.begin() as conn:
        revoked_id, revoked = create_api_key(conn, "admin", "to revoke")
        _, expired = create_api_key(
            conn, "admin", "expired", datetime.now(UTC) - timedelta(minutes=1)
        )
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {revoked}"}).status_code == 200
    # Revoked outside this process (as `gridcover keys revoke` does): the remembered key
    # stops working within the recheck interval.
    with engine.begin() as conn:
        assert revoke_api_key(conn, revoked_id)
        assert not revoke_api_key(conn, revoked_id)
    assert _status_within(client, revoked, settings.key_recheck_s + 1, 401) == 401
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {expired}"}).status_code == 401


def test_a_remembered_key_stops_at_its_expiry(client, engine):
    with engine.begin() as conn:
        _, key = create_api_key(
            conn, "admin", "expires soon", datetime.now(UTC) + timedelta(seconds=1)
        )
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    time.sleep(1.1)
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_admin_creates_a_key_that_works_and_is_audited(client, headers, engine):
    response = client.post(
        "/v1/keys", json={"name": "planner app", "role": "planner"}, headers=headers["admin"]
    )
    assert response.status_code == 201
    created = response.json()
    assert created["key"].startswith("gck_")
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT key_hash FROM api_key WHERE id = :id"), {"id": created["id"]}
        ).scalar_one()
        audit = conn.execute(
            text(
                "SELECT actor, action FROM audit_log WHERE entity = 'api_key' AND entity_id = :id"
            ),
            {"id": str(created["id"])},
        ).one()
    assert stored == hash_key(created["key"]) and created["key"] not in stored
    assert audit.actor.startswith("test admin (key ") and audit.action == "create"
    new_headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/v1/keys", headers=new_headers).status_code == 403


def test_unknown_role_is_a_422_naming_the_field(client, headers, engine):
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM api_key")).scalar_one()
    response = client.post("/v1/keys", json={"name": "x", "role": "root"}, headers=headers["admin"])
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "role"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM api_key")).scalar_one() == before


def test_revoke_over_http_takes_effect_at_once(client, headers):
    created = client.post(
        "/v1/keys", json={"name": "short-lived", "role": "viewer"}, headers=headers["admin"]
    ).json()
    own = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/v1/lookup?address=吉首", headers=own).status_code == 403  # remembered
    assert client.delete(f"/v1/keys/{created['id']}", headers=headers["admin"]).status_code == 204
    assert client.get("/v1/lookup?address=吉首", headers=own).status_code == 401
    assert client.delete(f"/v1/keys/{created['id']}", headers=headers["admin"]).status_code == 404


def test_a_key_that_expired_before_it_was_made_is_refused(client, headers):
    response = client.post(
        "/v1/keys",
        headers=headers["admin"],
        json={"name": "late", "role": "viewer", "expires_at": "2020-01-01T00:00:00Z"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "expires_at"


def test_a_key_name_with_a_control_character_is_a_422(client, headers):
    """`\\S` in the name's pattern let "a\\x00b" through to PostgreSQL: a 500 before."""
    response = client.post(
        "/v1/keys", headers=headers["admin"], json={"name": "a\x00b", "role": "viewer"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "name"
