"""Bulk writes through PostgreSQL COPY, used by every importer and the demo loader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import shapely
from psycopg.types.json import Jsonb
from sqlalchemy import Connection

WGS84_SRID = 4326


def ewkb_hex(geoms: Sequence[Any] | np.ndarray, srid: int = WGS84_SRID) -> np.ndarray:
    """Hex EWKB (with SRID) of shapely geometries, the text form COPY accepts for geometry."""
    return shapely.to_wkb(shapely.set_srid(np.asarray(geoms), srid), hex=True, include_srid=True)


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
    columns = list(frame.columns)
    encoded = {
        name: ewkb_hex(frame[name].to_numpy(), geometry_columns[name])
        if name in geometry_columns
        else frame[name].to_numpy(dtype=object)
        for name in columns
    }
    column_list = ", ".join(f'"{name}"' for name in columns)
    cursor = conn.connection.driver_connection.cursor()
    written = 0
    with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
        for start in range(0, len(frame), chunk_rows):
            stop = min(start + chunk_rows, len(frame))
            for i in range(start, stop):
                copy.write_row([_cell(encoded[name][i]) for name in columns])
            written = stop
            if progress:
                progress(stop - start)
    return written


def _cell(value: Any) -> Any:
    """None for every kind of missing value; COPY writes it as NULL."""
    if isinstance(value, dict | list):
        return Jsonb(value)
    if value is None or pd.isna(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
