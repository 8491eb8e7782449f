"""GET /health against the real PostGIS, and when the database is away."""

import time

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from api.db import libpq_url
from api.settings import Settings


def warm_health(client: TestClient, within_s: float = 30.0) -> dict:
    """The first /health answer with nothing left warming."""
    deadline = time.monotonic() + within_s
    while True:
        body = client.get("/health").json()
        if not body["warming"] or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_health_reports_postgis_version(client, engine):
    with engine.connect() as conn:
        expected = conn.execute(text("SELECT postgis_lib_version()")).scalar_one()
        assert conn.execute(text("SELECT postgis_version()")).scalar_one().startswith("3.")
    assert client.get("/health").status_code == 200
    assert warm_health(client) == {
        "status": "ok",
        "database": "ok",
        "postgis_version": expected,
        "warming": [],
    }


def test_health_lists_what_is_still_being_built_after_a_start(settings, engine):
    """The address matcher cannot read the gazetteer (locked by another session): the
    process answers, says it is still warming the addresses, and is warm once it could."""
    blocker = psycopg.connect(libpq_url(engine.url.render_as_string(hide_password=False)))
    try:
        blocker.execute("LOCK TABLE address IN ACCESS EXCLUSIVE MODE")
        with TestClient(create_app(settings, engine)) as client:
            deadline = time.monotonic() + 30  # the other parts are built meanwhile
            while (response := client.get("/health")).json()["warming"] != ["addresses"]:
                assert response.status_code == 200
                assert time.monotonic() < deadline, response.json()
                time.sleep(0.05)
            time.sleep(0.5)
            assert client.get("/health").json()["warming"] == ["addresses"]  # still waiting
            blocker.rollback()
            assert warm_health(client)["warming"] == []
    finally:
        blocker.close()


def test_health_is_a_503_problem_when_the_database_is_unreachable():
    url = "postgresql+psycopg://nobody:x@127.0.0.1:9/nowhere"
    dead = create_engine(url, connect_args={"connect_timeout": 1})
    with TestClient(create_app(Settings(database_url=url), dead)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 503 and body["database"] == "unreachable"
    assert "GRIDCOVER_DATABASE_URL" in body["detail"]
