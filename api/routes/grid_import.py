"""Grid and admin-area file imports over HTTP, and the villages' uncovered parts.

`POST /v1/grids/import` and `POST /v1/admin-areas/import` take one file, either as a
multipart/form-data upload (field `file`) or as the raw request body (name it with the
`filename` query parameter so its format can be told by extension when its first bytes
do not). The body is streamed to a temporary folder; `api.limits` refuses it with 413
past `GRIDCOVER_MAX_UPLOAD_BYTES`, before it is all received. `import_upload` (the upload,
the import, the problems) serves the camera import (`api.routes.camera_import`) too.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.errors import GridcoverError, Problem
from api.responses import GeoJSONResponse, problems
from api.routes.params import VillageCode
from api.services.features import invalidate_counts
from api.services.files import (
    ArchiveTooLarge,
    BadCoordSys,
    LayerChoice,
    UnsupportedFormat,
    normalise_coord_sys,
)
from api.services.grid_import import (
    ImportRejected,
    ImportReport,
    UnknownVillage,
    uncovered_feature_collection,
    uncovered_parts,
)
from api.services.imports import IMPORTERS, import_file

router = APIRouter(prefix="/v1", tags=["grids"], responses=problems(400, 401, 503))
Admin = Annotated[Principal, Depends(require("write:grids"))]
Public = Annotated[Principal, Depends(require("read:public"))]

# A 422 lists this many row errors at most (`errors_total` counts them all).
MAX_LISTED_ERRORS = 1000

CoordSys = Annotated[
    str | None,
    Query(
        description="what the coordinates are: wgs84, cgcs2000, gcj02, bd09 or EPSG:<code>; "
        "overrides the file's declared CRS (files of Chinese web maps declare WGS84 but "
        "hold gcj02/bd09). Default: the file's CRS, else wgs84."
    ),
]
Layer = Annotated[str | None, Query(description="GeoPackage layer, or shapefile name inside a zip")]
SkipInvalid = Annotated[
    bool, Query(description="write the good rows and report the bad ones, instead of nothing")
]
Repair = Annotated[
    bool, Query(description="make invalid polygons valid (make_valid) and say which rows")
]
Filename = Annotated[
    str | None, Query(description="the file's name, for a raw (non-multipart) body")
]

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "GeoJSON, GeoPackage, zipped Shapefile or CSV "
                            "(WKT or lon/lat columns)",
                        }
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
# 422: rows rejected, each listed in `errors`; nothing was written.
UPLOAD_PROBLEMS = problems(403, 409, 413, 415, 422)


@router.post(
    "/grids/import",
    status_code=201,
    summary="Import a file of grids (all or nothing, or skip the invalid rows)",
    openapi_extra=UPLOAD_BODY,
    responses=UPLOAD_PROBLEMS,
)
async def import_grids_file(
    request: Request,
    admin: Admin,
    coord_sys: CoordSys = None,
    layer: Layer = None,
    skip_invalid: SkipInvalid = False,
    repair: Repair = False,
    filename: Filename = None,
) -> dict[str, Any]:
    """201 with counts, the rejected rows (with `skip_invalid`) and the repaired ones."""
    return await _import(request, "grids", admin, coord_sys, layer, skip_invalid, repair, filename)


@router.post(
    "/admin-areas/import",
    status_code=201,
    summary="Import a file of counties, townships and villages",
    openapi_extra=UPLOAD_BODY,
    responses=UPLOAD_PROBLEMS,
    tags=["admin areas"],
)
async def import_admin_areas_file(
    request: Request,
    admin: Admin,
    coord_sys: CoordSys = None,
    layer: Layer = None,
    skip_invalid: SkipInvalid = False,
    repair: Repair = False,
    filename: Filename = None,
) -> dict[str, Any]:
    """Like the grid import; `level` and parents follow from the codes when absent."""
    return await _import(
        request, "admin areas", admin, coord_sys, layer, skip_invalid, repair, filename
    )


@router.get(
    "/villages/{code}/uncovered",
    summary="Parts of a village no current grid covers (全域覆盖 check)",
    response_class=GeoJSONResponse,
    tags=["admin areas"],
    responses=problems(404),
)
def village_uncovered(
    code: VillageCode,
    request: Request,
    _: Public,
    min_area_m2: Annotated[
        float, Query(ge=0, description="leave out smaller parts (slivers), in m²")
    ] = 1.0,
) -> GeoJSONResponse:
    """A GeoJSON FeatureCollection: one feature per uncovered part, with `area_m2`."""
    try:
        with request.app.state.engine.connect() as conn:
            parts = uncovered_parts(conn, code, min_area_m2)
    except UnknownVillage as exc:
        raise Problem(404, str(exc)) from None
    return GeoJSONResponse(uncovered_feature_collection(parts))


async def _import(request: Request, *arguments: Any) -> dict[str, Any]:
    """`import_upload` of grids or admin areas, which point lookups then see at once."""
    report = await import_upload(request, *arguments)
    locator = getattr(request.app.state, "grid_locator", None)
    if locator is not None and report.written:
        locator.grids_changed()  # point lookups see the new grids (and villages) at once
    return report.to_dict()


async def import_upload(
    request: Request,
    entity: str,
    admin: Principal,
    coord_sys: str | None,
    layer: str | None,
    skip_invalid: bool,
    repair: bool,
    filename: str | None,
) -> ImportReport:
    """Receive the uploaded file and import it (`api.services.imports.import_file`),
    turning failures into problems: 422 rows rejected, 413 too large, 415 unknown format,
    400 unreadable file or bad option."""
    try:
        coord_sys = normalise_coord_sys(coord_sys)
    except BadCoordSys as exc:
        raise Problem(
            400, str(exc), errors=[{"field": "coord_sys", "in": "query", "reason": str(exc)}]
        ) from None
    folder = Path(tempfile.mkdtemp(prefix="gridcover_upload_"))
    try:
        path = await _receive_file(request, folder, filename)
        report = await run_in_threadpool(
            import_file,
            request.app.state.engine,
            path,
            entity,
            actor=admin.actor,
            coord_sys=coord_sys,
            layer=layer,
            skip_invalid=skip_invalid,
            repair=repair,
            name=path.name,
            max_vertices=request.app.state.settings.max_geometry_vertices,
        )
    except ImportRejected as exc:
        raise Problem(
            422, str(exc), errors=exc.errors[:MAX_LISTED_ERRORS], errors_total=len(exc.errors)
        ) from None
    except ArchiveTooLarge as exc:
        raise Problem(413, str(exc)) from None
    except UnsupportedFormat as exc:
        raise Problem(415, str(exc)) from None
    except LayerChoice as exc:
        raise Problem(
            400,
            str(exc),
            errors=[{"field": "layer", "in": "query", "reason": str(exc)}],
            layers=exc.layers,
        ) from None
    except GridcoverError as exc:
        raise Problem(400, str(exc)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    invalidate_counts(*IMPORTERS[entity].tables)
    if "camera" in IMPORTERS[entity].tables and report.written:
        request.app.state.camera_sights.changed(None)  # many, maybe: read all again
    return report


# -- receiving the upload -------------------------------------------------------------------
def _safe_name(name: str | None) -> str:
    """A file name to save under: the last path part, without leading dots or odd bytes."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = re.sub(r"[\x00-\x1f]", "", base).lstrip(".").strip()
    return base[-120:] or "upload"


