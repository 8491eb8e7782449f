"""GET /v1/lookup and POST /v1/lookup/batch: which grid is this point in?"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.auth import Principal, require, show_worker
from api.errors import Problem
from api.responses import problems
from api.routes.bodies import address_text
from api.routes.params import at_param, coord_sys_param
from api.services.lookup import (
    GridLocator,
    GridSnapshot,
    address_answer,
    answer_dict,
    resolve_points,
)
from api.services.validation import swap_hint, swapped_into_xiangxi
from geo.crs import convert

router = APIRouter(prefix="/v1", tags=["lookup"], responses=problems(400, 401, 403, 503))

Dispatcher = Annotated[Principal, Depends(require("lookup"))]
MAX_BATCH_POINTS = 100_000
MAX_BATCH_ACCURACY_M = 1000.0


async def accuracy_param(
    accuracy_m: Annotated[
        float,
        Query(
            ge=0,
            le=10_000,
            allow_inf_nan=False,
            description="position uncertainty in metres; grids within it are candidates",
        ),
    ] = 0.0,
) -> float:
    return accuracy_m


async def snapshot_for(request: Request, at: datetime | None) -> GridSnapshot:
    """The grids valid at `at`; reading and indexing them runs off the event loop."""
    locator: GridLocator = request.app.state.grid_locator
    return locator.ready(at) or await run_in_threadpool(locator.at, at)


def _swapped_hint(snapshot: GridSnapshot, lon: float, lat: float, coord_sys: str) -> str:
    """A hint when the point lands in a grid with lon and lat exchanged."""
    if abs(lon) > 90:
        return ""
    swapped_lon, swapped_lat = convert(lat, lon, coord_sys, "wgs84")
    found = snapshot.index.locate(np.array([swapped_lon]), np.array([swapped_lat]))[0]
    if found < 0:
        return ""
    code = snapshot.column("code")[found]
    return (
        f" — lon/lat look swapped: with lon and lat swapped it lies in grid {code}; "
        "send the longitude first"
    )


# The answer is pure computation on an in-memory index (well under a millisecond), so it
# runs on the event loop: a thread hop would cost more than the work.
@router.get(
    "/lookup",
    summary="The grid, worker and admin chain of a point or an address",
    responses=problems(404),
)
async def lookup_point(
    request: Request,
    principal: Dispatcher,
    lon: Annotated[
        float | None, Query(ge=-180, le=180, allow_inf_nan=False, description="longitude")
    ] = None,
    lat: Annotated[
        float | None, Query(allow_inf_nan=False, description="latitude, -90 to 90")
    ] = None,
    address: Annotated[
        str | None,
        Query(min_length=1, max_length=300, description="a Chinese address, instead of lon/lat"),
    ] = None,
    coord_sys: Annotated[str, Depends(coord_sys_param)] = "wgs84",
    accuracy_m: Annotated[float, Depends(accuracy_param)] = 0.0,
    at: Annotated[datetime | None, Depends(at_param)] = None,
) -> dict[str, Any]:
    """Covers semantics: a point on a shared edge belongs to both grids and the smaller code
    answers (`ambiguous` is then true). A point in no grid gets the nearest grid within
    `GRIDCOVER_LOOKUP_MAX_DISTANCE_M`, flagged `outside`; farther away is a 404 problem.
    An `address` is matched against the gazetteer and the division names (no network
    geocoder); the answer adds its `precision`, `confidence` and the address candidates."""
    if address is not None:
        if lon is not None or lat is not None:
            raise Problem(
                400,
                "give either lon and lat, or address, not both",
                errors=[{"field": "address", "in": "query", "reason": "not with lon/lat"}],
            )
        try:
            address = address_text(address)
        except ValueError as exc:
            raise Problem(
                400,
                f"invalid address: {exc}",
                errors=[{"field": "address", "in": "query", "reason": str(exc)}],
            ) from None
        return await run_in_threadpool(lookup_address, request, principal, address, at)
    if lon is None or lat is None:
        missing = "lon" if lon is None else "lat"
        raise Problem(
            400,
            f"invalid {missing}: give lon and lat, or address",
            errors=[{"field": missing, "in": "query", "reason": "required"}],
        )
    snapshot = await snapshot_for(request, at)
    if not -90 <= lat <= 90:
        raise Problem(
            400,
            f"invalid lat: {lat} is not in [-90, 90]"
            + _swapped_hint(snapshot, lon, lat, coord_sys),
            errors=[{"field": "lat", "in": "query", "reason": "must be in [-90, 90]"}],
        )
    max_distance_m = request.app.state.settings.lookup_max_distance_m
    answers = resolve_points(
        snapshot, np.array([lon]), np.array([lat]), coord_sys, accuracy_m, max_distance_m
    )
    if answers.grid[0] < 0:
        raise Problem(404, f"no grid within {max_distance_m:g} m of ({lon}, {lat}) in {coord_sys}")
    return worker_shown(principal, answer_dict(snapshot, answers, 0, with_phone=True))


def lookup_address(
    request: Request, principal: Principal, address: str, at: datetime | None
) -> dict[str, Any]:
    """Match the address, then answer for its point like a coordinate lookup."""
    match = request.app.state.address_book.matcher().match(address)
    if match is None or match.lon is None:
        raise Problem(
            404,
            f"no place in Xiangxi matches the address {address!r}; check the "
            "county, township or village names, or look up a point instead",
        )
    answer = address_answer(
        request.app.state.grid_locator.at(at),
        match,
        address,
        request.app.state.settings.lookup_max_distance_m,
        with_phone=True,
    )
    return worker_shown(principal, answer)


BATCH_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {
                        "type": "array",
                        "maxItems": MAX_BATCH_POINTS,
                        "description": "[[lon, lat], ...] or "
                        '[{"lon": .., "lat": .., "id": ..}, ...]',
                        "items": {
                            "oneOf": [
                                {
                                    "type": "array",
                                    "items": {"type": "number"},
                                    "minItems": 2,
                                    "maxItems": 2,
                                },
                                {
                                    "type": "object",
                                    "required": ["lon", "lat"],
                                    "properties": {
                                        "lon": {"type": "number"},
                                        "lat": {"type": "number"},
                                        "id": {},
                                    },
                                },
                            ]
                        },
                    },
                    {
                        "type": "object",
                        "description": "a GeoJSON FeatureCollection of Points",
                        "required": ["type", "features"],
                        "properties": {
                            "type": {"const": "FeatureCollection"},
                            "features": {"type": "array"},
                        },
                    },
                ]
            }
        }
    },
    "required": True,
}


@router.post(
    "/lookup/batch",
    summary="Look up to 100,000 points at once",
    openapi_extra={"requestBody": BATCH_BODY},
    responses=problems(413, 422),
)
async def lookup_batch(
    request: Request,
    principal: Dispatcher,
    coord_sys: Annotated[str, Depends(coord_sys_param)],
    accuracy_m: Annotated[float, Depends(accuracy_param)],
    at: Annotated[datetime | None, Depends(at_param)],
) -> dict[str, Any]:
    """Answers in input order, each shaped like GET /v1/lookup plus the input's `id`; points
    farther than the limit from every grid answer with `grid: null` instead of failing."""
    if accuracy_m > MAX_BATCH_ACCURACY_M:
        raise Problem(
            400,
            f"invalid accuracy_m: at most {MAX_BATCH_ACCURACY_M:g} m in a batch",
            errors=[
                {
                    "field": "accuracy_m",
                    "in": "query",
                    "reason": f"at most {MAX_BATCH_ACCURACY_M:g} in a batch",
                }
            ],
        )
    # GRIDCOVER_MAX_BODY_BYTES (api.limits) bounds the body.
    lon, lat, ids = parse_points(await request.body())
    snapshot = await snapshot_for(request, at)
    # Up to 100,000 answers take seconds: off the event loop, so other requests go on.
    return await run_in_threadpool(
        batch_answers,
        snapshot,
        lon,
        lat,
        ids,
        coord_sys,
        accuracy_m,
        request.app.state.settings.lookup_max_distance_m,
        principal,
    )


def worker_shown(principal: Principal, answer: dict[str, Any]) -> dict[str, Any]:
    """A lookup answer with the grid worker's details as `principal` may see them."""
    if answer["grid"] is not None:
        show_worker(principal, answer["grid"])
    return answer


