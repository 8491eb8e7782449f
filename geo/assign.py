"""Point -> grid index: exact point location over many grids, millions of points a second.

:class:`GridIndex` answers "which grid covers this point?" for numpy arrays of WGS 84
(EPSG:4326) longitude/latitude points, the core of ``GET /v1/lookup``,
``POST /v1/lookup/batch`` and ``gridcover lookup --file``.

Semantics
---------
*Covers semantics*: a point belongs to every grid whose closure contains it (interior
or boundary), exactly as ``shapely.covers(grid, Point(lon, lat))`` decides on the
lon/lat polygons. When several grids cover a point (on a shared edge or vertex, or
where grids overlap) the grid with the smallest code wins. Points covered by no grid
and points with a non-finite coordinate get ``-1``.

Grids must be valid polygons or multipolygons (``shapely.is_valid``), as the import
validation guarantees; :meth:`GridIndex.build` checks it.

How :meth:`GridIndex.locate` works
----------------------------------
A regular lon/lat raster (square cells of ``cell_deg`` degrees, default 0.0005, about
49 m x 55 m here) covers the grids' bounding box plus two empty cells of margin.
Every cell is classified at build time for its *closed* extent widened by
:data:`CELL_MARGIN_DEG` (0.1 mm), which absorbs any rounding in computing a point's
cell, so points on cell borders are safe:

* *uniform* (most cells, most points): the answer is the same for every point of the
  widened cell, so one array lookup answers. A cell is uniformly inside grid ``k``
  only if a part of ``k`` covers it wholly: no edge of the part touches the widened
  cell and the cell's centre is inside the part (signed crossings of the row's centre
  line, accumulated into per-cell winding counts, one cumulative sum per row).
* *boundary*: the edges of some candidate parts touch it (candidates: the parts
  touching it whose code is smaller than that of any grid covering it wholly, at
  most one). A point there is located with GEOS' own ray-crossing rule
  (:func:`_ray_test`, ``RayCrossingCounter``), for all its candidates at once: a
  horizontal ray from the point crosses a part's boundary an odd number of times
  iff the point is inside, and a point on an edge or vertex is on the boundary,
  hence covered. For each candidate the cell stores only the part's edges in its
  row of cells that may cross a ray from the cell, either eastwards (edges reaching
  the cell's west side or beyond) or westwards (mirrored, x -> -x, which is exact),
  whichever list is shorter. Candidates are bits of a 64-bit mask in code order:
  parities are xor-reduced, on-edge flags or-reduced, and the lowest set bit is the
  smallest code covering the point; the wholly-covering grid, if any, caps it.

The orientation sign in the ray rule is computed in floating point with a rigorous
error bound (Shewchuk's, with a 3x margin). The rare point/edge pairs it cannot
certify (points within ~1e-15, relatively, of an edge's line: points *on* edges)
and cells with more than 64 candidates are decided by shapely itself. Where the
bound certifies a sign, GEOS' own filter or its double-double fallback finds the
same sign, so the result equals shapely's exactly, including points on shared
edges, vertices and cell borders.

Updates
-------
:meth:`GridIndex.updated` makes a new index for a few replaced, added or removed
grids without a full build (the old index stays valid for concurrent readers). A
cell's classification depends only on the parts whose bounding box meets it, and
every quantity is computed in global raster coordinates, so the cells near the
changed grids (their old and new parts' bounding boxes, plus one cell) are
reclassified exactly as a build would, by the same code run on a window of the
raster with only the grids near it; every other cell and its edge list is copied,
grid numbers renumbered. The result's tables equal a build's on the same raster.

Distances
---------
All distances (``distance_to_boundary_m``, ``nearest``, candidates within
``accuracy_m``) are planar distances in metres in EPSG:4546 (CGCS2000 / 3-degree
Gauss-Kruger CM 111E): the point and the grid polygons are converted vertex by
vertex with :func:`geo.crs.to_metric`, and shapely measures there. Grid edges are
straight in lon/lat, not in EPSG:4546: the two straight lines part by about half a
millimetre over a 200 m edge (the sag grows with the square of the length: ~1.5 m
over an 11 km edge), which bounds the difference to a lon/lat-exact distance.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from geo.crs import METRIC_EPSG, convert_geometry, to_metric

__all__ = ["CELL_MARGIN_DEG", "DEFAULT_CELL_DEG", "MAX_CELLS", "Candidates", "GridIndex"]

DEFAULT_CELL_DEG: float = 0.0005
"""Default raster cell size in degrees (lon and lat): about 49 m x 55 m in Xiangxi."""

CELL_MARGIN_DEG: float = 1e-9
"""Each cell is classified for its closed extent widened by this many degrees
(~0.1 mm): far above the rounding error of computing a point's cell (~1e-13 deg), so
a point always lies in the widened closure of the cell it is looked up in."""

MAX_CELLS: int = 40_000_000
"""Upper bound of raster cells (4 bytes each); ``cell_deg`` grows to respect it."""

# Relative error bound of the floating-point 2x2 orientation determinant, with a
# 3x safety factor over Shewchuk's (3 + 16 eps) eps = 3.3e-16 (orient2d, errbound A):
# a determinant larger than this times |detleft| + |detright| has the true sign.
_ORIENT_REL_ERR = 1e-15

# Points per slice: keeps the temporaries of a slice in cache.
_CHUNK = 1 << 16
# Candidates of a boundary cell are bits of a uint64 mask.
_MAX_SLOTS = 64

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Candidates:
    """Grids within ``accuracy_m`` of each point (see :meth:`GridIndex.locate_with_candidates`).

    Points are numbered ``0..n-1`` in the flattened input order. Candidates of point
    ``i`` are ``grid[offsets[i]:offsets[i + 1]]`` (indices into the build ``codes``)
    with their distances ``distance_m[offsets[i]:offsets[i + 1]]`` (metres,
    EPSG:4546; 0 for grids covering the point): the grid :meth:`GridIndex.locate`
    returns first (if any), then the others by distance, then code.
    """

    index: IntArray
    """Per point: the covering grid :meth:`GridIndex.locate` returns, -1 outside."""
    offsets: IntArray
    """Length n + 1; CSR offsets into :attr:`grid` and :attr:`distance_m`."""
    grid: IntArray
    """Candidate grid indices (into the build ``codes``)."""
    distance_m: FloatArray
    """Distance point -> candidate grid in metres (EPSG:4546); 0 where it covers."""

    @property
    def count(self) -> IntArray:
        """Number of candidates per point."""
        return np.diff(self.offsets)

    @property
    def ambiguous(self) -> NDArray[np.bool_]:
        """True where more than one grid lies within ``accuracy_m`` of the point."""
        return self.count > 1


def _expand(starts: NDArray[np.integer], counts: NDArray[np.integer]) -> IntArray:
    """Concatenate ``arange(s, s + c)`` for every (s, c), vectorised."""
    counts = counts.astype(np.int64, copy=False)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    shift = np.repeat(starts.astype(np.int64, copy=False) - (ends - counts), counts)
    return np.arange(total, dtype=np.int64) + shift


def _segment_sums(values: NDArray, counts: NDArray[np.integer]) -> IntArray:
    """Sum of ``values`` over consecutive segments of the given lengths (may be 0)."""
    cs = np.zeros(values.size + 1, dtype=np.int64)
    np.cumsum(values, out=cs[1:])
    ends = np.cumsum(counts.astype(np.int64, copy=False))
    return cs[ends] - cs[ends - counts]


def _ray_test(
    px: FloatArray,
    py: FloatArray,
    x1: FloatArray,
    y1: FloatArray,
    x2: FloatArray,
    y2: FloatArray,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """GEOS' ``RayCrossingCounter::countSegment`` for point/edge pairs, vectorised.

    For each pair (point ``(px, py)``, edge ``(x1, y1) -> (x2, y2)``, degrees) returns
    ``(cross, on, unsure)``: the edge crosses the ray from the point towards +x
    (upward edges include their start and exclude their end, downward edges the
    reverse, horizontal edges never cross: every ring crossing is counted once), the
    point is on the edge (only detected at the edge's end vertex and on horizontal
    edges; elsewhere "on" means a zero orientation, which is never certified), and
    the orientation sign could not be certified in floating point (then ``cross``
    is meaningless and the caller asks shapely).

    GEOS skips edges left of the point first; that only saves time: with exact signs
    such an edge never crosses the ray.
    """
    above2 = y2 > py
    straddle = (y1 > py) != above2
    # orient2d(p1, p2, p) > 0 when p is left of p1 -> p2 (Shewchuk's term order)
    detleft = x1 - px
    detleft *= y2 - py
    detright = y1 - py
    detright *= x2 - px
    det = detleft - detright
    np.abs(detleft, out=detleft)
    np.abs(detright, out=detright)
    detleft += detright
    detleft *= _ORIENT_REL_ERR
    sure = np.abs(det, out=detright) > detleft
    # an upward edge crosses the ray iff p is left of it, a downward one iff right
    cross = (det > 0) == above2
    cross &= straddle
    cross &= sure
    unsure = straddle & ~sure
    # On the boundary at an edge's end vertex or on a horizontal edge: both need
    # py == y2, which data points almost never hit, so test that subset only.
    on = np.zeros(px.shape, dtype=bool)
    k = np.flatnonzero(y2 == py)
    if k.size:
        kx, ky, ax, ay, bx = px[k], py[k], x1[k], y1[k], x2[k]
        on[k] = (kx == bx) | ((ay == ky) & (kx >= np.minimum(ax, bx)) & (kx <= np.maximum(ax, bx)))
        unsure[k] &= ~on[k]
    return cross, on, unsure


@dataclass(frozen=True)
class PointPlace:
    """Where one point lies (see :meth:`GridIndex.place`): the answers of
    :meth:`GridIndex.locate_with_candidates` and :meth:`GridIndex.distance_to_boundary_m`
    for a single point."""

    index: int
    """The covering grid :meth:`GridIndex.locate` returns, -1 outside."""
    candidates: tuple[tuple[int, float], ...]
    """(grid, distance in metres) in :class:`Candidates` order: the covering grid first,
    then the others by distance, then code."""
    distance_to_boundary_m: float
    """Metres (EPSG:4546) to the covering grid's boundary; NaN outside."""


