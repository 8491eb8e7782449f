"""The `gridcover` command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from api.cli_import import grids_app, import_app
from api.errors import GridcoverError, Problem
from api.settings import Settings, get_settings

app = typer.Typer(
    help="gridcover: grids, cameras and coverage for Xiangxi prefecture (湘西州).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(
    help="The database: embedded PostGIS under .gridcover/, or GRIDCOVER_DATABASE_URL.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="API keys (Authorization: Bearer KEY).", no_args_is_help=True)
app.add_typer(db_app, name="db")
demo_app = typer.Typer(
    help="The demo world: real Xiangxi outlines and codes, synthetic detail.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(demo_app, name="demo")
app.add_typer(import_app, name="import")
app.add_typer(grids_app, name="grids")
coverage_app = typer.Typer(help="Camera coverage of the grids (DORI levels).", no_args_is_help=True)
app.add_typer(coverage_app, name="coverage")


# Who the audit log names for writes made from the command line.
CLI_ACTOR = "cli"


def settings() -> Settings:
    return get_settings()


def database_url() -> str:
    from api.db import resolve_database_url

    return resolve_database_url(settings())


def engine() -> Engine:
    from api.db import configured_engine

    return configured_engine(settings())


def say(message: str) -> None:
    typer.echo(message, err=True)


# -- db -----------------------------------------------------------------------------------
def _external() -> bool:
    return settings().database_url is not None


@db_app.command("start")
def db_start() -> None:
    """Create (first time) and start the embedded PostGIS; harmless when it already runs."""
    if _external():
        say("GRIDCOVER_DATABASE_URL is set: the external database is used, nothing to start")
        return
    from api.db import embedded_cluster

    cluster = embedded_cluster(settings())
    state = cluster.start()
    say(f"embedded PostGIS running on 127.0.0.1:{state.port} (data in {state.data_dir})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostGIS (its data stays)."""
    if _external():
        say("GRIDCOVER_DATABASE_URL is set: the external database is not ours to stop")
        return
    from api.db import embedded_cluster

    stopped = embedded_cluster(settings()).stop()
    say("stopped" if stopped else "not running")


@db_app.command("status")
def db_status() -> None:
    """Say whether the database is reachable, and at which schema revision."""
    from api.db import check_database, embedded_cluster, resolve_database_url
    from api.migrate import current_revision, head_revision

    if not _external():
        status = embedded_cluster(settings()).status()
        typer.echo(
            f"embedded: {'running' if status['running'] else 'stopped'} "
            f"(port {status['port']}, data {status['data_dir']})"
        )
        if not status["running"]:
            raise typer.Exit(3)
    url = resolve_database_url(settings(), start=False)
    version = check_database(engine())
    typer.echo(f"postgis: {version}")
    typer.echo(f"schema: {current_revision(url) or 'empty'} (latest {head_revision()})")


@db_app.command("url")
def db_url() -> None:
    """Print the SQLAlchemy URL of the database, alone."""
    typer.echo(database_url())


