"""OGC API – Features (Part 1 core + GeoJSON + OpenAPI 3.0, Part 2 CRS, Part 3 CQL2 filter).

Built as tipg builds it: a factory holds the router, every query parameter is one FastAPI
dependency (so each appears in /api), and routes only parse, authorise, call the feature
store (api.services.features, where all SQL lives) and serialise.

    OGCFeaturesFactory().register(app)

Responses carry an ETag (a hash of the body without its timeStamp) and honour
If-None-Match with 304. Public collections read anonymously are `Cache-Control: public`;
anything read with a key is `private, no-cache` (revalidate with the ETag).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, Role, current_principal
from api.cql2 import CHINA_STANDARD_TIME, parse_timestamp
from api.errors import Problem
from api.responses import (
    FEATURE_COLLECTION_SCHEMA,
    FEATURE_SCHEMA,
    NOT_MODIFIED,
    ORJSON_OPTIONS,
    problems,
    success,
    without_fastapi_validation_errors,
)
from api.routes.params import at_param
from api.routes.web import map_page, wants_html
from api.services.features import (
    COLLECTIONS,
    CRS,
    CRS84,
    CRSS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Collection,
    FeatureStore,
    ItemsQuery,
    crs_from,
    geometry_schema,
    property_schemas,
    readable,
)
from api.services.tiles import tiled_collection

GEOJSON = "application/geo+json"
JSON = "application/json"
SCHEMA_JSON = "application/schema+json"
OPENAPI_JSON = "application/vnd.oai.openapi+json;version=3.0"
REL_QUERYABLES = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
REL_TILES = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
PUBLIC_MAX_AGE_S = 60
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/temporal-functions",
]
CRS_URIS = [crs.uri for crs in CRSS]
CRS_LIST = ", ".join(CRS_URIS)


def _bad(parameter: str, detail: str) -> Problem:
    return Problem(400, detail, errors=[{"field": parameter, "in": "query", "reason": detail}])


# --- one dependency per query parameter -------------------------------------------------------


async def bbox_query(
    bbox: Annotated[
        str | None,
        Query(
            description="minx,miny,maxx,maxy in `bbox-crs` (default CRS84: lon,lat); only "
            "features whose geometry intersects the box",
            examples=["109.7,28.2,109.8,28.3"],
        ),
    ] = None,
) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    try:
        values = [float(v) for v in bbox.split(",")]
    except ValueError:
        raise _bad("bbox", "bbox takes 4 comma-separated numbers") from None
    if len(values) == 6:
        raise _bad("bbox", "a 6-number (3D) bbox is not supported: the data are 2D; give 4")
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise _bad("bbox", "bbox takes 4 comma-separated finite numbers")
    return values[0], values[1], values[2], values[3]


async def bbox_crs_query(
    bbox_crs: Annotated[
        str | None,
        Query(alias="bbox-crs", description=f"CRS of `bbox` (axis order of the CRS): {CRS_LIST}"),
    ] = None,
) -> CRS:
    return crs_from(bbox_crs, "bbox-crs")


async def crs_query(
    crs: Annotated[
        str | None,
        Query(
            description="CRS of the response coordinates, in the axis order of the CRS "
            f"(EPSG:4326/4490 lat,lon; EPSG:4546 northing,easting in metres): {CRS_LIST}"
        ),
    ] = None,
) -> CRS:
    return crs_from(crs, "crs")


async def filter_crs_query(
    filter_crs: Annotated[
        str | None,
        Query(alias="filter-crs", description=f"CRS of geometries in `filter`: {CRS_LIST}"),
    ] = None,
) -> CRS:
    return crs_from(filter_crs, "filter-crs")


async def limit_query(
    limit: Annotated[
        int,
        Query(
            ge=1,
            description=f"features per page; more than {MAX_LIMIT} is served as {MAX_LIMIT}",
            json_schema_extra={"maximum": MAX_LIMIT},
        ),
    ] = DEFAULT_LIMIT,
) -> int:
    # OGC API – Features: a limit above the maximum is not an error; the maximum is used.
    return min(limit, MAX_LIMIT)


async def offset_query(
    offset: Annotated[int, Query(ge=0, le=10**9, description="features to skip")] = 0,
) -> int:
    return offset


async def properties_query(
    properties: Annotated[
        str | None,
        Query(description="comma-separated property names to return (default: all)"),
    ] = None,
) -> tuple[str, ...] | None:
    if properties is None:
        return None
    return tuple(name.strip() for name in properties.split(",") if name.strip())


async def sortby_query(
    sortby: Annotated[
        str | None,
        Query(description="comma-separated properties, each with an optional + or - prefix"),
    ] = None,
) -> tuple[tuple[str, bool], ...]:
    if sortby is None:
        return ()
    order = []
    for item in sortby.split(","):
        name = item.strip()
        descending = name.startswith("-")
        name = name.lstrip("+-").strip()
        if not name:
            raise _bad("sortby", f"empty name in sortby {sortby!r}")
        order.append((name, descending))
    return tuple(order)


def _moment(text: str, end: bool) -> datetime | None:
    if text in ("..", ""):
        return None
    value = parse_timestamp(text)
    if value is not None:
        return value
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise _bad(
            "datetime", f"invalid datetime {text!r}: use RFC 3339, a date, or an interval a/b"
        ) from None
    start = datetime.combine(day, time(0), tzinfo=CHINA_STANDARD_TIME)
    return start + timedelta(days=1) - timedelta(microseconds=1) if end else start


async def datetime_query(
    datetime_: Annotated[
        str | None,
        Query(
            alias="datetime",
            description="an instant (RFC 3339; without an offset +08:00), a date, or an "
            "interval start/end with `..` for an open end. incidents: reported in it; grids: "
            "the versions valid at that instant",
        ),
    ] = None,
) -> tuple[datetime | None, datetime | None] | None:
    if datetime_ is None:
        return None
    if "/" in datetime_:
        first, _, second = datetime_.partition("/")
        start, end = _moment(first, end=False), _moment(second, end=True)
        if start is None and end is None:
            raise _bad("datetime", "an interval needs at least one end")
        if start is not None and end is not None and start > end:
            raise _bad("datetime", "the interval ends before it starts")
        return start, end
    instant = parse_timestamp(datetime_)
    if instant is None:
        instant = _moment(datetime_, end=False)
    return instant, instant


async def filter_query(
    filter_: Annotated[
        str | None,
        Query(
            alias="filter",
            description="a CQL2-text expression over the collection's queryables, e.g. "
            "`kind = '综合网格' AND population > 1000`",
        ),
    ] = None,
) -> str | None:
    return filter_


async def filter_lang_query(
    filter_lang: Annotated[
        Literal["cql2-text", "cql-text"],
        Query(
            alias="filter-lang",
            description="cql2-text; cql-text is its draft name, which GDAL before 3.7 sends",
        ),
    ] = "cql2-text",
) -> str:
    return filter_lang


STANDARD_PARAMETERS = {
    "at",
    "limit",
    "offset",
    "bbox",
    "bbox-crs",
    "crs",
    "properties",
    "sortby",
    "datetime",
    "filter",
    "filter-lang",
    "filter-crs",
}


async def property_equals_query(request: Request) -> tuple[tuple[str, str], ...]:
    """`?name=value` for a property: features whose property equals the value (OGC API –
    Features Part 1, /rec/core/fc-filters). Names that are no visible property are ignored."""
    return tuple(
        (name, value)
        for name, value in request.query_params.multi_items()
        if name not in STANDARD_PARAMETERS
    )


async def items_query(
    limit: Annotated[int, Depends(limit_query)],
    offset: Annotated[int, Depends(offset_query)],
    bbox: Annotated[tuple[float, float, float, float] | None, Depends(bbox_query)],
    bbox_crs: Annotated[CRS, Depends(bbox_crs_query)],
    crs: Annotated[CRS, Depends(crs_query)],
    properties: Annotated[tuple[str, ...] | None, Depends(properties_query)],
    sortby: Annotated[tuple[tuple[str, bool], ...], Depends(sortby_query)],
    datetime_: Annotated[tuple[datetime | None, datetime | None] | None, Depends(datetime_query)],
    filter_: Annotated[str | None, Depends(filter_query)],
    filter_lang: Annotated[str, Depends(filter_lang_query)],
    filter_crs: Annotated[CRS, Depends(filter_crs_query)],
    equals: Annotated[tuple[tuple[str, str], ...], Depends(property_equals_query)],
    at: Annotated[datetime | None, Depends(at_param)],
) -> ItemsQuery:
    return ItemsQuery(
        limit=limit,
        offset=offset,
        bbox=bbox,
        bbox_crs=bbox_crs,
        crs=crs,
        properties=properties,
        sortby=sortby,
        datetime=datetime_,
        filter=filter_,
        filter_crs=filter_crs,
        equals=equals,
        at=at,
    )


async def collection_dependency(
    collection_id: Annotated[str, Path(alias="collectionId", description="a collection id")],
    principal: Annotated[Principal, Depends(current_principal)],
) -> Collection:
    """The collection, if the caller may read it: 404 unknown, 401 anonymous, 403 too weak."""
    collection = COLLECTIONS.get(collection_id)
    if collection is None:
        known = ", ".join(c.id for c in readable(principal))
        raise Problem(404, f"no collection {collection_id!r}; see /collections ({known})")
    refuse_unreadable(principal, collection)
    return collection


def refuse_unreadable(principal: Principal, collection: Collection) -> None:
    """401 for anonymous callers, 403 for too weak a role, when `collection` is gated."""
    if principal.can(collection.permission):
        return
    if principal.role is Role.anonymous:
        raise Problem(
            401,
            f"collection {collection.id} needs an API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    raise Problem(403, f"role {principal.role.name} may not read collection {collection.id}")


Caller = Annotated[Principal, Depends(current_principal)]
CollectionDep = Annotated[Collection, Depends(collection_dependency)]


# --- serialisation ---------------------------------------------------------------------------


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def _cache_control(principal: Principal, collection: Collection | None = None) -> str:
    public = principal.role is Role.anonymous and (
        collection is None or collection.permission == "read:public"
    )
    return f"public, max-age={PUBLIC_MAX_AGE_S}" if public else "private, no-cache"


def cached_response(
    request: Request,
    content: Any,
    principal: Principal,
    media_type: str = JSON,
    collection: Collection | None = None,
    headers: dict[str, str] | None = None,
    stamp: bool = False,
) -> Response:
    """`content` as JSON with ETag/Cache-Control; 304 when the client has it already.

    With `stamp`, the body (a dict whose first key is "type") gets a timeStamp that the
    ETag does not cover, so an unchanged page keeps its ETag.
    """
    body = orjson.dumps(content, option=ORJSON_OPTIONS, default=str)
    etag = _etag(body)
    all_headers = {
        "ETag": etag,
        "Cache-Control": _cache_control(principal, collection),
        "Vary": "Authorization",
        **(headers or {}),
    }
    if _not_modified(request, etag):
        return Response(status_code=304, headers=all_headers)
    if stamp:
        head = orjson.dumps({"type": content["type"]})[:-1] + b","
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        body = head + b'"timeStamp":"' + now.encode() + b'",' + body[len(head) :]
    return Response(body, media_type=media_type, headers=all_headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _link(href: str, rel: str, type_: str, title: str | None = None) -> dict[str, str]:
    link = {"href": href, "rel": rel, "type": type_}
    if title:
        link["title"] = title
    return link


@dataclass
class OGCFeaturesFactory:
    """Builds the OGC API – Features router over `COLLECTIONS`."""

    router: APIRouter = field(
        default_factory=lambda: APIRouter(
            tags=["OGC API - Features"], responses=problems(401, 503) | NOT_MODIFIED
        )
    )
    store: FeatureStore = field(default_factory=FeatureStore)

    def __post_init__(self) -> None:
        self.register_routes()

    def register(self, app: FastAPI) -> None:
        """Add the routes to `app` and serve its OpenAPI document at /api as OGC asks."""
        app.state.features = self.store
        openapi_url = app.openapi_url or "/api"
        app.router.routes[:] = [
            route
            for route in app.router.routes
            if not (getattr(route, "path", None) == openapi_url and route.name == "openapi")
        ]

        async def openapi(request: Request) -> Response:
            state = request.app.state
            if getattr(state, "ogc_openapi", None) is None:
                state.ogc_openapi = orjson.dumps(openapi_30(request.app.openapi()))
            return Response(state.ogc_openapi, media_type=OPENAPI_JSON)

        app.add_api_route(openapi_url, openapi, include_in_schema=False, name="openapi")
        app.include_router(self.router)

    def collection_documents(
        self, request: Request, collections: list[Collection]
    ) -> list[dict[str, Any]]:
        with request.app.state.engine.connect() as conn:
            extents = self.store.extents_of(conn, collections)
        return [
            self.collection_document(request, collection, extent)
            for collection, extent in zip(collections, extents, strict=True)
        ]

    @staticmethod
    def collection_document(
        request: Request, collection: Collection, extent: dict[str, Any]
    ) -> dict[str, Any]:
        base = f"{_base(request)}/collections/{collection.id}"
        return {
            "id": collection.id,
            "title": collection.title,
            "description": collection.description,
            "itemType": "feature",
            "extent": extent,
            "crs": CRS_URIS,
            "storageCrs": CRS84,
            "links": [
                _link(base, "self", JSON, "This collection"),
                _link(f"{base}/items", "items", GEOJSON, "The features"),
                _link(f"{base}/queryables", REL_QUERYABLES, SCHEMA_JSON, "Queryables"),
                _link(f"{base}/schema", "describedby", SCHEMA_JSON, "Feature schema"),
                *(
                    [_link(f"{base}/tiles/WebMercatorQuad", REL_TILES, JSON, "Vector tiles")]
                    if tiled_collection(collection.id)
                    else []
                ),
            ],
        }

    def register_routes(self) -> None:
        router = self.router
        store = self.store

        @router.get(
            "/",
            summary="Landing page (the web map for browsers)",
            response_class=Response,
            responses={
                200: {
                    "description": "links to the API, its conformance and the collections; "
                    "the web map (HTML) for browsers",
                    "content": {JSON: {"schema": {"type": "object"}}, "text/html": {}},
                }
            },
        )
        def landing(request: Request, principal: Caller) -> Response:
            if wants_html(request):
                return map_page()
            base = _base(request)
            return cached_response(
                request,
                {
                    "title": "gridcover",
                    "description": "Grids, cameras and coverage of Xiangxi prefecture (湘西州) "
                    "as OGC API – Features",
                    "links": [
                        _link(f"{base}/", "self", JSON, "This document"),
                        _link(f"{base}/api", "service-desc", OPENAPI_JSON, "The API definition"),
                        _link(f"{base}/api.html", "service-doc", "text/html", "API documentation"),
                        _link(f"{base}/conformance", "conformance", JSON, "Conformance classes"),
                        _link(f"{base}/collections", "data", JSON, "The collections"),
                        _link(f"{base}/map", "alternate", "text/html", "The web map"),
                    ],
                },
                principal,
                headers={"Vary": "Authorization, Accept"},
            )

        @router.get(
            "/conformance",
            summary="Conformance classes",
            response_class=Response,
            responses=success(JSON, "the conformance classes", {"type": "object"}),
        )
        def conformance(request: Request, principal: Caller) -> Response:
            return cached_response(request, {"conformsTo": CONFORMANCE}, principal)

        @router.get(
            "/collections",
            summary="The collections you may read",
            response_class=Response,
            responses=success(JSON, "the collections", {"type": "object"}),
        )
        def collections(request: Request, principal: Caller) -> Response:
            base = _base(request)
            documents = self.collection_documents(request, readable(principal))
            return cached_response(
                request,
                {
                    "links": [_link(f"{base}/collections", "self", JSON, "The collections")],
                    "collections": documents,
                },
                principal,
            )

        @router.get(
            "/collections/{collectionId}",
            summary="One collection",
            response_class=Response,
            responses=success(JSON, "the collection", {"type": "object"}) | problems(403, 404),
        )
        def collection(request: Request, principal: Caller, collection: CollectionDep) -> Response:
            return cached_response(
                request,
                self.collection_documents(request, [collection])[0],
                principal,
                collection=collection,
            )

        @router.get(
            "/collections/{collectionId}/queryables",
            summary="What a filter may use (JSON Schema)",
            response_class=Response,
            responses=success(SCHEMA_JSON, "the queryables", {"type": "object"})
            | problems(403, 404),
        )
        def queryables(request: Request, principal: Caller, collection: CollectionDep) -> Response:
            url = f"{_base(request)}/collections/{collection.id}/queryables"
            return cached_response(
                request,
                {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$id": url,
                    "type": "object",
                    "title": collection.title,
                    "properties": {
                        "geometry": geometry_schema(collection),
                        **property_schemas(collection, principal),
                    },
                    "additionalProperties": False,
                },
                principal,
                media_type=SCHEMA_JSON,
                collection=collection,
            )

        @router.get(
            "/collections/{collectionId}/schema",
            summary="The schema of a feature (JSON Schema)",
            response_class=Response,
            responses=success(SCHEMA_JSON, "the feature schema", {"type": "object"})
            | problems(403, 404),
        )
        def schema(request: Request, principal: Caller, collection: CollectionDep) -> Response:
            url = f"{_base(request)}/collections/{collection.id}/schema"
            id_type = "integer" if collection.key_types == ("integer",) else "string"
            return cached_response(
                request,
                {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$id": url,
                    "title": collection.title,
                    "type": "object",
                    "required": ["type", "geometry", "properties"],
                    "properties": {
                        "type": {"type": "string", "enum": ["Feature"]},
                        "id": {"type": id_type},
                        "geometry": geometry_schema(collection),
                        "properties": {
                            "type": "object",
                            "properties": property_schemas(collection, principal),
                        },
                    },
                },
                principal,
                media_type=SCHEMA_JSON,
                collection=collection,
            )

        @router.get(
            "/collections/{collectionId}/items",
            summary="Features of a collection (GeoJSON)",
            response_class=Response,
            responses=success(GEOJSON, "a FeatureCollection", FEATURE_COLLECTION_SCHEMA)
            | problems(400, 403, 404),
        )
        def items(
            request: Request,
            principal: Caller,
            collection: CollectionDep,
            query: Annotated[ItemsQuery, Depends(items_query)],
        ) -> Response:
            with request.app.state.reader.connect() as conn:
                page = store.items(conn, collection, principal, query)
            base = f"{_base(request)}/collections/{collection.id}"
            links = [
                _link(str(request.url), "self", GEOJSON, "This page"),
                _link(base, "collection", JSON, "The collection"),
            ]
            if query.offset + page.number_returned < page.number_matched:
                next_url = request.url.include_query_params(
                    offset=query.offset + page.number_returned, limit=query.limit
                )
                links.append(_link(str(next_url), "next", GEOJSON, "Next page"))
            if query.offset > 0:
                prev_url = request.url.include_query_params(
                    offset=max(0, query.offset - query.limit), limit=query.limit
                )
                links.append(_link(str(prev_url), "prev", GEOJSON, "Previous page"))
            return cached_response(
                request,
                {
                    "type": "FeatureCollection",
                    "numberMatched": page.number_matched,
                    "numberReturned": page.number_returned,
                    "features": page.features,
                    "links": links,
                },
                principal,
                media_type=GEOJSON,
                collection=collection,
                headers={"Content-Crs": f"<{query.crs.uri}>"},
                stamp=True,
            )

        @router.get(
            "/collections/{collectionId}/items/{featureId}",
            summary="One feature (GeoJSON)",
            response_class=Response,
            responses=success(GEOJSON, "a Feature", FEATURE_SCHEMA) | problems(400, 403, 404),
        )
        async def item(
            request: Request,
            principal: Caller,
            collection: CollectionDep,
            feature_id: Annotated[str, Path(alias="featureId", description="the feature id")],
            crs: Annotated[CRS, Depends(crs_query)],
            datetime_: Annotated[
                tuple[datetime | None, datetime | None] | None, Depends(datetime_query)
            ],
            at: Annotated[datetime | None, Depends(at_param)],
        ) -> Response:
            moment = ItemsQuery(datetime=datetime_, at=at).moment(collection)
            if moment is not None:
                if moment[0] != moment[1]:
                    raise _bad("datetime", "a single feature is read at one instant")
                at = moment[0]
            # async, so a feature served from the cache costs no hop to a worker thread
            feature = store.cached_item(collection, principal, feature_id, crs, at)
            if feature is None:
                feature = await run_in_threadpool(
                    store.item, request.app.state.reader, collection, principal, feature_id, crs, at
                )
            if feature is None:
                raise Problem(404, f"no feature {feature_id!r} in collection {collection.id}")
            base = f"{_base(request)}/collections/{collection.id}"
            links = [
                _link(str(request.url), "self", GEOJSON, "This feature"),
                _link(base, "collection", JSON, "The collection"),
            ]
            return cached_response(
                request,
                {**feature, "links": links},  # the store's feature is shared: not changed
                principal,
                media_type=GEOJSON,
                collection=collection,
                headers={"Content-Crs": f"<{crs.uri}>"},
            )


# --- the API definition as OpenAPI 3.0 ---------------------------------------------------------


def _schema_30(node: Any) -> Any:
    """FastAPI writes OpenAPI 3.1 (JSON Schema 2020-12); rewrite what 3.0 spells otherwise."""
    if isinstance(node, list):
        return [_schema_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _schema_30(value) for key, value in node.items()}
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [item for item in any_of if item != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = {**rest[0], **node}
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("examples"), list):
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node[bound], bool):
            node[plain] = node[bound]
            node[bound] = True
    if "contentMediaType" in node:
        node.pop("contentMediaType")
        node.setdefault("format", "binary")
    return node


def _property_parameter(collection: Collection, name: str, type_: str) -> dict[str, Any]:
    schema = {
        "string": {"type": "string"},
        "integer": {"type": "integer"},
        "number": {"type": "number"},
        "boolean": {"type": "boolean"},
        "date-time": {"type": "string", "format": "date-time"},
    }[type_]
    return {
        "name": name,
        "in": "query",
        "required": False,
        "style": "form",
        "explode": False,
        "description": f"only {collection.id} whose {name} equals this",
        "schema": schema,
    }


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The app's OpenAPI document as 3.0, with one items path per collection that also
    lists the property filters (`?kind=...`) GDAL and QGIS look for there, and the routes'
    own problem declarations instead of FastAPI's generated 422s."""
    converted = without_fastapi_validation_errors(_schema_30(document))
    converted["openapi"] = "3.0.3"
    converted.pop("jsonSchemaDialect", None)
    converted.pop("webhooks", None)
    paths = converted.get("paths", {})
    template = paths.get("/collections/{collectionId}/items", {}).get("get")
    if template is not None:
        common = [p for p in template.get("parameters", []) if p.get("name") != "collectionId"]
        for collection in COLLECTIONS.values():
            operation = {
                **template,
                "summary": f"{collection.title}: features (GeoJSON)",
                "operationId": f"items_{collection.id}",
                "parameters": [
                    *common,
                    *(
                        _property_parameter(collection, p.name, p.type)
                        for p in collection.properties
                    ),
                ],
            }
            paths[f"/collections/{collection.id}/items"] = {"get": operation}
    return converted
