"""Database connection: which PostGIS we talk to and the SQLAlchemy engine for it."""

from __future__ import annotations

import select
import uuid
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, OperationalError

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
    """A pooled engine whose connections fail fast when the server is away and are
    replaced, not handed out, when the server closed them while they sat in the pool."""
    engine = create_engine(
        normalise_url(url),
        pool_size=settings.db_pool_size,
        # Connections beyond the pool are closed when returned: under steady concurrency
        # above the pool size each request would pay a new session (~0.2 s with PROJ).
        max_overflow=settings.db_pool_size // 2,
        # The session used last is the one handed out next: at low concurrency requests
        # keep to a few sessions, whose caches (plans, catalog) are warm.
        pool_use_lifo=True,
        # No pre-ping: it doubles the cost of every short query. `_discard_if_server_left`
        # catches the usual dead connection (one the server closed) without a round trip.
        pool_pre_ping=False,
        pool_timeout=settings.db_connect_timeout_s,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_s,
            # psycopg prepares a statement run often on one connection, which then keeps
            # it (read connections run in autocommit, so no rollback drops it). A prepared
            # statement may get a generic plan, blind to the values bound: for a bbox
            # covering the prefecture one ran 28 ms instead of 1 ms. Planning each run
            # with its values keeps what preparing saves (parsing) without that risk.
            # JIT compiling pays off for queries running seconds; ours run milliseconds,
            # to which compiling (tens of milliseconds) would only add.
            "options": f"-c statement_timeout={settings.statement_timeout_ms} "
            "-c plan_cache_mode=force_custom_plan -c jit=off",
            "application_name": "gridcover",
        },
    )
    event.listen(engine, "connect", _watch_for_a_vanished_client)
    event.listen(engine, "checkout", _discard_if_server_left)
    return engine


def reads_only(engine: Engine) -> Engine:
    """`engine`'s pool with connections in autocommit: for requests that only read.

    Each statement then runs on its own, as it would anyway under READ COMMITTED, but
    without the BEGIN and ROLLBACK round trips around it: on a loaded machine each round
    trip waits for the database process to be scheduled, so a one-query read is about
    three times quicker. Never for writes (`engine.begin()` there)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


# A new session's first coordinate transformation loads PROJ's database: ~150 ms of
# server CPU, paid by whichever request first transforms (most do: tiles to EPSG:3857,
# incidents and cameras to EPSG:4546). Plain SQL when PostGIS is not installed yet.
WARM_SESSION_SQL = """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis') THEN
        PERFORM ST_Transform(ST_SetSRID(ST_MakePoint(109.7, 28.3), 4326), 4546),
                ST_Transform(ST_SetSRID(ST_MakePoint(109.7, 28.3), 4326), 3857);
    END IF;
END $$
"""


def warm_pool(engine: Engine, connections: int) -> None:
    """Open `connections` pooled sessions and have each load PostGIS and PROJ now, so that
    the first requests after a start do not wait for it (a server starting under load
    otherwise spent seconds opening sessions). Database errors are left to the requests."""
    opened = []
    try:
        for _ in range(connections):
            conn = engine.connect()
            opened.append(conn)
            conn.execute(text(WARM_SESSION_SQL))
            conn.commit()
    except DBAPIError:
        pass
    finally:
        for conn in opened:
            conn.close()


# How often a session looks, while a statement of its runs or waits for a lock, whether its
# client is still there (PostgreSQL 14+). Without it the session of a killed process (an
# import, say) lives on until that statement ends, holding its write locks meanwhile.
CLIENT_CHECK_INTERVAL_MS = 1000


def _watch_for_a_vanished_client(dbapi_connection: Any, record: Any) -> None:
    """Connect hook: end this session soon after its client dies, even mid-statement."""
    if dbapi_connection.info.server_version >= 140000:
        dbapi_connection.execute(
            f"SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}"
        )
        dbapi_connection.commit()  # a SET rolled back with its transaction is undone


def _discard_if_server_left(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout hook: refuse a connection the server has closed, so the pool opens a
    new one instead of failing the request.

    A server that stops, restarts or terminates a session writes its goodbye (a FATAL
    message) and closes the socket, so an idle connection with something to read has
    almost surely been closed. Looking costs one non-blocking poll, not a round trip;
    what is there is read, and the connection kept if it is still sound (a notice).

    A connection closed before its first use was opened a moment ago, by the pool
    replacing a dead one: the server is going away, and the request gets the usual
    "database unavailable" error instead of a second replacement (after which SQLAlchemy
    gives up with an error that would read as a bug in the service)."""
    reason = _why_closed(dbapi_connection.pgconn)
    if reason is None:
        record.info["served"] = True
        return
    if record.info.get("served"):
        raise DisconnectionError(reason)
    raise OperationalError(None, None, psycopg.OperationalError(reason))


def _why_closed(pgconn: Any) -> str | None:
    """Why the server closed this connection, or None while it is open."""
    try:
        if _readable(pgconn.socket):
            pgconn.consume_input()
            if _readable(pgconn.socket):  # the end of the stream stays readable
                return "the server closed the connection"
    except (OSError, psycopg.Error) as exc:
        return f"the server closed the connection: {exc}"
    if pgconn.status != psycopg.pq.ConnStatus.OK:
        return "the server closed the connection"
    return None


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


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


class ChannelListener:
    """One connection LISTENing on a NOTIFY channel, for a background thread; it connects
    when asked and reports a broken connection instead of raising, so the thread can
    keep serving what it has while the database is away."""

    def __init__(self, engine: Engine, channel: str):
        self._url = libpq_url(engine.url.render_as_string(hide_password=False))
        self._channel = channel
        self._conn: psycopg.Connection | None = None

    @property
    def connected(self) -> bool:
        """Whether the connection is up, as far as it was last seen."""
        return self._conn is not None

    def connect(self) -> bool:
        """Listen from now on; False while the database cannot be reached. Notices sent
        while not connected are lost: after connecting, read everything again."""
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=3)
        except psycopg.Error:
            return False
        try:
            conn.execute(f"LISTEN {self._channel}")
        except psycopg.Error:
            conn.close()
            return False
        self._conn = conn
        return True

    def notices(self, timeout_s: float) -> list[str] | None:
        """The payloads of the notices waiting or arriving within `timeout_s` (returning
        at the first), [] when none came, None when not connected (the connection broke
        now or before)."""
        if self._conn is None:
            return None
        try:
            first = [n.payload for n in self._conn.notifies(timeout=timeout_s, stop_after=1)]
            if not first:
                return []
            return first + [n.payload for n in self._conn.notifies(timeout=0.0)]
        except psycopg.Error:
            self.close()
            return None

    def close(self) -> None:
        """Stop listening (`connect` starts again)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
