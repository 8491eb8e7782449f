"""Exact nested tilings of a county: townships, villages, grids (EPSG:4546 metres).

Cells
-----
Townships and villages are cells of *power diagrams* (weighted Voronoi diagrams:
a point belongs to the generator g minimising ``|p - g|² - w``), grids are plain
Voronoi cells (all weights 0). Power diagrams have straight edges and convex cells
like Voronoi diagrams, but the weights let every cell reach a target area: small
urban communities next to large rural villages, small sub-districts next to large
rural townships. Generators and weights come from :func:`relax_power`
(capacity-constrained Lloyd relaxation on area-weighted samples of the parent).

Each level is restricted to its parent: township cells to the county, village cells
to their township's cell, grid cells to their village's cell. A point therefore
belongs to the township whose generator is power-nearest, the village power-nearest
among that township's, the grid nearest among that village's — :func:`assign_points`
evaluates exactly that rule.

Exact tiling
------------
Clipping every cell against its parent separately would compute each border twice
(differing in the last bits) and leave T-junctions where a neighbour's edge ends on
a border. Instead the county boundary and the boundaries of all cells of all levels
are noded together once, with snap-rounding to a 0.1 mm grid (which merges the
copies of a border that different levels computed), densified to <= 200 m and
polygonized into *faces*. Every face lies in exactly one grid (found with the rule
above at a point inside the face); each grid, village, township and the county is
the coverage union of its faces. Faces share their vertices exactly, so every level
tiles its parent exactly with identical vertices on shared edges, and converting the
vertices one by one to lon/lat keeps it exact.

The 200 m densification keeps the lon/lat polygons (straight edges between converted
vertices) within millimetres of the metric ones. Where a cell border meets the county
boundary its end is moved to the nearest boundary vertex (the boundary is densified
to <= 50 m), so the outline shared with the neighbouring county gains no vertices
and the two counties' grids keep sharing their border vertices.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.demo._util import (
    FloatArray,
    IntArray,
    farthest_points,
    nearest_index,
    sample_region,
    spread_generators,
    to_multipolygons,
)

INTERIOR_EDGE_MAX_M = 200.0
"""Cell edges are densified to this step (metres) before conversion to lon/lat."""

SNAP_GRID_M = 1e-4
"""Noding snap-rounds every vertex to this grid (metres)."""

# A clipped edge end closer than this to the county boundary lies on it.
_ON_BOUNDARY_M = 1e-6
_GRID_LLOYD_STEPS = 4
_POWER_ROUNDS = 10
_POWER_WEIGHT_STEPS = 3
_POWER_CANDIDATES = 8
# Weight update per step, as a fraction of the area error (m² per m²). A cell grows
# by ~1.7 m² per m² of weight; 0.4 converges without overshooting neighbours.
_POWER_GAIN = 0.4


def relax_power(
    sx: FloatArray,
    sy: FloatArray,
    sample_area: FloatArray,
    start_xy: FloatArray,
    fixed: NDArray[np.bool_],
    target_area: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Generators and power weights whose cells have about ``target_area`` each.

    ``sx``/``sy`` are samples of the region and ``sample_area`` the area (m²) each
    stands for (they sum to the region's area; denser sampling where cells are
    small keeps small cells accurate). ``target_area`` (m², rescaled to sum to the
    region) per generator. Alternates a few weight updates (grow cells that are too
    small) with Lloyd moves of the generators not ``fixed`` to the area-weighted
    centroid of their samples. Returns (xy (k, 2), weights (k,) in m²).
    """
    xy = np.array(start_xy, dtype=np.float64)
    k = len(xy)
    w = np.zeros(k)
    if k == 1:
        return xy, w
    target = np.asarray(target_area, dtype=np.float64)
    target = target * sample_area.sum() / target.sum()
    free = ~np.asarray(fixed, dtype=bool)
    n_candidates = min(k, _POWER_CANDIDATES)
    for round_ in range(_POWER_ROUNDS + 1):
        # Within a round only a sample's few power-nearest generators can win it,
        # so the weight steps compare those candidates instead of all k.
        score = (sx[:, None] - xy[None, :, 0]) ** 2 + (sy[:, None] - xy[None, :, 1]) ** 2
        candidates = np.argpartition(score - w, n_candidates - 1, axis=1)[:, :n_candidates]
        near = np.take_along_axis(score, candidates, axis=1)
        for _ in range(_POWER_WEIGHT_STEPS):
            best = np.argmin(near - w[candidates], axis=1)
            label = candidates[np.arange(len(sx)), best]
            area = np.bincount(label, weights=sample_area, minlength=k)
            w += _POWER_GAIN * (target - area)
            w -= w.mean()
        if round_ == _POWER_ROUNDS:
            break
        label = candidates[np.arange(len(sx)), np.argmin(near - w[candidates], axis=1)]
        mass = np.bincount(label, weights=sample_area, minlength=k)
        move = free & (mass > 0)
        xy[move, 0] = np.bincount(label, weights=sample_area * sx, minlength=k)[move] / mass[move]
        xy[move, 1] = np.bincount(label, weights=sample_area * sy, minlength=k)[move] / mass[move]
    return xy, _ensure_nonempty(sx, sy, xy, w)


