"""GET /health: is the service up, and can it reach PostGIS?"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.db import check_database
from api.errors import GridcoverError, Problem
from api.responses import problems

router = APIRouter(tags=["service"])


@router.get("/health", summary="Service and database health", responses=problems(503))
def health(request: Request) -> dict[str, Any]:
    """200 with the PostGIS version when the database answers, else a 503 problem.

    `warming` lists what this process still builds in memory after starting (`grids`,
    `addresses`, `cameras`): it answers meanwhile, but requests needing those parts wait
    for them, and the building slows every other request of the process. Empty once warm:
    what a load balancer or a benchmark should wait for."""
    try:
        postgis_version = check_database(request.app.state.engine)
    except GridcoverError as exc:
        raise Problem(503, str(exc), database="unreachable", headers={"Retry-After": "5"}) from None
    state = request.app.state
    parts = (
        ("grids", state.grid_locator.ready() is not None),
        ("addresses", state.address_book.ready),
        ("cameras", state.camera_sights.ready),
    )
    return {
        "status": "ok",
        "database": "ok",
        "postgis_version": postgis_version,
        "warming": [name for name, ready in parts if not ready],
    }
