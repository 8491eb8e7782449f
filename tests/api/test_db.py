"""Schema and migrations on the real PostGIS."""

import select
import time

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text

from api.app import create_app
from api.auth import create_api_key
from api.db import create_scratch_database, drop_scratch_database, libpq_url, make_engine
from api.migrate import current_revision, head_revision, upgrade
from api.settings import Settings

SQUARE_NEAR_JISHOU = (
    "MULTIPOLYGON(((109.70 28.26, 109.71 28.26, 109.71 28.27, 109.70 28.27, 109.70 28.26)))"
)


@pytest.fixture
def scratch_url(server_url):
    url = create_scratch_database(server_url, prefix="gridcover_migrate")
    yield url
    drop_scratch_database(server_url, url)


def test_database_is_migrated_to_head(database_url):
    assert current_revision(database_url) == head_revision()


def test_metric_columns_are_generated_in_epsg_4546(engine):
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO admin_area (code, level, name, geom) "
                "VALUES ('439901', 'county', '测试县', ST_GeomFromText(:wkt, 4326))"
            ),
            {"wkt": SQUARE_NEAR_JISHOU},
        )
        row = conn.execute(
            text(
                "SELECT ST_SRID(geom_m) AS srid, area_m2, "
                "ST_Area(geography(geom)) AS geodesic_m2 FROM admin_area WHERE code = '439901'"
            )
        ).one()
        conn.execute(text("DELETE FROM admin_area WHERE code = '439901'"))
    assert row.srid == 4546
    # ~0.01 deg square at 28.26 N: about 1.11 km x 0.98 km; GK scale error here < 0.1 %.
    assert row.area_m2 == pytest.approx(row.geodesic_m2, rel=1e-3)
    assert 1.0e6 < row.area_m2 < 1.2e6


def test_migrate_keeps_rows_of_the_previous_revision(scratch_url):
    upgrade(scratch_url, "0001")
    assert current_revision(scratch_url) == "0001"
    engine = create_engine(scratch_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO admin_area (code, level, name, geom) "
                "VALUES ('433101', 'county', '吉首市', ST_GeomFromText(:wkt, 4326))"
            ),
            {"wkt": SQUARE_NEAR_JISHOU},
        )
        conn.execute(
            text(
                "INSERT INTO api_key (name, role, key_prefix, key_hash) "
                "VALUES ('old', 'viewer', 'gck_abc', repeat('a', 64))"
            )
        )
    upgrade(scratch_url)
    assert current_revision(scratch_url) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM admin_area")).scalars().all() == ["吉首市"]
        assert conn.execute(text("SELECT name FROM api_key")).scalars().all() == ["old"]
        # and the new tables are there to use
        assert conn.execute(text("SELECT count(*) FROM incident")).scalar_one() == 0
    engine.dispose()
    upgrade(scratch_url)  # a second migrate is a no-op
    assert current_revision(scratch_url) == head_revision()


def test_grid_versions_cannot_overlap_in_time(engine):
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO admin_area (code, level, name, geom) VALUES "
                "('439902', 'county', '测试县', ST_GeomFromText(:wkt, 4326)), "
                "('439902001', 'township', '测试镇', ST_GeomFromText(:wkt, 4326)), "
                "('439902001001', 'village', '测试社区', ST_GeomFromText(:wkt, 4326))"
            ),
            {"wkt": SQUARE_NEAR_JISHOU},
        )
    insert = text(
        "INSERT INTO grid (code, version, name, village_code, valid_from, valid_to, geom) "
        "VALUES ('439902001001001', :version, '第1网格', '439902001001', :start, :end, "
        "ST_GeomFromText(:wkt, 4326))"
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                insert,
                {
                    "version": 1,
                    "start": "2025-01-01",
                    "end": "2025-06-01",
                    "wkt": SQUARE_NEAR_JISHOU,
                },
            )
            conn.execute(
                insert,
                {"version": 2, "start": "2025-06-01", "end": None, "wkt": SQUARE_NEAR_JISHOU},
            )
        with pytest.raises(Exception, match="grid_versions_do_not_overlap"), engine.begin() as conn:
            conn.execute(
                insert,
                {"version": 3, "start": "2025-03-01", "end": None, "wkt": SQUARE_NEAR_JISHOU},
            )
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM grid WHERE village_code = '439902001001'"))
            conn.execute(
                text("DELETE FROM admin_area WHERE code LIKE '439902%' AND level = 'village'")
            )
            conn.execute(
                text("DELETE FROM admin_area WHERE code LIKE '439902%' AND level = 'township'")
            )
            conn.execute(text("DELETE FROM admin_area WHERE code = '439902'"))


def test_audit_log_is_append_only(engine, database_url):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_log (actor, action, entity) VALUES ('t', 'x', 'y')"))
    url = database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("UPDATE audit_log SET actor = 'someone else'")
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("DELETE FROM audit_log")


def test_a_replacement_connection_that_dies_too_is_a_503(database_url, settings):
    """The server going away while the pool replaces a dead connection (the new one is
    closed before its first use): a 503 problem asking to retry, not a 500."""
    engine = make_engine(database_url, settings)
    admin = psycopg.connect(libpq_url(database_url), autocommit=True)
    with engine.begin() as conn:
        key = create_api_key(conn, "admin", "pool test")[1]
    audit = "/v1/audit?limit=1"
    headers = {"Authorization": f"Bearer {key}"}

    def end_before_first_use(dbapi_connection, record, proxy) -> None:
        if record.info.get("served"):
            return
        admin.execute("SELECT pg_terminate_backend(%s)", [dbapi_connection.info.backend_pid])
        poller = select.poll()
        poller.register(dbapi_connection.pgconn.socket, select.POLLIN)
        assert poller.poll(2000), "the terminated session's socket never became readable"
        time.sleep(0.1)  # its goodbye is there; the end of the stream follows it

    try:
        with TestClient(create_app(settings, engine)) as client:
            assert client.get(audit, headers=headers).status_code == 200
            assert engine.pool.checkedin() >= 1
            # the server ends every new session at once (runs before the pool's own check
            # of each connection it hands out; first, so that no background thread of the
            # app can put a sound new one in the pool meanwhile), then the pooled ones
            event.listen(engine, "checkout", end_before_first_use, insert=True)
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'gridcover'"
            )
            time.sleep(0.5)
            response = client.get(audit, headers=headers)
    finally:
        admin.close()
        engine.dispose()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"


def test_a_server_opens_and_warms_its_sessions_at_start(database_url):
    """With `db_warm_at_start`, the pool holds `db_pool_size` sessions soon after start,
    each having run a coordinate transformation (the first one costs a session ~150 ms),
    so the first requests under load open no sessions."""
    settings = Settings(database_url=database_url, db_pool_size=3, db_warm_at_start=True)
    engine = make_engine(database_url, settings)
    transformed: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "ST_Transform" in statement:
            transformed.append(id(conn.connection.dbapi_connection))

    try:
        with TestClient(create_app(settings, engine)):
            deadline = time.monotonic() + 20
            while engine.pool.checkedin() < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert engine.pool.checkedin() == 3
            assert len(set(transformed)) == 3  # each session once
    finally:
        engine.dispose()
