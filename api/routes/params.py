"""Query parameters shared by several routes: one dependency each, one meaning everywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import Path, Query

from api.errors import Problem
from api.services.validation import swap_hint, swapped_into_xiangxi

CoordSys = Literal["wgs84", "cgcs2000", "gcj02", "bd09"]
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
# Text of a path or query parameter (a code, a category): no C0 control character, which
# no code holds and PostgreSQL text cannot store (NUL); other text is a 404 or no match.
PRINTABLE = r"^[^\x00-\x1f]*$"
GridCode = Annotated[str, Path(pattern=PRINTABLE, description="a grid's 15-digit code")]
VillageCode = Annotated[str, Path(pattern=PRINTABLE, description="a village's 12-digit code")]
# The bounds `check_latitude` enforces, for the OpenAPI document of a `lat` parameter.
LATITUDE_RANGE = {"minimum": -90, "maximum": 90}


async def coord_sys_param(
    coord_sys: Annotated[
        CoordSys,
        Query(description="what the coordinates are: GPS gives wgs84, Amap gcj02, Baidu bd09"),
    ] = "wgs84",
) -> str:
    return coord_sys


async def at_param(
    at: Annotated[
        datetime | None,
        Query(
            description="the moment to read the grids at; default now; without an offset, "
            "+08:00 (China Standard Time)"
        ),
    ] = None,
) -> datetime | None:
    if at is not None and at.tzinfo is None:
        return at.replace(tzinfo=CHINA_STANDARD_TIME)
    return at


async def bbox_param(
    bbox: Annotated[str | None, Query(description="west,south,east,north in WGS84 degrees")] = None,
) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    try:
        west, south, east, north = (float(v) for v in bbox.split(","))
    except ValueError:
        west = south = east = north = float("nan")
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise Problem(
            400,
            "bbox must be four numbers west,south,east,north with west < east, south < north",
            errors=[{"field": "bbox", "in": "query", "reason": "invalid"}],
        )
    return west, south, east, north


def check_latitude(lon: float, lat: float) -> None:
    """400 for a `lat` query parameter out of [-90, 90], saying so when lon and lat look
    swapped (the pair then lies in Xiangxi)."""
    if -90 <= lat <= 90:
        return
    reason = swap_hint(lon, lat) if swapped_into_xiangxi(lon, lat)[0] else "must be in [-90, 90]"
    raise Problem(
        400,
        f"invalid lat: {lat}: {reason}",
        errors=[{"field": "lat", "in": "query", "reason": reason}],
    )
