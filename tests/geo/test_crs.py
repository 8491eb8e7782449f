"""Tests for geo.crs: GCJ-02 / BD-09 / EPSG conversions (pure, no database)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from geo import crs

# Published vectors of the eviltransform test suite (googollee/eviltransform,
# go/transform_test.go, also php/tests/EvilTransformTest.php):
# (wgs_lat, wgs_lon, gcj_lat, gcj_lon)
EVILTRANSFORM_VECTORS = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]

XIANGXI = (109.1, 110.5, 27.6, 29.7)  # lon_min, lon_max, lat_min, lat_max (degrees)
# The GCJ-02 box shrunk by 0.05 degrees: within ~1 km of the box edge the inverse of
# the box rule itself is ambiguous (see gcj02_to_wgs84); China's land is far inside.
CHINA = (72.06, 137.78, 0.88, 55.77)
SYSTEMS = ["wgs84", "cgcs2000", "gcj02", "bd09", "EPSG:4546", "EPSG:3857", "EPSG:4490"]


def _metres(lon1, lat1, lon2, lat2):
    """Small distances in metres (equirectangular; exact enough below 1 km)."""
    lat = np.radians((np.asarray(lat1) + np.asarray(lat2)) / 2)
    dx = np.radians(np.asarray(lon2) - np.asarray(lon1)) * np.cos(lat) * 6378137.0
    dy = np.radians(np.asarray(lat2) - np.asarray(lat1)) * 6378137.0
    return np.hypot(dx, dy)


def _points(seed: int, box: tuple[float, float, float, float], n: int = 10_000):
    rng = np.random.default_rng(seed)
    return rng.uniform(box[0], box[1], n), rng.uniform(box[2], box[3], n)


def _reference_wgs_to_gcj(lon: float, lat: float) -> tuple[float, float]:
    """The common scalar formula, written plainly, to check the optimised kernel."""
    if not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271):
        return lon, lat
    x, y = lon - 105.0, lat - 35.0
    pi = math.pi
    d = 20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)
    t_lat = d + 20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)
    t_lat += 160.0 * math.sin(y / 12.0 * pi) + 320.0 * math.sin(y * pi / 30.0)
    t_lat = t_lat * 2.0 / 3.0 - 100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y
    t_lat += 0.2 * math.sqrt(abs(x))
    t_lon = d + 20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)
    t_lon += 150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)
    t_lon = t_lon * 2.0 / 3.0 + 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y
    t_lon += 0.1 * math.sqrt(abs(x))
    a, ee = 6378245.0, 0.00669342162296594323
    rad = lat / 180.0 * pi
    magic = 1 - ee * math.sin(rad) ** 2
    sq = math.sqrt(magic)
    dlat = (t_lat * 180.0) / ((a * (1 - ee)) / (magic * sq) * pi)
    dlon = (t_lon * 180.0) / (a / sq * math.cos(rad) * pi)
    return lon + dlon, lat + dlat


# --- reference vectors -------------------------------------------------------------


@pytest.mark.parametrize(("wlat", "wlon", "glat", "glon"), EVILTRANSFORM_VECTORS)
def test_eviltransform_vectors_forward(wlat, wlon, glat, glon):
    lon, lat = crs.convert(wlon, wlat, "wgs84", "gcj02")
    assert lon == pytest.approx(glon, abs=1e-11)
    assert lat == pytest.approx(glat, abs=1e-11)


@pytest.mark.parametrize(("wlat", "wlon", "glat", "glon"), EVILTRANSFORM_VECTORS)
def test_eviltransform_vectors_exact_inverse(wlat, wlon, glat, glon):
    lon, lat = crs.convert(glon, glat, "gcj02", "wgs84")
    # eviltransform's own exact inverse promises < 0.5 m; ours is far tighter
    assert _metres(lon, lat, wlon, wlat) < 1e-4


def test_kernel_matches_plain_formula():
    lon, lat = _points(7, CHINA, 2_000)
    got_lon, got_lat = crs.convert(lon, lat, "wgs84", "gcj02")
    ref = np.array(
        [_reference_wgs_to_gcj(float(a), float(b)) for a, b in zip(lon, lat, strict=True)]
    )
    assert np.abs(got_lon - ref[:, 0]).max() < 1e-12
    assert np.abs(got_lat - ref[:, 1]).max() < 1e-12


def test_gcj_offset_size_in_xiangxi():
    # DESIGN.md: the GCJ-02 shift is ~550-600 m in Xiangxi
    lon, lat = _points(3, (109.2, 110.4, 27.75, 29.6))
    glon, glat = crs.convert(lon, lat, "wgs84", "gcj02")
    d = _metres(lon, lat, glon, glat)
    assert d.min() > 520 and d.max() < 620


def test_bd09_known_offset():
    # BD-09 adds ~0.0065/0.006 degrees (roughly 1 km) on top of GCJ-02.
    lon, lat = crs.convert(109.7, 28.3, "gcj02", "bd09")
    assert lon - 109.7 == pytest.approx(0.0065, abs=0.0006)
    assert lat - 28.3 == pytest.approx(0.006, abs=0.0006)


# --- round trips -----------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), region=st.sampled_from([XIANGXI, CHINA]))
def test_round_trip_wgs_gcj_wgs(seed, region):
    lon, lat = _points(seed, region)
    back = crs.convert(*crs.convert(lon, lat, "wgs84", "gcj02"), "gcj02", "wgs84")
    err = _metres(lon, lat, *back)
    assert err.max() < 0.01  # requirement < 0.5 m, aim < 1 cm
    assert np.abs(back[0] - lon).max() < 1e-9


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), region=st.sampled_from([XIANGXI, CHINA]))
def test_round_trip_gcj_wgs_gcj(seed, region):
    glon, glat = _points(seed, region)
    forth = crs.convert(*crs.convert(glon, glat, "gcj02", "wgs84"), "wgs84", "gcj02")
    assert _metres(glon, glat, *forth).max() < 0.01


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), region=st.sampled_from([XIANGXI, CHINA]))
def test_round_trip_bd09(seed, region):
    lon, lat = _points(seed, region)
    back = crs.convert(*crs.convert(lon, lat, "wgs84", "bd09"), "bd09", "wgs84")
    assert _metres(lon, lat, *back).max() < 0.01
    back = crs.convert(*crs.convert(lon, lat, "gcj02", "bd09"), "bd09", "gcj02")
    assert _metres(lon, lat, *back).max() < 0.01
    forth = crs.convert(*crs.convert(lon, lat, "bd09", "gcj02"), "gcj02", "bd09")
    assert _metres(lon, lat, *forth).max() < 0.01


@settings(max_examples=200, deadline=None)
@given(
    lon=st.floats(XIANGXI[0], XIANGXI[1]),
    lat=st.floats(XIANGXI[2], XIANGXI[3]),
    dst=st.sampled_from(SYSTEMS),
)
def test_round_trip_scalars_all_systems(lon, lat, dst):
    x, y = crs.convert(lon, lat, "wgs84", dst)
    assert isinstance(x, float) and isinstance(y, float)
    back = crs.convert(x, y, dst, "wgs84")
    assert _metres(lon, lat, *back) < 0.01


def test_bd09_exact_inverse_beats_closed_form():
    # The closed-form BD-09 inverse is ~1 m off; ours must reproduce the BD-09 input.
    lon, lat = _points(11, CHINA, 50_000)
    blon, blat = crs.gcj02_to_bd09(lon, lat)
    x, y = blon - 0.0065, blat - 0.006
    z = np.hypot(x, y) - 0.00002 * np.sin(y * math.pi * 3000 / 180)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * math.pi * 3000 / 180)
    closed = z * np.cos(theta), z * np.sin(theta)
    ours = crs.convert(blon, blat, "bd09", "gcj02")
    assert _metres(lon, lat, *closed).max() > 0.1
    assert _metres(lon, lat, *ours).max() < 0.001


# --- out of China, identity, shapes, NaN ------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat"),
    [
        (139.69, 35.69),
        (-0.13, 51.51),
        (0.0, 0.0),
        (72.0, 30.0),
        (138.0, 30.0),
        (110.0, 0.5),
        (110.0, 56.0),
        (-109.7, 28.3),
        (109.7, -28.3),
    ],
)
def test_out_of_china_is_identity(lon, lat):
    assert crs.convert(lon, lat, "wgs84", "gcj02") == (lon, lat)
    assert crs.convert(lon, lat, "gcj02", "wgs84") == (lon, lat)
    arr = crs.convert(np.array([lon, 109.7]), np.array([lat, 28.3]), "wgs84", "gcj02")
    assert (arr[0][0], arr[1][0]) == (lon, lat)
    assert arr[0][1] != 109.7


def test_cgcs2000_and_epsg4490_are_wgs84():
    lon, lat = _points(5, XIANGXI, 100)
    for name in ("cgcs2000", "EPSG:4490", "epsg:4326"):
        x, y = crs.convert(lon, lat, "wgs84", name)
        np.testing.assert_array_equal(x, lon)
        np.testing.assert_array_equal(y, lat)


@pytest.mark.parametrize("src", SYSTEMS)
@pytest.mark.parametrize("dst", SYSTEMS)
def test_arrays_and_scalars_agree(src, dst):
    lon, lat = _points(13, XIANGXI, 25)
    if src.startswith("EPSG:") and src not in ("EPSG:4490",):
        lon, lat = crs.convert(lon, lat, "wgs84", src)
    x, y = crs.convert(lon, lat, src, dst)
    assert isinstance(x, np.ndarray) and x.shape == lon.shape and x.dtype == np.float64
    for i in range(len(lon)):
        xs, ys = crs.convert(float(lon[i]), float(lat[i]), src, dst)
        assert isinstance(xs, float)
        assert xs == pytest.approx(x[i], abs=1e-12, rel=1e-13)
        assert ys == pytest.approx(y[i], abs=1e-12, rel=1e-13)


def test_shapes_broadcast_and_no_aliasing():
    lon = np.full((3, 4), 109.7)
    x, y = crs.convert(lon, 28.3, "wgs84", "gcj02")
    assert x.shape == y.shape == (3, 4)
    x, y = crs.convert([109.7, 109.8], [28.3, 28.4], "gcj02", "wgs84")
    assert isinstance(x, np.ndarray) and x.shape == (2,)
    src = np.array([109.7, 109.8])
    same, _ = crs.convert(src, src, "wgs84", "cgcs2000")
    same[0] = 0.0
    assert src[0] == 109.7
    empty = crs.convert(np.array([]), np.array([]), "gcj02", "wgs84")
    assert empty[0].shape == (0,)
    x, y = crs.convert(np.float32(109.7), 28.3, "wgs84", "gcj02")
    assert isinstance(x, float)


@pytest.mark.parametrize("src", SYSTEMS)
@pytest.mark.parametrize("dst", SYSTEMS)
def test_non_finite_propagates_as_nan(src, dst):
    lon = np.array([np.nan, np.inf, 109.7, -np.inf, 109.7])
    lat = np.array([28.3, 28.3, np.nan, 28.3, 28.3])
    if src.startswith("EPSG:") and src != "EPSG:4490":
        lon[[0, 1, 2, 3, 4]] = [np.nan, np.inf, 400000.0, -np.inf, 400000.0]
        lat[[2, 4]] = [np.nan, 3_130_000.0]
    x, y = crs.convert(lon, lat, src, dst)
    assert np.isnan(x[:4]).all() and np.isnan(y[:4]).all()
    assert np.isfinite(x[4]) and np.isfinite(y[4])
    xs, ys = crs.convert(float("nan"), 28.3, src, dst)
    assert math.isnan(xs) and math.isnan(ys)


# --- metric CRS ------------------------------------------------------------------


def _meridian_arc_cgcs2000(lat_deg: float) -> float:
    """Meridian arc length (m) from the equator on the CGCS2000 ellipsoid, integrated
    numerically (Simpson), independent of PROJ."""
    a, f = 6378137.0, 1 / 298.257222101
    e2 = f * (2 - f)
    phi = np.linspace(0.0, math.radians(lat_deg), 20_001)
    m = a * (1 - e2) / (1 - e2 * np.sin(phi) ** 2) ** 1.5
    h = phi[1] - phi[0]
    return float(h / 3 * (m[0] + m[-1] + 4 * m[1:-1:2].sum() + 2 * m[2:-1:2].sum()))


def test_epsg4546_known_point_on_central_meridian():
    # On the central meridian 111E: x = false easting 500000, y = meridian arc (k0 = 1).
    assert crs.METRIC_EPSG == 4546
    x, y = crs.to_metric(111.0, 28.0)
    assert x == pytest.approx(500_000.0, abs=1e-6)
    assert y == pytest.approx(_meridian_arc_cgcs2000(28.0), abs=0.001)
    lon, lat = crs.from_metric(x, y)
    assert (lon, lat) == pytest.approx((111.0, 28.0), abs=1e-10)


def test_metric_distances_in_xiangxi():
    # Jishou area: 0.01 degree of latitude ~ 1108.6 m on the ellipsoid (GK scale at
    # 1.3 degrees off the central meridian adds ~2e-4).
    x1, y1 = crs.to_metric(109.7, 28.3)
    x2, y2 = crs.to_metric(109.7, 28.31)
    assert math.hypot(x2 - x1, y2 - y1) == pytest.approx(1108.6, rel=5e-4)
    assert 360_000 < x1 < 400_000


def test_epsg_to_epsg_direct():
    x, y = crs.convert(109.7, 28.3, "wgs84", "EPSG:3857")
    x2, y2 = crs.convert(x, y, "EPSG:3857", "EPSG:4546")
    assert (x2, y2) == pytest.approx(crs.to_metric(109.7, 28.3), abs=1e-3)


# --- parse_coord_sys ---------------------------------------------------------------


def test_parse_coord_sys_normalises():
    assert crs.COORD_SYSTEMS == ("wgs84", "cgcs2000", "gcj02", "bd09")
    assert crs.parse_coord_sys("WGS84") == "wgs84"
    assert crs.parse_coord_sys(" Gcj02 ") == "gcj02"
    assert crs.parse_coord_sys("epsg:4546") == "EPSG:4546"
    assert crs.parse_coord_sys("EPSG:04326") == "EPSG:4326"
    for name in crs.COORD_SYSTEMS:
        assert crs.parse_coord_sys(name, allow_epsg=False) == name


def test_unknown_coord_sys_message():
    with pytest.raises(crs.UnknownCoordSys) as exc:
        crs.parse_coord_sys("xyz")
    assert str(exc.value) == (
        "unknown coord_sys 'xyz': use wgs84, cgcs2000, gcj02, bd09 or EPSG:<code>"
    )
    assert isinstance(exc.value, ValueError)
    with pytest.raises(crs.UnknownCoordSys, match=r"use wgs84, cgcs2000, gcj02 or bd09$"):
        crs.parse_coord_sys("EPSG:4546", allow_epsg=False)
    with pytest.raises(crs.UnknownCoordSys, match="EPSG:999999 is not known"):
        crs.parse_coord_sys("EPSG:999999")
    for bad in ("", "wgs 84", "EPSG:", "EPSG:abc", "gcj-02"):
        with pytest.raises(crs.UnknownCoordSys):
            crs.parse_coord_sys(bad)
    with pytest.raises(crs.UnknownCoordSys):
        crs.convert(1.0, 2.0, "xyz", "wgs84")


# --- geometries ------------------------------------------------------------------


def test_convert_geometry_vertex_by_vertex():
    poly = shapely.Polygon([(109.5, 28.2), (109.6, 28.2), (109.6, 28.3), (109.5, 28.3)])
    out = crs.convert_geometry(poly, "gcj02", "wgs84")
    assert shapely.get_num_coordinates(out) == shapely.get_num_coordinates(poly)
    ex, ey = crs.convert(*np.asarray(poly.exterior.coords).T, "gcj02", "wgs84")
    np.testing.assert_allclose(np.asarray(out.exterior.coords), np.column_stack([ex, ey]))
    arr = crs.convert_geometry(
        np.array([poly, None, shapely.Point(109.7, 28.3, 12.5)]), "wgs84", "gcj02"
    )
    assert arr[1] is None
    assert arr[2].has_z and arr[2].z == 12.5
    assert crs.convert_geometry(shapely.Polygon(), "wgs84", "gcj02").is_empty


def test_segmentize_then_convert_bounds_segment_length():
    # a 7.7 km straight edge, like the longest county-outline edges
    line = shapely.LineString([(109.60, 28.30), (109.67, 28.33)])
    dense = crs.segmentize_then_convert(line, "wgs84", "EPSG:4546")
    seg = np.diff(shapely.get_coordinates(dense), axis=0)
    assert np.hypot(seg[:, 0], seg[:, 1]).max() <= 50.0
    assert shapely.get_num_coordinates(dense) > 150
    # densified in the metric CRS, converting back keeps segments <= 50 m as well
    back = crs.segmentize_then_convert(dense, "EPSG:4546", "gcj02", max_segment_m=50)
    coords = shapely.get_coordinates(back)
    d = _metres(coords[:-1, 0], coords[:-1, 1], coords[1:, 0], coords[1:, 1])
    assert d.max() <= 50.0
    with pytest.raises(ValueError):
        crs.convert_geometry(line, "wgs84", "gcj02", max_segment_m=0)


def test_straight_metric_edge_bends_in_lonlat():
    # DESIGN.md, Coordinates: a ~10 km E-W edge straight in EPSG:4546 is a curve in
    # lon/lat; its true midpoint sits ~1 m off the naive 2-vertex lon/lat edge.
    a, b = crs.to_metric(109.3, 28.0), crs.to_metric(109.4, 28.0)
    edge = shapely.LineString([a, b])
    mid = shapely.Point(crs.from_metric((a[0] + b[0]) / 2, (a[1] + b[1]) / 2))
    naive = crs.convert_geometry(edge, "EPSG:4546", "wgs84")
    dense = crs.segmentize_then_convert(edge, "EPSG:4546", "wgs84")
    deg_to_m = 111_000.0
    assert naive.distance(mid) * deg_to_m > 0.5
    assert dense.distance(mid) * deg_to_m < 0.01


def test_straight_wgs_edge_bends_in_gcj02():
    # The GCJ-02 offset has a 1/3-degree period term: a 10 km edge bends ~2 m.
    line = shapely.LineString([(109.3, 28.0), (109.4, 28.0)])
    mid = shapely.Point(crs.convert(109.35, 28.0, "wgs84", "gcj02"))
    naive = crs.convert_geometry(line, "wgs84", "gcj02")
    dense = crs.segmentize_then_convert(line, "wgs84", "gcj02")
    assert naive.distance(mid) * 111_000.0 > 1.0
    assert dense.distance(mid) * 111_000.0 < 0.01


# --- speed -----------------------------------------------------------------------


def test_million_point_round_trip_is_vectorised():
    # Target is well under a second; the bound here only catches a regression to
    # per-point Python code (~10 s) on a busy CI machine.
    lon, lat = _points(1, XIANGXI, 1_000_000)
    t0 = time.perf_counter()
    back = crs.convert(*crs.convert(lon, lat, "wgs84", "gcj02"), "gcj02", "wgs84")
    elapsed = time.perf_counter() - t0
    assert np.abs(back[0] - lon).max() < 1e-9
    assert elapsed < 4.0


def test_large_mixed_batch_matches_single_points():
    # > one kernel slice, half the points outside China, 2-D shape
    rng = np.random.default_rng(21)
    lon = rng.uniform(60.0, 150.0, (200, 250))
    lat = rng.uniform(-10.0, 60.0, (200, 250))
    for src, dst in (("wgs84", "gcj02"), ("gcj02", "wgs84"), ("bd09", "wgs84")):
        x, y = crs.convert(lon, lat, src, dst)
        assert x.shape == lon.shape
        for i, j in zip(rng.integers(0, 200, 40), rng.integers(0, 250, 40), strict=True):
            xs, ys = crs.convert(float(lon[i, j]), float(lat[i, j]), src, dst)
            assert xs == pytest.approx(x[i, j], abs=1e-12)
            assert ys == pytest.approx(y[i, j], abs=1e-12)
    outside = crs.out_of_china(lon, lat)
    assert 0.3 < outside.mean() < 0.7
    x, y = crs.convert(lon, lat, "wgs84", "gcj02")
    np.testing.assert_array_equal(x[outside], lon[outside])
    assert (x[~outside] != lon[~outside]).all()


@pytest.mark.parametrize("dst", ["EPSG:4546", "EPSG:3857"])
def test_scalar_projection_of_impossible_points_is_nan(dst):
    for lon, lat in [(math.inf, 28.0), (109.7, math.nan), (200.0, 95.0)]:
        x, y = crs.convert(lon, lat, "wgs84", dst)
        assert math.isnan(x) and math.isnan(y)
        xs, ys = crs.convert(np.array([lon]), np.array([lat]), "wgs84", dst)
        assert np.isnan(xs[0]) and np.isnan(ys[0])


@pytest.mark.parametrize(
    ("src", "dst"), [(4326, 4546), (4546, 4326), (4326, 3857), (3857, 4326), (4546, 3857)]
)
def test_shared_transformers_answer_as_proj_chooses_in_every_thread(src, dst):
    """The pinned pipelines (cheap to start in a new request thread) give exactly what
    PROJ's own choice of operation gives, in any thread."""
    lon, lat = _points(21, XIANGXI, 50)
    if src != 4326:
        lon, lat = Transformer.from_crs(4326, src, always_xy=True).transform(lon, lat)
    want = Transformer.from_crs(f"EPSG:{src}", f"EPSG:{dst}", always_xy=True).transform(lon, lat)
    got: list[tuple[np.ndarray, np.ndarray]] = []
    workers = [
        threading.Thread(target=lambda: got.append(crs._transformer(src, dst).transform(lon, lat)))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(got) == 4
    for x, y in got:
        np.testing.assert_array_equal(x, want[0])
        np.testing.assert_array_equal(y, want[1])