async def _receive_file(request: Request, folder: Path, filename: str | None) -> Path:
    """Stream the uploaded file into `folder`; 400 without a file."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return await _receive_multipart(request, folder, content_type)
    path = folder / _safe_name(filename)
    received = 0
    with path.open("wb") as sink:
        async for chunk in request.stream():
            received += len(chunk)
            sink.write(chunk)
    if received == 0:
        raise Problem(400, "no file: send it as multipart/form-data (field 'file') or as the body")
    return path


async def _receive_multipart(request: Request, folder: Path, content_type: str) -> Path:
    """The first file part of a multipart body, streamed to disk as it arrives."""
    try:
        import python_multipart
        from python_multipart.exceptions import MultipartParseError
        from python_multipart.multipart import parse_options_header
    except ModuleNotFoundError:  # pragma: no cover - a dependency of the package
        raise Problem(
            415, "multipart uploads are not available here; send the file as the raw body"
        ) from None
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise Problem(400, "the multipart/form-data body has no boundary")
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "sink": None, "path": None}

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, params = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = params.get(b"filename")
        if name is None or state["path"] is not None:
            return  # a plain form field, or a second file: ignored
        state["path"] = folder / _safe_name(name.decode("utf-8", "replace"))
        state["sink"] = state["path"].open("wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["sink"] is not None:
            state["sink"].write(data[start:end])

    def on_part_end() -> None:
        if state["sink"] is not None:
            state["sink"].close()
            state["sink"] = None

    parser = python_multipart.MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise Problem(400, f"malformed multipart/form-data body: {exc}") from None
    finally:
        if state["sink"] is not None:
            state["sink"].close()
    if state["path"] is None:
        raise Problem(400, "no file in the multipart body: send it in the field 'file'")
    return state["path"]
