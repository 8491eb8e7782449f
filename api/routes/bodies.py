"""Request bodies shared by the write routes: GeoJSON geometries and property objects."""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
import orjson
import shapely
from fastapi import Request
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, ValidationInfo

from api.errors import Problem
from api.services.validation import swap_hint, swapped_into_xiangxi, unprintable
from api.settings import DEFAULT_MAX_GEOMETRY_VERTICES
from geo.crs import convert_geometry

# How deep each accepted geometry type nests its positions, and what its innermost lists are.
_GEOMETRY_SHAPES = {
    "Point": (0, None),
    "MultiPoint": (1, None),
    "LineString": (1, "line"),
    "MultiLineString": (2, "line"),
    "Polygon": (2, "ring"),
    "MultiPolygon": (3, "ring"),
}


def parse_geometry(
    geometry: Any,
    coord_sys: str,
    *,
    max_vertices: int = DEFAULT_MAX_GEOMETRY_VERTICES,
) -> shapely.Geometry:
    """A GeoJSON geometry in `coord_sys` as a valid, flat shapely geometry in WGS84.

    Every position is checked before GEOS sees it, so that a 422 problem names the one
    at fault (`geometry.coordinates[0][3]`): finite numbers, exactly [lon, lat] (no
    height, no measure), in range (a latitude of 109 that is Xiangxi's longitude is
    called out as swapped), rings closed, at most `max_vertices` positions in all.
    """
    lon, lat, paths = _positions(geometry, max_vertices)
    bad = ~((np.abs(lon) <= 180) & (np.abs(lat) <= 90))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        swapped = swapped_into_xiangxi(lon[bad], lat[bad])
        reason = (
            swap_hint(lon[first], lat[first])
            if swapped.all()
            else f"({lon[first]}, {lat[first]}) is not lon in [-180, 180] and lat in [-90, 90]"
        )
        raise _geometry_problem(paths[first], reason)
    try:
        shape = shapely.from_geojson(orjson.dumps(geometry))
    except shapely.errors.GEOSException as exc:  # checked above; GEOS has the last word
        raise _geometry_problem("geometry", str(exc)) from None
    if not shape.is_valid:
        raise _geometry_problem("geometry", shapely.is_valid_reason(shape))
    if coord_sys != "wgs84":
        shape = convert_geometry(shape, coord_sys, "wgs84", max_segment_m=50.0)
    return shape


def max_vertices(request: Request) -> int:
    """The configured `GRIDCOVER_MAX_GEOMETRY_VERTICES` of the app serving `request`."""
    return int(request.app.state.settings.max_geometry_vertices)


def _geometry_problem(path: str, reason: str) -> Problem:
    return Problem(422, f"invalid {path}: {reason}", errors=[{"field": path, "reason": reason}])


