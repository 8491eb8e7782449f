"""Shared fixtures: a throw-away PostGIS database of the test run's own.

By default the database lives in the embedded cluster under `.gridcover/` (started if
needed); `GRIDCOVER_TEST_DATABASE_URL` points the tests at another server instead. The
database that `make run` uses is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from api.db import (
    create_scratch_database,
    drop_scratch_database,
    embedded_cluster,
    make_engine,
    normalise_url,
)
from api.migrate import upgrade
from api.settings import Settings

# The dozens of apps the tests start would each open and warm a pool of sessions they
# never need; test_db.py checks the warming itself.
os.environ["GRIDCOVER_DB_WARM_AT_START"] = "false"


def _server_url() -> str:
    """A URL of a database on the server that the test databases are created on."""
    explicit = os.environ.get("GRIDCOVER_TEST_DATABASE_URL")
    if explicit:
        return normalise_url(explicit)
    cluster = embedded_cluster(Settings(database_url=None))
    cluster.start()
    return cluster.url()


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A migrated, throw-away database for the whole run."""
    url = create_scratch_database(server_url, prefix="gridcover_test")
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


@pytest.fixture(scope="session")
def small_demo_url(server_url: str) -> Iterator[str]:
    """A database holding the small demo world (one county, seed 7), shared read-mostly:
    tests that change it must put it back."""
    from sqlalchemy import create_engine

    from api.services.demo import load_demo

    url = create_scratch_database(server_url, prefix="gridcover_small")
    upgrade(url)
    engine = create_engine(url)
    load_demo(engine, "small", seed=7)
    engine.dispose()
    yield url
    drop_scratch_database(server_url, url)
