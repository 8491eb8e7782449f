"""geo.assign: exact point -> grid location, checked against shapely.

The reference everywhere is shapely itself on the lon/lat polygons: a point belongs
to every grid that covers it (``intersects`` a point == ``covers``), the smallest
code wins. Distances are checked against shapely in EPSG:4546 after an independent
(geopandas/pyproj) conversion.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo import assign
from geo.assign import GridIndex
from geo.crs import METRIC_EPSG, convert_geometry, to_metric
from geo.reference import load_county

METRIC = f"EPSG:{METRIC_EPSG}"

# --- test data -----------------------------------------------------------------------


def voronoi_tiling(
    outline_lonlat: shapely.Geometry, n: int, seed: int, edge_max_m: float = 200.0
) -> tuple[np.ndarray, np.ndarray]:
    """An exact tiling of ``outline_lonlat`` by ~n grids: (codes, lon/lat polygons).

    Voronoi cells of random seeds (half of them clustered, like a town) are built in
    EPSG:4546 and noded once together with the outline, so neighbours share
    bit-identical vertices; edges are densified to ``edge_max_m`` and every vertex
    converted to WGS 84 on its own. A cell cut into several faces by the outline is
    a MultiPolygon. Codes are 15 digits in an order unrelated to position.
    """
    rng = np.random.default_rng(seed)
    outline = convert_geometry(shapely.segmentize(outline_lonlat, 0.002), "wgs84", METRIC)
    minx, miny, maxx, maxy = outline.bounds
    cx, cy = shapely.point_on_surface(outline).coords[0]
    xs = np.concatenate(
        [rng.uniform(minx, maxx, 4 * n), rng.normal(cx, 0.05 * (maxx - minx), 2 * n)]
    )
    ys = np.concatenate(
        [rng.uniform(miny, maxy, 4 * n), rng.normal(cy, 0.05 * (maxy - miny), 2 * n)]
    )
    inside = shapely.contains_xy(outline, xs, ys)
    uni = np.flatnonzero(inside[: 4 * n])[: n // 2]
    clu = 4 * n + np.flatnonzero(inside[4 * n :])[: n - n // 2]
    seeds = shapely.points(xs[np.r_[uni, clu]], ys[np.r_[uni, clu]])
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds)))
    lines = shapely.unary_union(
        np.concatenate([shapely.boundary(cells), [shapely.boundary(outline)]])
    )
    faces = shapely.get_parts(shapely.polygonize([shapely.segmentize(lines, edge_max_m)]))
    faces = faces[shapely.contains(outline, shapely.point_on_surface(faces))]
    _, owner = shapely.STRtree(seeds).query_nearest(shapely.point_on_surface(faces))
    srt = np.argsort(owner, kind="stable")
    faces, owner = faces[srt], owner[srt]
    counts = np.bincount(owner, minlength=len(seeds))
    used = np.flatnonzero(counts)
    multi = shapely.multipolygons(faces, indices=owner)
    single = faces[np.cumsum(counts) - counts][used]
    grids = np.where(counts[used] == 1, single, multi[used])
    grids = convert_geometry(grids, METRIC, "wgs84")
    codes = np.array(
        [f"433101{100 + int(k):03d}{rng.integers(0, 1000):03d}123" for k in range(len(grids))]
    )
    codes = codes[rng.permutation(len(grids))]
    return codes, grids


def square_tiling() -> tuple[np.ndarray, np.ndarray]:
    """Squares of 1/256 degree, half of them split along a diagonal into triangles.

    Every coordinate is a binary fraction, so points placed on edges, diagonals and
    vertices below are exactly on them. Codes run against position.
    """
    d = 1.0 / 256
    geoms = []
    for i in range(8):
        for j in range(6):
            x, y = 109.5 + i * d, 28.25 + j * d
            if (i + j) % 2:
                geoms.append(shapely.box(x, y, x + d, y + d))
            else:
                geoms.append(shapely.Polygon([(x, y), (x + d, y), (x + d, y + d)]))
                geoms.append(shapely.Polygon([(x, y), (x + d, y + d), (x, y + d)]))
    n = len(geoms)
    codes = np.array([f"433101001001{n - k:03d}" for k in range(n)])
    return codes, np.array(geoms, dtype=object)


def special_grids() -> tuple[np.ndarray, np.ndarray]:
    """Holes, islands, multipolygons and overlaps (one overlap wider than cells)."""
    donut = shapely.Polygon(
        [(109.70, 28.30), (109.72, 28.30), (109.72, 28.32), (109.70, 28.32)],
        [[(109.705, 28.305), (109.715, 28.305), (109.715, 28.315), (109.705, 28.315)]],
    )
    island = shapely.box(109.705, 28.305, 109.715, 28.315)  # fills the hole exactly
    multi = shapely.MultiPolygon(
        [shapely.box(109.72, 28.30, 109.73, 28.31), shapely.box(109.74, 28.30, 109.75, 28.31)]
    )
    between = shapely.box(109.73, 28.30, 109.74, 28.31)  # touches both parts
    over_a = shapely.box(109.70, 28.33, 109.73, 28.36)
    over_b = shapely.box(109.71, 28.34, 109.74, 28.37)  # overlaps over_a widely
    tiny = shapely.box(109.712, 28.342, 109.7121, 28.3421)  # inside both, smaller code
    geoms = np.array([donut, island, multi, between, over_a, over_b, tiny], dtype=object)
    codes = np.array(
        [
            "433101001001005",
            "433101001001004",
            "433101001001003",
            "433101001001006",
            "433101001001002",
            "433101001001007",
            "433101001001001",
        ]
    )
    return codes, geoms


def reference(codes: np.ndarray, geoms: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """shapely covers + smallest code; -1 where no grid covers or a coordinate is NaN."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    out = np.full(x.size, -1)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    pi, gi = shapely.STRtree(geoms).query(shapely.points(x[ok], y[ok]), predicate="intersects")
    rank = np.empty(codes.size, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    rank[order] = np.arange(codes.size)
    best = np.full(ok.size, codes.size)
    np.minimum.at(best, pi, rank[gi])
    out[ok] = np.where(best < codes.size, order[np.minimum(best, codes.size - 1)], -1)
    return out


def metric_geoms(geoms: np.ndarray) -> np.ndarray:
    """Vertex-by-vertex conversion to EPSG:4546 through geopandas (independent path)."""
    return np.asarray(gpd.GeoSeries(geoms, crs="EPSG:4326").to_crs(METRIC).values)


def edge_points(geoms: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All vertices, plus points interpolated along edges (on them or within an ulp)."""
    rings = shapely.get_rings(shapely.get_parts(geoms))
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[1:] == ring[:-1]
    a, b = coords[:-1][same], coords[1:][same]
    t = rng.choice([0.5, 0.25, 1 / 3, 0.1, 0.9], size=a.shape[0])[:, None]
    along = a + t * (b - a)
    pts = np.concatenate([coords, along])
    return pts[:, 0], pts[:, 1]


@pytest.fixture(scope="module")
def county() -> tuple[np.ndarray, np.ndarray]:
    # 凤凰县, 250 grids: irregular outline, so some grids are MultiPolygons
    return voronoi_tiling(load_county("433123"), 250, seed=3)


@pytest.fixture(scope="module")
def county_index(county: tuple[np.ndarray, np.ndarray]) -> GridIndex:
    return GridIndex.build(*county)


def uniform_points(
    geoms: np.ndarray, n: int, rng: np.random.Generator, margin: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    return (
        rng.uniform(minx - margin, maxx + margin, n),
        rng.uniform(miny - margin, maxy + margin, n),
    )


# --- agreement with shapely -----------------------------------------------------------


@pytest.mark.parametrize("cell_deg", [0.0005, 0.004, 0.0002])
def test_random_points_agree_with_shapely(county, cell_deg: float) -> None:
    codes, geoms = county
    index = GridIndex.build(codes, geoms, cell_deg=cell_deg)
    rng = np.random.default_rng(1)
    x, y = uniform_points(geoms, 60_000, rng)
    got = index.locate(x, y)
    np.testing.assert_array_equal(got, reference(codes, geoms, x, y))
    assert (got >= 0).mean() > 0.3  # many points are inside some grid


@pytest.mark.parametrize("cell_deg", [0.0005, 0.004])
def test_vertices_and_edge_points_agree_with_shapely(county, cell_deg: float) -> None:
    codes, geoms = county
    index = GridIndex.build(codes, geoms, cell_deg=cell_deg)
    x, y = edge_points(geoms, np.random.default_rng(2))
    got = index.locate(x, y)
    want = reference(codes, geoms, x, y)
    np.testing.assert_array_equal(got, want)
    assert (shapely.get_type_id(geoms) == 6).any()  # MultiPolygon grids included
    # shared vertices are covered by several grids: the smallest code won
    n_cover = np.bincount(
        shapely.STRtree(geoms).query(shapely.points(x, y), predicate="intersects")[0],
        minlength=x.size,
    )
    assert (n_cover >= 2).sum() > 1000


lon_strategy = st.floats(109.30, 109.85, allow_nan=False)
lat_strategy = st.floats(27.70, 28.25, allow_nan=False)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pts=st.lists(st.tuples(lon_strategy, lat_strategy), min_size=1, max_size=50),
    snap=st.sampled_from([None, 0.0005, 0.001, 1 / 256]),
)
def test_hypothesis_points_agree(county, county_index, pts, snap) -> None:
    codes, geoms = county
    xy = np.array(pts)
    x, y = xy[:, 0], xy[:, 1]
    if snap is not None:  # on raster cell borders and corners
        x, y = np.round(x / snap) * snap, np.round(y / snap) * snap
    np.testing.assert_array_equal(county_index.locate(x, y), reference(codes, geoms, x, y))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_hypothesis_vertices_and_edges(county, county_index, data) -> None:
    codes, geoms = county
    g = data.draw(st.integers(0, len(geoms) - 1))
    coords = shapely.get_coordinates(geoms[g])
    k = data.draw(st.integers(0, len(coords) - 2))
    t = data.draw(st.floats(0.0, 1.0))
    (ax, ay), (bx, by) = coords[k], coords[k + 1]
    x = np.array([ax, ax + t * (bx - ax)])
    y = np.array([ay, ay + t * (by - ay)])
    got = county_index.locate(x, y)
    np.testing.assert_array_equal(got, reference(codes, geoms, x, y))
    assert got[0] >= 0  # a vertex is covered by its own grid at least


@pytest.mark.parametrize("cell_deg", [1 / 256, 1 / 512, 0.0005, 0.003])
def test_exact_edges_vertices_and_diagonals(cell_deg: float) -> None:
    codes, geoms = square_tiling()
    index = GridIndex.build(codes, geoms, cell_deg=cell_deg)
    d = 1.0 / 256
    k = np.arange(0, 8 * 32 + 1)
    # vertical and horizontal edges, vertices, and the triangles' diagonals, all exact
    gx, gy = np.meshgrid(109.5 + k / 32 * d, 28.25 + np.arange(0, 6 * 32 + 1) / 32 * d)
    on_lines = (np.mod(gx - 109.5, d) == 0) | (np.mod(gy - 28.25, d) == 0)
    on_diag = np.mod(gx - 109.5, d) == np.mod(gy - 28.25, d)
    x = np.concatenate([gx[on_lines | on_diag], gx.ravel() + d / 128])
    y = np.concatenate([gy[on_lines | on_diag], gy.ravel() + d / 200])
    got = index.locate(x, y)
    np.testing.assert_array_equal(got, reference(codes, geoms, x, y))
    # the shared vertex of four squares: the smallest of their codes
    vx, vy = 109.5 + 2 * d, 28.25 + 2 * d
    around = [g for g in range(len(geoms)) if shapely.intersects_xy(geoms[g], vx, vy)]
    assert len(around) >= 4
    assert index.locate(vx, vy) == min(around, key=lambda g: codes[g])


@pytest.mark.parametrize("cell_deg", [0.0005, 0.002, 0.0001])
def test_holes_multipolygons_and_overlaps(cell_deg: float) -> None:
    codes, geoms = special_grids()
    index = GridIndex.build(codes, geoms, cell_deg=cell_deg)
    rng = np.random.default_rng(4)
    x, y = uniform_points(geoms, 50_000, rng, margin=0.002)
    ex, ey = edge_points(geoms, rng)
    x, y = np.r_[x, ex], np.r_[y, ey]
    np.testing.assert_array_equal(index.locate(x, y), reference(codes, geoms, x, y))
    code = dict(enumerate(codes))
    # in the hole: the island, not the donut; on the hole's edge: the smaller code
    assert code[int(index.locate(109.71, 28.31))] == "433101001001004"
    assert code[int(index.locate(109.705, 28.31))] == "433101001001004"
    # both parts of the multipolygon
    assert code[int(index.locate(109.725, 28.305))] == "433101001001003"
    assert code[int(index.locate(109.745, 28.305))] == "433101001001003"
    # overlap: smaller code; the tiny grid inside both wins there
    assert code[int(index.locate(109.72, 28.35))] == "433101001001002"
    assert code[int(index.locate(109.735, 28.365))] == "433101001001007"
    assert code[int(index.locate(109.71205, 28.34205))] == "433101001001001"


def test_many_candidates_in_one_cell_use_the_exact_fallback() -> None:
    # 9 x 9 = 81 squares inside a single raster cell: more than a bit mask holds
    d = 0.0001
    geoms = np.array(
        [shapely.box(109.7 + i * d, 28.3 + j * d, 109.7 + (i + 1) * d, 28.3 + (j + 1) * d)
         for i in range(9) for j in range(9)],
        dtype=object,
    )  # fmt: skip
    codes = np.array([f"433101001001{k:03d}" for k in range(len(geoms))])[::-1].copy()
    index = GridIndex.build(codes, geoms, cell_deg=0.01)
    assert index._overflow.any()
    rng = np.random.default_rng(5)
    x, y = uniform_points(geoms, 20_000, rng, margin=0.0002)
    ex, ey = edge_points(geoms, rng)
    x, y = np.r_[x, ex], np.r_[y, ey]
    np.testing.assert_array_equal(index.locate(x, y), reference(codes, geoms, x, y))


def test_unsure_signs_go_to_shapely(county, monkeypatch) -> None:
    codes, geoms = county
    index = GridIndex.build(codes, geoms)
    calls = []
    original = index._resolve_shapely

    def spy(px, py, bid):
        calls.append(px.size)
        return original(px, py, bid)

    monkeypatch.setattr(index, "_resolve_shapely", spy)
    x, y = edge_points(geoms, np.random.default_rng(6))
    np.testing.assert_array_equal(index.locate(x, y), reference(codes, geoms, x, y))
    assert sum(calls) > 0  # points on edges needed shapely
    calls.clear()
    rx, ry = uniform_points(geoms, 50_000, np.random.default_rng(7))
    index.locate(rx, ry)
    assert sum(calls) == 0  # random points never do


def test_input_order_does_not_matter(county) -> None:
    codes, geoms = county
    perm = np.random.default_rng(8).permutation(len(codes))
    a = GridIndex.build(codes, geoms)
    b = GridIndex.build(codes[perm], geoms[perm])
    x, y = edge_points(geoms, np.random.default_rng(9))
    got_a = a.locate(x, y)
    got_b = b.locate(x, y)
    np.testing.assert_array_equal(
        np.where(got_a >= 0, codes[got_a], ""), np.where(got_b >= 0, codes[perm][got_b], "")
    )


# --- outside, NaN, shapes -------------------------------------------------------------


def test_outside_nan_and_inf(county_index) -> None:
    x = np.array([np.nan, 109.6, np.inf, -np.inf, 0.0, 180.0, 109.6, np.nan, 1e300])
    y = np.array([28.0, np.nan, 28.0, 28.0, 0.0, 90.0, -np.inf, np.nan, 28.0])
    np.testing.assert_array_equal(county_index.locate(x, y), -1)
    idx, dist = county_index.nearest(x, y)
    np.testing.assert_array_equal(idx[:4], -1)
    assert np.isnan(dist[:4]).all()


def test_shapes_and_scalars(county, county_index) -> None:
    _codes, geoms = county
    c = shapely.point_on_surface(geoms[0])
    got = county_index.locate(c.x, c.y)
    assert got.shape == () and int(got) == 0
    x, y = uniform_points(geoms, 12, np.random.default_rng(10))
    assert county_index.locate(x.reshape(3, 4), y.reshape(3, 4)).shape == (3, 4)
    assert county_index.locate(x[:4], 28.0).shape == (4,)
    assert county_index.locate(np.array([]), np.array([])).shape == (0,)


def test_empty_and_degenerate_inputs() -> None:
    index = GridIndex.build([], np.array([], dtype=object))
    np.testing.assert_array_equal(index.locate([109.7, np.nan], [28.3, 28.3]), [-1, -1])
    index = GridIndex.build(["433101001001001", "433101001001002"],
                            [shapely.Polygon(), shapely.box(109.7, 28.3, 109.8, 28.4)])  # fmt: skip
    np.testing.assert_array_equal(index.locate([109.75, 109.9], [28.35, 28.35]), [1, -1])


def test_far_apart_grids_coarsen_the_raster(monkeypatch) -> None:
    monkeypatch.setattr(assign, "MAX_CELLS", 200_000)
    geoms = np.array(
        [shapely.box(109.70, 28.30, 109.71, 28.31), shapely.box(100.0, 20.0, 100.01, 20.01)]
    )
    codes = np.array(["433101001001001", "433101001001002"])
    index = GridIndex.build(codes, geoms)
    assert index.cell_deg > 0.0005 and index.stats()["cells"] <= 200_000
    x = np.r_[np.linspace(109.69, 109.72, 301), np.linspace(99.99, 100.02, 301)]
    y = np.r_[np.linspace(28.29, 28.32, 301), np.linspace(19.99, 20.02, 301)]
    np.testing.assert_array_equal(index.locate(x, y), reference(codes, geoms, x, y))


def test_build_rejects_bad_input() -> None:
    box = shapely.box(109.7, 28.3, 109.8, 28.4)
    bowtie = shapely.Polygon([(109.7, 28.3), (109.8, 28.4), (109.8, 28.3), (109.7, 28.4)])
    with pytest.raises(ValueError, match="2 codes for 1 polygons"):
        GridIndex.build(["a", "b"], [box])
    with pytest.raises(ValueError, match="not a polygon: 433101001001002"):
        GridIndex.build(["433101001001001", "433101001001002"], [box, shapely.Point(1, 2)])
    with pytest.raises(ValueError, match="invalid geometry: 433101001001002"):
        GridIndex.build(["433101001001001", "433101001001002"], [box, bowtie])
    with pytest.raises(ValueError, match="cell_deg"):
        GridIndex.build(["a"], [box], cell_deg=0)
    GridIndex.build(["433101001001001", "433101001001002"], [box, bowtie], check_valid=False)


# --- distances, nearest, candidates -----------------------------------------------------


def test_distance_to_boundary_matches_shapely_in_4546(county, county_index) -> None:
    codes, geoms = county
    x, y = uniform_points(geoms, 3000, np.random.default_rng(11), margin=0.0)
    idx = county_index.locate(x, y)
    ok = idx >= 0
    got = county_index.distance_to_boundary_m(x[ok], y[ok], idx[ok])
    mx, my = to_metric(x[ok], y[ok])
    want = shapely.distance(shapely.boundary(metric_geoms(geoms)[idx[ok]]), shapely.points(mx, my))
    np.testing.assert_allclose(got, want, atol=0.01, rtol=0)
    assert got.max() > 100
    assert np.isnan(
        county_index.distance_to_boundary_m([109.6, np.nan], [28.0, 28.0], [-1, 0])
    ).all()
    with pytest.raises(IndexError):
        county_index.distance_to_boundary_m(109.6, 28.0, len(codes))


def test_distance_to_boundary_counts_holes() -> None:
    codes, geoms = special_grids()
    index = GridIndex.build(codes, geoms)
    # 0.001 deg of latitude south of the hole's lower edge, inside the donut
    d = index.distance_to_boundary_m(109.71, 28.304, 0)
    assert 105 < float(d) < 115


def test_nearest_outside_points(county, county_index) -> None:
    _codes, geoms = county
    rng = np.random.default_rng(12)
    x, y = uniform_points(geoms, 2000, rng, margin=0.05)
    idx, dist = county_index.nearest(x, y)
    inside = county_index.locate(x, y)
    np.testing.assert_array_equal(idx[inside >= 0], inside[inside >= 0])
    assert (dist[inside >= 0] == 0).all()
    out = np.flatnonzero(inside < 0)
    assert out.size > 100
    mx, my = to_metric(x[out], y[out])
    metric = metric_geoms(geoms)
    all_d = shapely.distance(metric[None, :], shapely.points(mx, my)[:, None])
    np.testing.assert_allclose(dist[out], all_d.min(axis=1), atol=0.01, rtol=0)
    np.testing.assert_allclose(all_d[np.arange(out.size), idx[out]], dist[out], atol=0.01)
    # a distance limit turns far points into (-1, nan)
    lim_idx, lim_d = county_index.nearest(x[out], y[out], max_distance_m=500.0)
    far = dist[out] > 500.0
    assert far.any() and (~far).any()
    np.testing.assert_array_equal(lim_idx[far], -1)
    assert np.isnan(lim_d[far]).all()
    np.testing.assert_array_equal(lim_idx[~far], idx[out][~far])


def test_nearest_tie_goes_to_smallest_code() -> None:
    # two copies of one square: every outside point is equally near both
    square = shapely.box(109.70, 28.30, 109.71, 28.31)
    codes = np.array(["433101001001002", "433101001001001"])
    index = GridIndex.build(codes, np.array([square, square]))
    idx, dist = index.nearest([109.69, 109.705], [28.305, 28.305])
    assert idx.tolist() == [1, 1]
    assert 900 < dist[0] < 1000 and dist[1] == 0


def test_candidates_within_accuracy(county, county_index) -> None:
    _codes, geoms = county
    rng = np.random.default_rng(13)
    x, y = uniform_points(geoms, 800, rng, margin=0.003)
    ex, ey = edge_points(geoms, rng)
    pick = rng.choice(ex.size, 200, replace=False)
    x, y = np.r_[x, ex[pick]], np.r_[y, ey[pick]]
    acc = rng.choice([0.0, 5.0, 50.0, 300.0], size=x.size)
    cand = county_index.locate_with_candidates(x, y, acc)
    np.testing.assert_array_equal(cand.index, county_index.locate(x, y))
    mx, my = to_metric(x, y)
    all_d = shapely.distance(metric_geoms(geoms)[None, :], shapely.points(mx, my)[:, None])
    covers = shapely.intersects_xy(geoms[None, :], x[:, None], y[:, None])
    for i in range(x.size):
        got = cand.grid[cand.offsets[i] : cand.offsets[i + 1]]
        d = cand.distance_m[cand.offsets[i] : cand.offsets[i + 1]]
        near = covers[i] | ((all_d[i] <= acc[i]) & (acc[i] > 0))
        assert set(got.tolist()) == set(np.flatnonzero(near).tolist()), i
        np.testing.assert_allclose(d, np.where(covers[i, got], 0.0, all_d[i, got]), atol=0.01)
        if cand.index[i] >= 0:  # the located grid first, then nearest first
            assert got[0] == cand.index[i] and d[0] == 0
            assert (np.diff(d[1:]) >= 0).all()
        else:
            assert (np.diff(d) >= 0).all()
    assert cand.ambiguous.sum() > 100


def place_agrees_with_the_arrays(index: GridIndex, x: float, y: float, acc: float) -> None:
    cand = index.locate_with_candidates([x], [y], acc)
    place = index.place(x, y, acc)
    assert place.index == cand.index[0]
    assert [g for g, _ in place.candidates] == cand.grid.tolist()
    assert [d for _, d in place.candidates] == cand.distance_m.tolist()
    to_boundary = index.distance_to_boundary_m([x], [y], cand.index)[0]
    assert place.distance_to_boundary_m == to_boundary or (
        np.isnan(place.distance_to_boundary_m) and np.isnan(to_boundary)
    )


def test_one_point_place_equals_the_vectorised_answers(county, county_index) -> None:
    _codes, geoms = county
    rng = np.random.default_rng(17)
    x, y = uniform_points(geoms, 300, rng, margin=0.003)
    ex, ey = edge_points(geoms, rng)
    pick = rng.choice(ex.size, 300, replace=False)
    x, y = np.r_[x, ex[pick]], np.r_[y, ey[pick]]
    acc = rng.choice([0.0, 5.0, 50.0, 300.0], size=x.size)
    for i in range(x.size):
        place_agrees_with_the_arrays(county_index, float(x[i]), float(y[i]), float(acc[i]))
    assert county_index.place(float("nan"), 28.0).index == -1
    with pytest.raises(ValueError):
        county_index.place(109.5, 28.0, -1.0)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lon=lon_strategy,
    lat=lat_strategy,
    acc=st.sampled_from([0.0, 0.5, 20.0, 400.0]),
    snap=st.sampled_from([None, 0.0005, 1 / 256]),
)
def test_hypothesis_one_point_place(county_index, lon, lat, acc, snap) -> None:
    if snap is not None:  # on raster cell borders and corners
        lon, lat = round(lon / snap) * snap, round(lat / snap) * snap
    place_agrees_with_the_arrays(county_index, lon, lat, acc)


def test_candidates_on_a_shared_edge_with_zero_accuracy() -> None:
    codes, geoms = square_tiling()
    index = GridIndex.build(codes, geoms)
    d = 1.0 / 256
    x, y = 109.5 + 3 * d, 28.25 + 1.5 * d  # on the edge between two cells' shapes
    cand = index.locate_with_candidates([x, x + d / 3], [y, y + d / 7], 0.0)
    assert cand.count.tolist()[0] >= 2 and cand.ambiguous[0]
    assert cand.count[1] == 1 and not cand.ambiguous[1]
    first = cand.grid[: cand.offsets[1]]
    assert cand.index[0] == min(first, key=lambda g: codes[g])
    with pytest.raises(ValueError):
        index.locate_with_candidates([x], [y], -1.0)


def test_locate_is_chunk_independent(county, monkeypatch) -> None:
    codes, geoms = county
    index = GridIndex.build(codes, geoms)
    x, y = uniform_points(geoms, 30_000, np.random.default_rng(14))
    whole = index.locate(x, y)
    monkeypatch.setattr(assign, "_CHUNK", 777)
    np.testing.assert_array_equal(index.locate(x, y), whole)


# --- incremental updates ----------------------------------------------------------------

TABLES = ("_state", "_bcells", "_cptr", "_cgrid", "_bfull", "_overflow", "_rptr", "_rbit")


def snapshot(index: GridIndex) -> dict[str, np.ndarray]:
    """Copies of everything an update could touch by mistake."""
    arrays = {name: getattr(index, name).copy() for name in (*TABLES, "_edges", "_order")}
    arrays["codes"] = index.codes.copy()
    arrays["geoms"] = index._geoms.copy()
    return arrays


def assert_unchanged(index: GridIndex, before: dict[str, np.ndarray]) -> None:
    after = snapshot(index)
    for name, value in before.items():
        if name == "geoms":
            assert (after[name] == value).all()  # the same geometry objects
        else:
            np.testing.assert_array_equal(after[name], value, err_msg=name)


def assert_same_tables(got: GridIndex, want: GridIndex) -> None:
    """Identical raster and edge tables (both on the same raster)."""
    assert got._raster == want._raster
    for name in TABLES:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(got._edges, want._edges)  # NaN pads compare equal


def assert_same_answers(
    got: GridIndex, want: GridIndex, x: np.ndarray, y: np.ndarray, n_metric: int = 300
) -> None:
    """Every answer equal: located grid, candidates, nearest, distances."""
    np.testing.assert_array_equal(got.codes, want.codes)
    loc = got.locate(x, y)
    np.testing.assert_array_equal(loc, want.locate(x, y))
    sub = np.linspace(0, x.size - 1, min(n_metric, x.size)).astype(int)
    sx, sy = x[sub], y[sub]
    acc = np.resize([0.0, 20.0, 150.0], sub.size)
    a, b = got.locate_with_candidates(sx, sy, acc), want.locate_with_candidates(sx, sy, acc)
    for field in ("index", "offsets", "grid", "distance_m"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    for u, v in zip(got.nearest(sx, sy, 2000.0), want.nearest(sx, sy, 2000.0), strict=True):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(
        got.distance_to_boundary_m(sx, sy, loc[sub]), want.distance_to_boundary_m(sx, sy, loc[sub])
    )


def apply_edit(
    codes: np.ndarray, geoms: np.ndarray, edit_codes: list[str], edit_geoms: list
) -> tuple[np.ndarray, np.ndarray]:
    """The documented result of ``updated``: replaced in place, removed ones dropped
    (None or empty), added ones appended in the given order."""
    grids = dict(zip(codes.tolist(), geoms.tolist(), strict=True))
    new = {c: g for c, g in zip(edit_codes, edit_geoms, strict=True)}
    out_codes = []
    for c in codes.tolist():
        g = new.get(c, grids[c])
        if g is not None and not g.is_empty:
            out_codes.append(c)
            grids[c] = g
    for c, g in new.items():
        if c not in grids and g is not None and not g.is_empty:
            out_codes.append(c)
            grids[c] = g
    return np.array(out_codes, dtype=str), np.array([grids[c] for c in out_codes], dtype=object)


def points_around(
    geoms: np.ndarray, changed: list, rng: np.random.Generator, n: int = 3000
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points over everything, dense points around the changed geometries,
    and their (and their neighbours') vertices and edge points."""
    x, y = uniform_points(geoms, n, rng)
    parts = [x], [y]
    live = np.array([g for g in changed if g is not None and not g.is_empty], dtype=object)
    if live.size:
        near = shapely.STRtree(geoms).query(shapely.buffer(live, 0.002))[1]
        around = np.concatenate([live, geoms[np.unique(near)]])
        ux, uy = uniform_points(live, n, rng, margin=0.003)
        ex, ey = edge_points(around, rng)
        parts[0].extend([ux, ex])
        parts[1].extend([uy, ey])
    return np.concatenate(parts[0]), np.concatenate(parts[1])


def move_vertex(g: shapely.Geometry, x: float, y: float, nx: float, ny: float) -> shapely.Geometry:
    """``g`` with every vertex exactly at (x, y) moved to (nx, ny)."""

    def f(c: np.ndarray) -> np.ndarray:
        c = c.copy()
        c[(c[:, 0] == x) & (c[:, 1] == y)] = (nx, ny)
        return c

    return shapely.transform(g, f)


def holding(geoms: np.ndarray, x: float, y: float) -> list[int]:
    """The grids with a vertex exactly at (x, y)."""
    xy, g = shapely.get_coordinates(geoms, return_index=True)
    return np.unique(g[(xy[:, 0] == x) & (xy[:, 1] == y)]).tolist()


def check_update(
    index: GridIndex,
    codes: np.ndarray,
    geoms: np.ndarray,
    edit_codes: list[str],
    edit_geoms: list,
    rng: np.random.Generator,
) -> tuple[GridIndex, np.ndarray, np.ndarray]:
    """Update, then compare with fresh builds (tables on the same raster, and every
    answer); the original index must be unchanged. Returns the new state."""
    before = snapshot(index)
    want_codes, want_geoms = apply_edit(codes, geoms, edit_codes, edit_geoms)
    ox, oy = uniform_points(np.r_[geoms, want_geoms], 2000, np.random.default_rng(0))
    old_answer = index.locate(ox, oy)
    got = index.updated(edit_codes, edit_geoms)
    np.testing.assert_array_equal(got.codes, want_codes)
    assert_same_tables(got, GridIndex._build(want_codes, want_geoms, index.cell_deg, got._raster))
    fresh = GridIndex.build(want_codes, want_geoms, cell_deg=index.cell_deg)
    changed = [geoms[codes == c][0] for c in edit_codes if c in codes] + list(edit_geoms)
    x, y = points_around(want_geoms, changed, rng)
    assert_same_answers(got, fresh, x, y)
    np.testing.assert_array_equal(
        got.locate(x, y), reference(want_codes, want_geoms, x, y)
    )  # and shapely agrees
    assert_unchanged(index, before)
    np.testing.assert_array_equal(index.locate(ox, oy), old_answer)
    return got, want_codes, want_geoms


def in_square(geoms: np.ndarray, i: int, j: int) -> np.ndarray:
    """Indices of the grids of square (i, j) of :func:`square_tiling`."""
    d = 1.0 / 256
    b = shapely.bounds(geoms)
    x, y = 109.5 + i * d, 28.25 + j * d
    return np.flatnonzero((b[:, 0] >= x) & (b[:, 2] <= x + d) & (b[:, 1] >= y) & (b[:, 3] <= y + d))


def test_update_moves_a_shared_edge_exactly() -> None:
    codes, geoms = square_tiling()
    index = GridIndex.build(codes, geoms)
    d = 1.0 / 256
    rng = np.random.default_rng(20)
    # square (1, 0) and the two triangles of square (2, 0) east of it: their shared
    # edge x = x1 moves east by d / 4 (every coordinate stays a binary fraction)
    (a,) = in_square(geoms, 1, 0)
    tri = in_square(geoms, 2, 0)
    assert len(tri) == 2
    x, y, x1 = 109.5 + d, 28.25, 109.5 + 2 * d
    e = x1 + d / 4
    new_a = shapely.box(x, y, e, y + d)
    new_tri = [shapely.difference(geoms[t], new_a) for t in tri]
    edit = [codes[a], *codes[tri].tolist()]
    got, new_codes, new_geoms = check_update(index, codes, geoms, edit, [new_a, *new_tri], rng)
    ys = y + np.arange(0, 33) / 32 * d
    for ex in (x1, e):  # the old and the new edge, vertices included
        px = np.full(ys.size, ex)
        np.testing.assert_array_equal(got.locate(px, ys), reference(new_codes, new_geoms, px, ys))
    assert got.codes[int(got.locate(x1 + d / 8, y + d / 2))] == codes[a]
    # remove square (3, 2): its points are outside, nearest goes to a neighbour
    (b,) = in_square(geoms, 3, 2)
    cx, cy = 109.5 + 3.5 * d, 28.25 + 2.5 * d
    got, new_codes, new_geoms = check_update(got, new_codes, new_geoms, [codes[b]], [None], rng)
    assert int(got.locate(cx, cy)) == -1
    assert 0 < float(got.nearest(cx, cy)[1]) < 300
    # a new grid fills half of the hole, square (4, 1) goes (empty geometry)
    half = shapely.box(cx - d / 2, cy - d / 2, cx, cy + d / 2)
    (c,) = in_square(geoms, 4, 1)
    edit = ["433101001000999", codes[c]]
    got, *_ = check_update(got, new_codes, new_geoms, edit, [half, shapely.Polygon()], rng)
    assert got.codes[int(got.locate(cx - d / 4, cy))] == "433101001000999"
    assert int(got.locate(cx + d / 4, cy)) == -1


def test_update_holes_overlaps_and_many_candidates() -> None:
    codes, geoms = special_grids()
    index = GridIndex.build(codes, geoms, cell_deg=0.002)
    rng = np.random.default_rng(21)
    island = codes[1]
    # the hole empties, then gets a smaller grid; the overlap grows and shrinks
    got, c2, g2 = check_update(index, codes, geoms, [island], [None], rng)
    assert int(got.locate(109.71, 28.31)) == -1
    small = shapely.box(109.708, 28.308, 109.712, 28.312)
    grown = shapely.box(109.70, 28.33, 109.745, 28.365)
    got, c2, g2 = check_update(got, c2, g2, ["433101001001000", codes[4]], [small, grown], rng)
    assert got.codes[int(got.locate(109.71, 28.31))] == "433101001001000"
    # a multipolygon grid gets a detached part far away (inside the raster)
    multi = shapely.MultiPolygon([*geoms[2].geoms, shapely.box(109.70, 28.36, 109.705, 28.368)])
    check_update(got, c2, g2, [codes[2]], [multi], rng)

    # 81 grids in one cell: the update keeps the overflowing cell exact
    d = 0.0001
    sq = np.array(
        [shapely.box(109.7 + i * d, 28.3 + j * d, 109.7 + (i + 1) * d, 28.3 + (j + 1) * d)
         for i in range(9) for j in range(9)],
        dtype=object,
    )  # fmt: skip
    sq_codes = np.array([f"433101001001{k:03d}" for k in range(len(sq))])[::-1].copy()
    index = GridIndex.build(sq_codes, sq, cell_deg=0.01)
    moved = shapely.box(109.7 + 4 * d, 28.3 + 4 * d, 109.7 + 5.5 * d, 28.3 + 5.5 * d)
    got, *_ = check_update(index, sq_codes, sq, [sq_codes[40]], [moved], rng)
    assert got._overflow.any()


def test_update_beyond_the_raster_falls_back_to_a_build(county) -> None:
    codes, geoms = county
    index = GridIndex.build(codes, geoms, cell_deg=0.001)
    ras = index._raster
    rng = np.random.default_rng(22)
    # just inside the usable raster: updated in place
    x1 = ras.x0 + (ras.ncols - 1.6) * ras.cell
    y1 = ras.y0 + (ras.nrows - 1.6) * ras.cell
    corner = shapely.box(x1 - 0.003, y1 - 0.003, x1, y1)
    got, c2, g2 = check_update(index, codes, geoms, ["433101999000001"], [corner], rng)
    assert got._raster == ras
    # a grid grows past the raster's border, another appears far away: full builds
    grown = shapely.affinity.scale(corner, 2.0, 2.0, origin=(x1 - 0.003, y1 - 0.003))
    got, c2, g2 = check_update(got, c2, g2, ["433101999000001"], [grown], rng)
    assert got._raster != ras and got.cell_deg == index.cell_deg
    far = shapely.box(109.2, 27.65, 109.21, 27.66)
    got, c2, g2 = check_update(got, c2, g2, ["433101999000002"], [far], rng)
    assert got.locate(109.205, 27.655) == len(got) - 1
    # and from an empty index
    empty = GridIndex.build([], np.array([], dtype=object))
    got, *_ = check_update(empty, np.array([], dtype=str), np.array([], dtype=object),
                           ["433101999000003"], [far], rng)  # fmt: skip
    assert got.locate(109.205, 27.655) == 0


def test_update_carries_the_metric_copies(county) -> None:
    codes, geoms = county
    index = GridIndex.build(codes, geoms)
    cold = index.updated([codes[0]], [shapely.affinity.scale(geoms[0], 0.8, 0.8)])
    assert cold._metric is None  # built on first use, as for a build
    index.nearest([109.5], [28.0])  # warm: STRtrees and EPSG:4546 copies made
    rng = np.random.default_rng(23)
    edit = [codes[0], codes[1], "433101999000004"]
    shrunk = shapely.affinity.scale(geoms[0], 0.8, 0.8)
    polys = [shrunk, None, shapely.box(109.5, 28.0, 109.51, 28.01)]
    got, *_ = check_update(index, codes, geoms, edit, polys, rng)
    assert got._metric_tree is not None and got._lonlat_tree is not None
    assert_same_answers(cold, GridIndex.build(*apply_edit(codes, geoms, edit[:1], polys[:1])),
                        *uniform_points(geoms, 500, rng))  # fmt: skip


def test_update_rejects_bad_input_and_ignores_unknown_removals(county) -> None:
    codes, geoms = county
    index = GridIndex.build(codes, geoms)
    box = shapely.box(109.5, 28.0, 109.51, 28.01)
    bowtie = shapely.Polygon([(109.5, 28.0), (109.51, 28.01), (109.51, 28.0), (109.5, 28.01)])
    with pytest.raises(ValueError, match="2 codes for 1 polygons"):
        index.updated(["a", "b"], [box])
    with pytest.raises(ValueError, match="given more than once: 433101999000005"):
        index.updated(["433101999000005", "433101999000005"], [box, None])
    with pytest.raises(ValueError, match="not a polygon: 433101999000005"):
        index.updated(["433101999000005"], [shapely.Point(109.5, 28.0)])
    with pytest.raises(ValueError, match="invalid geometry: 433101999000005"):
        index.updated(["433101999000005"], [bowtie])
    twice = GridIndex.build([codes[0], codes[0]], [geoms[0], geoms[0]])
    with pytest.raises(ValueError, match="held by several grids"):
        twice.updated([codes[0]], [box])
    same = index.updated(["433101999000006"], [None])  # not held: nothing to remove
    x, y = uniform_points(geoms, 5000, np.random.default_rng(24))
    np.testing.assert_array_equal(same.locate(x, y), index.locate(x, y))
    assert_same_tables(same, index)


_BASE: dict[tuple[float, bool], GridIndex] = {}


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), cell_deg=st.sampled_from([0.0005, 0.001, 0.003]))
def test_hypothesis_updates_equal_a_fresh_build(county, data, cell_deg: float) -> None:
    codes, geoms = county
    warm = data.draw(st.booleans(), label="warm")
    index = _BASE.get((cell_deg, warm))  # updates leave it unchanged: share it
    if index is None:
        index = _BASE[cell_deg, warm] = GridIndex.build(codes, geoms, cell_deg=cell_deg)
        if warm:  # EPSG:4546 copies and STRtrees made: updates carry them over
            index.nearest([109.5], [28.0])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    fresh_code = iter(f"4331019990{k:05d}" for k in range(100))
    removed: list[str] = []
    for _step in range(data.draw(st.integers(1, 2), label="steps")):
        edit: dict[str, shapely.Geometry | None] = {}
        for _op in range(data.draw(st.integers(1, 4), label="ops")):
            op = data.draw(st.sampled_from(["move", "scale", "remove", "add", "multi", "readd"]))
            g = data.draw(st.integers(0, len(codes) - 1), label="grid")
            code, geom = codes[g], geoms[g]
            if op == "move":  # a shared vertex moves in every grid holding it
                coords = shapely.get_coordinates(geom)
                k = data.draw(st.integers(0, len(coords) - 2), label="vertex")
                (vx, vy), near = coords[k], coords[k + 1]
                step = np.hypot(*(near - coords[k])) * 0.4
                dx, dy = data.draw(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), label="offset")
                holders = [h for h in holding(geoms, vx, vy) if codes[h] not in edit]
                moved = [move_vertex(geoms[h], vx, vy, vx + dx * step, vy + dy * step)
                         for h in holders]  # fmt: skip
                if all(shapely.is_valid(moved)):
                    edit.update(zip(codes[holders].tolist(), moved, strict=True))
            elif op == "scale":
                f = data.draw(st.sampled_from([0.6, 0.95, 1.1]), label="factor")
                edit[code] = shapely.affinity.scale(geom, f, f)
            elif op == "remove":
                edit[code] = data.draw(st.sampled_from([None, shapely.Polygon()]), label="empty")
                removed.append(code)
            elif op == "add":  # overlapping, in a removed grid's place, or outside
                c = shapely.point_on_surface(geom)
                s = data.draw(st.sampled_from([0.0005, 0.004, 0.02]), label="size")
                edit[next(fresh_code)] = shapely.box(c.x, c.y, c.x + s, c.y + s)
            elif op == "multi":
                other = shapely.point_on_surface(geoms[(g + 7) % len(codes)])
                islet = shapely.box(other.x, other.y, other.x + 0.001, other.y + 0.001)
                parts = shapely.get_parts(shapely.difference(geom, islet.buffer(0.0005)))
                if parts.size and not shapely.intersects(geom, islet):
                    edit[code] = shapely.MultiPolygon([*parts, islet])
            elif removed:
                c = removed.pop()
                edit[c] = shapely.affinity.scale(geoms[codes == c][0], 0.9, 0.9) if c in codes \
                    else shapely.box(109.5, 28.0, 109.505, 28.005)  # fmt: skip
        if edit:
            index, codes, geoms = check_update(
                index, codes, geoms, list(edit), list(edit.values()), rng
            )