def _ensure_nonempty(sx: FloatArray, sy: FloatArray, xy: FloatArray, w: FloatArray) -> FloatArray:
    """Weights shrunk towards 0 until every generator's cell holds samples.

    Weight updates can overshoot and squeeze a small cell to nothing. With all
    weights 0 every generator owns at least the samples nearest to it, provided it
    lies among them (Lloyd moves keep it at the centroid of its samples), so
    shrinking always ends; the returned cells are non-empty within the region.
    """
    k = len(xy)
    for _ in range(40):
        label = nearest_index(sx, sy, xy[:, 0], xy[:, 1], w)
        if (np.bincount(label, minlength=k) > 0).all():
            return w
        w = 0.7 * w
    label = nearest_index(sx, sy, xy[:, 0], xy[:, 1])
    if not (np.bincount(label, minlength=k) > 0).all():
        raise RuntimeError("a generator owns no samples even without weights")
    return np.zeros(k)


def _clip_halfplane(ring: FloatArray, a: FloatArray, b: float) -> FloatArray:
    """Convex polygon (open ring (m, 2)) ∩ {p : a·p <= b} (Sutherland–Hodgman).

    Plain Python over the handful of vertices: several times faster than numpy on
    rings this small, and power_cells calls it ~20,000 times.
    """
    ax, ay = float(a[0]), float(a[1])
    points = ring.tolist()
    out = []
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        s0 = ax * x0 + ay * y0 - b
        s1 = ax * x1 + ay * y1 - b
        if s0 <= 0:
            out.append((x0, y0))
        if (s0 <= 0) != (s1 <= 0):
            t = s0 / (s0 - s1)
            out.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def power_cells(xy: FloatArray, w: FloatArray, parent: shapely.Polygon) -> NDArray[np.object_]:
    """Power cells of generators ``xy`` with weights ``w``, clipped to convex ``parent``.

    Cell i is ``parent`` ∩ {p : |p - g_i|² - w_i <= |p - g_j|² - w_j for all j}; each
    inequality is a half-plane. The cell is cut by the most violated half-plane
    until none is violated (half-planes that already contain the shrinking cell are
    dropped), so only the few that form its edges are ever applied. Computed in
    coordinates relative to the generators' mean to keep the squared terms small.
    Empty cells come back as None.
    """
    origin = xy.mean(axis=0)
    g = xy - origin
    base = np.asarray(parent.exterior.coords)[:-1] - origin
    sq = (g**2).sum(axis=1)
    cells = np.full(len(g), None, dtype=object)
    for i in range(len(g)):
        others = np.flatnonzero(np.arange(len(g)) != i)
        # |p-gi|² - wi <= |p-gj|² - wj  <=>  2 p·(gj-gi) <= |gj|² - |gi|² - wj + wi
        a = 2.0 * (g[others] - g[i])
        b = sq[others] - sq[i] - w[others] + w[i]
        ring = base
        while len(ring) >= 3 and len(a):
            excess = ring @ a.T - b
            worst = excess.max(axis=0)
            violated = worst > 0
            if not violated.any():
                break
            j = int(np.argmax(worst))
            ring = _clip_halfplane(ring, a[j], b[j])
            keep = violated
            keep[j] = False
            a, b = a[keep], b[keep]
        if len(ring) >= 3:
            cells[i] = shapely.Polygon(ring + origin)
    return cells


