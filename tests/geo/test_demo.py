"""The demo world generator: exact tilings, real divisions, ids, plausibility, determinism.

Pure (no database). Most tests use the small world (county 433101); one builds the
full world once (~20 s).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import shapely

from geo.catalogue import INCIDENT_CATEGORIES
from geo.codes import validate_camera_gb_id
from geo.crs import convert_geometry
from geo.demo import INCIDENTS_PER_YEAR, SMALL_SCALE_COUNTY, World, build_world
from geo.demo.addresses import ADDRESS_PRECISIONS
from geo.demo.admin import plan_counties
from geo.demo.cameras import CAMERA_KINDS, CAMERA_OWNERS, CAMERA_STATUSES
from geo.demo.incidents import INCIDENT_CHANNELS
from geo.demo.names import village_short_name
from geo.demo.places import PLACE_KINDS
from geo.demo.roads import ROAD_CLASSES
from geo.reference import load_counties, load_divisions, load_prefecture

COLUMNS = {
    "counties": ["code", "name", "level", "parent_code", "geometry"],
    "townships": ["code", "name", "level", "parent_code", "geometry"],
    "villages": ["code", "name", "level", "parent_code", "geometry"],
    "grids": [
        "code",
        "name",
        "village_code",
        "kind",
        "households",
        "population",
        "worker_name",
        "worker_phone",
        "geometry",
    ],
    "roads": ["id", "road_class", "name", "geometry"],
    "key_places": ["id", "kind", "name", "geometry"],
    "cameras": [
        "gb_id",
        "name",
        "kind",
        "height_m",
        "azimuth_deg",
        "hfov_deg",
        "resolution_h_px",
        "range_m",
        "status",
        "owner",
        "installed_at",
        "county_code",
        "geometry",
    ],
    "incidents": ["category", "description", "channel", "reported_at", "address", "geometry"],
    "addresses": ["full_text", "components", "village_code", "precision", "geometry"],
}
# Square metres per square degree at Xiangxi's latitude (upper bound, lat >= 27.7°).
M2_PER_DEG2 = 111_320.0**2 * math.cos(math.radians(27.7))
LEVELS = [
    ("counties", "townships", "parent_code"),
    ("townships", "villages", "parent_code"),
    ("villages", "grids", "village_code"),
]


@pytest.fixture(scope="module")
def small() -> World:
    return build_world("small", seed=0)


@pytest.fixture(scope="module")
def small_metric(small: World) -> dict[str, np.ndarray]:
    """The admin/grid polygons converted back to EPSG:4546 vertex by vertex, i.e. the
    geometry as built (up to the ~1e-9 m round trip)."""
    return {
        name: convert_geometry(small.layers()[name].geometry.to_numpy(), "wgs84", "EPSG:4546")
        for name in ("counties", "townships", "villages", "grids")
    }


def _as_multi(geom: shapely.Geometry) -> shapely.Geometry:
    return geom if geom.geom_type == "MultiPolygon" else shapely.MultiPolygon([geom])


def test_layers_have_exactly_the_documented_columns_in_wgs84(small: World) -> None:
    for name, frame in small.layers().items():
        assert list(frame.columns) == COLUMNS[name], name
        assert frame.crs.to_epsg() == 4326, name
        assert shapely.is_valid(frame.geometry.to_numpy()).all(), name
        assert len(frame) > 0, name


@pytest.mark.parametrize("crs", ["lonlat", "metric"])
@pytest.mark.parametrize(("parent_layer", "child_layer", "key"), LEVELS)
def test_children_tile_their_parent_exactly(
    small: World, small_metric: dict, crs: str, parent_layer: str, child_layer: str, key: str
) -> None:
    parents = small.layers()[parent_layer]
    children = small.layers()[child_layer]
    if crs == "lonlat":
        parent_geoms, child_geoms, m2_per_unit = (
            parents.geometry.to_numpy(),
            children.geometry.to_numpy(),
            M2_PER_DEG2,
        )
    else:
        parent_geoms, child_geoms, m2_per_unit = (
            small_metric[parent_layer],
            small_metric[child_layer],
            1.0,
        )
    # No overlaps and matching (shared) vertices on every shared edge:
    assert shapely.coverage_is_valid(child_geoms)
    child_parent = children[key].to_numpy()
    for code, parent in zip(parents["code"], parent_geoms, strict=True):
        mine = child_geoms[child_parent == code]
        assert len(mine) > 0, code
        union = shapely.coverage_union_all(mine)
        # The union of the children is the parent, vertex for vertex ...
        assert shapely.equals_exact(
            shapely.normalize(_as_multi(union)), shapely.normalize(parent), tolerance=0
        ), code
        # ... so area differences are rounding noise, far below 1 m².
        gap_or_overlap = abs(shapely.area(mine).sum() - shapely.area(parent)) * m2_per_unit
        assert gap_or_overlap < 1.0, code
        assert shapely.area(shapely.symmetric_difference(union, parent)) * m2_per_unit < 1.0, code


def test_small_world_is_one_county_with_its_real_divisions(small: World) -> None:
    _, townships, villages = load_divisions()
    assert small.counties["code"].tolist() == [SMALL_SCALE_COUNTY]
    assert small.counties["name"].tolist() == ["吉首市"]
    real_t = townships[townships["parent_code"] == SMALL_SCALE_COUNTY]
    real_v = villages[villages["parent_code"].isin(real_t["code"])]
    assert small.townships["code"].tolist() == real_t["code"].tolist()  # each exactly once
    assert small.townships["name"].tolist() == real_t["name"].tolist()
    assert (small.townships["parent_code"] == SMALL_SCALE_COUNTY).all()
    assert small.villages["code"].tolist() == real_v["code"].tolist()
    assert small.villages["name"].tolist() == real_v["name"].tolist()
    assert small.villages["parent_code"].tolist() == real_v["parent_code"].tolist()
    assert set(small.townships["level"]) == {"township"}
    assert set(small.villages["level"]) == {"village"}


def test_urban_communities_are_small_and_rural_villages_larger(
    small: World, small_metric: dict
) -> None:
    area_km2 = shapely.area(small_metric["villages"]) / 1e6
    urban = small.villages["code"].str[-3:].astype(int) < 200
    assert 0.5 <= np.median(area_km2[urban]) <= 3.0
    assert np.median(area_km2[~urban]) > 3 * np.median(area_km2[urban])


def test_grid_codes_names_and_reading_order(small: World, small_metric: dict) -> None:
    grids = small.grids
    assert grids["code"].str.fullmatch(r"\d{15}").all()
    assert grids["code"].is_unique
    assert (grids["code"].str[:12] == grids["village_code"]).all()
    assert set(grids["village_code"]) == set(small.villages["code"])
    seq = grids["code"].str[12:].astype(int)
    for _, group in seq.groupby(grids["village_code"]):
        assert group.tolist() == list(range(1, len(group) + 1))
    # Reading order: rows of height sqrt(village area / grids) from the village's
    # northern edge, west to east within a row (EPSG:4546).
    villages = pd.Series(small_metric["villages"], index=small.villages["code"])
    parent = villages[grids["village_code"]].to_numpy()
    n_in_village = grids.groupby("village_code")["code"].transform("size").to_numpy()
    band = np.sqrt(shapely.area(parent) / n_in_village)
    centroids = shapely.centroid(small_metric["grids"])
    row = np.floor((shapely.bounds(parent)[:, 3] - shapely.get_y(centroids)) / band)
    key = pd.DataFrame({"v": grids["village_code"], "row": row, "x": shapely.get_x(centroids)})
    for _, group in key.groupby("v"):
        assert group.sort_values(["row", "x"]).index.tolist() == group.index.tolist()
    plain = grids["kind"] == "综合网格"
    short = small.villages.set_index("code")["name"].map(village_short_name)
    expected = short[grids["village_code"]].to_numpy() + "第" + seq.astype(str).to_numpy() + "网格"
    assert (grids["name"][plain].to_numpy() == expected[plain.to_numpy()]).all()
    assert grids["name"][~plain].str.endswith("专属网格").all()


def test_grid_attributes(small: World) -> None:
    grids = small.grids
    assert grids["households"].between(300, 500).all()
    assert (grids["population"] > grids["households"]).all()
    assert set(grids["kind"]) == {"综合网格", "专属网格"}
    assert 0 < (grids["kind"] == "专属网格").mean() < 0.05
    assert grids["worker_phone"].str.fullmatch(r"1990\d{7}").all()
    assert grids["worker_phone"].is_unique
    assert grids["worker_name"].str.len().between(2, 3).all()
    # Urban communities get more, smaller grids than rural villages.
    per_village = grids.groupby("village_code").size()
    urban = per_village.index.str[-3:].astype(int) < 200
    assert per_village[urban].mean() > 2 * per_village[~urban].mean()


def test_dedicated_grids_surround_their_place(small: World) -> None:
    dedicated = small.grids[small.grids["kind"] == "专属网格"]
    places = small.key_places.drop_duplicates("name").set_index("name").geometry
    place = places[dedicated["name"].str.removesuffix("专属网格")].to_numpy()
    assert shapely.contains(dedicated.geometry.to_numpy(), shapely.centroid(place)).all()


def test_cameras(small: World) -> None:
    cams = small.cameras
    assert cams["gb_id"].is_unique
    bad = [g for g in cams["gb_id"] if validate_camera_gb_id(g, SMALL_SCALE_COUNTY)]
    assert bad == []
    assert (cams["county_code"] == SMALL_SCALE_COUNTY).all()
    assert set(cams["kind"]) == set(CAMERA_KINDS)
    bullet = cams["kind"] == "bullet"
    assert cams.loc[bullet, "hfov_deg"].between(30, 110).all()
    assert (cams.loc[~bullet, "hfov_deg"] == 360).all()
    assert cams["azimuth_deg"].between(0, 360, inclusive="left").all()
    assert set(cams["resolution_h_px"]) <= {1280, 1920, 2560, 3840}
    assert (cams["range_m"].dropna() > 0).all()
    assert cams["range_m"].isna().mean() > 0.8
    not_online = (cams["status"] != "online").mean()
    assert 0.015 < not_online < 0.045
    assert set(cams["status"]) == set(CAMERA_STATUSES)
    assert set(cams["owner"]) == set(CAMERA_OWNERS)
    assert (cams["height_m"] > 0).all()
    assert cams["installed_at"].dt.tz is not None
    county = small.counties.geometry.iloc[0]
    assert shapely.contains(county, cams.geometry.to_numpy()).all()


def test_bullets_look_along_their_road(small: World) -> None:
    """Most bullet cameras near a road point along it (either direction, ±20°)."""
    cams = small.cameras[small.cameras["kind"] == "bullet"]
    roads_m = convert_geometry(small.roads.geometry.to_numpy(), "wgs84", "EPSG:4546")
    points_m = convert_geometry(cams.geometry.to_numpy(), "wgs84", "EPSG:4546")
    tree = shapely.STRtree(roads_m)
    which, dist = tree.query_nearest(points_m, return_distance=True, all_matches=False)
    near = dist < 12.0
    road = roads_m[which[1][near]]
    at = shapely.line_locate_point(road, points_m[near])
    a = shapely.line_interpolate_point(road, np.maximum(at - 2, 0))
    b = shapely.line_interpolate_point(road, at + 2)
    road_bearing = np.degrees(
        np.arctan2(shapely.get_x(b) - shapely.get_x(a), shapely.get_y(b) - shapely.get_y(a))
    )
    # Grid north of EPSG:4546 is within ~1° of true north here.
    diff = np.abs((cams["azimuth_deg"].to_numpy()[near] - road_bearing + 90) % 180 - 90)
    assert near.mean() > 0.5
    assert (diff < 20).mean() > 0.8


def test_incidents(small: World) -> None:
    incidents = small.incidents
    assert set(incidents["category"]) <= {c.code for c in INCIDENT_CATEGORIES}
    assert set(incidents["channel"]) == set(INCIDENT_CHANNELS)
    times = incidents["reported_at"]
    assert times.min() >= pd.Timestamp("2025-01-01", tz="Asia/Shanghai")
    assert times.max() < pd.Timestamp("2026-01-01", tz="Asia/Shanghai")
    assert times.is_monotonic_increasing
    weekday = times.dt.day_of_week
    assert (weekday < 5).sum() / 5 > (weekday >= 5).sum() / 2  # more per weekday than weekend day
    hour = times.dt.hour
    assert hour.between(8, 17).mean() > 0.5
    county = small.counties.geometry.iloc[0]
    assert shapely.contains(county, incidents.geometry.to_numpy()).all()
    assert 0.2 < incidents["address"].notna().mean() < 0.9
    assert (incidents["description"].str.len() > 0).all()


def test_traffic_accidents_happen_near_roads(small: World) -> None:
    traffic = small.incidents[small.incidents["category"] == "traffic"]
    roads = convert_geometry(small.roads.geometry.to_numpy(), "wgs84", "EPSG:4546")
    points = convert_geometry(traffic.geometry.to_numpy(), "wgs84", "EPSG:4546")
    _, dist = shapely.STRtree(roads).query_nearest(points, return_distance=True, all_matches=False)
    assert (dist < 20).mean() > 0.7


def test_incident_volumes_match_the_2018_report() -> None:
    assert set(INCIDENTS_PER_YEAR) <= {c.code for c in INCIDENT_CATEGORIES}
    assert sum(INCIDENTS_PER_YEAR.values()) == 82_000
    assert INCIDENTS_PER_YEAR["dispute"] == 11_703


def test_addresses_lie_in_their_village(small: World) -> None:
    addresses = small.addresses
    villages = small.villages.set_index("code").geometry
    inside = shapely.contains(
        villages[addresses["village_code"]].to_numpy(), addresses.geometry.to_numpy()
    )
    assert inside.all()
    assert set(addresses["precision"]) == set(ADDRESS_PRECISIONS)
    assert addresses["full_text"].is_unique
    assert addresses["full_text"].str.startswith("湖南省湘西土家族苗族自治州吉首市").all()
    assert not addresses["full_text"].str.contains("委员会|居委会|村委会").any()
    for components, text in zip(addresses["components"], addresses["full_text"], strict=True):
        parts = [components[k] for k in ("province", "prefecture", "county", "township")]
        if components["road"] is None:
            parts.append(components["village"])
        parts += [components[k] for k in ("road", "group", "house_number") if components[k]]
        assert "".join(parts) == text
    rural = addresses["full_text"].str.fullmatch(r".*村\d+组\d+号")
    assert rural.sum() > 1000


def test_village_short_names() -> None:
    assert village_short_name("龙潭社区居委会") == "龙潭社区"
    assert village_short_name("首车社区居民委员会") == "首车社区"
    assert village_short_name("默戎居委会") == "默戎社区"
    assert village_short_name("贺喜村委会") == "贺喜村"
    assert village_short_name("大井村") == "大井村"
    assert village_short_name("峒河社区") == "峒河社区"


def test_roads_and_key_places(small: World) -> None:
    roads = small.roads
    assert roads["id"].is_unique
    assert set(roads["road_class"]) == set(ROAD_CLASSES)
    assert set(shapely.get_type_id(roads.geometry.to_numpy())) <= {1, 5}
    places = small.key_places
    assert places["id"].is_unique
    assert set(places["kind"]) == set(PLACE_KINDS)
    assert (places["kind"] == "village_committee").sum() == len(small.villages)


def _assert_same_world(a: World, b: World) -> None:
    for name, frame in a.layers().items():
        other = b.layers()[name]
        assert len(frame) == len(other), name
        plain = [c for c in frame.columns if c not in ("geometry", "components")]
        pd.testing.assert_frame_equal(frame[plain], other[plain], obj=name)
        assert shapely.equals_exact(
            frame.geometry.to_numpy(), other.geometry.to_numpy(), 0
        ).all(), name


def test_same_seed_same_world(small: World) -> None:
    _assert_same_world(small, build_world("small", seed=0))


def test_other_seed_other_world() -> None:
    """Another seed moves the township seats, and with them everything built on them
    (every stage draws from streams keyed by the seed; planning alone is cheap)."""
    counties = load_counties()
    _, townships, villages = load_divisions()
    first = plan_counties(0, counties, townships, villages)[0]
    other = plan_counties(1, counties, townships, villages)[0]
    assert first.townships["code"].tolist() == other.townships["code"].tolist()
    assert np.abs(first.seats_xy - other.seats_xy).max() > 100.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        build_world("medium")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        build_world("small", seed=-1)


def test_full_world(small: World) -> None:
    stages: list[float] = []
    world = build_world("full", seed=0, progress=lambda stage, fraction: stages.append(fraction))
    assert stages == sorted(stages) and stages[-1] == 1.0
    assert len(world.counties) == 8 and len(world.townships) == 116 and len(world.villages) == 1797
    assert 9_000 <= len(world.grids) <= 11_000
    assert len(world.cameras) == 50_000
    assert world.cameras["gb_id"].is_unique
    assert (world.cameras["gb_id"].str[:6] == world.cameras["county_code"]).all()
    assert len(world.incidents) == 82_000
    assert (world.incidents["category"] == "dispute").sum() == 11_703
    counties = world.counties.geometry.to_numpy()
    assert shapely.coverage_is_valid(counties)
    # Every camera lies in its own county and in the real prefecture outline.
    own = world.counties.set_index("code").geometry[world.cameras["county_code"]].to_numpy()
    assert shapely.contains(own, world.cameras.geometry.to_numpy()).all()
    prefecture = load_prefecture()
    shapely.prepare(prefecture)
    assert shapely.covers(prefecture, world.cameras.geometry.to_numpy()).all()
    # Grids of neighbouring counties meet edge to edge: no overlaps anywhere.
    assert shapely.coverage_is_valid(world.grids.geometry.to_numpy())
    # The small world is exactly the full world's county 433101.
    part = world.grids[world.grids["village_code"].str.startswith(SMALL_SCALE_COUNTY)]
    assert part["code"].tolist() == small.grids["code"].tolist()
    assert shapely.equals_exact(part.geometry.to_numpy(), small.grids.geometry.to_numpy(), 0).all()
    cams = world.cameras[world.cameras["county_code"] == SMALL_SCALE_COUNTY]
    assert cams["gb_id"].tolist() == small.cameras["gb_id"].tolist()
