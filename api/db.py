"""Database connection: which PostGIS we talk to and the SQLAlchemy engine for it."""

from __future__ import annotations

import uuid

import psycopg
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from api.embedded import EmbeddedCluster
from api.errors import GridcoverError
from api.settings import Settings


def embedded_cluster(settings: Settings) -> EmbeddedCluster:
    return EmbeddedCluster(settings.home, settings.pg_bindir, settings.pg_user)


def normalise_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` URLs and use the psycopg 3 driver for them."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise GridcoverError(
            f"GRIDCOVER_DATABASE_URL is not a database URL: {url!r} "
            "(expected postgresql://user:password@host:port/dbname)"
        ) from None
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise GridcoverError(
            f"GRIDCOVER_DATABASE_URL must point at PostgreSQL, not {parsed.drivername}"
        )
    return parsed.render_as_string(hide_password=False)


def resolve_database_url(settings: Settings, start: bool = True) -> str:
    """The external URL when configured, else the embedded cluster's (started if asked)."""
    if settings.database_url:
        return normalise_url(settings.database_url)
    cluster = embedded_cluster(settings)
    if start and not cluster.is_running():
        cluster.start()
    return cluster.url()


def make_engine(url: str, settings: Settings) -> Engine:
    """A pooled engine whose connections fail fast when the server is away."""
    return create_engine(
        normalise_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        # No pre-ping: it doubles the cost of every short query. A connection that died with
        # the server fails its request with a 503 and is dropped; the next one reconnects.
        pool_pre_ping=False,
        pool_timeout=settings.db_connect_timeout_s,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_s,
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
            "application_name": "gridcover",
        },
    )


def check_database(engine: Engine) -> str:
    """PostGIS version of the database, raising `GridcoverError` with advice when unreachable."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT postgis_lib_version()")).scalar_one()
    except Exception as exc:  # any driver failure means the same thing to the user
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise GridcoverError(
            f"cannot reach the database ({reason}); check GRIDCOVER_DATABASE_URL "
            "or run `gridcover db start`"
        ) from None


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg/libpq takes (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_scratch_database(server_url: str, prefix: str = "gridcover_scratch") -> str:
    """Create an empty PostGIS database on `server_url`'s server; returns its URL.

    For tests and benchmarks, which must never touch the database of `make run`.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    return url


def drop_scratch_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def configured_engine(settings: Settings) -> Engine:
    """The engine for the configured database (the embedded one started if needed)."""
    return make_engine(resolve_database_url(settings), settings)