def _positions(geometry: Any, max_vertices: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """lon, lat and the JSON path of every position of a GeoJSON geometry, checked."""
    if not isinstance(geometry, dict):
        raise _geometry_problem("geometry", "must be a GeoJSON geometry object")
    kind = geometry.get("type")
    if kind not in _GEOMETRY_SHAPES:
        if kind == "GeometryCollection":
            reason = "a GeometryCollection is not accepted; send a Multi* geometry"
        else:
            reason = f"must be one of {', '.join(_GEOMETRY_SHAPES)}, not {kind!r}"
        raise _geometry_problem("geometry.type", reason)
    depth, inner = _GEOMETRY_SHAPES[kind]
    found: list[tuple[float, float]] = []
    paths: list[str] = []

    def position(value: Any, path: str) -> None:
        if not isinstance(value, list) or len(value) < 2:
            raise _geometry_problem(path, "a position is [lon, lat]")
        if len(value) == 3:
            raise _geometry_problem(path, "a 3D position (with height); send [lon, lat]")
        if len(value) > 3:
            raise _geometry_problem(path, f"{len(value)} numbers (3D/M); send [lon, lat]")
        for number in value:
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise _geometry_problem(path, f"{number!r} is not a number")
            if not math.isfinite(number):
                raise _geometry_problem(path, f"{number} is not a finite number")
        if len(found) >= max_vertices:
            raise _geometry_problem(
                "geometry",
                f"more than {max_vertices} positions; at most {max_vertices} per geometry "
                "(GRIDCOVER_MAX_GEOMETRY_VERTICES): simplify it",
            )
        found.append((float(value[0]), float(value[1])))
        paths.append(path)

    def walk(value: Any, level: int, path: str) -> None:
        if level == 0:
            position(value, path)
            return
        if not isinstance(value, list):
            raise _geometry_problem(path, "must be an array")
        if not value and (level == depth or level > 1):
            raise _geometry_problem(path, "is empty")
        for i, item in enumerate(value):
            walk(item, level - 1, f"{path}[{i}]")
        if level == 1 and inner == "line" and len(value) < 2:
            raise _geometry_problem(path, "a line needs at least 2 positions")
        if level == 1 and inner == "ring":
            if len(value) < 4:
                raise _geometry_problem(
                    path,
                    f"a ring needs at least 4 positions, the first repeated last; not {len(value)}",
                )
            if value[0] != value[-1]:
                raise _geometry_problem(
                    path, "the ring is not closed: repeat its first position last"
                )

    walk(geometry.get("coordinates"), depth, "geometry.coordinates")
    coords = np.array(found, dtype=np.float64).reshape(-1, 2)
    return coords[:, 0], coords[:, 1], paths


def validated(model: type[BaseModel], properties: dict[str, Any]) -> dict[str, Any]:
    """`properties` checked by `model` (a 422 problem naming each bad field)."""
    try:
        return model(**properties).model_dump()
    except ValidationError as exc:
        errors = [
            {"field": "properties." + ".".join(map(str, e["loc"])), "reason": e["msg"]}
            for e in exc.errors()
        ]
        raise Problem(
            422, f"invalid {errors[0]['field']}: {errors[0]['reason']}", errors=errors
        ) from None


def refuse_uneditable(properties: dict[str, Any], editable: tuple[str, ...]) -> None:
    """422 naming each property a PATCH may not change."""
    unknown = sorted(set(properties) - set(editable))
    if unknown:
        raise Problem(
            422,
            f"cannot edit {', '.join(unknown)}; editable: " + ", ".join(editable),
            errors=[{"field": f"properties.{name}", "reason": "not editable"} for name in unknown],
        )


# -- text ---------------------------------------------------------------------------------
# What `printable_text` lets through, for the OpenAPI document.
PRINTABLE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"


def printable_text(value: str) -> str:
    """Refuse control characters (tab, newline and CR are fine) and lone surrogates with a
    ValueError. SQL-looking text is stored verbatim: every value is bound."""
    reason = unprintable(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def address_text(value: str) -> str:
    """An address without surrounding blanks; a ValueError unless it is printable, not
    blank, and holds a letter or a digit (Han characters are letters)."""
    stripped = printable_text(value).strip()
    if not stripped:
        raise ValueError("is blank")
    if not any(character.isalnum() for character in stripped):
        raise ValueError("holds no letter or digit; it is no address")
    return stripped


def _printable(value: Any) -> Any:
    # Before the str schema, so that the field's own length limits say "characters".
    return printable_text(value) if isinstance(value, str) else value


def _address(value: Any) -> Any:
    return address_text(value) if isinstance(value, str) else value


def refuse_swapped_lat(lat: Any, info: ValidationInfo) -> Any:
    """Pydantic before-validator of a `lat` declared after its `lon`: a ValueError saying
    so when the pair lies in Xiangxi only when swapped (the range check would only say
    that the latitude is out of range)."""
    lon = info.data.get("lon")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lon, lat))
    if numbers and abs(lat) > 90 and swapped_into_xiangxi(lon, lat)[0]:
        raise ValueError(swap_hint(lon, lat))
    return lat


_PRINTABLE_SCHEMA = Field(json_schema_extra={"pattern": PRINTABLE_PATTERN})
# Field types; give length limits with `Field(...)` where they are used.
PlainText = Annotated[str, BeforeValidator(_printable), _PRINTABLE_SCHEMA]
OptionalPlainText = Annotated[str | None, BeforeValidator(_printable), _PRINTABLE_SCHEMA]
OptionalAddress = Annotated[str | None, BeforeValidator(_address), _PRINTABLE_SCHEMA]
Latitude = Annotated[float | None, BeforeValidator(refuse_swapped_lat)]
