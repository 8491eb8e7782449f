"""Request bodies shared by the write routes: GeoJSON geometries and property objects."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import shapely
from pydantic import BaseModel, ValidationError

from api.errors import Problem
from geo.crs import convert_geometry


def parse_geometry(geometry: dict[str, Any], coord_sys: str) -> shapely.Geometry:
    """A GeoJSON geometry in `coord_sys` as a flat shapely geometry in WGS84."""
    try:
        shape = shapely.force_2d(shapely.from_geojson(orjson.dumps(geometry)))
    except shapely.errors.GEOSException as exc:
        raise Problem(
            422, f"invalid geometry: {exc}", errors=[{"field": "geometry", "reason": str(exc)}]
        ) from None
    coords = shapely.get_coordinates(shape)
    if not (
        np.isfinite(coords).all()
        and (np.abs(coords[:, 0]) <= 180).all()
        and (np.abs(coords[:, 1]) <= 90).all()
    ):
        raise Problem(
            422,
            "geometry coordinates must be lon in [-180, 180] and lat in [-90, 90]",
            errors=[{"field": "geometry", "reason": "coordinates out of range"}],
        )
    if coord_sys != "wgs84":
        shape = convert_geometry(shape, coord_sys, "wgs84", max_segment_m=50.0)
    return shape


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