@dataclass(frozen=True)
class _Raster:
    """The lon/lat raster: cell (row r, column c), numbered ``r * ncols + c``, is
    ``[x0 + c * cell, x0 + (c + 1) * cell] x [y0 + r * cell, y0 + (r + 1) * cell]``
    (degrees, WGS 84). Its outermost rows and columns are touched by no grid."""

    x0: float
    y0: float
    cell: float
    ncols: int
    nrows: int


Window = tuple[int, int, int, int]
"""Raster cells ``[r_lo, r_hi) x [c_lo, c_hi)`` (rows, columns)."""


@dataclass(frozen=True)
class _Edges:
    """The directed ring edges of some grids' parts (degrees, WGS 84).

    Parts are numbered ``0..nparts-1`` in grid rank order (a multipolygon's parts in
    their own order), so ordering parts orders their grids by code.
    """

    x1: FloatArray
    y1: FloatArray
    x2: FloatArray
    y2: FloatArray
    part: IntArray
    """Part of each edge."""
    left: NDArray[np.bool_]
    """True where the part's interior is on the edge's left."""
    part_grid: IntArray
    """Rank (in the whole index) of each part's grid."""

    @property
    def nparts(self) -> int:
        return max(int(self.part_grid.size), 1)


@dataclass(frozen=True)
class _Cells:
    """The boundary cells of a window of the raster (see :func:`_classify`).

    Boundary cell ``j`` has candidates ``cgrid[cptr[j]:cptr[j + 1]]`` (ranks, in
    code order, one per touching part) and edge references
    ``edges[rptr[j]:rptr[j + 1]]`` / ``rbit[...]``.
    """

    bcells: IntArray
    """Global cell number of each boundary cell, ascending."""
    cptr: IntArray
    cgrid: IntArray
    bfull: NDArray[np.int32]
    """Rank of the grid covering the cell wholly, n if none."""
    overflow: NDArray[np.bool_]
    """More candidates than mask bits: shapely decides."""
    rptr: IntArray
    edges: FloatArray
    """Columns x1, y1, x2, y2, sign (+1 ray towards +x, -1 towards -x, mirrored)."""
    rbit: NDArray[np.uint64]
    """Candidate bit of each edge reference."""

    @classmethod
    def empty(cls) -> _Cells:
        zero = np.zeros(1, dtype=np.int64)
        return cls(
            np.zeros(0, dtype=np.int64), zero, np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int32), np.zeros(0, dtype=bool), zero,
            np.zeros((0, 5)), np.zeros(0, dtype=np.uint64),
        )  # fmt: skip


def _span(
    lo: FloatArray, hi: FloatArray, origin: float, size: float, first: int, stop: int
) -> tuple[IntArray, IntArray]:
    """Cells ``floor((lo - origin) / size)`` .. ``floor((hi - origin) / size)`` that lie
    in ``[first, stop)``: (first cell, count); count 0 where the range misses."""
    a = np.clip(np.floor((lo - origin) / size), first, stop).astype(np.int64)
    b = np.clip(np.floor((hi - origin) / size), first - 1, stop - 1).astype(np.int64)
    return a, np.maximum(b - a + 1, 0)


def _floor_index(v: FloatArray, origin: float, size: float, n: int) -> IntArray:
    """``floor((v - origin) / size)`` clipped to ``[0, n - 1]``."""
    idx = np.floor((v - origin) / size)
    return np.clip(idx, 0, n - 1).astype(np.int64)


