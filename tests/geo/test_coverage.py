"""geo.coverage: per-grid coverage, checked against hand-built cases and shapely.

The independent reference is plain shapely on the FOV polygons of
:func:`geo.camera.fov_sectors` at a fine arc step (0.5°, area-exact polygons):
``area(grid ∩ union_all(FOVs))``, ``intersection`` for roads, ``contains`` for places.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geo import coverage as cv
from geo.camera import DORI_LEVELS, level_ranges_m
from geo.coverage import FovSet, Places, Roads, coverage_h3, grid_coverage, public_ratio
from geo.crs import METRIC_EPSG, convert_geometry, to_metric

METRIC = f"EPSG:{METRIC_EPSG}"
X0, Y0 = (round(v) for v in to_metric(109.735, 28.314))


def square(x0: float, y0: float, size: float) -> shapely.Polygon:
    return shapely.box(x0, y0, x0 + size, y0 + size)


def fovset(x, y, azimuth, hfov, radius) -> FovSet:
    """Cameras with the same radius at every level (grid azimuths)."""
    x = np.atleast_1d(np.asarray(x, dtype=float))
    r = np.broadcast_to(np.asarray(radius, dtype=float), x.shape)
    return FovSet(
        np.arange(len(x)),
        x,
        np.broadcast_to(np.asarray(y, dtype=float), x.shape).copy(),
        np.broadcast_to(np.asarray(azimuth, dtype=float), x.shape).copy(),
        np.broadcast_to(np.asarray(hfov, dtype=float), x.shape).copy(),
        np.repeat(r[:, None], 4, axis=1),
    )


def reference(grids, polys, min_area=1e-6):
    """(covered m², positive-area camera count) per grid, by shapely."""
    tree = shapely.STRtree(polys)
    covered = np.zeros(len(grids))
    count = np.zeros(len(grids), dtype=np.int64)
    for g, grid in enumerate(grids):
        hit = tree.query(grid, predicate="intersects")
        if len(hit):
            covered[g] = shapely.area(shapely.intersection(grid, shapely.union_all(polys[hit])))
            count[g] = int((shapely.area(shapely.intersection(polys[hit], grid)) > min_area).sum())
    return covered, count


# --- hand-built cases ----------------------------------------------------------------------


def test_full_none_and_half():
    grids = np.array([square(X0 - 10, Y0 - 10, 20), square(X0 + 1000, Y0, 20)])
    # a disc of 100 m around the first grid's centre covers it, not the second
    df = grid_coverage(["a", "b"], grids, fovset(X0, Y0, 0.0, 360.0, 100.0), levels=["detect"])
    assert df["ratio"].tolist() == pytest.approx([1.0, 0.0])
    assert df["covered_m2"][0] == pytest.approx(400.0)
    assert df["camera_count"].tolist() == [1, 0]
    assert df["gap"][0].is_empty and df["gap"][0].geom_type == "MultiPolygon"
    assert shapely.equals(df["gap"][1], grids[1])
    # a half-disc looking east (grid azimuth 90) covers exactly the east half
    df = grid_coverage(["a"], grids[:1], fovset(X0, Y0, 90.0, 180.0, 100.0), levels=["detect"])
    assert df["ratio"][0] == pytest.approx(0.5, abs=1e-12)
    assert shapely.equals(
        df["gap"][0], square(X0 - 10, Y0 - 10, 20) & shapely.box(X0 - 10, Y0 - 10, X0, Y0 + 10)
    )


def test_disc_inside_a_grid_is_exact():
    grid = square(X0 - 500, Y0 - 500, 1000)
    df = grid_coverage(["g"], [grid], fovset(X0, Y0, 0.0, 360.0, 30.0), levels=["detect"])
    assert df["covered_m2"][0] == pytest.approx(math.pi * 900, rel=1e-12)
    gap = df["gap"][0]
    assert shapely.is_valid(gap)
    assert len(gap.geoms) == 1 and len(gap.geoms[0].interiors) == 1
    # the hole's vertices lie on the true circle, chords within the 0.1 m tolerance
    hole = np.asarray(gap.geoms[0].interiors[0].coords)
    np.testing.assert_allclose(np.hypot(hole[:, 0] - X0, hole[:, 1] - Y0), 30.0, rtol=1e-9)


def test_overlapping_cameras_count_once():
    grid = square(X0 - 500, Y0 - 500, 1000)
    r, d = 40.0, 30.0
    df = grid_coverage(["g"], [grid], fovset([X0, X0 + d], Y0, 0.0, 360.0, r), levels=["detect"])
    lens = 2 * r * r * math.acos(d / (2 * r)) - 0.5 * d * math.sqrt(4 * r * r - d * d)
    assert df["covered_m2"][0] == pytest.approx(2 * math.pi * r * r - lens, rel=1e-9)
    assert df["camera_count"][0] == 2
    # identical cameras: one disc
    df = grid_coverage(["g"], [grid], fovset([X0, X0], Y0, 0.0, 360.0, r), levels=["detect"])
    assert df["covered_m2"][0] == pytest.approx(math.pi * r * r, rel=1e-12)
    assert df["camera_count"][0] == 2


def test_camera_across_grids_and_touching():
    left = square(X0 - 100, Y0 - 50, 100)
    right = square(X0, Y0 - 50, 100)
    far = square(X0 + 200, Y0 - 50, 100)
    # a disc centred on the shared edge: half in each; a sector looking west touches
    # `right` only along its edge: no positive area there
    fovs = fovset([X0, X0], [Y0, Y0 + 45], [0.0, 270.0], [360.0, 90.0], [20.0, 30.0])
    df = grid_coverage(["l", "r", "f"], [left, right, far], fovs, levels=["detect"])
    half = math.pi * 400 / 2
    sector = math.pi * 900 / 4
    # the sector's lower half is in `left` (its north part leaves the grids)
    assert df["covered_m2"].tolist()[2] == 0
    assert df["covered_m2"][1] == pytest.approx(half, rel=1e-9)
    assert df["camera_count"].tolist() == [2, 1, 0]
    assert df["covered_m2"][0] > half and df["covered_m2"][0] < half + sector


def test_offline_cameras_cover_nothing():
    grid = square(X0 - 500, Y0 - 500, 1000)
    args = ([X0, X0 + 100], [Y0, Y0], ["dome", "bullet"], [0.0, 45.0], [360.0, 60.0], [1920, 1920])
    on = FovSet.from_cameras(*args, status=["online", "online"])
    off = FovSet.from_cameras(*args, status=["offline", "fault"])
    assert len(on) == 2 and len(off) == 0
    df_on = grid_coverage(["g"], [grid], on)
    df_off = grid_coverage(["g"], [grid], off)
    assert (df_on["covered_m2"] > 0).all()
    assert (df_off["covered_m2"] == 0).all() and (df_off["camera_count"] == 0).all()
    assert all(shapely.equals(g, grid) for g in df_off["gap"])


def test_min_gap_only_drops_from_the_gap():
    grid = square(X0 - 50, Y0 - 50, 100)
    # a ring of discs leaving a tiny uncovered island in the middle
    ang = np.radians(np.arange(0, 360, 30))
    x = X0 + 10 * np.cos(ang)
    y = Y0 + 10 * np.sin(ang)
    fovs = fovset(x, y, 0.0, 360.0, 9.9)
    keep = grid_coverage(["g"], [grid], fovs, levels=["detect"], min_gap_m2=0.0)
    drop = grid_coverage(["g"], [grid], fovs, levels=["detect"], min_gap_m2=5.0)
    assert keep["covered_m2"][0] == drop["covered_m2"][0]
    assert len(keep["gap"][0].geoms) == 2 and len(drop["gap"][0].geoms) == 1
    island = min(keep["gap"][0].geoms, key=lambda p: p.area)
    assert 0 < island.area < 5.0


def test_public_ratio_weights_and_fallbacks():
    r = public_ratio([0.4, np.nan, 0.4, np.nan], [1.0, 0.5, np.nan, np.nan], [0.1] * 4)
    np.testing.assert_allclose(r, [0.7, 0.5, 0.4, 0.1])
    r = public_ratio([0.4], [1.0], [0.1], weights=(0.75, 0.25))
    np.testing.assert_allclose(r, [0.55])
    with pytest.raises(ValueError):
        public_ratio([0.4], [1.0], [0.1], weights=(0, 0))


def test_roads_and_places_hand_built():
    grid = square(X0 - 100, Y0 - 100, 200)
    road = shapely.LineString([(X0 - 150, Y0), (X0 + 150, Y0)])  # 200 m inside the grid
    places = Places(
        np.array(["in", "out", "poly"], dtype=object),
        np.array(
            [shapely.Point(X0 + 5, Y0), shapely.Point(X0 + 80, Y0 + 80), square(X0 - 3, Y0 - 3, 6)],
            dtype=object,
        ),
    )
    fovs = fovset(X0, Y0, 0.0, 360.0, 25.0)
    df = grid_coverage(
        ["g"], [grid], fovs, Roads(np.array([1]), np.array([road], dtype=object)), places,
        levels=["detect"], road_gap_lines=True, uncovered_places=True,
    )  # fmt: skip
    row = df.iloc[0]
    assert row["road_length_m"] == pytest.approx(200.0)
    assert row["road_covered_m"] == pytest.approx(50.0)
    assert row["road_ratio"] == pytest.approx(0.25)
    assert (row["places_total"], row["places_covered"]) == (3, 2)
    assert row["public_ratio"] == pytest.approx(0.5 * 0.25 + 0.5 * 2 / 3)
    assert row["uncovered_places"] == ["out"]
    assert row["road_gap"].length == pytest.approx(150.0)
    assert len(row["road_gap"].geoms) == 2
    # no road, no place: the area ratio
    df = grid_coverage(["g"], [grid], fovs, levels=["detect"])
    assert np.isnan(df["road_ratio"][0]) and np.isnan(df["places_ratio"][0])
    assert df["public_ratio"][0] == df["ratio"][0]


def test_place_grid_imposed():
    a, b = square(X0 - 100, Y0, 100), square(X0, Y0, 100)
    pt = shapely.Point(X0, Y0 + 50)  # on the shared edge
    fovs = fovset(X0, Y0 + 50, 0.0, 360.0, 5.0)
    places = Places(np.array(["p"]), np.array([pt], dtype=object))
    df = grid_coverage(["a", "b"], [a, b], fovs, places=places, levels=["detect"])
    assert df["places_total"].tolist() == [1, 0]  # first grid wins on a shared edge
    places = Places(np.array(["p"]), np.array([pt], dtype=object), grid_id=np.array(["b"]))
    df = grid_coverage(["a", "b"], [a, b], fovs, places=places, levels=["detect"])
    assert df["places_total"].tolist() == [0, 1]
    assert df["places_covered"].tolist() == [0, 1]


def test_input_validation():
    grid = [square(X0, Y0, 10)]
    fovs = fovset(X0, Y0, 0.0, 360.0, 5.0)
    with pytest.raises(ValueError, match="unknown level"):
        grid_coverage(["g"], grid, fovs, levels=["see"])
    with pytest.raises(ValueError):
        grid_coverage(["g", "h"], grid, fovs)
    with pytest.raises(ValueError):
        grid_coverage(["g"], grid, fovs, min_gap_m2=-1)
    empty = grid_coverage([], [], fovs)
    assert len(empty) == 0 and "gap" in empty


def test_grid_with_a_hole_and_multipolygon():
    outer = square(X0 - 100, Y0 - 100, 200)
    inner = square(X0 - 30, Y0 - 30, 60)
    donut = outer - inner
    twin = shapely.MultiPolygon([square(X0 + 150, Y0 - 100, 50), square(X0 + 150, Y0 + 50, 50)])
    grids = np.array([donut, inner, twin], dtype=object)
    fovs = fovset(
        [X0, X0 - 40, X0 + 160, X0 + 175, X0 + 99],
        [Y0, Y0 + 40, Y0 - 75, Y0 + 75, Y0],
        [0.0, 135.0, 0.0, 0.0, 90.0],
        [360.0, 90.0, 360.0, 360.0, 60.0],
        [45.0, 70.0, 30.0, 10.0, 80.0],
    )
    df = grid_coverage(["donut", "inner", "twin"], grids, fovs, levels=["detect"])
    covered, count = reference(grids, fovs.polygons("detect", arc_step_deg=0.25))
    np.testing.assert_allclose(df["covered_m2"], covered, rtol=1e-4)
    assert df["camera_count"].tolist() == count.tolist()
    assert shapely.is_valid(df["gap"].to_numpy()).all()
    assert not df["fallback"].any()
    union = shapely.union_all(fovs.polygons("detect", arc_step_deg=0.25))
    for grid, gap in zip(grids, df["gap"], strict=True):
        assert shapely.symmetric_difference(gap, grid - union).area <= 0.1 * gap.length + 1e-9


# --- degenerate configurations: the shapely fallback ------------------------------------------

QUAD = [
    square(X0 - 100, Y0 - 100, 100),
    square(X0, Y0 - 100, 100),
    square(X0 - 100, Y0, 100),
    square(X0, Y0, 100),
]


@pytest.mark.parametrize(
    "fovs",
    [
        fovset(X0, Y0, 0.0, 360.0, 30.0),  # apex on the vertex shared by four grids
        fovset(X0, Y0 - 50, 0.0, 90.0, 30.0),  # apex on an edge, looking along it
        fovset(X0 - 50, Y0, 90.0, 180.0, 40.0),  # a radial edge along a grid edge
        fovset([X0 - 60, X0 - 20], Y0 + 50, 0.0, 360.0, 20.0),  # tangent discs, one
        # tangent to a grid edge
    ],
    ids=["apex-on-vertex", "apex-on-edge", "radial-on-edge", "tangent"],
)
def test_degenerate_cases_fall_back_correctly(fovs):
    df = grid_coverage(list("abcd"), QUAD, fovs, levels=["detect"])
    assert df["fallback"].any()
    # (the reference polygons bulge past a tangent edge by ~1e-3 m²)
    covered, count = reference(QUAD, fovs.polygons("detect", arc_step_deg=0.25), 1e-2)
    np.testing.assert_allclose(df["covered_m2"], covered, rtol=1e-4, atol=1e-2)
    assert df["camera_count"].tolist() == count.tolist()
    assert shapely.is_valid(df["gap"].to_numpy()).all()


# --- co-located cameras (poles) ---------------------------------------------------------------


def test_cameras_on_one_pole():
    grid = square(X0 - 200, Y0 - 200, 400)
    # four bullets around a pole, abutting exactly, one duplicated, plus a dome; and
    # two lobes touching at a pole with coverage closing the gap between them
    x = np.r_[[X0] * 6, [X0 + 100] * 2, X0 + 100 + 12]
    y = np.r_[[Y0] * 6, [Y0] * 2, Y0]
    az = np.r_[0.0, 90.0, 180.0, 270.0, 270.0, 0.0, 45.0, 225.0, 0.0]
    hfov = np.r_[90.0, 90.0, 90.0, 90.0, 90.0, 360.0, 60.0, 60.0, 360.0]
    r = np.r_[50.0, 40.0, 50.0, 40.0, 40.0, 20.0, 30.0, 30.0, 14.0]
    fovs = fovset(x, y, az, hfov, r)
    df = grid_coverage(["g"], [grid], fovs, levels=["detect"])
    polys = fovs.polygons("detect", arc_step_deg=0.5)
    covered, count = reference([grid], polys)
    assert df["covered_m2"][0] == pytest.approx(covered[0], rel=1e-4)
    assert df["camera_count"][0] == count[0] == 9
    assert shapely.is_valid(df["gap"][0])
    assert not df["fallback"][0]
    sym = shapely.symmetric_difference(df["gap"][0], grid - shapely.union_all(polys))
    # chords stay within 0.1 m of the arcs: at most that much along the boundary
    assert sym.area < 0.1 * shapely.length(df["gap"][0])


# --- the demo world -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    from geo.demo import build_world

    w = build_world("small", 0)
    grids = convert_geometry(w.grids.geometry.to_numpy(), "wgs84", METRIC)
    c = w.cameras
    x, y = to_metric(shapely.get_x(c.geometry.to_numpy()), shapely.get_y(c.geometry.to_numpy()))
    fovs = FovSet.from_cameras(
        x, y, c["kind"], c["azimuth_deg"], c["hfov_deg"], c["resolution_h_px"], c["range_m"],
        c["status"], camera_id=np.arange(len(c)),
    )  # fmt: skip
    road_lines = convert_geometry(w.roads.geometry.to_numpy(), "wgs84", METRIC)
    roads = Roads(w.roads["id"].to_numpy(), road_lines)
    places = Places(
        w.key_places["id"].to_numpy(),
        convert_geometry(w.key_places.geometry.to_numpy(), "wgs84", METRIC),
    )
    ids = w.grids["code"].to_numpy()
    df = grid_coverage(ids, grids, fovs, roads, places, workers=1)
    return {"ids": ids, "grids": grids, "fovs": fovs, "roads": roads, "places": places, "df": df,
            "cameras": c}  # fmt: skip


def test_demo_shape_and_nesting(world):
    df = world["df"]
    assert len(df) == 4 * len(world["ids"])
    assert df["level"].tolist()[:4] == list(DORI_LEVELS)
    assert not df["fallback"].any()
    assert shapely.is_valid(df["gap"].to_numpy()).all()
    wide = df.pivot(index="grid_id", columns="level", values="covered_m2")[list(DORI_LEVELS)]
    # identify ⊆ recognize ⊆ observe ⊆ detect, grid by grid
    assert (np.diff(wide.to_numpy(), axis=1) <= 1e-6).all()
    cnt = df.pivot(index="grid_id", columns="level", values="camera_count")[list(DORI_LEVELS)]
    assert (np.diff(cnt.to_numpy(), axis=1) <= 0).all()
    assert (df["ratio"].between(0, 1)).all() and (df["public_ratio"].between(0, 1)).all()


def test_demo_agrees_with_shapely(world):
    """100 random grids, every level: ratio within 0.5 % of the grid area (here far
    closer), camera counts equal, roads within 0.1 %, gaps = grid minus union."""
    rng = np.random.default_rng(7)
    sample = rng.choice(len(world["grids"]), 100, replace=False)
    grids = world["grids"][sample]
    rtree = shapely.STRtree(world["roads"].lines)
    for level in DORI_LEVELS:
        d = world["df"][world["df"]["level"] == level].reset_index(drop=True).iloc[sample]
        polys = world["fovs"].polygons(level, arc_step_deg=1.0)
        covered, count = reference(grids, polys)
        area = shapely.area(grids)
        assert np.abs(d["covered_m2"].to_numpy() - covered).max() / area.min() < 1e-5
        np.testing.assert_allclose(d["ratio"], covered / area, atol=5e-3)
        assert (d["camera_count"].to_numpy() == count).all()
        tree = shapely.STRtree(polys)
        for g, grid, row in zip(sample[:25], grids[:25], d.head(25).itertuples(), strict=True):
            del g
            union = shapely.union_all(polys[tree.query(grid, predicate="intersects")])
            roads_in = shapely.intersection(
                world["roads"].lines[rtree.query(grid, predicate="intersects")], grid
            )
            assert row.road_length_m == pytest.approx(shapely.length(roads_in).sum(), abs=1e-6)
            covered_road = shapely.length(shapely.intersection(roads_in, union)).sum()
            tol = 1e-3 * row.road_length_m + 1e-6
            assert row.road_covered_m == pytest.approx(covered_road, abs=tol)
            sym = shapely.symmetric_difference(row.gap, grid - union).area
            assert sym < 0.1 * shapely.length(row.gap) + 1e-6


def test_demo_places_agree(world):
    places = world["places"]
    pts = np.where(
        shapely.get_type_id(places.geoms) == 0, places.geoms, shapely.point_on_surface(places.geoms)
    )
    grid_of = np.full(len(pts), -1)
    gi, pi = shapely.STRtree(pts).query(world["grids"], predicate="covers")
    for g, p in sorted(zip(gi, pi, strict=True), reverse=True):
        grid_of[p] = g
    df = world["df"]
    total = np.bincount(grid_of[grid_of >= 0], minlength=len(world["grids"]))
    d = df[df["level"] == "detect"]
    assert (d["places_total"].to_numpy() == total).all()
    for level in DORI_LEVELS:
        polys = world["fovs"].polygons(level, arc_step_deg=2.0)
        seen = np.zeros(len(pts), dtype=bool)
        seen[shapely.STRtree(polys).query(pts, predicate="intersects")[0]] = True
        exp = np.bincount(grid_of[(grid_of >= 0) & seen], minlength=len(world["grids"]))
        got = df[df["level"] == level]["places_covered"].to_numpy()
        # a polygon's boundary may cut a place the exact arc misses: allow one
        assert np.abs(got - exp).sum() <= 1


def test_incremental_equals_full(world):
    """A handful of grids with the cameras reaching them: the same rows."""
    full = world["df"]
    grids = world["grids"]
    pick = np.array([3, 50, 51, 400, 777])
    part = grid_coverage(
        world["ids"][pick], grids[pick], near_grids(world, pick), world["roads"], world["places"]
    )
    want = full.set_index(["grid_id", "level"]).loc[part.set_index(["grid_id", "level"]).index]
    got = part.set_index(["grid_id", "level"])
    num = ["covered_m2", "ratio", "camera_count", "road_length_m", "road_covered_m", "places_total",
           "places_covered"]  # fmt: skip
    pd.testing.assert_frame_equal(got[num], want[num], rtol=1e-9, atol=1e-6)
    assert shapely.equals_exact(got["gap"].to_numpy(), want["gap"].to_numpy(), 1e-6).all()


def near_grids(world, pick):
    """The cameras whose reach meets the grids ``pick``, as an incremental recompute
    passes them."""
    fovs = world["fovs"]
    reach = fovs.ranges_m.max(axis=1)
    near = np.zeros(len(fovs), dtype=bool)
    pts = shapely.points(fovs.x_m, fovs.y_m)
    for g in world["grids"][pick]:
        near |= shapely.dwithin(pts, g, reach)
    return fovs.subset(near)


def test_levels_side_by_side_equal_a_pass_per_level(world, monkeypatch):
    """A small recompute runs all levels in one pass (shifted copies of the zones): every
    column, gap polygon, road gap and uncovered place as a pass per level gives."""
    pick = np.array([3, 50, 51, 400, 777])
    args = (world["ids"][pick], world["grids"][pick], near_grids(world, pick), world["roads"],
            world["places"])  # fmt: skip
    options = {"road_gap_lines": True, "uncovered_places": True}
    stacked = grid_coverage(*args, **options)
    monkeypatch.setattr(cv, "_STACK_MAX_CAMERAS", 0)
    per_level = grid_coverage(*args, **options)
    assert stacked["road_covered_m"].sum() > 0 and stacked["places_total"].sum() > 0
    num = per_level.columns.drop(["grid_id", "level", "gap", "road_gap", "uncovered_places"])
    pd.testing.assert_frame_equal(stacked[num], per_level[num], rtol=1e-9, atol=1e-6)
    assert (stacked[["grid_id", "level"]] == per_level[["grid_id", "level"]]).all().all()
    for column in ("gap", "road_gap"):
        ours, theirs = stacked[column].to_numpy(), per_level[column].to_numpy()
        assert (shapely.is_missing(ours) == shapely.is_missing(theirs)).all()
        both = ~shapely.is_missing(ours)
        assert shapely.equals_exact(ours[both], theirs[both], 1e-6).all()
    assert stacked["uncovered_places"].tolist() == per_level["uncovered_places"].tolist()


def test_grids_and_cells_in_one_pass(world):
    """What a camera edit recomputes: its grids and H3 cells together, as
    :func:`grid_coverage` and :func:`coverage_h3` give them apart (H3 from every camera)."""
    pick = np.array([50, 51])
    fovs = near_grids(world, pick)
    cells = cv.h3_cells_near(fovs.x_m[:3], fovs.y_m[:3], 50.0)
    rows, cell_rows = (pd.DataFrame(columns) for columns in cv.grid_and_h3_coverage(
        world["ids"][pick], world["grids"][pick], cells, world["fovs"], world["roads"],
        world["places"],
    ))  # fmt: skip
    alone = grid_coverage(
        world["ids"][pick], world["grids"][pick], fovs, world["roads"], world["places"],
        road_gap_lines=True, uncovered_places=True,
    )  # fmt: skip
    num = alone.columns.drop(["grid_id", "level", "gap", "road_gap", "uncovered_places"])
    pd.testing.assert_frame_equal(rows[num], alone[num], rtol=1e-9, atol=1e-6)
    assert shapely.equals_exact(rows["gap"].to_numpy(), alone["gap"].to_numpy(), 1e-6).all()
    everywhere = coverage_h3(world["fovs"], DORI_LEVELS)
    want = everywhere[everywhere["h3"].isin(cells)].set_index(["h3", "level"]).sort_index()
    got = cell_rows.set_index(["h3", "level"]).sort_index()
    assert len(got) > 4 and got.index.equals(want.index)
    pd.testing.assert_frame_equal(got, want, rtol=1e-9, atol=1e-6)
    # the same with the hexagons given (the edit has them from finding the cells)
    _, given = cv.grid_and_h3_coverage(
        world["ids"][pick], world["grids"][pick], cells, world["fovs"], world["roads"],
        world["places"], cell_polygons=cv.h3_polygons(cells),
    )  # fmt: skip
    given = pd.DataFrame(given).set_index(["h3", "level"]).sort_index()
    pd.testing.assert_frame_equal(given, got)


def test_workers_give_the_same_rows(world):
    two = grid_coverage(
        world["ids"], world["grids"], world["fovs"], world["roads"], world["places"], workers=2
    )
    one = world["df"]
    num = one.columns.drop(["grid_id", "level", "gap"])
    pd.testing.assert_frame_equal(two[num], one[num], rtol=1e-9, atol=1e-6)
    assert shapely.equals_exact(two["gap"].to_numpy(), one["gap"].to_numpy(), 1e-6).all()


def test_road_and_place_gap_functions(world):
    lines = cv.road_gaps(world["ids"], world["grids"], world["fovs"], world["roads"],
                         levels=["detect"])  # fmt: skip
    d = world["df"][world["df"]["level"] == "detect"].set_index("grid_id")
    gaps = lines.set_index("grid_id")["length_m"]
    expect = (d["road_length_m"] - d["road_covered_m"])[gaps.index]
    np.testing.assert_allclose(gaps, expect, atol=1e-3)
    pg = cv.place_gaps(world["ids"], world["grids"], world["fovs"], world["places"],
                       levels=["identify"])  # fmt: skip
    d = world["df"][world["df"]["level"] == "identify"]
    assert len(pg) == (d["places_total"] - d["places_covered"]).sum()


def test_h3_heat_map(world):
    fovs = world["fovs"].subset(np.arange(0, len(world["fovs"]), 10))
    h = coverage_h3(fovs, "observe")
    union = shapely.union_all(fovs.polygons("observe", arc_step_deg=1.0))
    assert h["covered_m2"].sum() == pytest.approx(union.area, rel=1e-4)
    assert h["h3"].str.len().eq(15).all() and h["ratio"].between(0, 1).all()
    assert h["cell_m2"].between(9e4, 1.1e5).all()
    both = coverage_h3(fovs, ["observe", "identify"])
    assert set(both["level"]) == {"observe", "identify"}
    obs = both[both["level"] == "observe"].set_index("h3")["covered_m2"]
    pd.testing.assert_series_equal(obs, h.set_index("h3")["covered_m2"], check_names=False)
    fine = both[both["level"] == "identify"].set_index("h3")["covered_m2"]
    assert (fine <= obs.reindex(fine.index) + 1e-6).all()


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40))
def test_random_cameras_match_shapely(seed, n):
    """Random cameras (some on shared poles, some wide) over a 2 x 2 tiling."""
    rng = np.random.default_rng(seed)
    grids = np.array([square(X0 + i * 100, Y0 + j * 100, 100) for i in (0, 1) for j in (0, 1)])
    x = X0 + rng.uniform(-20, 220, n)
    y = Y0 + rng.uniform(-20, 220, n)
    pole = rng.random(n) < 0.3
    x[pole], y[pole] = x[0], y[0]
    hfov = rng.choice([30.0, 90.0, 180.0, 250.0, 360.0], n)
    ranges = np.sort(rng.uniform(2, 80, (n, 4)), axis=1)[:, ::-1]
    fovs = FovSet(np.arange(n), x, y, rng.uniform(0, 360, n), hfov, ranges)
    df = grid_coverage(list("abcd"), grids, fovs)
    assert shapely.is_valid(df["gap"].to_numpy()).all()
    for level in DORI_LEVELS:
        d = df[df["level"] == level]
        covered, count = reference(grids, fovs.polygons(level, arc_step_deg=1.0))
        np.testing.assert_allclose(d["covered_m2"], covered, rtol=5e-4, atol=1e-3)
        assert (d["camera_count"].to_numpy() == count).all() or d["fallback"].any()
    wide = df.pivot(index="grid_id", columns="level", values="covered_m2")[list(DORI_LEVELS)]
    assert (np.diff(wide.to_numpy(), axis=1) <= 1e-6).all()


def test_level_ranges_feed_from_cameras():
    f = FovSet.from_cameras([X0], [Y0], ["dome"], [0.0], [360.0], [1920], [np.nan])
    np.testing.assert_allclose(f.ranges_m, level_ranges_m(["dome"], [1920], [360.0]))
    assert f.azimuth_grid_deg.shape == (1,)
