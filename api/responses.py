"""Response classes (JSON via orjson, GeoJSON, RFC 7807 problems) and the OpenAPI
declarations of what routes answer: `problems(*codes)` for a route's `responses=`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z
GEOJSON = "application/geo+json"
PROBLEM_JSON = "application/problem+json"


class FastJSONResponse(JSONResponse):
    """JSON encoded by orjson (numpy arrays, datetimes and Decimal-free rows serialise)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=ORJSON_OPTIONS, default=str)


class GeoJSONResponse(FastJSONResponse):
    media_type = GEOJSON


class ProblemResponse(FastJSONResponse):
    media_type = PROBLEM_JSON


# What every problem document holds (api.errors.Problem.to_dict); problems may add members
# of their own (`allowed_actions`, `errors_total`, ...), so others are allowed.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 7807 problem document",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "about:blank unless a URI names the kind"},
        "title": {"type": "string", "description": "the HTTP status phrase"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what went wrong and what to do about it"},
        "instance": {"type": "string", "description": "the path of the request"},
        "errors": {
            "type": "array",
            "description": "each bad field (query, path, header or body) or file row",
            "items": {
                "type": "object",
                "required": ["reason"],
                "properties": {
                    "field": {"type": "string"},
                    "in": {"type": "string"},
                    "row": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
# What each status means across the API; api/app.py decides 400 vs 422: a bad query, path
# or header parameter is 400, a bad body (JSON field or file row) 422.
PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "a query, path or header parameter is invalid (`errors` names it)",
    401: "no API key where one is needed, or not a live one",
    403: "the API key's role may not do this",
    404: "no such record",
    409: "the request conflicts with the record's state or a concurrent change",
    412: "If-Match names a version that is no longer current; read the record again",
    413: "the request body is larger than this endpoint takes",
    415: "not a file format gridcover reads",
    422: "the body is invalid (`errors` names each field or row); nothing was stored",
    503: "the database is unavailable or the request took too long; retry (Retry-After)",
}


def problem(description: str) -> dict[str, Any]:
    """One problem+json response declaration for a route's `responses=`."""
    return {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` declarations of the problems a route may answer, by status code."""
    return {code: problem(PROBLEM_DESCRIPTIONS[code]) for code in codes}


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "unchanged since the ETag sent in If-None-Match"}
}


def success(
    media_type: str, description: str, schema: dict[str, Any] | None = None, status: int = 200
) -> dict[int | str, dict[str, Any]]:
    """`responses=` declaration of a route's answer when its response class does not say
    what it sends (routes that build a `Response` themselves)."""
    return {
        status: {
            "description": description,
            "content": {media_type: {"schema": schema if schema is not None else {}}},
        }
    }


# RFC 7946 at the level every GeoJSON answer keeps (collections add their properties).
FEATURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "geometry", "properties"],
    "properties": {
        "type": {"type": "string", "enum": ["Feature"]},
        "geometry": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "properties": {"anyOf": [{"type": "object"}, {"type": "null"}]},
    },
}
FEATURE_COLLECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"type": "string", "enum": ["FeatureCollection"]},
        "features": {"type": "array", "items": FEATURE_SCHEMA},
        "numberMatched": {"type": "integer", "minimum": 0},
        "numberReturned": {"type": "integer", "minimum": 0},
    },
}


def without_fastapi_validation_errors(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (an OpenAPI document, changed in place) without the 422 responses FastAPI
    adds to every operation that takes parameters: bad parameters get a 400 problem and
    bad bodies a 422 problem here (api/app.py), and each route declares those itself."""
    generated = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema") == generated:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document
