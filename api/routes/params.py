"""Query parameters shared by several routes: one dependency each, one meaning everywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import Query

CoordSys = Literal["wgs84", "cgcs2000", "gcj02", "bd09"]
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))


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