def batch_answers(
    snapshot: GridSnapshot,
    lon: np.ndarray,
    lat: np.ndarray,
    ids: list[Any] | None,
    coord_sys: str,
    accuracy_m: float,
    max_distance_m: float,
    principal: Principal,
) -> dict[str, Any]:
    answers = resolve_points(snapshot, lon, lat, coord_sys, accuracy_m, max_distance_m)
    results = []
    for i in range(lon.size):
        result = worker_shown(principal, answer_dict(snapshot, answers, i, with_phone=True))
        if ids is not None:
            result["id"] = ids[i]
        results.append(result)
    return {"count": len(results), "results": results}


def parse_points(body: bytes) -> tuple[np.ndarray, np.ndarray, list[Any] | None]:
    """lon, lat arrays and optional ids from the accepted body shapes; 4xx problems name
    the offending item."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"the body is not JSON: {exc}") from None
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        items, ids = _feature_points(document.get("features"))
    elif isinstance(document, list):
        items, ids = _plain_points(document)
    else:
        raise Problem(422, "send a JSON array of points or a GeoJSON FeatureCollection of Points")
    if len(items) > MAX_BATCH_POINTS:
        raise Problem(
            413,
            f"{len(items):,} points: at most {MAX_BATCH_POINTS:,} per request; "
            "use `gridcover lookup --file` for more",
        )
    coords = np.array(items, dtype=np.float64).reshape(-1, 2)
    bad = ~(
        np.isfinite(coords).all(axis=1)
        & (np.abs(coords[:, 0]) <= 180)
        & (np.abs(coords[:, 1]) <= 90)
    )
    if bad.any():
        rows = np.flatnonzero(bad)[:100]
        swapped = swapped_into_xiangxi(coords[rows, 0], coords[rows, 1])
        errors = [
            {
                "row": int(row),
                "field": "coordinates",
                "reason": swap_hint(*coords[row])
                if swap
                else "lon must be in [-180, 180] and lat in [-90, 90]",
            }
            for row, swap in zip(rows, swapped, strict=True)
        ]
        raise Problem(
            422,
            f"{np.count_nonzero(bad)} point(s) have coordinates out of range; first at row "
            f"{errors[0]['row']}: {errors[0]['reason']}",
            errors=errors,
        )
    return coords[:, 0], coords[:, 1], ids


def _plain_points(document: list[Any]) -> tuple[list[list[float]], list[Any] | None]:
    items, ids, errors = [], [], []
    for row, item in enumerate(document):
        if isinstance(item, dict):
            pair, ident = [item.get("lon"), item.get("lat")], item.get("id")
        elif isinstance(item, list):
            pair, ident = item, None
        else:
            pair, ident = None, None
        if not _is_pair(pair):
            errors.append(
                {
                    "row": row,
                    "field": "point",
                    "reason": 'expected [lon, lat] or {"lon": number, "lat": number}',
                }
            )
            continue
        items.append(pair)
        ids.append(ident)
    _raise_if(errors)
    return items, ids if any(i is not None for i in ids) else None


def _feature_points(features: Any) -> tuple[list[list[float]], list[Any] | None]:
    if not isinstance(features, list):
        raise Problem(422, "a FeatureCollection needs a `features` array")
    items, ids, errors = [], [], []
    for row, feature in enumerate(features):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if not (
            isinstance(geometry, dict) and geometry.get("type") == "Point" and _is_pair(coords)
        ):
            errors.append({"row": row, "field": "geometry", "reason": "expected a 2D Point"})
            continue
        items.append(coords)
        ids.append(feature.get("id"))
    _raise_if(errors)
    return items, ids


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def _raise_if(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise Problem(
            422,
            f"{len(errors)} item(s) are not points; first at row {errors[0]['row']}",
            errors=errors[:100],
        )
