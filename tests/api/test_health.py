"""GET /health against the real PostGIS, and when the database is away."""

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from api.settings import Settings


def test_health_reports_postgis_version(client, engine):
    with engine.connect() as conn:
        expected = conn.execute(text("SELECT postgis_lib_version()")).scalar_one()
        assert conn.execute(text("SELECT postgis_version()")).scalar_one().startswith("3.")
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "postgis_version": expected}


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
