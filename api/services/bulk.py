"""Bulk writes through PostgreSQL COPY, used by every importer and the demo loader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd
import shapely
from sqlalchemy import Connection

WGS84_SRID = 4326


def ewkb_hex(geoms: Sequence[Any] | np.ndarray, srid: int = WGS84_SRID) -> np.ndarray:
    """Hex EWKB (with SRID) of shapely geometries, the text form COPY accepts for geometry;
    missing geometries become COPY's NULL."""
    hexes = shapely.to_wkb(
        shapely.set_srid(np.asarray(geoms), srid), hex=True, include_srid=True
    ).astype(object)
    hexes[shapely.is_missing(geoms)] = "\\N"
    return hexes


def select_columns(
    frame: pd.DataFrame, columns: list[str], defaults: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The named columns as object columns; absent ones are NULL, `defaults` fill gaps."""
    out = pd.DataFrame(index=frame.index)
    for name in columns:
        values = frame[name].astype(object) if name in frame.columns else None
        out[name] = values
        if defaults and name in defaults:
            out[name] = out[name].where(out[name].notna(), defaults[name])
    return out


def copy_frame(
    conn: Connection,
    table: str,
    frame: pd.DataFrame,
    geometry_columns: dict[str, int] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = 20_000,
) -> int:
    """COPY the columns of `frame` into `table` (same names) inside the caller's transaction.

    `geometry_columns` maps column name to SRID; those columns hold shapely geometries.
    `progress` is called with the number of rows written after each chunk.
    Returns the number of rows written.
    """
    geometry_columns = geometry_columns or {}
    column_list = ", ".join(f'"{name}"' for name in frame.columns)
    with (
        conn.connection.driver_connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy,
    ):
        for start in range(0, len(frame), chunk_rows):
            chunk = frame.iloc[start : start + chunk_rows]
            fields = [
                ewkb_hex(chunk[name].to_numpy(), geometry_columns[name])
                if name in geometry_columns
                else copy_text(chunk[name].to_numpy(dtype=object))
                for name in chunk.columns
            ]
            lines = fields[0].astype(object)
            for field_text in fields[1:]:
                lines = lines + "\t" + field_text.astype(object)
            copy.write("\n".join(lines) + "\n")
            if progress:
                progress(len(chunk))
    return len(frame)


_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_PLAIN_KINDS = {
    "string",
    "empty",
    "floating",
    "integer",
    "mixed-integer-float",
    "boolean",
    "datetime",
    "datetime64",
    "date",
}


def copy_text(values: np.ndarray) -> np.ndarray:
    """Values in COPY's text format: NULL as \\N, backslash and control characters escaped,
    dicts and lists as JSON."""
    series = pd.Series(values, dtype=object)
    missing = series.isna().to_numpy()
    if pd.api.types.infer_dtype(series, skipna=True) not in _PLAIN_KINDS:
        series = series.map(lambda v: orjson.dumps(v).decode() if isinstance(v, dict | list) else v)
    # Escaping one joined string runs at C speed; NUL cannot occur in PostgreSQL text, so it
    # is a safe separator (a value holding one is refused below rather than split).
    joined = "\0".join(map(str, series.to_numpy()))
    if joined.count("\0") != len(series) - 1:
        raise ValueError("a text value contains a NUL character, which PostgreSQL cannot store")
    for raw, escaped in _ESCAPES:
        joined = joined.replace(raw, escaped)
    out = np.array(joined.split("\0"), dtype=object) if len(series) else np.array([], object)
    out[missing] = "\\N"
    return out
