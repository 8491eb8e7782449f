"""Shared fixtures: a throw-away PostGIS database of the test run's own.

By default the database lives in the embedded cluster under `.gridcover/` (started if
needed); `GRIDCOVER_TEST_DATABASE_URL` points the tests at another server instead. The
database that `make run` uses is never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from api.db import embedded_cluster, make_engine, normalise_url
from api.migrate import upgrade
from api.settings import Settings


def _server_url() -> str:
    """A URL of a database on the server that the test databases are created on."""
    explicit = os.environ.get("GRIDCOVER_TEST_DATABASE_URL")
    if explicit:
        return normalise_url(explicit)
    cluster = embedded_cluster(Settings(database_url=None))
    cluster.start()
    return cluster.url()


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_scratch_database(server_url: str, prefix: str = "gridcover_test") -> str:
    """Create an empty PostGIS database next to `server_url`'s; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    return url


def drop_scratch_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A migrated, throw-away database for the whole run."""
    url = create_scratch_database(server_url)
    upgrade(url)
    yield url
    drop_scratch_database(server_url, url)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@pytest.fixture(scope="session")
def engine(database_url: str, settings: Settings) -> Iterator[Engine]:
    eng = make_engine(database_url, settings)
    yield eng
    eng.dispose()


@pytest.fixture
def cli_env(database_url: str) -> dict[str, str]:
    """Environment for running the `gridcover` command against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCOVER_")}
    env["GRIDCOVER_DATABASE_URL"] = database_url
    return env
