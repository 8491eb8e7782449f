"""`POST /v1/cameras/import`: a file of cameras (CSV, GeoJSON & co., GB/T 28181 Catalog XML).

The upload is received and answered like the grid import's (`api.routes.grid_import`:
multipart field `file` or the raw body named by `filename`, 413 past `GRIDCOVER_MAX_UPLOAD_BYTES`,
415 for an unknown format, 400 for an unreadable file or a bad option, 422 listing every
rejected row); what is checked and defaulted is `api.services.camera_import`'s.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from api.auth import Principal, require
from api.responses import problems
from api.routes.grid_import import (
    UPLOAD_BODY,
    UPLOAD_PROBLEMS,
    CoordSys,
    Filename,
    Layer,
    SkipInvalid,
    import_upload,
)

router = APIRouter(prefix="/v1", tags=["cameras"], responses=problems(400, 401, 503))
Admin = Annotated[Principal, Depends(require("write:cameras"))]

CAMERA_UPLOAD_BODY: dict[str, Any] = copy.deepcopy(UPLOAD_BODY)
CAMERA_UPLOAD_BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["file"][
    "description"
] = (
    "CSV (lon/lat or WKT columns), GeoJSON, GeoPackage, zipped Shapefile, or a GB/T 28181 "
    "Catalog response (.xml, GB2312/GBK or UTF-8)"
)


@router.post(
    "/cameras/import",
    status_code=201,
    summary="Import a file of cameras (all or nothing, or skip the invalid rows)",
    openapi_extra=CAMERA_UPLOAD_BODY,
    responses=UPLOAD_PROBLEMS,
)
async def import_cameras_file(
    request: Request,
    admin: Admin,
    coord_sys: CoordSys = None,
    layer: Layer = None,
    skip_invalid: SkipInvalid = False,
    filename: Filename = None,
) -> dict[str, Any]:
    """201 with counts, the rejected rows (with `skip_invalid`), the GB/T 28181 directory
    entries skipped and the defaults used; the new cameras' coverage is current at once."""
    report = await import_upload(
        request, "cameras", admin, coord_sys, layer, skip_invalid, False, filename
    )
    return report.to_dict()
