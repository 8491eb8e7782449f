"""Coverage over HTTP: one grid's coverage and gaps, rankings by area, recompute."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, current_principal, require
from api.errors import Problem
from api.responses import problems
from api.routes.params import GridCode
from api.services.coverage import (
    CAMERA_TABLES,
    coverage_summary,
    grid_coverage_report,
    recompute_all,
)
from api.services.features import invalidate_counts
from geo.camera import DORI_LEVELS

router = APIRouter(prefix="/v1", tags=["coverage"], responses=problems(401, 403, 503))
Viewer = Annotated[Principal, Depends(require("read:coverage"))]
Admin = Annotated[Principal, Depends(require("write:cameras"))]
Level = Literal["detect", "observe", "recognize", "identify"]


async def level_param(
    level: Annotated[
        Level | None,
        Query(description="DORI level (IEC 62676-4); default: every level, or detect"),
    ] = None,
) -> str | None:
    return level


@router.get(
    "/grids/{code}/coverage",
    summary="A grid's coverage per DORI level, and its gaps",
    responses=problems(400, 404),
)
def grid_coverage(
    request: Request,
    principal: Viewer,
    code: GridCode,
    level: Annotated[str | None, Depends(level_param)] = None,
) -> dict[str, Any]:
    """Area, road and key-place coverage and the headline `public_ratio` for each level
    (or the one asked for). Planners also get `gaps`: a GeoJSON FeatureCollection of the
    uncovered area (polygons), road stretches (lines) and key places (points) at `level`
    (default detect), in WGS84."""
    with request.app.state.engine.connect() as conn:
        report = grid_coverage_report(conn, code, level, with_gaps=principal.can("read:gaps"))
    if report is None:
        raise Problem(404, f"no current grid {code}")
    return report


@router.get(
    "/coverage/summary",
    summary="Coverage by county, township, village or grid",
    responses=problems(400),
)
def summary(
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    by: Annotated[Literal["county", "township", "village", "grid"], Query()] = "county",
    level: Annotated[str | None, Depends(level_param)] = None,
    parent: Annotated[
        str | None,
        Query(pattern=r"^\d{6,12}$", description="only the units inside this admin area"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 1000,
) -> dict[str, Any]:
    """Area-weighted ratios per unit, worst `public_ratio` first (the ranking planners
    work down). Anonymous callers may read the county level; finer levels need `viewer`."""
    if by != "county" and not principal.can("read:coverage"):
        anonymous = principal.key_id is None
        raise Problem(
            401 if anonymous else 403,
            f"coverage by {by} needs an API key with role viewer or higher; "
            "the county level is public",
            headers={"WWW-Authenticate": "Bearer"} if anonymous else None,
        )
    with request.app.state.engine.connect() as conn:
        units = coverage_summary(conn, by, level or DORI_LEVELS[0], parent, limit)
    return {"by": by, "level": level or DORI_LEVELS[0], "units": units}


@router.post("/coverage/recompute", summary="Recompute every FOV and every grid's coverage")
async def recompute(request: Request, admin: Admin) -> dict[str, Any]:
    """Edits keep coverage current on their own; this is for after bulk SQL changes or a
    change of weights. Runs off the event loop; other requests are served meanwhile."""
    done = await run_in_threadpool(recompute_all, request.app.state.engine, actor=admin.actor)
    invalidate_counts(*CAMERA_TABLES)
    return done
