"""Vector tiles (Mapbox Vector Tile, WebMercatorQuad) and TileJSON of the OGC collections.

    GET /collections/{collectionId}/tiles/WebMercatorQuad/{z}/{x}/{y}[?level]
    GET /collections/{collectionId}/tiles/WebMercatorQuad[?level]          (TileJSON 3.0.0)

Gated like the collection's items (401 anonymous, 403 too weak a role, 404 unknown). An empty
tile is 204. Tiles carry an ETag (If-None-Match → 304) and the Cache-Control of the items.
The SQL and the tile cache are in api.services.tiles.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response

from api.auth import Principal, current_principal
from api.errors import Problem
from api.responses import NOT_MODIFIED, problems, success
from api.routes.ogc import _base, _cache_control, _not_modified, cached_response, refuse_unreadable
from api.services.features import Collection
from api.services.tiles import (
    MVT,
    TILE_MATRIX_SET,
    TileStore,
    check_tile,
    collection_extent,
    tiled_collection,
    tiled_collections,
    tilejson,
)

router = APIRouter(
    tags=["Vector tiles"], responses=problems(400, 401, 403, 404, 503) | NOT_MODIFIED
)
Caller = Annotated[Principal, Depends(current_principal)]
Level = Literal["detect", "observe", "recognize", "identify"]
LevelQuery = Annotated[
    Level | None,
    Query(
        description="DORI level of coverage, gaps, camera_fov and coverage_h3 tiles and of the "
        "coverage fields of grid tiles (default detect); other collections ignore it"
    ),
]


def register(app: FastAPI) -> None:
    """Add the routes, with a tile cache of GRIDCOVER_TILE_CACHE_MB (0: none)."""
    app.state.tiles = TileStore(max_bytes=int(app.state.settings.tile_cache_mb * 2**20))
    app.include_router(router)


async def tiled_dependency(
    collection_id: Annotated[str, Path(alias="collectionId", description="a collection id")],
    principal: Caller,
) -> Collection:
    """The collection, if it has tiles and the caller may read it (as for its items)."""
    collection = tiled_collection(collection_id)
    if collection is None:
        known = ", ".join(c.id for c in tiled_collections() if principal.can(c.permission))
        raise Problem(404, f"no vector tiles of {collection_id!r}; tiled collections: {known}")
    refuse_unreadable(principal, collection)
    return collection


Tiled = Annotated[Collection, Depends(tiled_dependency)]


@router.get(
    f"/collections/{{collectionId}}/tiles/{TILE_MATRIX_SET}",
    summary="TileJSON 3.0.0 of a collection's vector tiles",
    response_class=Response,
    responses=success("application/json", "TileJSON 3.0.0", {"type": "object"}),
)
def tileset(request: Request, principal: Caller, collection: Tiled, level: LevelQuery = None):
    with request.app.state.reader.connect() as conn:
        extent = collection_extent(conn, request.app.state.features, collection)
    return cached_response(
        request,
        tilejson(collection, principal, _base(request), extent, level),
        principal,
        collection=collection,
    )


@router.get(
    f"/collections/{{collectionId}}/tiles/{TILE_MATRIX_SET}/{{z}}/{{x}}/{{y}}",
    summary="A vector tile (Mapbox Vector Tile) of a collection",
    response_class=Response,
    responses={
        200: {
            "content": {MVT: {"schema": {"type": "string", "format": "binary"}}},
            "description": "the tile: one layer named after the collection",
        },
        204: {"description": "an empty tile: nothing there, or below the collection's minzoom"},
    },
)
def tile(
    request: Request,
    principal: Caller,
    collection: Tiled,
    z: Annotated[int, Path(description="zoom level, 0..24")],
    x: Annotated[int, Path(description="column, 0..2^z-1 from the west")],
    y: Annotated[int, Path(description="row, 0..2^z-1 from the north")],
    level: LevelQuery = None,
) -> Response:
    check_tile(z, x, y)
    found = request.app.state.tiles.tile(
        request.app.state.reader, collection, principal, z, x, y, level or "detect"
    )
    headers = {
        "ETag": found.etag,
        "Cache-Control": _cache_control(principal, collection),
        "Vary": "Authorization",
    }
    if _not_modified(request, found.etag):
        return Response(status_code=304, headers=headers)
    if not found.data:
        return Response(status_code=204, headers=headers)
    return Response(found.data, media_type=MVT, headers=headers)