@db_app.command("migrate")
def db_migrate(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Upgrade the schema to the latest revision; existing rows are kept."""
    from api.migrate import upgrade

    reached = upgrade(database_url(), revision)
    say(f"schema at revision {reached}")


# -- keys ---------------------------------------------------------------------------------
@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer | dispatcher | planner | admin")],
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    expires_days: Annotated[int | None, typer.Option(min=1, help="expire after N days")] = None,
) -> None:
    """Create an API key; it is printed once, alone on the last line, and stored hashed."""
    from api.auth import create_api_key, parse_role

    parse_role(role)
    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    with engine().begin() as conn:
        key_id, key = create_api_key(conn, role, name, expires_at, actor=CLI_ACTOR)
    say(f"created key {key_id} '{name}' with role {role}; store it now, it is not shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (id, name, role, state); never the keys themselves."""
    from api.auth import list_api_keys

    with engine().connect() as conn:
        rows = list_api_keys(conn)
    for row in rows:
        state = (
            "revoked"
            if row["revoked_at"]
            else f"expires {row['expires_at']:%Y-%m-%d}"
            if row["expires_at"]
            else "active"
        )
        typer.echo(f"{row['id']}\t{row['role']}\t{row['key_prefix']}…\t{state}\t{row['name']}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="the id from `keys list`")]) -> None:
    """Revoke a key; running servers refuse it within GRIDCOVER_KEY_RECHECK_S (1 s)."""
    from api.auth import revoke_api_key

    with engine().begin() as conn:
        if not revoke_api_key(conn, key_id, actor=CLI_ACTOR):
            raise GridcoverError(f"no live key with id {key_id} (see `gridcover keys list`)")
    say(f"revoked key {key_id}")


# -- demo ---------------------------------------------------------------------------------
@demo_app.command("load")
def demo_load(
    scale: Annotated[
        str, typer.Option(help="small (one county, seconds) or full (~1 minute)")
    ] = "full",
    seed: Annotated[int, typer.Option(help="same seed, same world")] = 0,
    replace: Annotated[bool, typer.Option(help="delete the current data first")] = False,
    if_empty: Annotated[bool, typer.Option(help="do nothing when data is already loaded")] = False,
) -> None:
    """Load the deterministic demo world (grids, cameras, roads, incidents, addresses)."""
    from api.services.admin_areas import count_admin_areas
    from api.services.demo import load_demo

    db = engine()
    if if_empty:
        with db.connect() as conn:
            if count_admin_areas(conn):
                say("demo: the database already holds data; nothing loaded")
                return
    with progress_bar("demo") as report:
        written = load_demo(db, scale, seed, replace=replace, progress=report)
    say("loaded: " + ", ".join(f"{count:,} {name}" for name, count in written.items()))


# -- coverage -----------------------------------------------------------------------------
@coverage_app.command("recompute")
def coverage_recompute() -> None:
    """Rebuild every camera FOV and every grid's coverage (edits keep it current anyway;
    use this after changing GRIDCOVER_COVERAGE_* weights or editing tables by hand)."""
    from api.services.coverage import recompute_all

    with progress_bar("coverage") as report:
        done = recompute_all(engine(), progress=report, workers=2, actor=CLI_ACTOR)
    say(
        f"coverage: {done['grids']:,} grids x 4 levels from {done['active_cameras']:,} working "
        f"cameras (of {done['cameras']:,}); FOVs {done['fovs_s']:.1f} s, "
        f"coverage {done['coverage_s']:.1f} s, writing {done['write_s']:.1f} s"
    )


@contextmanager
def progress_bar(name: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar for work that reports `(stage, fraction done)`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(name, total=1.0)

        def report(stage: str, fraction: float) -> None:
            bar.update(task, description=stage, completed=fraction)

        yield report


# -- lookup -------------------------------------------------------------------------------
@app.command("lookup")
def lookup(
    lon: Annotated[float | None, typer.Option(help="longitude")] = None,
    lat: Annotated[float | None, typer.Option(help="latitude")] = None,
    address: Annotated[str | None, typer.Option(help="a Chinese address instead")] = None,
    file: Annotated[Path | None, typer.Option(help="CSV with lon and lat columns")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="CSV to write")] = None,
    coord_sys: Annotated[str, typer.Option(help="wgs84 | cgcs2000 | gcj02 | bd09")] = "wgs84",
    accuracy_m: Annotated[float, typer.Option(min=0, help="position uncertainty, metres")] = 0.0,
    lon_column: Annotated[str, typer.Option(help="longitude column of --file")] = "lon",
    lat_column: Annotated[str, typer.Option(help="latitude column of --file")] = "lat",
) -> None:
    """Which grid is a point in: one point (--lon/--lat, JSON out) or a CSV file of millions."""
    from geo.crs import UnknownCoordSys, parse_coord_sys

    try:
        coord_sys = parse_coord_sys(coord_sys, allow_epsg=False)
    except UnknownCoordSys as exc:
        raise GridcoverError(str(exc)) from None
    if file is not None:
        if output is None:
            raise GridcoverError("--file needs -o OUT.csv for the answers")
        _lookup_file(file, output, coord_sys, accuracy_m, lon_column, lat_column)
        return
    import numpy as np
    import orjson

    from api.services.lookup import address_answer, answer_dict, load_snapshot, resolve_points

    if address is not None:
        from api.services.addresses import load_address_matcher

        db = engine()
        match = load_address_matcher(db)[0].match(address)
        if match is None or match.lon is None:
            raise GridcoverError(f"no place in Xiangxi matches the address {address!r}")
        result = address_answer(
            load_snapshot(db), match, address, settings().lookup_max_distance_m, with_phone=True
        )
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    if lon is None or lat is None:
        raise GridcoverError("give --lon and --lat, --address TEXT, or --file IN.csv -o OUT.csv")
    snapshot = load_snapshot(engine())
    answers = resolve_points(
        snapshot,
        np.array([lon]),
        np.array([lat]),
        coord_sys,
        accuracy_m,
        settings().lookup_max_distance_m,
    )
    if answers.grid[0] < 0:
        raise GridcoverError(
            f"no grid within {settings().lookup_max_distance_m:g} m of "
            f"({lon}, {lat}) in {coord_sys}"
        )
    result = answer_dict(snapshot, answers, 0, with_phone=True)
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


def _lookup_file(
    source: Path, target: Path, coord_sys: str, accuracy_m: float, lon_column: str, lat_column: str
) -> None:
    import pandas as pd
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from api.services.lookup import answers_table, load_snapshot, resolve_points

    if not source.is_file():
        raise GridcoverError(f"no such file: {source}")
    snapshot = load_snapshot(engine())
    max_distance_m = settings().lookup_max_distance_m
    written = 0
    columns = (BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with open(source, "rb") as raw, Progress(*columns) as bar:
        task = bar.add_task("lookup", total=source.stat().st_size)
        try:
            chunks = pd.read_csv(raw, chunksize=200_000, dtype=str, keep_default_na=False)
            for number, chunk in enumerate(chunks):
                missing = {lon_column, lat_column} - set(chunk.columns)
                if missing:
                    raise GridcoverError(
                        f"{source} has no column {', '.join(sorted(missing))}; "
                        "name them with --lon-column/--lat-column"
                    )
                lon = pd.to_numeric(chunk[lon_column], errors="coerce").to_numpy()
                lat = pd.to_numeric(chunk[lat_column], errors="coerce").to_numpy()
                answers = resolve_points(snapshot, lon, lat, coord_sys, accuracy_m, max_distance_m)
                table = answers_table(snapshot, answers)
                table.index = chunk.index
                out = pd.concat([chunk, table], axis=1)
                out.to_csv(
                    target, mode="w" if number == 0 else "a", header=number == 0, index=False
                )
                written += len(out)
                bar.update(task, completed=raw.tell())
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise GridcoverError(f"{source} is not a readable CSV: {exc}") from None
    say(f"wrote {written:,} answers to {target}")


# -- serve --------------------------------------------------------------------------------
@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port to listen on")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=32, help="server processes")] = None,
) -> None:
    """Serve the HTTP API until stopped (Ctrl-C)."""
    import uvicorn

    from api.app import create_app
    from api.db import check_database
    from api.embedded import port_in_use
    from api.migrate import current_revision, head_revision

    config = settings()
    host = host or config.host
    port = port or config.port
    if port_in_use(port, host):
        raise GridcoverError(
            f"port {port} on {host} is in use: stop the other server or choose one with --port"
        )
    url = database_url()
    check_database(engine())
    if current_revision(url) != head_revision():
        raise GridcoverError("the database schema is not up to date: run `gridcover db migrate`")
    say(f"serving on http://{host}:{port} (API description at /api, docs at /api.html)")
    workers = workers or config.workers
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, log_level=config.log_level)
        return
    # Each worker process builds its app from the same GRIDCOVER_* environment.
    os.environ.setdefault("GRIDCOVER_DATABASE_URL", url)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=config.log_level,
    )


def main() -> None:
    """Entry point: user-facing failures become one line on stderr and exit status 1."""
    try:
        app()
    except (GridcoverError, Problem) as exc:  # services shared with the API raise problems
        typer.echo(f"gridcover: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