def voronoi_cells(xy: FloatArray, parent: shapely.Polygon) -> NDArray[np.object_]:
    """Voronoi cells of ``xy`` (in input order) clipped to the convex ``parent``."""
    if len(xy) == 1:
        return np.array([parent], dtype=object)
    diagram = shapely.voronoi_polygons(shapely.multipoints(xy), extend_to=parent, ordered=True)
    return shapely.intersection(shapely.get_parts(diagram), parent)


@dataclass
class Hierarchy:
    """Generators of all three levels of one county (EPSG:4546 metres).

    ``township_xy`` (T, 2) with power weights ``township_w`` (m²); ``village_xy``
    (V, 2) with ``village_w`` and ``village_township`` (V,) indices into townships;
    ``grid_xy`` (G, 2) with ``grid_village`` (G,) indices into villages (plain
    Voronoi). Villages are in code order, grids grouped by village.
    """

    township_xy: FloatArray
    township_w: FloatArray
    village_xy: FloatArray
    village_w: FloatArray
    village_township: IntArray
    grid_xy: FloatArray
    grid_village: IntArray


def locate_villages(h: Hierarchy, x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
    """(township, village) index of each point by the power-nearest rule.

    Points outside the county get the cells they would fall in if the county went
    on; callers test the outline themselves.
    """
    township = nearest_index(x, y, h.township_xy[:, 0], h.township_xy[:, 1], h.township_w)
    village = np.empty(len(x), dtype=np.int64)
    for t in np.unique(township):
        here = np.flatnonzero(township == t)
        members = np.flatnonzero(h.village_township == t)
        village[here] = members[
            nearest_index(
                x[here],
                y[here],
                h.village_xy[members, 0],
                h.village_xy[members, 1],
                h.village_w[members],
            )
        ]
    return township, village


def assign_points(
    h: Hierarchy, x: FloatArray, y: FloatArray
) -> tuple[IntArray, IntArray, IntArray]:
    """(township, village, grid) index of each point: the definition of the tiling."""
    township, village = locate_villages(h, x, y)
    grid = np.empty(len(x), dtype=np.int64)
    grid_start = np.searchsorted(h.grid_village, np.arange(len(h.village_xy)))
    grid_stop = np.searchsorted(h.grid_village, np.arange(len(h.village_xy)), side="right")
    order = np.argsort(village, kind="stable")
    cuts = np.flatnonzero(np.r_[True, village[order][1:] != village[order][:-1], True])
    for a, b in itertools.pairwise(cuts):
        here = order[a:b]
        v = village[here[0]]
        g0, g1 = grid_start[v], grid_stop[v]
        grid[here] = g0 + nearest_index(x[here], y[here], h.grid_xy[g0:g1, 0], h.grid_xy[g0:g1, 1])
    return township, village, grid


def region_sampler(
    cell: shapely.Geometry, outline: shapely.Geometry
) -> Callable[[FloatArray, FloatArray], NDArray[np.bool_]]:
    """An ``accept(x, y)`` test for "inside the convex ``cell`` and the county"."""
    shapely.prepare(cell)

    def accept(x: FloatArray, y: FloatArray) -> NDArray[np.bool_]:
        ok = shapely.contains_xy(cell, x, y)
        ok[ok] = shapely.contains_xy(outline, x[ok], y[ok])
        return ok

    return accept


def hex_lattice(
    rng: np.random.Generator, centre: FloatArray, spacing: float, count: int
) -> FloatArray:
    """The ``count`` points of a randomly rotated hexagonal lattice nearest ``centre``
    (which is the first one), each but the first jittered by up to 15 % of ``spacing``."""
    rings = int(np.ceil(np.sqrt(count))) + 2
    i, j = np.meshgrid(np.arange(-rings, rings + 1), np.arange(-rings, rings + 1))
    lx = (i + 0.5 * j).ravel() * spacing
    ly = (j * np.sqrt(3) / 2).ravel() * spacing
    order = np.argsort(np.hypot(lx, ly) + rng.uniform(0, 1e-3 * spacing, lx.size), kind="stable")
    lx, ly = lx[order][:count], ly[order][:count]
    angle = rng.uniform(0, np.pi / 3)
    ca, sa = np.cos(angle), np.sin(angle)
    jitter = rng.uniform(-0.15 * spacing, 0.15 * spacing, (count, 2))
    jitter[0] = 0.0
    return np.column_stack(
        [centre[0] + ca * lx - sa * ly + jitter[:, 0], centre[1] + sa * lx + ca * ly + jitter[:, 1]]
    )


def centres_inside(
    xy: FloatArray,
    w: FloatArray,
    accept: Callable[[FloatArray, FloatArray], NDArray[np.bool_]],
    sx: FloatArray,
    sy: FloatArray,
) -> FloatArray:
    """A point inside each power cell of the region ``accept`` describes (whose
    samples are ``sx``/``sy``): the generator if it lies there, else the cell's
    sample nearest to the generator.

    In a power diagram a generator can lie outside its own cell, and a Lloyd move
    can take it outside a non-convex county; town and village centres must not.
    """
    out = xy.copy()
    own = nearest_index(xy[:, 0], xy[:, 1], xy[:, 0], xy[:, 1], w)
    ok = (own == np.arange(len(xy))) & accept(xy[:, 0], xy[:, 1])
    label_of_samples = nearest_index(sx, sy, xy[:, 0], xy[:, 1], w)
    for i in np.flatnonzero(~ok):
        mine = np.flatnonzero(label_of_samples == i)
        if len(mine) == 0:
            continue
        best = mine[np.argmin((sx[mine] - xy[i, 0]) ** 2 + (sy[mine] - xy[i, 1]) ** 2)]
        out[i] = sx[best], sy[best]
    return out


def _township_samples(
    rng: np.random.Generator,
    region: shapely.Geometry,
    accept: Callable[[FloatArray, FloatArray], NDArray[np.bool_]],
    seat: FloatArray,
    n_members: int,
    urban_area: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Samples of a township region and the area (m²) each one stands for.

    Uniform samples over the region (40 per village, 1,000–5,000), plus — when the
    township has urban communities — as many again uniform over the part of the
    region within 1.6 urban radii of the seat, where the cells are 5–20 times
    smaller. A sample's area is the inverse of the combined sample density there.
    """
    n_uniform = int(np.clip(40 * n_members, 1000, 5000))
    sx, sy = sample_region(rng, n_uniform, region.bounds, accept)
    density = np.full(len(sx), len(sx) / region.area)
    if urban_area <= 0:
        return sx, sy, 1.0 / density
    radius = 1.6 * np.sqrt(urban_area / np.pi)
    core = shapely.intersection(shapely.Point(seat).buffer(radius, 16), region)
    if core.is_empty:
        return sx, sy, 1.0 / density
    shapely.prepare(core)

    def in_core(x: FloatArray, y: FloatArray) -> NDArray[np.bool_]:
        ok = shapely.contains_xy(core, x, y)
        ok[ok] = accept(x[ok], y[ok])
        return ok

    cx, cy = sample_region(rng, n_uniform, core.bounds, in_core)
    x = np.concatenate([sx, cx])
    y = np.concatenate([sy, cy])
    density = np.full(len(x), len(sx) / region.area)
    density[shapely.contains_xy(core, x, y)] += len(cx) / core.area
    return x, y, 1.0 / density


def place_villages(
    rng: np.random.Generator,
    outline: shapely.Geometry,
    township_cells: NDArray[np.object_],
    seats: FloatArray,
    village_township: IntArray,
    village_urban: NDArray[np.bool_],
    village_target_m2: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.object_]]:
    """Village generators, weights, centres and cells, township by township.

    Urban communities start on a hexagonal lattice around the township seat (the
    first one fixed on the seat) and rural villages at farthest-point picks over the
    rest; :func:`relax_power` then sizes every cell to its target (the plan's areas,
    rescaled to the township's actual area; urban communities keep their absolute
    size while they take at most 60 % of the township). Returns (generators (V, 2),
    weights (V,), centres (V, 2) — inside their own village, the seat community's on
    the seat —, cells (V,) = power cell ∩ township cell, convex).
    """
    n_v = len(village_township)
    gens = np.empty((n_v, 2))
    weights = np.zeros(n_v)
    centres = np.empty((n_v, 2))
    cells = np.empty(n_v, dtype=object)
    for t, cell in enumerate(township_cells):
        members = np.flatnonzero(village_township == t)
        accept = region_sampler(cell, outline)
        # Cut the outline to the cell's box first: intersecting the whole outline
        # with every cell would redo the work on thousands of far-away vertices.
        region = shapely.intersection(cell, shapely.clip_by_rect(outline, *cell.bounds))
        region_area = shapely.area(region)
        urban = village_urban[members]
        target = village_target_m2[members].copy()
        sx, sy, sample_area = _township_samples(
            rng, region, accept, seats[t], len(members), target[urban].sum()
        )
        if urban.any() and not urban.all():
            urban_total = min(target[urban].sum(), 0.6 * region_area)
            target[urban] *= urban_total / target[urban].sum()
            target[~urban] *= (region_area - urban_total) / target[~urban].sum()
        start = np.empty((len(members), 2))
        fixed = np.zeros(len(members), dtype=bool)
        n_urban = int(urban.sum())
        if n_urban:
            spacing = float(np.sqrt(2 / np.sqrt(3) * target[urban].mean()))
            lattice = hex_lattice(rng, seats[t], spacing, 3 * n_urban + 6)
            lattice = lattice[accept(lattice[:, 0], lattice[:, 1])][:n_urban]
            filler = farthest_points(rng, sx, sy, lattice, n_urban - len(lattice))
            start[urban] = np.vstack([lattice, filler])
            # The seat is inside its township and the lattice starts on it.
            fixed[np.flatnonzero(urban)[0]] = len(lattice) > 0
        start[~urban] = farthest_points(rng, sx, sy, start[urban], len(members) - n_urban)
        xy, w = relax_power(sx, sy, sample_area, start, fixed, target)
        gens[members] = xy
        weights[members] = w
        centres[members] = centres_inside(xy, w, accept, sx, sy)
        cells[members] = power_cells(xy, w, cell)
    return gens, weights, centres, cells


def place_grids(
    rng: np.random.Generator,
    outline: shapely.Geometry,
    village_cells: NDArray[np.object_],
    n_grids: IntArray,
    pinned: list[FloatArray],
) -> tuple[FloatArray, IntArray, NDArray[np.object_], list[tuple[FloatArray, FloatArray]]]:
    """Grid generators and cells of every village, grouped by village.

    ``pinned[v]`` (k, 2) are generators that must stay where they are (dedicated
    grids around a school or market) and come first in the village's group; the
    rest are spread evenly by Lloyd relaxation over ~40 samples per grid. Returns
    (generators (G, 2), village index per generator, cells (G,) = Voronoi cell ∩
    village cell, per-village samples (x, y) of the village region).
    """
    xy_parts = []
    cell_parts = []
    samples = []
    for v, cell in enumerate(village_cells):
        accept = region_sampler(cell, outline)
        n_samples = max(200, 40 * int(n_grids[v]))
        sx, sy = sample_region(rng, n_samples, cell.bounds, accept)
        samples.append((sx, sy))
        fixed = pinned[v]
        xy = spread_generators(rng, sx, sy, fixed, int(n_grids[v]) - len(fixed), _GRID_LLOYD_STEPS)
        xy_parts.append(xy)
        cell_parts.append(voronoi_cells(xy, cell))
    grid_village = np.repeat(np.arange(len(village_cells)), n_grids)
    return np.concatenate(xy_parts), grid_village, np.concatenate(cell_parts), samples


@dataclass
class TiledCounty:
    """The exact tilings (EPSG:4546 MultiPolygons, in generator order)."""

    county: shapely.MultiPolygon
    townships: NDArray[np.object_]
    villages: NDArray[np.object_]
    grids: NDArray[np.object_]


def tile(outline: shapely.Geometry, h: Hierarchy, cells: list[NDArray[np.object_]]) -> TiledCounty:
    """Node the county boundary with all cell boundaries and build every level from faces.

    ``cells`` are the convex cells of all levels (township, village, grid), each
    already clipped to its parent's cell. See the module docstring.
    """
    boundary = shapely.boundary(outline)
    boundary_xy = shapely.get_coordinates(boundary)
    all_cells = np.concatenate(cells)
    all_cells = all_cells[~shapely.is_missing(all_cells)]
    rings = shapely.boundary(all_cells[shapely.intersects(outline, all_cells)])
    shapely.prepare(outline)
    inside = shapely.contains_properly(outline, rings)
    clipped = shapely.get_parts(shapely.intersection(rings[~inside], outline))
    clipped = clipped[(shapely.get_type_id(clipped) == 1) & (shapely.length(clipped) > 0)]
    clipped = _snap_ends_to_vertices(clipped, outline, boundary_xy)
    lines = np.concatenate([shapely.get_parts(boundary), rings[inside], clipped])
    noded = shapely.get_parts(shapely.unary_union(lines, grid_size=SNAP_GRID_M))
    noded = shapely.segmentize(noded, INTERIOR_EDGE_MAX_M)
    faces = shapely.get_parts(shapely.polygonize(noded))
    probes = shapely.point_on_surface(faces)
    keep = shapely.contains(outline, probes)
    faces, probes = faces[keep], probes[keep]
    township, village, grid = assign_points(h, shapely.get_x(probes), shapely.get_y(probes))

    grids = _union_groups(faces, grid, len(h.grid_xy))
    villages = _union_groups(faces, village, len(h.village_xy))
    townships = _union_groups(faces, township, len(h.township_xy))
    for level, parts in (("township", townships), ("village", villages), ("grid", grids)):
        missing = [i for i, g in enumerate(parts) if g is None]
        if missing:
            raise RuntimeError(
                f"{len(missing)} {level} cells got no area (first index {missing[0]})"
            )
    county = shapely.coverage_union_all(faces)
    return TiledCounty(
        county=to_multipolygons(np.array([county], dtype=object))[0],
        townships=to_multipolygons(townships),
        villages=to_multipolygons(villages),
        grids=to_multipolygons(grids),
    )


def _union_groups(faces: NDArray[np.object_], owner: IntArray, n: int) -> NDArray[np.object_]:
    """Coverage union of the faces of each owner 0..n-1 (None for owners without faces)."""
    out = np.full(n, None, dtype=object)
    order = np.argsort(owner, kind="stable")
    sorted_owner = owner[order]
    cuts = np.flatnonzero(np.r_[True, sorted_owner[1:] != sorted_owner[:-1], True])
    for a, b in itertools.pairwise(cuts):
        group = faces[order[a:b]]
        out[sorted_owner[a]] = group[0] if b - a == 1 else shapely.coverage_union_all(group)
    return out


def _snap_ends_to_vertices(
    lines: NDArray[np.object_], outline: shapely.Geometry, boundary_xy: FloatArray
) -> NDArray[np.object_]:
    """Move line ends lying on the outline's boundary to the nearest boundary vertex.

    The boundary is densified to <= 50 m, so an end moves by <= ~25 m. A line whose
    moved end would take it outside the county (a sharp notch in the outline) keeps
    its original end: that leaves one extra vertex on the outline, which is exact
    here and off the neighbour's edge by micrometres only.
    """
    if len(lines) == 0:
        return lines
    coords = shapely.get_coordinates(lines)
    counts = shapely.get_num_coordinates(lines)
    index = np.repeat(np.arange(len(lines)), counts)
    last = np.cumsum(counts) - 1
    ends = np.concatenate([last - counts + 1, last])
    end_points = shapely.points(coords[ends])
    boundary = shapely.boundary(outline)
    shapely.prepare(boundary)
    on = shapely.dwithin(boundary, end_points, _ON_BOUNDARY_M)
    if not on.any():
        return lines
    moved = coords.copy()
    tree = shapely.STRtree(shapely.points(boundary_xy))
    moved[ends[on]] = boundary_xy[tree.query_nearest(end_points[on], all_matches=False)[1]]
    snapped = shapely.linestrings(moved, indices=index)
    keep_original = ~shapely.covers(outline, snapped)
    snapped[keep_original] = lines[keep_original]
    return snapped[shapely.length(snapped) > 0]