def _grid_edges(geoms: NDArray[np.object_], ranks: IntArray) -> _Edges:
    """The ring edges of ``geoms`` (in rank order), whose ranks are ``ranks``."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    # get_rings lists each part's shell first, then its holes. The interior is
    # on the left of a ring's edges for a CCW shell or a CW hole.
    shell = np.r_[True, ring_part[1:] != ring_part[:-1]] if rings.size else np.zeros(0, bool)
    ring_left = shapely.is_ccw(rings) == shell
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same = coord_ring[1:] == coord_ring[:-1]  # consecutive vertices of one ring
    edge_ring = coord_ring[:-1][same]
    return _Edges(
        x1=coords[:-1, 0][same],
        y1=coords[:-1, 1][same],
        x2=coords[1:, 0][same],
        y2=coords[1:, 1][same],
        part=ring_part[edge_ring].astype(np.int64),
        left=ring_left[edge_ring],
        part_grid=np.asarray(ranks, dtype=np.int64)[part_of],
    )


def _choose_raster(e: _Edges, cell: float) -> _Raster:
    """The raster over the edges' bounding box plus two empty cells of margin.

    The outermost rows and columns are touched by nothing (the widening is far
    below a cell), so points clamped into them (outside, NaN, inf) are uncovered.
    ``cell`` grows if the box would need more than :data:`MAX_CELLS` cells.
    """
    if e.x1.size:
        xmin, xmax = float(min(e.x1.min(), e.x2.min())), float(max(e.x1.max(), e.x2.max()))
        ymin, ymax = float(min(e.y1.min(), e.y2.min())), float(max(e.y1.max(), e.y2.max()))
    else:
        xmin = xmax = ymin = ymax = 0.0

    # a stray far-away polygon must not blow the raster up: coarser cells keep
    # the answers exact, only slower
    def n_cells(c: float) -> float:  # an upper bound of the raster's size
        return ((xmax - xmin) / c + 6) * ((ymax - ymin) / c + 6)

    if n_cells(cell) > MAX_CELLS:
        cell = max(cell, math.sqrt((xmax - xmin) * (ymax - ymin) / MAX_CELLS))
        while n_cells(cell) > MAX_CELLS:
            cell *= 1.02
    x0 = math.floor(xmin / cell) * cell - 2 * cell
    y0 = math.floor(ymin / cell) * cell - 2 * cell
    ncols = math.floor((xmax - x0) / cell) + 4
    nrows = math.floor((ymax - y0) / cell) + 4
    return _Raster(x0, y0, cell, ncols, nrows)


def _classify(
    ras: _Raster, win: Window, e: _Edges, order_none: IntArray
) -> tuple[NDArray[np.int32], _Cells]:
    """Classify the cells of window ``win`` of the raster for the grids of ``e``.

    ``order_none``: rank -> build index, rank n ("none") -> -1. Returns
    ``(state, cells)``: ``state`` (row-major over the window, int32) holds a uniform
    cell's answer (build index or -1) and ``-2 - j`` for the window's boundary cell
    ``j``; ``cells`` are the window's boundary cells with their candidates and edge
    lists.

    Everything is computed in global raster coordinates (the same floating-point
    operations on the same numbers as for the whole raster), and a cell's result
    depends only on the parts whose bounding box meets it: so with ``e`` holding at
    least every such part, a window's result is exactly the whole raster's there.
    """
    eps = CELL_MARGIN_DEG
    x0, y0, cell, ncols = ras.x0, ras.y0, ras.cell, ras.ncols
    r_lo, r_hi, c_lo, c_hi = win
    wc = c_hi - c_lo
    n = order_none.size - 1
    part_grid = e.part_grid
    nparts = e.nparts

    # --- edges x rows: each edge in each row band (widened by eps) it meets -------
    r0, nr = _span(np.minimum(e.y1, e.y2) - eps, np.maximum(e.y1, e.y2) + eps, y0, cell, r_lo, r_hi)
    er_edge = np.repeat(np.arange(e.x1.size, dtype=np.int64), nr)
    er_row = _expand(r0, nr)  # global rows
    del r0, nr
    ex1, ey1, ex2, ey2 = e.x1[er_edge], e.y1[er_edge], e.x2[er_edge], e.y2[er_edge]
    er_part = e.part[er_edge]
    er_left = e.left[er_edge]
    del er_edge

    # the edge's x extent inside the widened band, from where it is at the
    # band's (clamped) bottom and top; rounding error << eps
    emin_x = np.minimum(ex1, ex2)
    emax_x = np.maximum(ex1, ex2)
    dy_e = ey2 - ey1
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(dy_e != 0, (ex2 - ex1) / dy_e, 0.0)
    y_lo = np.maximum(np.minimum(ey1, ey2), y0 + er_row * cell - eps)
    y_hi = np.minimum(np.maximum(ey1, ey2), y0 + (er_row + 1) * cell + eps)
    xa = ex1 + (y_lo - ey1) * slope
    xb = ex1 + (y_hi - ey1) * slope
    del y_lo, y_hi, slope, dy_e
    # a horizontal edge (slope 0 above) spans its whole x range in its band
    flat = ey1 == ey2
    seg_lo = np.where(flat, emin_x, np.clip(np.minimum(xa, xb), emin_x, emax_x))
    seg_hi = np.where(flat, emax_x, np.clip(np.maximum(xa, xb), emin_x, emax_x))
    del xa, xb, flat
    c0, ncs = _span(seg_lo - eps, seg_hi + eps, x0, cell, c_lo, c_hi)
    del seg_lo, seg_hi

    # --- touched (cell, part): the part's boundary meets the widened cell --------
    # (cells numbered row-major within the window)
    t_key = np.repeat((er_row - r_lo) * wc - c_lo, ncs) + _expand(c0, ncs)
    t_key *= nparts
    t_key += np.repeat(er_part, ncs)
    t_key.sort()
    t_key = t_key[np.r_[True, t_key[1:] != t_key[:-1]]] if t_key.size else t_key
    t_cell = t_key // nparts
    t_part = t_key - t_cell * nparts
    del t_key, c0, ncs

    # --- whole cells: which parts cover the widened cell entirely? ---------------
    full = _whole_cells(ras, win, ex1, ey1, ex2, ey2, er_row, er_part, er_left, t_cell, t_part,
                        part_grid, n)  # fmt: skip
    del er_left

    # --- boundary cells: touching parts of a smaller code than a covering one ----
    t_grid = part_grid[t_part]
    keep = t_grid < full[t_cell]
    t_cell, t_part, t_grid = t_cell[keep], t_part[keep], t_grid[keep]
    del keep
    first = np.flatnonzero(np.r_[True, t_cell[1:] != t_cell[:-1]]) if t_cell.size else t_cell
    bloc = t_cell[first]  # window-local cell numbers
    nb = bloc.size
    cptr = np.append(first, t_cell.size).astype(np.int64)
    bfull = full[bloc]
    # the answers now, so that the ranks are freed before the edge lists' peak
    state = order_none.astype(np.int32)[full]
    del full
    state[bloc] = -2 - np.arange(nb, dtype=np.int32)
    ncand = np.diff(cptr)
    cand_cell = np.repeat(np.arange(nb, dtype=np.int64), ncand)
    # slot of a candidate in its cell's bit mask: candidates are in part order,
    # hence code order, so the lowest covering bit is the smallest code
    slot = np.arange(t_cell.size, dtype=np.int64) - cptr[cand_cell]
    # cells with more candidates than mask bits are left to shapely
    overflow = ncand > _MAX_SLOTS

    # --- edge lists. A candidate in column c needs its part's edges in its row
    # that may cross a ray from a point of the cell: towards +x those with max x
    # >= the cell's left side, towards -x those with min x <= its right side.
    # Each candidate takes the shorter list. Leftward rays are stored mirrored
    # (x -> -x, exact), so one rightward ray test serves both. Every edge of a
    # part in a window row is in er_* (rows are clipped to the window, columns
    # are not), so windowed lists are the whole raster's lists.
    # Group the (edge, row) entries by (part, row) with a dense group number.
    p_rmin = np.full(nparts, r_hi, dtype=np.int64)
    np.minimum.at(p_rmin, er_part, er_row)
    p_rmax = np.full(nparts, -1, dtype=np.int64)
    np.maximum.at(p_rmax, er_part, er_row)
    p_span = np.maximum(p_rmax - p_rmin + 1, 0)
    p_off = np.cumsum(p_span) - p_span
    gid = p_off[er_part] + er_row - p_rmin[er_part]
    g_order = np.argsort(gid, kind="stable")  # already grouped by part: cheap
    g_count = np.bincount(gid, minlength=int(p_span.sum()))
    g_start = np.cumsum(g_count) - g_count
    del gid, er_part
    c_row = t_cell // wc + r_lo  # global row and column
    c_col = t_cell % wc + c_lo
    c_gid = p_off[t_part] + c_row - p_rmin[t_part]
    c_len = np.where(overflow[cand_cell], 0, g_count[c_gid])
    pair_er = g_order[_expand(g_start[c_gid], c_len)]
    pair_c = np.repeat(np.arange(t_cell.size, dtype=np.int64), c_len)
    del c_row, c_gid, t_part, t_cell, g_order, g_start, g_count
    right_ok = emax_x[pair_er] >= (x0 - eps + c_col * cell)[pair_c]
    left_ok = emin_x[pair_er] <= (x0 + eps + (c_col + 1) * cell)[pair_c]
    go_left = _segment_sums(left_ok, c_len) < _segment_sums(right_ok, c_len)
    use = np.where(go_left[pair_c], left_ok, right_ok)
    ref_er = pair_er[use]
    ref_c = pair_c[use]
    del pair_er, pair_c, right_ok, left_ok, use, c_col
    # per boundary cell: its candidates' edges, at least one (an inert NaN edge
    # pads cells without any, e.g. overflowing ones)
    ref_cell = cand_cell[ref_c]
    cell_cnt = np.bincount(ref_cell, minlength=nb)
    rptr = np.zeros(nb + 1, dtype=np.int64)
    np.cumsum(np.maximum(cell_cnt, 1), out=rptr[1:])
    dest = rptr[ref_cell] + (
        np.arange(ref_c.size, dtype=np.int64) - np.repeat(np.cumsum(cell_cnt) - cell_cnt, cell_cnt)
    )
    sign = np.where(go_left[ref_c], -1.0, 1.0)
    # columns x1, y1, x2, y2, sign: +1 ray towards +x, -1 towards -x (the query
    # multiplies the point's x by it)
    cols = np.empty((ref_c.size, 5))
    np.multiply(ex1[ref_er], sign, out=cols[:, 0])
    cols[:, 1] = ey1[ref_er]
    np.multiply(ex2[ref_er], sign, out=cols[:, 2])
    cols[:, 3] = ey2[ref_er]
    cols[:, 4] = sign
    bits = np.left_shift(np.uint64(1), slot[ref_c].astype(np.uint64))
    if rptr[-1] == ref_c.size:  # no padding needed: dest is 0..n-1
        edges = cols
    else:
        edges = np.full((int(rptr[-1]), 5), np.nan)
        edges[dest] = cols
        bits, b = np.zeros(edges.shape[0], dtype=np.uint64), bits
        bits[dest] = b
    bcells = (bloc // wc + r_lo) * ncols + (bloc % wc + c_lo)
    return state, _Cells(bcells, cptr, t_grid, bfull, overflow, rptr, edges, bits)


def _whole_cells(
    ras: _Raster,
    win: Window,
    ex1: FloatArray,
    ey1: FloatArray,
    ex2: FloatArray,
    ey2: FloatArray,
    er_row: IntArray,
    er_part: IntArray,
    er_left: NDArray[np.bool_],
    t_cell: IntArray,
    t_part: IntArray,
    part_grid: IntArray,
    n: int,
) -> NDArray[np.int32]:
    """Per window cell: the smallest rank of a grid covering the widened cell, or n.

    A part covers a cell wholly iff its boundary does not touch the widened cell
    and the cell's centre is inside it. Centres are classified along each row's
    centre line by signed crossings (+1 entering the part, -1 leaving, eastward),
    accumulated into winding counts: ``count`` (parts containing the centre) and
    ``gsum`` (sum of their grid ranks), one cumulative sum per row. Where a
    count is >= 2 (overlapping grids) the rows are redone part by part.

    ``er_*``: every (edge, global row) of the window's rows, whatever its columns;
    ``t_cell``/``t_part``: touched (window cell, part) pairs, sorted.
    """
    x0, y0, cell = ras.x0, ras.y0, ras.cell
    r_lo, r_hi, c_lo, c_hi = win
    wr, wc = r_hi - r_lo, c_hi - c_lo
    yc = y0 + (er_row + 0.5) * cell
    # same half-open rule as the ray test: each ring crossing counted once
    crossing = np.flatnonzero((ey1 > yc) != (ey2 > yc))
    ax, ay, bx, by = ex1[crossing], ey1[crossing], ex2[crossing], ey2[crossing]
    yc = yc[crossing]
    # interior on the left: a southward edge is entered going east
    down = by < ay
    enter = down == er_left[crossing]
    # interpolate from the lower end, so that both grids sharing an edge (which
    # run it in opposite directions) get bit-identical crossings
    lx = np.where(down, bx, ax)
    ly = np.where(down, by, ay)
    xc = lx + (yc - ly) * ((np.where(down, ax, bx) - lx) / (np.where(down, ay, by) - ly))
    del ax, ay, bx, by, lx, ly, yc, down
    c_row = er_row[crossing] - r_lo
    c_part = er_part[crossing]
    # +-1 at the first column whose centre lies east of the crossing. Crossings
    # west of the window count for all its cells (column c_lo); those east of
    # every centre go to a sentinel column past the window's end, dropped below.
    # Rings are closed, so a part lying wholly west or east adds nothing.
    ws = wc + 1
    col = np.clip(np.floor((xc - x0) / cell - 0.5) + 1, c_lo, c_hi).astype(np.int64) - c_lo
    pos = c_row * ws + col
    sgn = np.where(enter, 1, -1).astype(np.int32)
    count = np.zeros(wr * ws, dtype=np.int32)
    np.add.at(count, pos, sgn)
    count2 = count.reshape(wr, ws)
    np.cumsum(count2, axis=1, out=count2)
    # int32 sums may wrap where many grids overlap; they are exact (mod 2**32)
    # where count is 1, the only place they are used
    gsum = np.zeros(wr * ws, dtype=np.int32)
    np.add.at(gsum, pos, sgn * part_grid[c_part].astype(np.int32))
    gsum2 = gsum.reshape(wr, ws)
    np.cumsum(gsum2, axis=1, out=gsum2)
    del pos, sgn
    count2 = count2[:, :wc]
    # Untouched cells: the winding count is exact. Touched cells: a touching
    # part's own count may go either way, but a touching part never covers the
    # cell wholly, and a valid (multi)polygon cannot both touch the cell and
    # cover it with another part. So with count 1, the covering grid covers
    # the cell wholly unless one of the cell's touching parts belongs to it.
    full = np.where(count2 == 1, gsum2[:, :wc], np.int32(n)).ravel()
    del gsum, gsum2
    full[t_cell[part_grid[t_part] == full[t_cell]]] = n
    many = np.flatnonzero(count2 >= 2)
    if many.size:
        rows = np.unique(many // wc)
        sel = np.isin(c_row, rows)
        full.reshape(wr, wc)[rows] = _whole_cells_exact(
            xc[sel], c_part[sel], rows, np.searchsorted(rows, c_row[sel]),
            part_grid, t_cell, t_part, x0, cell, c_lo, c_hi, n,
        )  # fmt: skip
    return full


def _whole_cells_exact(
    xc: FloatArray,
    part: IntArray,
    rows: IntArray,
    row_idx: IntArray,
    part_grid: IntArray,
    t_cell: IntArray,
    t_part: IntArray,
    x0: float,
    cell: float,
    c_lo: int,
    c_hi: int,
    none: int,
) -> NDArray[np.int64]:
    """Smallest rank of a part covering each cell of ``rows`` wholly, part by part.

    ``rows``: window rows; columns are the window's ``[c_lo, c_hi)``.
    ``xc``/``part``/``row_idx``: every centre-line crossing of those rows (x in
    degrees, part, position of the row in ``rows``). Sorted by part, row and x,
    consecutive crossings bound the part's inside spans; cells whose centre is in a
    span and that the part does not touch (``t_cell``/``t_part``: window cells,
    sorted) are wholly inside. Returns shape ``(rows.size, c_hi - c_lo)``,
    ``none`` where no part does.
    """
    nparts = part_grid.size
    wc = c_hi - c_lo
    srt = np.lexsort((xc, row_idx, part))
    xc, row_idx, part = xc[srt], row_idx[srt], part[srt]
    x_in, x_out = xc[0::2], xc[1::2]
    s_row, s_part = row_idx[0::2], part[0::2]
    ca = np.clip(np.ceil((x_in - x0) / cell - 0.5), c_lo, c_hi).astype(np.int64)
    cb = np.clip(np.floor((x_out - x0) / cell - 0.5), c_lo - 1, c_hi - 1).astype(np.int64)
    n = np.maximum(cb - ca + 1, 0)
    col = _expand(ca - c_lo, n)
    f_row = np.repeat(s_row, n)
    f_part = np.repeat(s_part, n)
    key = (rows[f_row] * wc + col) * nparts + f_part
    t_key = t_cell * nparts + t_part
    pos = np.minimum(np.searchsorted(t_key, key), max(t_key.size - 1, 0))
    free = t_key[pos] != key if t_key.size else np.ones(key.size, dtype=bool)
    out = np.full(rows.size * wc, none, dtype=np.int64)
    np.minimum.at(out, (f_row * wc + col)[free], part_grid[f_part[free]])
    return out.reshape(rows.size, wc)


def _concat_cells(parts: list[_Cells]) -> _Cells:
    """The boundary cells of disjoint windows as one table, ascending by cell."""
    if not parts:
        return _Cells.empty()
    if len(parts) == 1:
        return parts[0]
    srt = np.argsort(np.concatenate([p.bcells for p in parts]), kind="stable")

    def ragged(vals: list[NDArray], ptrs: list[IntArray]) -> tuple[NDArray, IntArray]:
        base = np.cumsum([0] + [v.shape[0] for v in vals[:-1]])
        starts = np.concatenate([p[:-1] + b for p, b in zip(ptrs, base, strict=True)])[srt]
        counts = np.concatenate([np.diff(p) for p in ptrs])[srt]
        ptr = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return np.concatenate(vals)[_expand(starts, counts)], ptr

    cgrid, cptr = ragged([p.cgrid for p in parts], [p.cptr for p in parts])
    edges, rptr = ragged([p.edges for p in parts], [p.rptr for p in parts])
    rbit, _ = ragged([p.rbit for p in parts], [p.rptr for p in parts])
    return _Cells(
        bcells=np.concatenate([p.bcells for p in parts])[srt],
        cptr=cptr,
        cgrid=cgrid,
        bfull=np.concatenate([p.bfull for p in parts])[srt],
        overflow=np.concatenate([p.overflow for p in parts])[srt],
        rptr=rptr,
        edges=edges,
        rbit=rbit,
    )


def _update_windows(geoms: NDArray[np.object_], ras: _Raster) -> list[Window]:
    """Disjoint windows holding every cell that ``geoms`` may touch or cover.

    The build marks a cell touched or covered by a part only if the cell meets the
    part's bounding box widened by :data:`CELL_MARGIN_DEG`; one more cell on each
    side costs little and leaves any rounding out of the question. Overlapping
    windows are merged into their bounding window until none overlap.
    """
    b = shapely.bounds(shapely.get_parts(geoms)).reshape(-1, 4)
    b = b[np.isfinite(b).all(axis=1)]
    eps, cell = CELL_MARGIN_DEG, ras.cell
    c_lo = _floor_index(b[:, 0] - eps, ras.x0, cell, ras.ncols) - 1
    c_hi = _floor_index(b[:, 2] + eps, ras.x0, cell, ras.ncols) + 2
    r_lo = _floor_index(b[:, 1] - eps, ras.y0, cell, ras.nrows) - 1
    r_hi = _floor_index(b[:, 3] + eps, ras.y0, cell, ras.nrows) + 2
    pending = [
        [max(r0, 0), min(r1, ras.nrows), max(c0, 0), min(c1, ras.ncols)]
        for r0, r1, c0, c1 in zip(r_lo.tolist(), r_hi.tolist(), c_lo.tolist(), c_hi.tolist(),
                                  strict=True)
    ]  # fmt: skip
    done: list[list[int]] = []  # pairwise disjoint
    while pending:
        w = pending.pop()
        for i, o in enumerate(done):
            if w[0] < o[1] and o[0] < w[1] and w[2] < o[3] and o[2] < w[3]:
                del done[i]
                pending.append([min(w[0], o[0]), max(w[1], o[1]), min(w[2], o[2]), max(w[3], o[3])])
                break
        else:
            done.append(w)
    return sorted((w[0], w[1], w[2], w[3]) for w in done if w[0] < w[1] and w[2] < w[3])


def _check_grids(code_arr: NDArray[np.str_], geoms: NDArray[np.object_], check_valid: bool) -> None:
    """Raise ``ValueError`` naming the codes of non-polygonal or invalid geometries."""
    type_id = shapely.get_type_id(geoms)
    bad = ~np.isin(type_id, (3, 6))  # Polygon, MultiPolygon
    if bad.any():
        raise ValueError(f"not a polygon: {_some(code_arr[bad])}")
    if check_valid:
        invalid = ~shapely.is_valid(geoms)
        if invalid.any():
            raise ValueError(f"invalid geometry: {_some(code_arr[invalid])}")


class GridIndex:
    """Exact, vectorised point -> grid location over a fixed set of grids.

    Build once with :meth:`build`; the index is immutable afterwards and safe to
    share between threads (the EPSG:4546 copies of the grids that the distance
    methods need are made on first use, under a lock, or by :meth:`prepare_distances`).
    Grid numbers returned by every method are indices into :attr:`codes` (``-1``:
    none). To follow grid edits, make a new index with :meth:`updated` (or
    :meth:`build`) and swap the reference.

    On the full demo world (9,873 grids, 309,000 vertices) with the default cell:
    build ~1.3 s, ~140 MiB held (~350 MiB peak while building), :meth:`updated`
    of 1-10 grids 0.06-0.12 s, :meth:`locate` ~9 million points/s on one core
    (scripts/bench/assign_core.py).
    """

    # raster
    _raster: _Raster
    _x0: float
    _y0: float
    _cell: float
    _ncols: int
    _nrows: int
    _state: NDArray[np.int32]

    def __init__(self) -> None:  # use GridIndex.build
        self._lock = threading.Lock()
        self._metric: NDArray[np.object_] | None = None
        self._metric_boundary: NDArray[np.object_] | None = None
        self._metric_tree: shapely.STRtree | None = None
        self._lonlat_tree: shapely.STRtree | None = None

    # --- construction -------------------------------------------------------------

    @classmethod
    def build(
        cls,
        codes: Sequence[str],
        polygons: ArrayLike,
        *,
        cell_deg: float = DEFAULT_CELL_DEG,
        check_valid: bool = True,
    ) -> GridIndex:
        """Build the index of ``polygons`` (shapely Polygon/MultiPolygon, WGS 84 lon/lat).

        ``codes[i]`` is the code of ``polygons[i]``; ties between grids covering the
        same point go to the smallest code (string order; 15-digit grid codes sort
        numerically). ``cell_deg`` is the raster cell size in degrees: smaller cells
        answer more points in a single lookup but cost memory (a 4-byte entry per
        cell of the grids' bounding box, plus 48 bytes per edge reference of each
        boundary cell) and build time; it never changes the answers. Empty
        geometries are allowed and never match. Raises ``ValueError`` for mismatched
        lengths, non-polygonal or (with ``check_valid``) invalid geometries, naming
        the codes; with ``check_valid=False`` answers on invalid geometry are
        unspecified.
        """
        geoms = np.asarray(polygons, dtype=object).ravel()
        code_arr = np.asarray([str(c) for c in codes], dtype=str)
        if code_arr.shape[0] != geoms.shape[0]:
            raise ValueError(f"{code_arr.shape[0]} codes for {geoms.shape[0]} polygons")
        if not (cell_deg > 0 and math.isfinite(cell_deg)):
            raise ValueError(f"cell_deg must be a positive number, got {cell_deg!r}")
        _check_grids(code_arr, geoms, check_valid)
        return cls._build(code_arr, geoms, float(cell_deg))

    @classmethod
    def _build(
        cls,
        code_arr: NDArray[np.str_],
        geoms: NDArray[np.object_],
        cell_deg: float,
        raster: _Raster | None = None,
    ) -> GridIndex:
        """Build from checked input; ``raster`` (tests) imposes the raster instead of
        fitting one to the grids (it must leave the outermost cells untouched)."""
        self = cls()
        self._set_grids(code_arr, geoms)
        self._requested_cell_deg = cell_deg
        edges = _grid_edges(self._geoms, np.arange(self._n, dtype=np.int64))
        ras = _choose_raster(edges, cell_deg) if raster is None else raster
        self._set_raster(ras)
        # Uniform cells hold the answer as a build index (>= 0) or -1; boundary
        # cell j holds -2 - j.
        self._state, cells = _classify(ras, (0, ras.nrows, 0, ras.ncols), edges, self._order_none)
        del edges
        self._set_cells(cells)
        return self

    def _set_grids(self, code_arr: NDArray[np.str_], geoms: NDArray[np.object_]) -> None:
        # Internal numbering: rank in code order, so "smallest code" is "lowest rank".
        order = np.argsort(code_arr, kind="stable")
        self._codes = code_arr
        self._order = order.astype(np.int64)
        # rank -> build index; rank n (internally "no grid") -> -1
        self._order_none = np.append(self._order, -1)
        self._rank = np.empty(self._order.size, dtype=np.int64)
        self._rank[self._order] = np.arange(self._order.size)
        self._rank_none = np.append(self._rank, -1)  # build index -1 -> rank -1
        self._geoms = geoms[order]
        self._n = int(geoms.shape[0])

    def _set_raster(self, ras: _Raster) -> None:
        self._raster = ras
        self._x0, self._y0, self._cell = ras.x0, ras.y0, ras.cell
        self._ncols, self._nrows = ras.ncols, ras.nrows
        self._cell_deg = ras.cell

    def _set_cells(self, cells: _Cells) -> None:
        self._bcells = cells.bcells
        self._cptr = cells.cptr
        self._cgrid = cells.cgrid
        self._bfull = cells.bfull
        self._overflow = cells.overflow
        self._rptr = cells.rptr
        self._edges = cells.edges
        self._rbit = cells.rbit

    # --- incremental update -------------------------------------------------------

    def updated(
        self, codes: Sequence[str], polygons: ArrayLike, *, check_valid: bool = True
    ) -> GridIndex:
        """A new index: this one's grids with the grids ``codes`` replaced, added or removed.

        ``polygons[i]`` (shapely Polygon/MultiPolygon, WGS 84 lon/lat) becomes the
        geometry of ``codes[i]``: it replaces the grid with that code, or adds one if
        this index has none. ``None`` or an empty geometry removes the grid with that
        code (a code this index does not hold is then ignored). The result numbers
        its grids (:attr:`codes`, the indices every method returns) as this index
        does, removed grids dropped (later ones move down), then the added codes in
        the given order. Every answer of the result is that of
        ``GridIndex.build(result.codes, their polygons)``: located grid, smallest-code
        tie-break, candidates, nearest grid and distances. This index is not
        modified: readers may keep using it while (and after) the update runs.

        Only the raster cells within the bounding boxes (plus one cell) of the
        parts of each changed grid's old and new geometry are reclassified, from
        the grids whose bounding box meets them; every other cell keeps its answer
        and edge list, copied with grid numbers renumbered. The raster (extent and
        cell size) is kept, so :meth:`stats` may differ from a fresh build's; the
        answers never depend on it. A new geometry reaching within 1.5 cells of the
        raster's border does not fit in it (the border cells must stay empty): the
        result is then a full :meth:`build`, with the ``cell_deg`` this index was
        built with. EPSG:4546 copies of the grids made by this index for the
        distance methods are carried over, converting only the changed grids.

        On the full demo world (~140 MiB of tables, copied: ~150 MiB peak) an update
        of one grid takes ~60-80 ms, of ten grids ~110 ms, a build ~1.1-1.5 s
        (scripts/bench/assign_core.py). A fallback build drops the EPSG:4546 copies
        (made again on first use).

        Raises ``ValueError`` for mismatched lengths, a code given twice, a code
        held by several grids of this index, and non-polygonal or (with
        ``check_valid``) invalid geometries, naming the codes.
        """
        geoms = np.asarray(polygons, dtype=object).ravel()
        code_arr = np.asarray([str(c) for c in codes], dtype=str)
        if code_arr.shape[0] != geoms.shape[0]:
            raise ValueError(f"{code_arr.shape[0]} codes for {geoms.shape[0]} polygons")
        uniq, times = np.unique(code_arr, return_counts=True)
        if (times > 1).any():
            raise ValueError(f"code given more than once: {_some(uniq[times > 1])}")
        remove = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        put = ~remove
        _check_grids(code_arr[put], geoms[put], check_valid)

        # which of the given codes this index holds, and where (build index)
        n = self._n
        found = np.zeros(code_arr.size, dtype=bool)
        old_bi = np.full(code_arr.size, -1, dtype=np.int64)
        if n:
            sorted_codes = self._codes[self._order]
            pos = np.searchsorted(sorted_codes, code_arr)
            at = np.minimum(pos, n - 1)
            found = (pos < n) & (sorted_codes[at] == code_arr)
            dup = found & (pos + 1 < n) & (sorted_codes[np.minimum(pos + 1, n - 1)] == code_arr)
            if dup.any():
                raise ValueError(f"code held by several grids: {_some(code_arr[dup])}")
            old_bi[found] = self._order[at[found]]

        # the new grid set, in the documented order
        keep = np.ones(n, dtype=bool)
        keep[old_bi[found & remove]] = False
        kept = np.flatnonzero(keep)
        added = ~found & put
        geoms_b = self._geoms[self._rank]  # build order (a copy)
        geoms_b[old_bi[found & put]] = geoms[found & put]
        new_codes = np.concatenate([self._codes[kept], code_arr[added]])
        new_geoms = np.concatenate([geoms_b[kept], geoms[added]])

        ras = self._raster
        b = shapely.bounds(geoms[put]).reshape(-1, 4)
        lo_x, lo_y = ras.x0 + 1.5 * ras.cell, ras.y0 + 1.5 * ras.cell
        hi_x = ras.x0 + (ras.ncols - 1.5) * ras.cell
        hi_y = ras.y0 + (ras.nrows - 1.5) * ras.cell
        fits = (b[:, 0] >= lo_x) & (b[:, 1] >= lo_y) & (b[:, 2] <= hi_x) & (b[:, 3] <= hi_y)
        if not fits.all():
            return type(self)._build(new_codes, new_geoms, self._requested_cell_deg)

        new = type(self)()
        new._set_grids(new_codes, new_geoms)
        new._requested_cell_deg = self._requested_cell_deg
        new._set_raster(ras)
        m = new._n
        # Old -> new numbering of the surviving grids: build index (bmap, -1 for
        # removed grids; None: unchanged, nothing removed) and rank (rank_map, old
        # rank n "none" -> m; None: unchanged, nothing added or removed). Both keep
        # the relative order, so copied candidate lists stay in code order.
        bmap = rank_map = None
        if kept.size != n:
            bmap = np.full(n, -1, dtype=np.int64)
            bmap[kept] = np.arange(kept.size)
        if kept.size != n or added.any():
            to_new = np.arange(n) if bmap is None else bmap
            rank_map = np.append(new._rank_none[to_new[self._order]], m)

        # reclassify the windows around the changed grids' old and new geometries
        changed_old = self._geoms[self._rank[old_bi[found]]]
        windows = _update_windows(np.concatenate([changed_old, geoms[put]]), ras)
        bnd = shapely.bounds(new._geoms)  # rank order; NaN for empty geometries
        slack = 2 * CELL_MARGIN_DEG
        states: list[NDArray[np.int32]] = []
        parts: list[_Cells] = []
        for win in windows:
            r_lo, r_hi, c_lo, c_hi = win
            near = np.flatnonzero(
                (bnd[:, 0] <= ras.x0 + c_hi * ras.cell + slack)
                & (bnd[:, 2] >= ras.x0 + c_lo * ras.cell - slack)
                & (bnd[:, 1] <= ras.y0 + r_hi * ras.cell + slack)
                & (bnd[:, 3] >= ras.y0 + r_lo * ras.cell - slack)
            )
            edges = _grid_edges(new._geoms[near], near)
            state, cells = _classify(ras, win, edges, new._order_none)
            states.append(state)
            parts.append(cells)
        self._splice(new, windows, states, _concat_cells(parts), bmap, rank_map)

        # EPSG:4546 copies: carry the unchanged grids' over, convert the others
        with self._lock:
            metric, boundary = self._metric, self._metric_boundary
            warm = self._metric_tree is not None
        if metric is not None and boundary is not None:
            old_ranks = np.arange(n) if rank_map is None else rank_map[:n]
            alive = np.flatnonzero(old_ranks >= 0)
            new_bi = np.where(found, old_bi, -1)
            if bmap is not None:
                new_bi[found] = bmap[old_bi[found]]
            new_bi[added] = kept.size + np.arange(int(added.sum()))
            fresh = new._rank[new_bi[put]]
            new_metric = np.empty(m, dtype=object)
            new_boundary = np.empty(m, dtype=object)
            new_metric[old_ranks[alive]] = metric[alive]
            new_boundary[old_ranks[alive]] = boundary[alive]
            conv = convert_geometry(new._geoms[fresh], "wgs84", f"EPSG:{METRIC_EPSG}")
            shapely.prepare(conv)
            new_metric[fresh] = conv
            new_boundary[fresh] = shapely.boundary(conv)
            new._metric, new._metric_boundary = new_metric, new_boundary
            if warm:  # STRtrees of ~10,000 grids take a few ms: keep the index warm
                new.prepare_distances()
        return new

    def _splice(
        self,
        new: GridIndex,
        windows: list[Window],
        states: list[NDArray[np.int32]],
        fresh: _Cells,
        bmap: IntArray | None,
        rank_map: IntArray | None,
    ) -> None:
        """Give ``new`` this index's cells outside ``windows`` and ``states``/``fresh``
        (the windows' classification, see :func:`_classify`) inside them.

        Old grid numbers are renumbered with ``bmap`` (build index) and ``rank_map``
        (rank); None: unchanged. Boundary cells stay numbered in raster order, as a
        build numbers them: the kept ones keep their relative order and the windows'
        new ones go where their cell numbers fall. The tables are thus a few long
        pieces of old entries between short pieces of new ones, copied piece by
        piece (memcpy), and only the kept boundary cells' raster entries change.
        """
        ras = self._raster
        nb_old = self._bfull.size
        none = np.zeros(0, dtype=np.int64)
        # removed boundary cells: runs [g_lo, g_hi) (a window row's are consecutive)
        st_old = self._state.reshape(ras.nrows, ras.ncols)
        gone = [
            -2 - s[s <= -2].astype(np.int64) for s in (st_old[a:b, c:d] for a, b, c, d in windows)
        ]
        gone_j = np.sort(np.concatenate([none, *gone]))
        brk = np.flatnonzero(np.diff(gone_j) != 1) + 1
        g_lo = gone_j[np.r_[0, brk]] if gone_j.size else none
        g_hi = gone_j[np.r_[brk - 1, gone_j.size - 1]] + 1 if gone_j.size else none
        # a new cell goes before the first old cell after it in raster order:
        # groups [i_lo, i_hi) of new cells that go before old cell i_at
        at = np.searchsorted(self._bcells, fresh.bcells)
        grp = np.flatnonzero(np.diff(at) != 0) + 1
        i_lo = np.r_[0, grp] if at.size else none
        i_hi = np.r_[grp, at.size] if at.size else none
        i_at = at[i_lo]
        # old cells between consecutive cut points are all kept or all removed
        cuts = np.unique(np.r_[0, nb_old, g_lo, g_hi, i_at])
        o_lo, o_hi = cuts[:-1], cuts[1:]
        if g_lo.size:
            run = np.searchsorted(g_lo, o_lo, side="right") - 1
            alive = (run < 0) | (o_lo >= g_hi[np.maximum(run, 0)])
            o_lo, o_hi = o_lo[alive], o_hi[alive]
        # pieces in raster order; at one old position the new cells come first
        is_old = np.r_[np.zeros(i_lo.size, dtype=bool), np.ones(o_lo.size, dtype=bool)]
        srt = np.lexsort((is_old, np.r_[i_at, o_lo]))
        is_old = is_old[srt]
        p_lo = np.r_[i_lo, o_lo][srt]
        p_hi = np.r_[i_hi, o_hi][srt]
        size = p_hi - p_lo
        p_new = np.cumsum(size) - size  # first new number of each piece
        nb = int(size.sum())
        pieces = list(zip(is_old.tolist(), p_lo.tolist(), p_hi.tolist(), strict=True))

        def per_cell(old: NDArray, fresh_vals: NDArray) -> NDArray:
            return np.concatenate(
                [old[:0]] + [(old if o else fresh_vals)[a:b] for o, a, b in pieces]
            )

        def ragged(
            old_vals: NDArray, old_ptr: IntArray, new_vals: NDArray, new_ptr: IntArray
        ) -> tuple[NDArray, IntArray]:
            vals = np.concatenate(
                [old_vals[:0]]
                + [
                    old_vals[old_ptr[a] : old_ptr[b]] if o else new_vals[new_ptr[a] : new_ptr[b]]
                    for o, a, b in pieces
                ]
            )
            ptr = np.zeros(nb + 1, dtype=np.int64)
            np.cumsum(per_cell(np.diff(old_ptr), np.diff(new_ptr)), out=ptr[1:])
            return vals, ptr

        old_cgrid = self._cgrid if rank_map is None else rank_map[self._cgrid]
        old_bfull = self._bfull if rank_map is None else rank_map[self._bfull].astype(np.int32)
        cgrid, cptr = ragged(old_cgrid, self._cptr, fresh.cgrid, fresh.cptr)
        edges, rptr = ragged(self._edges, self._rptr, fresh.edges, fresh.rptr)
        rbit, _ = ragged(self._rbit, self._rptr, fresh.rbit, fresh.rptr)
        new._set_cells(
            _Cells(
                bcells=per_cell(self._bcells, fresh.bcells),
                cptr=cptr,
                cgrid=cgrid,
                bfull=per_cell(old_bfull, fresh.bfull),
                overflow=per_cell(self._overflow, fresh.overflow),
                rptr=rptr,
                edges=edges,
                rbit=rbit,
            )
        )

        # The raster. State value v is a build index (>= 0), -1 (none) or boundary
        # cell j (v = -2 - j); kept boundary cell j of a piece becomes j + shift.
        old_pieces = [(a, b, s) for (o, a, b), s in zip(pieces, p_new.tolist(), strict=True) if o]
        if bmap is None:
            # build indices unchanged: copy, then renumber the moved boundary cells
            state = self._state.copy()
            for a, b, s in old_pieces:
                if s != a:
                    state[self._bcells[a:b]] = -2 - np.arange(s, s + b - a, dtype=np.int32)
        else:
            # every value may change: one gather through a table of all values,
            # negative ones at the end (numpy indexing wraps them)
            lut = np.full(self._n + nb_old + 1, -1, dtype=np.int32)
            lut[: self._n] = bmap
            to_b = np.full(nb_old, -1, dtype=np.int32)  # removed: overwritten below
            for a, b, s in old_pieces:
                to_b[a:b] = -2 - np.arange(s, s + b - a, dtype=np.int32)
            lut[self._n : self._n + nb_old] = to_b[::-1]
            state = lut[self._state]
        st = state.reshape(ras.nrows, ras.ncols)
        for (r_lo, r_hi, c_lo, c_hi), win_state in zip(windows, states, strict=True):
            st[r_lo:r_hi, c_lo:c_hi] = win_state.reshape(r_hi - r_lo, c_hi - c_lo)
        # the windows' boundary cells: their number in the whole table
        state[fresh.bcells] = -2 - _expand(p_new[~is_old], size[~is_old])
        new._state = state

    # --- properties ---------------------------------------------------------------

    @property
    def codes(self) -> NDArray[np.str_]:
        """The grid codes in build order (what the returned indices refer to)."""
        return self._codes

    def __len__(self) -> int:
        return self._n

    @property
    def cell_deg(self) -> float:
        """Raster cell size in degrees (``cell_deg`` of :meth:`build`, or larger if
        the grids' bounding box would need more than :data:`MAX_CELLS` cells)."""
        return self._cell_deg

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the raster and edge tables, in bytes."""
        arrays = (
            self._state, self._bcells, self._cptr, self._cgrid, self._bfull, self._overflow,
            self._rptr, self._edges, self._rbit, self._order,
        )  # fmt: skip
        return int(sum(a.nbytes for a in arrays))

    def stats(self) -> dict[str, Any]:
        """Raster figures for tuning: cells, boundary cells, candidates, edge refs."""
        return {
            "cells": int(self._state.size - 1),
            "boundary_cells": int(self._bfull.size),
            "candidates": int(self._cgrid.size),
            "edge_refs": int(self._edges.shape[0]),
            "nbytes": self.nbytes,
        }

    # --- point location -----------------------------------------------------------

    def locate(self, lon: ArrayLike, lat: ArrayLike) -> IntArray:
        """Index (into the build ``codes``) of the grid covering each point, -1 if none.

        ``lon``/``lat``: WGS 84 degrees, array-likes broadcast together; the result
        has their broadcast shape (int64). A point on the boundary of several grids
        (shared edge, vertex) or in several overlapping grids gets the one with the
        smallest code. Non-finite coordinates give -1. Exactly equal to
        ``shapely.covers`` on the lon/lat polygons plus that tie-break.
        """
        x, y, shape = _flat_pair(lon, lat)
        out = np.empty(x.size, dtype=np.int64)
        for i in range(0, x.size, _CHUNK):
            out[i : i + _CHUNK] = self._locate_chunk(x[i : i + _CHUNK], y[i : i + _CHUNK])
        return out.reshape(shape)

    def _locate_chunk(self, x: FloatArray, y: FloatArray) -> IntArray:
        inv = 1.0 / self._cell
        # cell coordinates, clamped into the raster: fmax/fmin also map NaN to 0,
        # and every clamped point lands in an empty margin cell
        fx = x - self._x0
        fx *= inv
        np.fmax(fx, 0.0, out=fx)
        np.fmin(fx, self._ncols - 1.0, out=fx)
        fy = y - self._y0
        fy *= inv
        np.fmax(fy, 0.0, out=fy)
        np.fmin(fy, self._nrows - 1.0, out=fy)
        cell = fy.astype(np.intp)
        cell *= self._ncols
        cell += fx.astype(np.intp)
        res = self._state[cell].astype(np.int64)
        bnd = np.flatnonzero(res <= -2)
        if bnd.size:
            res[bnd] = self._resolve(x[bnd], y[bnd], -2 - res[bnd])
        return res

    def _resolve(self, px: FloatArray, py: FloatArray, bid: IntArray) -> IntArray:
        """Exact answer (build index or -1) for points in boundary cells ``bid``."""
        r0 = self._rptr[bid]
        cnt = self._rptr[bid + 1] - r0
        pair = _expand(r0, cnt)  # each point's cell's edges: contiguous
        e = np.take(self._edges, pair, axis=0)  # much faster than edges[pair]
        pxp = np.repeat(px, cnt)
        pxp *= e[:, 4]
        pyp = np.repeat(py, cnt)
        cross, on, unsure = _ray_test(pxp, pyp, e[:, 0], e[:, 1], e[:, 2], e[:, 3])
        bit = np.take(self._rbit, pair)
        first = np.cumsum(cnt) - cnt
        zero = np.uint64(0)
        # per point and candidate slot: odd crossings (xor) or on an edge (or)
        covered = np.bitwise_xor.reduceat(np.where(cross, bit, zero), first)
        covered |= np.bitwise_or.reduceat(np.where(on, bit, zero), first)
        # the lowest set bit is the smallest code among covering candidates
        low = covered & (~covered + np.uint64(1))
        # its index: a power of two converts to float64 exactly, frexp(2**k) = (0.5, k + 1)
        slot = np.frexp(low.astype(np.float64))[1].astype(np.int64) - 1  # -1 if none
        hit = covered != zero
        best = np.where(hit, self._cgrid[np.where(hit, self._cptr[bid] + slot, 0)], self._n)
        np.minimum(best, self._bfull[bid], out=best)
        # signs the float filter could not certify (a point on an edge, numerically)
        # and cells with too many candidates: shapely decides
        redo = np.logical_or.reduceat(unsure, first) | self._overflow[bid]
        if redo.any():
            best[redo] = self._resolve_shapely(px[redo], py[redo], bid[redo])
        return self._order_none[best]

    def _resolve_shapely(self, px: FloatArray, py: FloatArray, bid: IntArray) -> IntArray:
        """Smallest covering rank (n for none) of points in boundary cells ``bid``,
        testing every candidate grid of the cell with shapely (exact, slower)."""
        c0 = self._cptr[bid]
        nc = self._cptr[bid + 1] - c0
        inst = _expand(c0, nc)
        inst_pt = np.repeat(np.arange(bid.size, dtype=np.int64), nc)
        grid = self._cgrid[inst]
        covered = shapely.intersects_xy(self._geoms[grid], px[inst_pt], py[inst_pt])
        val = np.where(covered, grid, self._n)
        best = np.minimum.reduceat(val, np.cumsum(nc) - nc)
        return np.minimum(best, self._bfull[bid])

    # --- metric helpers (lazy) ----------------------------------------------------

    def prepare_distances(self) -> None:
        """Make the EPSG:4546 copies and the trees that the distance and candidate
        methods use now, instead of at their first call (~0.3 s on the full demo, which a
        server would otherwise spend inside its first lookup). Idempotent, thread-safe."""
        if self._metric_tree is not None:
            return
        with self._lock:
            if self._metric_tree is not None:
                return
            # an updated() index may have the EPSG:4546 copies already
            if self._metric is None or self._metric_boundary is None:
                metric = convert_geometry(self._geoms, "wgs84", f"EPSG:{METRIC_EPSG}")
                self._metric_boundary = shapely.boundary(metric)
                shapely.prepare(metric)
                self._metric = metric
            self._lonlat_tree = shapely.STRtree(self._geoms)
            # last: readers test it without the lock
            self._metric_tree = shapely.STRtree(self._metric)

    def _points_metric(self, x: FloatArray, y: FloatArray) -> NDArray[np.object_]:
        mx, my = to_metric(x, y)
        return shapely.points(np.asarray(mx), np.asarray(my))

    def distance_to_boundary_m(self, lon: ArrayLike, lat: ArrayLike, idx: ArrayLike) -> FloatArray:
        """Metres from each point to the boundary of grid ``idx`` (EPSG:4546, planar).

        ``idx`` are indices into the build ``codes`` (typically :meth:`locate`'s
        answer), broadcast with ``lon``/``lat`` (WGS 84 degrees). The distance is to
        the grid's whole boundary, holes included, measured with shapely between the
        point and the polygon converted vertex by vertex to EPSG:4546. ``idx == -1``
        or a non-finite coordinate gives NaN.
        """
        x, y, shape = _flat_pair(lon, lat)
        gi = np.broadcast_to(np.asarray(idx, dtype=np.int64), shape).ravel()
        if gi.size and (gi.max() >= self._n or gi.min() < -1):
            raise IndexError("grid index out of range")
        out = np.full(x.size, np.nan)
        ok = (gi >= 0) & np.isfinite(x) & np.isfinite(y)
        if ok.any():
            self.prepare_distances()
            assert self._metric_boundary is not None
            rank = self._rank[gi[ok]]
            out[ok] = shapely.distance(
                self._metric_boundary[rank], self._points_metric(x[ok], y[ok])
            )
        return out.reshape(shape)

    def nearest(
        self, lon: ArrayLike, lat: ArrayLike, max_distance_m: float | None = None
    ) -> tuple[IntArray, FloatArray]:
        """Nearest grid to each point and its distance in metres (EPSG:4546, planar).

        A point covered by a grid gets that grid (:meth:`locate`) and distance 0.
        Otherwise the grid nearest to the point's EPSG:4546 position, the smallest
        code among equally near ones, and the planar distance to its polygon
        converted vertex by vertex (0 when the point is within rounding of the grid).
        Grids farther than ``max_distance_m`` (``None``: no limit) and non-finite
        points give ``(-1, nan)``.
        """
        x, y, shape = _flat_pair(lon, lat)
        idx = self.locate(x, y)
        dist = np.where(idx >= 0, 0.0, np.nan)
        todo = np.flatnonzero((idx < 0) & np.isfinite(x) & np.isfinite(y))
        if todo.size and self._n:
            self.prepare_distances()
            assert self._metric_tree is not None
            pts = self._points_metric(x[todo], y[todo])
            (qi, ti), d = self._metric_tree.query_nearest(
                pts, max_distance=max_distance_m, return_distance=True, all_matches=True
            )
            if qi.size:
                # all_matches returns every equally near grid: keep the lowest rank
                srt = np.lexsort((ti, qi))
                qi, ti, d = qi[srt], ti[srt], d[srt]
                first = np.flatnonzero(np.r_[True, qi[1:] != qi[:-1]])
                hit = todo[qi[first]]
                idx[hit] = self._order[ti[first]]
                dist[hit] = d[first]
        return idx.reshape(shape), dist.reshape(shape)

    def locate_with_candidates(
        self, lon: ArrayLike, lat: ArrayLike, accuracy_m: float | ArrayLike = 0.0
    ) -> Candidates:
        """The covering grid plus every grid within ``accuracy_m`` metres of each point.

        ``accuracy_m`` (a number or one per point, >= 0) is the position uncertainty.
        Candidates are the grids covering the point (exactly, lon/lat, distance 0)
        and, where ``accuracy_m > 0``, every grid whose EPSG:4546 polygon lies within
        ``accuracy_m`` of the point's EPSG:4546 position (planar distance). With
        ``accuracy_m = 0`` a point on a shared edge has both grids as candidates.
        Points are flattened in input order; see :class:`Candidates`.
        """
        x, y, _shape = _flat_pair(lon, lat)
        acc = np.broadcast_to(np.asarray(accuracy_m, dtype=np.float64), x.shape).ravel()
        if not (np.isfinite(acc).all() and (acc >= 0).all()):
            raise ValueError("accuracy_m must be finite and >= 0")
        idx = self.locate(x, y)
        finite = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        pairs_pt: list[IntArray] = []
        pairs_rank: list[IntArray] = []
        pairs_d: list[FloatArray] = []
        if finite.size and self._n:
            self.prepare_distances()
            assert self._lonlat_tree is not None and self._metric_tree is not None
            assert self._metric is not None
            pts = shapely.points(x[finite], y[finite])
            qi, ti = self._lonlat_tree.query(pts, predicate="intersects")
            pairs_pt.append(finite[qi])
            pairs_rank.append(ti.astype(np.int64))
            pairs_d.append(np.zeros(qi.size))
            near = finite[acc[finite] > 0]
            if near.size:
                mp = self._points_metric(x[near], y[near])
                qi, ti = self._metric_tree.query(mp, predicate="dwithin", distance=acc[near])
                pairs_pt.append(near[qi])
                pairs_rank.append(ti.astype(np.int64))
                pairs_d.append(shapely.distance(self._metric[ti], mp[qi]))
        if pairs_pt:
            pt = np.concatenate(pairs_pt)
            rank = np.concatenate(pairs_rank)
            d = np.concatenate(pairs_d)
        else:
            pt = rank = np.zeros(0, dtype=np.int64)
            d = np.zeros(0)
        # one entry per (point, grid): the covering (distance 0) one sorts first
        srt = np.lexsort((d, rank, pt))
        pt, rank, d = pt[srt], rank[srt], d[srt]
        keep = np.r_[True, (pt[1:] != pt[:-1]) | (rank[1:] != rank[:-1])] if pt.size else pt
        pt, rank, d = pt[keep], rank[keep], d[keep]
        # per point: the located grid first, then by distance, then by code
        located = self._rank_none[idx][pt] == rank
        srt = np.lexsort((rank, d, ~located, pt))
        pt, rank, d = pt[srt], rank[srt], d[srt]
        offsets = np.zeros(x.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(pt, minlength=x.size), out=offsets[1:])
        return Candidates(
            index=idx, offsets=offsets, grid=self._order[rank].astype(np.int64), distance_m=d
        )

    def place(self, lon: float, lat: float, accuracy_m: float = 0.0) -> PointPlace:
        """One point's covering grid, candidates and distance to the boundary: exactly
        what :meth:`locate_with_candidates` and :meth:`distance_to_boundary_m` answer
        for it, in plain Python around single GEOS calls.

        For single API lookups: numpy's per-call overhead would cost them ten times the
        work. ``lon``/``lat`` are WGS 84 degrees; ``accuracy_m`` metres (>= 0).
        """
        if not (math.isfinite(accuracy_m) and accuracy_m >= 0):
            raise ValueError("accuracy_m must be finite and >= 0")
        if not (math.isfinite(lon) and math.isfinite(lat)) or not self._n:
            return PointPlace(-1, (), math.nan)
        # _locate_chunk's arithmetic on Python floats: the same IEEE operations
        inv = 1.0 / self._cell
        fx = min(max((lon - self._x0) * inv, 0.0), self._ncols - 1.0)
        fy = min(max((lat - self._y0) * inv, 0.0), self._nrows - 1.0)
        idx = int(self._state[int(fy) * self._ncols + int(fx)])
        if idx <= -2:
            idx = int(self._resolve(np.array([lon]), np.array([lat]), np.array([-2 - idx]))[0])
        self.prepare_distances()
        assert self._lonlat_tree is not None and self._metric_tree is not None
        assert self._metric is not None and self._metric_boundary is not None
        distance_by_rank = {
            int(rank): 0.0
            for rank in self._lonlat_tree.query(shapely.Point(lon, lat), predicate="intersects")
        }
        metric_point = shapely.Point(*to_metric(lon, lat))
        if accuracy_m > 0:
            near = self._metric_tree.query(metric_point, predicate="dwithin", distance=accuracy_m)
            distances = shapely.distance(self._metric[near], metric_point)
            for rank, d in zip(near.tolist(), distances.tolist(), strict=True):
                distance_by_rank[rank] = min(d, distance_by_rank.get(rank, math.inf))
        located_rank = int(self._rank[idx]) if idx >= 0 else -1
        ordered = sorted(
            distance_by_rank.items(), key=lambda rd: (rd[0] != located_rank, rd[1], rd[0])
        )
        candidates = tuple((int(self._order[rank]), d) for rank, d in ordered)
        to_boundary = (
            shapely.distance(self._metric_boundary[located_rank], metric_point)
            if idx >= 0
            else math.nan
        )
        return PointPlace(idx, candidates, float(to_boundary))


def _flat_pair(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray, tuple[int, ...]]:
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    x, y = np.broadcast_arrays(x, y)
    return np.ascontiguousarray(x).ravel(), np.ascontiguousarray(y).ravel(), x.shape


def _some(codes: NDArray[np.str_], limit: int = 10) -> str:
    shown = ", ".join(codes[:limit].tolist())
    return shown + (f" and {codes.size - limit} more" if codes.size > limit else "")
