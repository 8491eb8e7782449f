"""`gridcover import grids|admin-areas|cameras FILE` and `gridcover grids uncovered`.

Two typer apps that `api.cli` mounts as `import` and `grids`. Failures are
`GridcoverError`s, which `api.cli.main` prints as one line; a rejected import adds the
first rows' errors on the lines below it (all of them go to `--rejects OUT.csv`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from api.errors import GridcoverError

import_app = typer.Typer(
    help="Import files: GeoJSON, GeoPackage, Shapefile (.shp or .zip), CSV (WKT or lon/lat), "
    "GB/T 28181 Catalog XML (cameras).",
    no_args_is_help=True,
)
grids_app = typer.Typer(help="Checks on the stored grids.", no_args_is_help=True)

# How many row errors a failed import lists on the terminal.
SHOWN_ERRORS = 10

CoordSysOption = Annotated[
    str | None,
    typer.Option(
        "--coord-sys",
        help="what the coordinates are: wgs84, cgcs2000, gcj02, bd09 or EPSG:<code>; "
        "overrides the file's CRS (default: the file's CRS, else wgs84)",
    ),
]
LayerOption = Annotated[
    str | None, typer.Option(help="GeoPackage layer, or shapefile name inside a zip")
]
SkipOption = Annotated[
    bool, typer.Option("--skip-invalid", help="write the good rows, report the bad ones")
]
RepairOption = Annotated[
    bool, typer.Option("--repair", help="make invalid polygons valid and say which rows")
]
RejectsOption = Annotated[
    Path | None,
    typer.Option("--rejects", help="write the rejected rows (row, code, field, reason) to CSV"),
]


def _settings() -> Any:
    # Imported here, not from api.cli, which mounts this module (no import cycle).
    from api.settings import get_settings

    return get_settings()


def _engine() -> Any:
    from api.db import configured_engine

    return configured_engine(_settings())


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _write_rejects(path: Path, rows: list[dict[str, Any]]) -> None:
    """UTF-8 with a BOM, so that Excel shows the Chinese reasons correctly."""
    try:
        with path.open("w", newline="", encoding="utf-8-sig") as handle:
            writer = csv.DictWriter(handle, fieldnames=["row", "code", "field", "reason"])
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise GridcoverError(f"cannot write {path}: {exc.strerror}") from None


def _row_line(row_kind: str, error: dict[str, Any]) -> str:
    where = f"{row_kind} {error['row']}" if error["row"] is not None else "file"
    code = f" ({error['code']})" if error.get("code") else ""
    return f"  {where}{code} {error['field']}: {error['reason']}"


def _run_import(
    entity: str,
    file: Path,
    coord_sys: str | None,
    layer: str | None,
    skip_invalid: bool,
    repair: bool,
    rejects: Path | None,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from api.services.grid_import import ImportRejected
    from api.services.imports import import_file

    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    engine = _engine()
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            tasks: dict[str, Any] = {}

            def report(stage: str, fraction: float) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=1.0)
                bar.update(tasks[stage], completed=fraction)

            result = import_file(
                engine,
                file,
                entity,
                actor="cli",
                coord_sys=coord_sys,
                layer=layer,
                skip_invalid=skip_invalid,
                repair=repair,
                progress=report,
                max_vertices=_settings().max_geometry_vertices,
            )
    except ImportRejected as exc:
        rows = [
            {"row": e["row"], "code": e.get("id"), "field": e["field"], "reason": e["reason"]}
            for e in exc.errors
        ]
        if rejects is not None:
            _write_rejects(rejects, rows)
        lines = [_row_line(exc.row_kind, row) for row in rows[:SHOWN_ERRORS]]
        if len(rows) > SHOWN_ERRORS:
            where = f"in {rejects}" if rejects else "with --rejects OUT.csv"
            lines.append(f"  ... {len(rows) - SHOWN_ERRORS} more errors: all of them {where}")
        hint = "" if skip_invalid else "; --skip-invalid writes the good rows"
        if not repair and any(r["reason"].startswith("invalid geometry") for r in rows):
            hint += "; --repair fixes invalid geometries"
        raise GridcoverError("\n".join([str(exc) + hint, *lines])) from None
    finally:
        engine.dispose()
    source = result.source
    _say(f"read {source['file']} ({source['format']}), coordinates {source['coordinates']}")
    if result.ignored_columns:
        _say("ignored columns: " + ", ".join(result.ignored_columns))
    for repaired in result.repaired:
        _say(f"  repaired {result.row_kind} {repaired['row']}: {repaired['reason']}")
    for row in result.rejected[:SHOWN_ERRORS]:
        _say(_row_line(result.row_kind, row))
    if len(result.rejected) > SHOWN_ERRORS:
        _say(f"  ... {len(result.rejected) - SHOWN_ERRORS} more errors")
    if rejects is not None and result.rejected:
        _write_rejects(rejects, result.rejected)
    typer.echo(
        result.summary() + (f"; rejects in {rejects}" if rejects and result.rejected else "")
    )


@import_app.command("grids")
def import_grids(
    file: Annotated[Path, typer.Argument(help="the file to import")],
    coord_sys: CoordSysOption = None,
    layer: LayerOption = None,
    skip_invalid: SkipOption = False,
    repair: RepairOption = False,
    rejects: RejectsOption = None,
) -> None:
    """Import grids: every row is checked (code, village, geometry, overlaps) first;
    without --skip-invalid one bad row means nothing is written."""
    _run_import("grids", file, coord_sys, layer, skip_invalid, repair, rejects)


@import_app.command("admin-areas")
def import_admin_areas(
    file: Annotated[Path, typer.Argument(help="the file to import")],
    coord_sys: CoordSysOption = None,
    layer: LayerOption = None,
    skip_invalid: SkipOption = False,
    repair: RepairOption = False,
    rejects: RejectsOption = None,
) -> None:
    """Import counties, townships and villages (level and parent follow from the codes)."""
    _run_import("admin areas", file, coord_sys, layer, skip_invalid, repair, rejects)


@import_app.command("cameras")
def import_cameras(
    file: Annotated[Path, typer.Argument(help="the file to import")],
    coord_sys: CoordSysOption = None,
    layer: LayerOption = None,
    skip_invalid: SkipOption = False,
    rejects: RejectsOption = None,
) -> None:
    """Import cameras (CSV, GeoJSON & co., GB/T 28181 Catalog .xml): every row is checked
    first; without --skip-invalid one bad row means nothing is written. A catalogue's
    directory entries are skipped; the coverage the new cameras add is computed at once."""
    _run_import("cameras", file, coord_sys, layer, skip_invalid, False, rejects)


@import_app.command("incidents")
def import_incidents(
    file: Annotated[Path, typer.Argument(help="the file to import")],
    coord_sys: CoordSysOption = None,
    layer: LayerOption = None,
    rejects: RejectsOption = None,
) -> None:
    """Import historical incidents (CSV with lon/lat or WKT, GeoJSON & co.): category,
    reported_at, optional description, channel, address, status, due_at, closed_at. Each
    is assigned to the grid valid at its report time, like an intake; rows that resolve
    to no grid are kept, unassigned. One bad row means nothing is written."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from api.services.incidents import calendar_of, import_incident_file
    from api.services.validation import RowsRejected
    from api.settings import get_settings

    settings = get_settings()
    engine = _engine()
    try:
        with Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            tasks: dict[str, Any] = {}

            def report(stage: str, fraction: float) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=1.0)
                bar.update(tasks[stage], completed=fraction)

            result = import_incident_file(
                engine,
                file,
                actor="cli",
                coord_sys=coord_sys,
                layer=layer,
                calendar=calendar_of(settings),
                max_distance_m=settings.lookup_max_distance_m,
                progress=report,
            )
    except RowsRejected as exc:
        rows = [
            {"row": e["row"], "code": e.get("id"), "field": e["field"], "reason": e["reason"]}
            for e in exc.errors
        ]
        if rejects is not None:
            _write_rejects(rejects, rows)
        lines = [_row_line("row", row) for row in rows[:SHOWN_ERRORS]]
        raise GridcoverError("\n".join([str(exc), *lines])) from None
    finally:
        engine.dispose()
    _say(f"read {result.file}, coordinates {result.coordinates}")
    typer.echo(result.summary())


@grids_app.command("uncovered")
def grids_uncovered(
    village: Annotated[str | None, typer.Option(help="one village code (default: all)")] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="write the parts as GeoJSON to this file"),
    ] = None,
    min_area_m2: Annotated[float, typer.Option(min=0, help="leave out smaller parts")] = 1.0,
) -> None:
    """List the parts of villages that no current grid covers (全域覆盖 check)."""
    import orjson

    from api.services.grid_import import uncovered_feature_collection, uncovered_parts

    engine = _engine()
    try:
        with engine.connect() as conn:
            parts = uncovered_parts(conn, village, min_area_m2)
    finally:
        engine.dispose()
    if output is not None:
        collection = uncovered_feature_collection(parts)
        try:
            output.write_bytes(orjson.dumps(collection))
        except OSError as exc:
            raise GridcoverError(f"cannot write {output}: {exc.strerror}") from None
    else:
        for part in parts:
            typer.echo(f"{part.village_code}\t{part.village_name}\t{part.area_m2:.1f}")
    villages = len({p.village_code for p in parts})
    total = sum(p.area_m2 for p in parts)
    where = f" (written to {output})" if output else ""
    _say(f"{len(parts)} uncovered parts in {villages} villages, {total:,.1f} m² in all{where}")
