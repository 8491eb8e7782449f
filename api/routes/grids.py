"""Grids over HTTP: read any moment (`?at=`), and versioned edits for admins.

Editing a grid's geometry, worker or attributes closes its current version and opens the
next one; incidents keep pointing at the version they were assigned to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field

from api.auth import Principal, require, show_worker
from api.errors import Problem
from api.responses import GeoJSONResponse, problems
from api.routes.bodies import (
    OptionalPlainText,
    PlainText,
    max_vertices,
    parse_geometry,
    refuse_uneditable,
    validated,
)
from api.routes.params import GridCode, at_param, coord_sys_param
from api.services import grids
from api.services.features import invalidate_counts
from api.services.grids import EDITABLE, grid_etag, read_grids

router = APIRouter(prefix="/v1/grids", tags=["grids"], responses=problems(400, 401, 503))
Admin = Annotated[Principal, Depends(require("write:grids"))]
Reader = Annotated[Principal, Depends(require("read:public"))]
# What a grid write may change (coverage rows of a retired version go with it).
GRID_TABLES = ("grid", "coverage")


class GridProperties(BaseModel):
    code: str = Field(pattern=r"^\d{15}$", description="12-digit village code + 3-digit sequence")
    name: PlainText = Field(min_length=1, max_length=200)
    kind: Literal["综合网格", "专属网格"] = "综合网格"
    households: int | None = Field(default=None, ge=0, le=2**31 - 1)
    population: int | None = Field(default=None, ge=0, le=2**31 - 1)
    worker_name: OptionalPlainText = Field(default=None, max_length=100)
    worker_phone: OptionalPlainText = Field(default=None, max_length=40)


class GridFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: dict[str, Any]
    properties: GridProperties


class GridPatch(BaseModel):
    """Only what is given changes; `geometry` replaces the outline."""

    geometry: dict[str, Any] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


def grid_feature(row: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """A grid row as a GeoJSON Feature; worker details only for the roles that may see them."""
    properties = {
        key: row[key]
        for key in (
            "code",
            "name",
            "village_code",
            "kind",
            "households",
            "population",
            "version",
            "valid_from",
            "valid_to",
            "area_m2",
            "worker_name",
            "worker_phone",
        )
    }
    show_worker(principal, properties)
    return {
        "type": "Feature",
        "id": row["code"],
        "geometry": orjson.loads(row["geometry"]),
        "properties": properties,
    }


def current_or_404(request: Request, code: str, at: datetime | None = None) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        rows = read_grids(conn, code=code, at=at, limit=1)
    if not rows:
        when = f" at {at.isoformat()}" if at else ""
        raise Problem(404, f"no grid {code}{when}")
    return rows[0]


@router.get("", summary="Grids valid at a moment, as GeoJSON", response_class=GeoJSONResponse)
def list_grids(
    request: Request,
    principal: Reader,
    village_code: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
    at: Annotated[datetime | None, Depends(at_param)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> GeoJSONResponse:
    with request.app.state.engine.connect() as conn:
        rows = read_grids(conn, village_code=village_code, at=at, limit=limit, offset=offset)
    return GeoJSONResponse(
        {
            "type": "FeatureCollection",
            "numberReturned": len(rows),
            "features": [grid_feature(row, principal) for row in rows],
        }
    )


@router.get(
    "/{code}",
    summary="One grid as it is now or was at `at`",
    response_class=GeoJSONResponse,
    responses=problems(404),
)
def get_grid(
    request: Request,
    principal: Reader,
    code: GridCode,
    at: Annotated[datetime | None, Depends(at_param)] = None,
) -> GeoJSONResponse:
    row = current_or_404(request, code, at)
    return GeoJSONResponse(grid_feature(row, principal), headers={"ETag": grid_etag(row)})


@router.get(
    "/{code}/versions",
    summary="Every version of a grid, oldest first",
    response_class=GeoJSONResponse,
    responses=problems(404),
)
def grid_versions(request: Request, principal: Reader, code: GridCode) -> GeoJSONResponse:
    with request.app.state.engine.connect() as conn:
        rows = read_grids(conn, code=code, all_versions=True, limit=10_000)
    if not rows:
        raise Problem(404, f"no grid {code}")
    return GeoJSONResponse(
        {"type": "FeatureCollection", "features": [grid_feature(row, principal) for row in rows]}
    )


@router.post(
    "",
    status_code=201,
    summary="Create a grid",
    response_class=GeoJSONResponse,
    responses=problems(403, 409, 413, 422),
)
def create_grid(
    request: Request,
    admin: Admin,
    feature: GridFeature,
    coord_sys: Annotated[str, Depends(coord_sys_param)] = "wgs84",
) -> GeoJSONResponse:
    geometry = parse_geometry(feature.geometry, coord_sys, max_vertices=max_vertices(request))
    with request.app.state.engine.begin() as conn:
        row = grids.create_grid(conn, feature.properties.model_dump(), geometry, admin.actor)
    request.app.state.grid_locator.grids_changed()
    invalidate_counts(*GRID_TABLES)
    return GeoJSONResponse(
        grid_feature(row, admin),
        status_code=201,
        headers={"ETag": grid_etag(row), "Location": f"/v1/grids/{row['code']}"},
    )


@router.patch(
    "/{code}",
    summary="Edit a grid: closes its version, opens the next",
    response_class=GeoJSONResponse,
    responses=problems(403, 404, 409, 412, 413, 422),
)
def update_grid(
    request: Request,
    admin: Admin,
    code: GridCode,
    patch: GridPatch,
    coord_sys: Annotated[str, Depends(coord_sys_param)] = "wgs84",
    if_match: Annotated[str | None, Header(description="ETag of the version you edited")] = None,
) -> GeoJSONResponse:
    refuse_uneditable(patch.properties, EDITABLE)
    geometry = (
        parse_geometry(patch.geometry, coord_sys, max_vertices=max_vertices(request))
        if patch.geometry
        else None
    )
    with request.app.state.engine.begin() as conn:
        # Checked against the current values for the messages; only the fields given are
        # passed on, to merge with the version the service locks.
        current = current_or_404(request, code)
        merged = {k: current[k] for k in (*EDITABLE, "code")} | patch.properties
        checked = validated(GridProperties, merged)
        changes = {name: checked[name] for name in patch.properties}
        after = grids.update_grid(conn, code, changes, geometry, if_match, admin.actor)
    request.app.state.grid_locator.grids_changed()
    invalidate_counts(*GRID_TABLES)
    return GeoJSONResponse(grid_feature(after, admin), headers={"ETag": grid_etag(after)})


@router.delete(
    "/{code}",
    status_code=204,
    summary="Retire a grid (its history stays)",
    responses=problems(403, 404, 409),
)
def delete_grid(request: Request, admin: Admin, code: GridCode) -> Response:
    with request.app.state.engine.begin() as conn:
        grids.retire_grid_audited(conn, code, admin.actor)
    request.app.state.grid_locator.grids_changed()
    invalidate_counts(*GRID_TABLES)
    return Response(status_code=204)
