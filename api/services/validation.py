"""Row-level checks shared by every writer: all errors are collected, nothing is written."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely

from api.errors import GridcoverError
from geo.reference import load_prefecture


class RowsRejected(GridcoverError):
    """Some rows are bad; `errors` lists each with its row index, field and reason."""

    def __init__(self, entity: str, errors: list[dict[str, Any]]) -> None:
        self.entity = entity
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(
            f"{entity}: row {first['row']} {first['field']}: {first['reason']}{more}; "
            "nothing was written"
        )


@dataclass
class RowErrors:
    """Collects `(row, field, reason)` for a frame, keyed by the frame's positional index."""

    entity: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, mask: np.ndarray, field_name: str, reason: str, frame: pd.DataFrame) -> None:
        for position in np.flatnonzero(mask):
            self.errors.append(
                {
                    "row": int(position),
                    "field": field_name,
                    "reason": reason,
                    "id": _row_label(frame, int(position)),
                }
            )

    def require_columns(self, frame: pd.DataFrame, columns: list[str]) -> None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise RowsRejected(
                self.entity,
                [{"row": 0, "field": name, "reason": "column missing"} for name in missing],
            )

    def require_values(self, frame: pd.DataFrame, columns: list[str]) -> None:
        for name in columns:
            self.add(frame[name].isna().to_numpy(), name, "value missing", frame)

    def check_pattern(self, frame: pd.DataFrame, column: str, pattern: str, reason: str) -> None:
        values = frame[column].astype("string")
        self.add(~values.str.fullmatch(pattern).fillna(False).to_numpy(bool), column, reason, frame)

    def check_choice(self, frame: pd.DataFrame, column: str, allowed: tuple[str, ...]) -> None:
        bad = ~frame[column].isin(allowed).to_numpy()
        self.add(bad, column, "must be one of " + ", ".join(allowed), frame)

    def check_unique(self, frame: pd.DataFrame, column: str) -> None:
        self.add(
            frame[column].duplicated(keep="first").to_numpy(),
            column,
            "duplicate value in this file",
            frame,
        )

    def check_text(self, frame: pd.DataFrame) -> None:
        """Text cells must be printable: no NUL (PostgreSQL text cannot store it), no other
        control character (terminal escapes in a report or a CSV export), no lone
        surrogate (not encodable)."""
        for name in frame.columns:
            column = frame[name]
            if name == "geometry" or not (
                column.dtype == object or pd.api.types.is_string_dtype(column.dtype)
            ):
                continue
            reasons = column.map(lambda v: unprintable(v) if isinstance(v, str) else None)
            for position in np.flatnonzero(reasons.notna().to_numpy()):
                self.errors.append(
                    {
                        "row": int(position),
                        "field": name,
                        "reason": reasons.iloc[position],
                        "id": _row_label(frame, int(position)),
                    }
                )

    def check_geometry(self, frame: pd.DataFrame, column: str, types: tuple[str, ...]) -> None:
        geoms = frame[column].to_numpy()
        missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        self.add(missing, column, "geometry missing or empty", frame)
        present = ~missing
        type_names = np.asarray(shapely.get_type_id(geoms))
        wrong_type = present & ~np.isin(type_names, [_TYPE_IDS[t] for t in types])
        self.add(wrong_type, column, "geometry must be " + " or ".join(types), frame)
        invalid = present & ~wrong_type & ~shapely.is_valid(geoms)
        for position in np.flatnonzero(invalid):
            self.errors.append(
                {
                    "row": int(position),
                    "field": column,
                    "reason": "invalid geometry: " + shapely.is_valid_reason(geoms[position]),
                    "id": _row_label(frame, int(position)),
                }
            )

    def raise_if_any(self) -> None:
        if self.errors:
            self.errors.sort(key=lambda e: e["row"])
            raise RowsRejected(self.entity, self.errors)


_TYPE_IDS = {"Point": 0, "LineString": 1, "Polygon": 3, "MultiLineString": 5, "MultiPolygon": 6}


def _row_label(frame: pd.DataFrame, position: int) -> str | None:
    for key in ("code", "gb_id", "id"):
        if key in frame.columns:
            value = frame[key].iloc[position]
            return None if pd.isna(value) else str(value)
    return None


def as_multi(geoms: np.ndarray) -> np.ndarray:
    """Promote Polygons to MultiPolygons and LineStrings to MultiLineStrings, vectorised."""
    geoms = np.asarray(geoms, dtype=object)
    type_ids = shapely.get_type_id(geoms)
    out = geoms.copy()
    polygons = type_ids == 3
    out[polygons] = shapely.multipolygons(geoms[polygons, np.newaxis])
    lines = type_ids == 1
    out[lines] = shapely.multilinestrings(geoms[lines, np.newaxis])
    return out


# C0 controls but tab, newline and carriage return; DEL and the C1 controls; lone surrogates.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def unprintable(text: str) -> str | None:
    """Why `text` cannot be stored as given (its first control character), or None.

    SQL-looking text is fine: every value is a bound parameter, so it is stored verbatim.
    """
    match = _UNPRINTABLE.search(text)
    if match is None:
        return None
    return f"holds the control character U+{ord(match.group()):04X} at position {match.start()}"


# The prefecture's outline is padded so that GCJ-02/BD-09 input (shifted up to ~1.2 km)
# counts too.
_SWAP_PAD_DEG = 0.02


def swapped_into_xiangxi(lon: Any, lat: Any) -> np.ndarray:
    """Which (lon, lat) pairs lie in Xiangxi once exchanged: the telltale of a client that
    sent latitude first. Xiangxi's longitudes (109-111) are no latitudes, so such a pair
    always fails the range check as given."""
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    prefecture = _padded_prefecture()
    west, south, east, north = prefecture.bounds
    with np.errstate(invalid="ignore"):
        candidates = (lat >= west) & (lat <= east) & (lon >= south) & (lon <= north)
    found = np.zeros(lon.shape, dtype=bool)
    if candidates.any():
        found[candidates] = shapely.covers(
            prefecture, shapely.points(lat[candidates], lon[candidates])
        )
    return found


def swap_hint(lon: float, lat: float) -> str:
    """The message for a pair `swapped_into_xiangxi` holds true."""
    return (
        f"lon/lat look swapped: ({float(lon)}, {float(lat)}) is no longitude/latitude, "
        f"but ({float(lat)}, {float(lon)}) lies in Xiangxi; send the longitude first"
    )


@functools.cache
def _padded_prefecture() -> shapely.Geometry:
    padded = load_prefecture().buffer(_SWAP_PAD_DEG)
    shapely.prepare(padded)
    return padded
