"""Row-level checks shared by every writer: all errors are collected, nothing is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import shapely

from api.errors import GridcoverError


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
        """Text cells must not hold NUL, which PostgreSQL text cannot store."""
        for name in frame.columns:
            column = frame[name]
            if column.dtype != object or name == "geometry":
                continue
            has_nul = column.map(lambda v: isinstance(v, str) and "\x00" in v).to_numpy(bool)
            self.add(has_nul, name, "contains a NUL character", frame)

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
