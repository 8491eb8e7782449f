"""Response classes: JSON via orjson, GeoJSON and RFC 7807 problem documents."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z


class FastJSONResponse(JSONResponse):
    """JSON encoded by orjson (numpy arrays, datetimes and Decimal-free rows serialise)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=ORJSON_OPTIONS, default=str)


class GeoJSONResponse(FastJSONResponse):
    media_type = "application/geo+json"


class ProblemResponse(FastJSONResponse):
    media_type = "application/problem+json"
