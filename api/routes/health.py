"""GET /health: is the service up, and can it reach PostGIS?"""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.db import check_database
from api.errors import GridcoverError, Problem
from api.responses import problems

router = APIRouter(tags=["service"])


@router.get("/health", summary="Service and database health", responses=problems(503))
def health(request: Request) -> dict[str, str]:
    """200 with the PostGIS version when the database answers, else a 503 problem."""
    try:
        postgis_version = check_database(request.app.state.engine)
    except GridcoverError as exc:
        raise Problem(503, str(exc), database="unreachable", headers={"Retry-After": "5"}) from None
    return {"status": "ok", "database": "ok", "postgis_version": postgis_version}
