"""geo.camera: DORI ranges, FOV polygons and visibility, against closed forms and shapely."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Proj

from geo import camera
from geo.camera import (
    DEFAULT_HFOV_DEG,
    DORI_LEVELS,
    DORI_PPM,
    LENS_HFOV_DEG,
    SightIndex,
    dori_distance_m,
    effective_hfov_deg,
    fov_sectors,
    fov_sectors_by_level,
    grid_convergence_deg,
    is_active,
    level_ranges_m,
    visible_from,
)
from geo.crs import to_metric

# a point in Jishou (吉首), EPSG:4546 metres
X0, Y0 = to_metric(109.735, 28.314)


# --- DORI ------------------------------------------------------------------------------


def test_dori_constants():
    assert DORI_LEVELS == ("detect", "observe", "recognize", "identify")
    assert DORI_PPM == {"detect": 25.0, "observe": 62.5, "recognize": 125.0, "identify": 250.0}
    assert LENS_HFOV_DEG["dome"] == 90.0 and LENS_HFOV_DEG["ptz"] == 60.0
    assert DEFAULT_HFOV_DEG == {"bullet": 90.0, "dome": 360.0, "ptz": 360.0}


@given(
    st.integers(320, 8000),
    st.floats(1.0, 179.0),
    st.sampled_from(list(DORI_PPM.values())),
)
def test_dori_distance_is_the_formula(h_px, hfov, ppm):
    expected = h_px / (2.0 * ppm * math.tan(math.radians(hfov) / 2.0))
    assert dori_distance_m(h_px, hfov, ppm) == pytest.approx(expected, rel=1e-12)


def test_dori_distance_examples_and_bad_hfov():
    # 1920 px over 90 degrees: 38.4 m at 25 px/m, 3.84 m at 250 px/m
    assert dori_distance_m(1920, 90.0, 25.0) == pytest.approx(38.4)
    assert dori_distance_m(1920, 90.0, 250.0) == pytest.approx(3.84)
    assert np.isnan(dori_distance_m([1920, 1920], [0.0, 360.0], 25.0)).all()


def test_level_ranges_lens_rule_override_and_nesting():
    kind = np.array(["bullet", "dome", "ptz", "bullet", "bullet", "dome"])
    hfov = np.array([60.0, 360.0, 360.0, 200.0, 90.0, 120.0])
    res = np.full(6, 1920)
    override = np.array([np.nan, np.nan, np.nan, np.nan, 10.0, np.nan])
    r = level_ranges_m(kind, res, hfov, override)
    assert r.shape == (6, 4)
    ppm = np.array(list(DORI_PPM.values()))
    # a bullet uses its own HFOV; dome/PTZ discs their lens' nominal HFOV
    np.testing.assert_allclose(r[0], dori_distance_m(1920, 60.0, ppm))
    np.testing.assert_allclose(r[1], dori_distance_m(1920, 90.0, ppm))
    np.testing.assert_allclose(r[2], dori_distance_m(1920, 60.0, ppm))
    # a bullet stored with a 200 degree HFOV: the 90 degree rule
    np.testing.assert_allclose(r[3], dori_distance_m(1920, 90.0, ppm))
    # the override caps every level; NaN means no cap
    np.testing.assert_allclose(r[4], np.minimum(dori_distance_m(1920, 90.0, ppm), 10.0))
    # a dome stored with an HFOV below 180 uses it
    np.testing.assert_allclose(r[5], dori_distance_m(1920, 120.0, ppm))
    assert (np.diff(r, axis=1) <= 0).all()
    np.testing.assert_allclose(effective_hfov_deg(kind, hfov), [60, 90, 60, 90, 90, 120])


def test_is_active():
    assert is_active(["online", "offline", "fault"]).tolist() == [True, False, False]


# --- convergence ---------------------------------------------------------------------------


@pytest.mark.parametrize("lon,lat", [(109.2, 28.0), (110.4, 29.5), (111.0, 28.5)])
def test_grid_convergence_matches_proj(lon, lat):
    x, y = to_metric(lon, lat)
    expected = Proj("EPSG:4546").get_factors(lon, lat).meridian_convergence
    assert grid_convergence_deg(x, y) == pytest.approx(expected, abs=1e-4)


# --- FOV polygons ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.0, 359.9),
    st.floats(5.0, 360.0),
    st.floats(0.5, 500.0),
    st.sampled_from([2.0, 5.0, 10.0, 15.0]),
)
def test_sector_area_is_exact(azimuth, hfov, radius, step):
    poly = fov_sectors(X0, Y0, azimuth, hfov, radius, arc_step_deg=step)[0]
    assert shapely.is_valid(poly)
    exact = math.pi * radius**2 * min(hfov, 360.0) / 360.0
    # (GEOS area at northings of 3e6 m loses ~1e-9 m² to cancellation)
    assert shapely.area(poly) == pytest.approx(exact, rel=1e-7, abs=1e-8)
    # counter-clockwise exterior
    assert shapely.is_ccw(shapely.get_exterior_ring(poly))
    # within the documented band around the true arc
    d = np.hypot(*(shapely.get_coordinates(poly) - [X0, Y0]).T)
    assert d.max() <= radius * (1 + 0.0026 * (step / 10.0) ** 2) + 1e-6


def test_sector_shapes():
    fov = fov_sectors(
        [X0] * 4,
        [Y0] * 4,
        [90.0, 0.0, 0.0, 0.0],
        [90.0, 360.0, 60.0, 60.0],
        [100.0, 50.0, 0.0, np.nan],
        north="grid",
    )
    east, disc, zero, nan = fov
    # azimuth 90 (clockwise from grid north) looks east
    c = shapely.centroid(east)
    assert c.x - X0 > 40 and abs(c.y - Y0) < 1
    # a disc has no apex: the camera is strictly inside
    assert shapely.contains_properly(disc, shapely.Point(X0, Y0))
    assert shapely.area(disc) == pytest.approx(math.pi * 2500)
    assert zero.is_empty and nan.is_empty


def test_true_north_is_corrected():
    # west of 111E grid north points east of true north: a camera looking true north
    # looks slightly west of grid north
    gamma = grid_convergence_deg(X0, Y0)
    assert -1.5 < gamma < 0
    true_n = fov_sectors(X0, Y0, 0.0, 2.0, 1000.0)[0]
    grid_n = fov_sectors(X0, Y0, -gamma, 2.0, 1000.0, north="grid")[0]
    assert shapely.equals_exact(true_n, grid_n, 1e-6)


def test_by_level_is_nested():
    x = np.full(3, X0)
    y = np.full(3, Y0)
    ranges = level_ranges_m(["bullet", "dome", "ptz"], [1920, 2560, 3840], [60.0, 360.0, 360.0])
    fovs = fov_sectors_by_level(x, y, [10.0, 0.0, 0.0], [60.0, 360.0, 360.0], ranges)
    assert list(fovs) == list(DORI_LEVELS)
    for coarse, fine in itertools.pairwise(DORI_LEVELS):
        assert shapely.covers(shapely.buffer(fovs[coarse], 1e-6), fovs[fine]).all()


def test_vectorised_many():
    rng = np.random.default_rng(1)
    n = 2000
    hfov = rng.choice([30.0, 56.0, 90.0, 200.0, 360.0], n)
    r = rng.uniform(1, 300, n)
    x = X0 + rng.uniform(-1e4, 1e4, n)
    y = Y0 + rng.uniform(-1e4, 1e4, n)
    polys = fov_sectors(x, y, rng.uniform(0, 360, n), hfov, r)
    assert shapely.is_valid(polys).all()
    np.testing.assert_allclose(shapely.area(polys), np.pi * r**2 * hfov / 360.0, rtol=1e-7)


# --- visibility -------------------------------------------------------------------------------


def test_visible_from_levels_and_order():
    ranges = np.array([[100.0, 40.0, 20.0, 10.0]] * 4)
    cx = np.array([X0, X0, X0, X0 + 500])
    cy = np.array([Y0 - 15, Y0 - 15, Y0 - 50, Y0])
    az = np.array([0.0, 180.0, 0.0, 0.0])
    hfov = np.array([60.0, 60.0, 360.0, 360.0])
    d, b, lvl = visible_from(X0, Y0, cx, cy, az, hfov, ranges, north="grid")
    np.testing.assert_allclose(d, [15, 15, 50, 500])
    np.testing.assert_allclose(b, [0, 0, 0, 270], atol=1e-9)
    # 15 m straight ahead: recognize; looking away: unseen; disc at 50 m: detect; too far
    assert lvl.tolist() == [2, -1, 0, -1]


def test_visible_from_true_bearing():
    gamma = grid_convergence_deg(X0, Y0 - 20)
    _, b, lvl = visible_from(X0, Y0, [X0], [Y0 - 20], [gamma], [2.0], [[30, 30, 30, 30]])
    assert b[0] == pytest.approx(gamma % 360)
    assert lvl[0] == 3


@settings(max_examples=120, deadline=None)
@given(
    st.floats(0, 359.9),
    st.floats(10.0, 360.0),
    st.floats(5.0, 200.0),
    st.floats(0.0, 1.5),
    st.floats(0.0, 360.0),
)
def test_visible_from_agrees_with_polygons(azimuth, hfov, radius, dist_frac, bearing):
    """Away from the boundary (0.5 % of the range, 0.2 degrees) the exact rule and the
    polygon of fov_sectors agree."""
    px = X0 + radius * dist_frac * math.sin(math.radians(bearing))
    py = Y0 + radius * dist_frac * math.cos(math.radians(bearing))
    ranges = np.array([[radius, radius / 2, radius / 4, radius / 8]])
    _, b, lvl = visible_from(px, py, [X0], [Y0], [azimuth], [hfov], ranges, north="grid")
    poly = fov_sectors(X0, Y0, azimuth, hfov, radius, north="grid")[0]
    inside = shapely.contains_xy(poly, px, py)
    off = abs((bearing - azimuth + 180) % 360 - 180)
    near_edge = abs(dist_frac - 1.0) < 0.005 or (hfov < 360 and abs(off - hfov / 2) < 0.2)
    if dist_frac * radius > 1e-6 and not near_edge:
        assert inside == (lvl[0] >= 0)
    if dist_frac > 0.01:
        assert (b[0] - bearing + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.sampled_from([0, 2**31]))
def test_sight_index_finds_what_every_camera_checked_finds(seed, n, tree_from):
    """The index only picks candidates: over any cameras (some with no range) and any
    point, it answers exactly what `visible_from` answers over all of them, whether it
    scans its cameras or searches a tree of them."""
    rng = np.random.default_rng(seed)
    cx, cy = X0 + rng.uniform(-300, 300, n), Y0 + rng.uniform(-300, 300, n)
    az, hfov = rng.uniform(0, 360, n), rng.choice([30.0, 90.0, 200.0, 360.0], n)
    detect = rng.choice([np.nan, 0.0, 40.0, 150.0], n, p=[0.1, 0.1, 0.4, 0.4])
    ranges = detect[:, None] * np.array([1.0, 0.4, 0.2, 0.1])
    # points near cameras (on their boundary too), and one anywhere
    points = [(X0, Y0)]
    if n:
        pick, along = rng.integers(0, n, 30), np.radians(rng.uniform(0, 360, 30))
        reach = np.nan_to_num(detect[pick]) * rng.choice([0.5, 1.0], 30)
        px, py = cx[pick] + reach * np.sin(along), cy[pick] + reach * np.cos(along)
        points += zip(px.tolist(), py.tolist(), strict=True)
    index = SightIndex(cx, cy, az, hfov, ranges, tree_from=tree_from)
    for x, y in points:
        rows, distance, bearing, level = index.sees(x, y)
        d_all, b_all, l_all = visible_from(x, y, cx, cy, az, hfov, ranges)
        seen = np.flatnonzero((l_all >= 0) & (detect > 0))
        assert sorted(rows.tolist()) == seen.tolist()
        order = np.argsort(rows)
        assert distance[order].tolist() == d_all[seen].tolist()
        assert bearing[order].tolist() == b_all[seen].tolist()
        assert level[order].tolist() == l_all[seen].tolist()


def test_module_exports():
    for name in camera.__all__:
        assert hasattr(camera, name)
