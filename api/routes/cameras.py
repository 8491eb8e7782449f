"""Cameras over HTTP: the registry (planners read, admins write) and the evidence lookup.

Every edit brings the camera's FOVs and the coverage of the grids under its old and new
FOVs up to date in the same transaction, so a read right after it is never stale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.auth import Principal, require
from api.errors import Problem
from api.responses import GeoJSONResponse, problems
from api.routes.bodies import PlainText, parse_geometry, refuse_uneditable, validated
from api.routes.params import LATITUDE_RANGE, bbox_param, check_latitude, coord_sys_param
from api.services.camera_sights import CameraSights
from api.services.cameras import (
    EDITABLE,
    CameraFilter,
    camera_etag,
    create_camera,
    delete_camera,
    read_camera,
    read_cameras,
    update_camera,
)
from api.services.coverage import CAMERA_TABLES
from api.services.features import invalidate_counts
from geo.crs import convert, to_metric

router = APIRouter(prefix="/v1/cameras", tags=["cameras"], responses=problems(400, 401, 403, 503))
Admin = Annotated[Principal, Depends(require("write:cameras"))]
Reader = Annotated[Principal, Depends(require("read:cameras"))]
Dispatcher = Annotated[Principal, Depends(require("read:cameras_visible"))]


class CameraProperties(BaseModel):
    """A camera as registered; `hfov_deg` defaults by kind (bullet 90°, dome/PTZ 360°)."""

    gb_id: str = Field(pattern=r"^\d{20}$", description="GB/T 28181 device id, 20 digits")
    name: PlainText = Field(min_length=1, max_length=200)
    kind: Literal["bullet", "dome", "ptz"]
    height_m: float = Field(default=4.0, ge=0, le=500, allow_inf_nan=False)
    azimuth_deg: float = Field(
        default=0.0, ge=0, lt=360, allow_inf_nan=False, description="clockwise from true north"
    )
    hfov_deg: float | None = Field(default=None, gt=0, le=360, allow_inf_nan=False)
    resolution_h_px: int = Field(default=1920, gt=0, le=100_000)
    range_m: float | None = Field(
        default=None, gt=0, le=10_000, allow_inf_nan=False, description="caps every DORI range"
    )
    status: Literal["online", "offline", "fault"] = "online"
    owner: Literal["public", "industry", "enterprise", "residential"] = "public"
    installed_at: datetime | None = None


# Values that pass `CameraProperties` for its required fields, so that a PATCH's fields
# can be checked alone; they are never stored.
REQUIRED_STAND_INS = {"gb_id": "0" * 20, "name": "-", "kind": "bullet"}


class CameraFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: dict[str, Any]
    properties: CameraProperties


class CameraPatch(BaseModel):
    """Only what is given changes; `geometry` moves the camera."""

    geometry: dict[str, Any] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


def camera_feature(row: dict[str, Any]) -> dict[str, Any]:
    properties = {k: v for k, v in row.items() if k not in ("lon", "lat")}
    return {
        "type": "Feature",
        "id": row["id"],
        "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
        "properties": properties,
    }


def _point(geometry: dict[str, Any], coord_sys: str) -> Any:
    point = parse_geometry(geometry, coord_sys)
    if point.geom_type != "Point":
        raise Problem(
            422,
            f"a camera's geometry must be a Point, not a {point.geom_type}",
            errors=[{"field": "geometry", "reason": "must be a Point"}],
        )
    return point


@router.get("", summary="Cameras, as GeoJSON", response_class=GeoJSONResponse)
def list_cameras(
    request: Request,
    principal: Reader,
    county_code: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    status: Annotated[Literal["online", "offline", "fault"] | None, Query()] = None,
    kind: Annotated[Literal["bullet", "dome", "ptz"] | None, Query()] = None,
    bbox: Annotated[tuple[float, float, float, float] | None, Depends(bbox_param)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> GeoJSONResponse:
    where = CameraFilter(county_code, status, kind, bbox)
    with request.app.state.engine.connect() as conn:
        rows = read_cameras(conn, where, limit, offset)
    return GeoJSONResponse(
        {
            "type": "FeatureCollection",
            "numberReturned": len(rows),
            "features": [camera_feature(row) for row in rows],
        }
    )


# Declared before /{camera_id}, which it would otherwise match.
# Answered from the process's in-memory index of working cameras, on the event loop like
# lookups; only when cameras changed since it read them does a request wait for a thread.
@router.get("/visible", summary="Cameras that can see a point, best DORI level first")
async def visible(
    request: Request,
    principal: Dispatcher,
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
    lat: Annotated[float, Query(allow_inf_nan=False, json_schema_extra=LATITUDE_RANGE)],
    coord_sys: Annotated[str, Depends(coord_sys_param)] = "wgs84",
) -> dict[str, Any]:
    """Each camera whose field of view holds the point, with its distance (m), the bearing
    of the point from it (degrees clockwise from north) and the finest DORI level it
    reaches there (identify > recognize > observe > detect); offline cameras see nothing."""
    check_latitude(lon, lat)
    lon_wgs, lat_wgs = convert(lon, lat, coord_sys, "wgs84")
    x, y = to_metric(lon_wgs, lat_wgs)
    sights: CameraSights = request.app.state.camera_sights
    cameras = sights.visible(x, y)
    if cameras is None:
        cameras = await run_in_threadpool(sights.visible_now, x, y)
    return {"point": [round(lon_wgs, 7), round(lat_wgs, 7)], "cameras": cameras}


def cameras_written(request: Request, camera_ids: list[int] | None) -> None:
    """After committing a write to cameras (None: any number of them): what this process
    keeps of them is read again before it answers from it."""
    invalidate_counts(*CAMERA_TABLES)
    request.app.state.camera_sights.changed(camera_ids)


@router.get(
    "/{camera_id}",
    summary="One camera",
    response_class=GeoJSONResponse,
    responses=problems(404),
)
def get_camera(request: Request, principal: Reader, camera_id: int) -> GeoJSONResponse:
    with request.app.state.engine.connect() as conn:
        row = read_camera(conn, camera_id)
    return GeoJSONResponse(camera_feature(row), headers={"ETag": camera_etag(row)})


@router.post(
    "",
    status_code=201,
    summary="Register a camera",
    response_class=GeoJSONResponse,
    responses=problems(409, 413, 422),
)
def post_camera(
    request: Request,
    admin: Admin,
    feature: CameraFeature,
    coord_sys: Annotated[str, Depends(coord_sys_param)] = "wgs84",
) -> GeoJSONResponse:
    """The county is the id's first six digits and must be where the point stands. The
    camera's FOVs and its grids' coverage are computed before this answers."""
    point = _point(feature.geometry, coord_sys)
    with request.app.state.engine.begin() as conn:
        row = create_camera(conn, feature.properties.model_dump(), point, admin.actor)
    cameras_written(request, [row["id"]])
    return GeoJSONResponse(
        camera_feature(row),
        status_code=201,
        headers={"ETag": camera_etag(row), "Location": f"/v1/cameras/{row['id']}"},
    )


@router.patch(
    "/{camera_id}",
    summary="Edit or move a camera",
    response_class=GeoJSONResponse,
    responses=problems(404, 409, 412, 413, 422),
)
def patch_camera(
    request: Request,
    admin: Admin,
    camera_id: int,
    patch: CameraPatch,
    coord_sys: Annotated[str, Depends(coord_sys_param)] = "wgs84",
    if_match: Annotated[str | None, Header(description="ETag of the version you edited")] = None,
) -> GeoJSONResponse:
    refuse_uneditable(patch.properties, EDITABLE)
    point = _point(patch.geometry, coord_sys) if patch.geometry else None
    # Only the fields given are checked (stand-ins fill the ones the model requires): a
    # stored value that its display rounds (or an older rule allowed) never fails an edit
    # that leaves it alone. They are merged with the row as it is once locked.
    checked = validated(CameraProperties, REQUIRED_STAND_INS | patch.properties)
    changes = {name: checked[name] for name in patch.properties}
    with request.app.state.engine.begin() as conn:
        row = update_camera(conn, camera_id, changes, point, if_match, admin.actor)
    cameras_written(request, [camera_id])
    return GeoJSONResponse(camera_feature(row), headers={"ETag": camera_etag(row)})


@router.delete("/{camera_id}", status_code=204, summary="Remove a camera", responses=problems(404))
def remove_camera(request: Request, admin: Admin, camera_id: int) -> Response:
    with request.app.state.engine.begin() as conn:
        delete_camera(conn, camera_id, admin.actor)
    cameras_written(request, [camera_id])
    return Response(status_code=204)
