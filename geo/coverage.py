"""Camera coverage of grids: covered area, gaps, camera counts, roads and key places.

Everything is computed in EPSG:4546 (CGCS2000 / 3-degree Gauss-Kruger CM 111E,
metres) from the *exact* fields of view of :mod:`geo.camera`: a camera at a DORI
level covers a disc (dome, PTZ) or a circular sector (bullet) of the level's range,
bounded by true circular arcs and straight radial edges (not by the polygons of
:func:`geo.camera.fov_sectors`, which follow the arcs within 0.26 %). Offline and
faulty cameras cover nothing: :meth:`FovSet.from_cameras` keeps only active cameras.

What is computed, per zone (a grid; or an H3 cell) and DORI level
------------------------------------------------------------------
``covered_m2``
    Area of zone ∩ (union of the FOVs): overlapping cameras count once. Exact for
    the true arcs (Green's theorem along the boundary of the union, arcs integrated
    in closed form).
``ratio``
    ``covered_m2 / area_m2``.
``camera_count``
    Cameras whose FOV at the level meets the zone in a positive area (a FOV that
    only touches the zone's boundary does not count).
``gap``
    Zone minus coverage, a MultiPolygon (empty when fully covered). Arcs get
    vertices on the true circle, close enough that every chord stays within
    ``gap_tolerance_m`` (default 0.1 m) of its arc, at most 10° apart: the gap
    polygon's area exceeds ``area_m2 - covered_m2`` by at most that tolerance times
    the length of the arcs bounding it (~0.3 % of the covered area). Parts (a polygon
    with its holes) smaller than ``min_gap_m2`` are left out of ``gap`` only, never
    out of any figure.
``road_length_m``, ``road_covered_m``, ``road_ratio``
    Length of the target roads inside the zone, the part of it inside the union of
    FOVs, and their ratio (NaN when the zone has no road: None in the database).
    The uncovered stretches: ``road_gap_lines=True`` or :func:`road_gaps`.
``places_total``, ``places_covered``, ``places_ratio``
    Key places in the zone and those covered. A place is its point, or
    ``point_on_surface`` for a polygon; it belongs to the zone covering that point
    (the first zone in input order wins on a shared boundary; :attr:`Places.grid_id`
    imposes an assignment, e.g. the stored ``grid_code``). It is covered when the
    point is in a FOV (boundary included). The uncovered ones:
    ``uncovered_places=True`` or :func:`place_gaps`.
``public_ratio``
    The headline figure: ``(w_road · road_ratio + w_places · places_ratio) /
    (w_road + w_places)``, default weights 0.5/0.5 (:data:`DEFAULT_WEIGHTS`); when
    only one of the two has something to measure (a zone without roads, or without
    key places) that one alone; when neither, the area ``ratio``.

How it is computed (and why it is fast)
---------------------------------------
Polygon overlay (GEOS union/intersection/difference) of ~50,000 FOVs at four levels
costs seconds: noding a million vertices dominates. Here the FOVs stay analytic:

1. Cameras at the same point merge into one *star* (a piecewise-constant radius
   around the point), so coincident apexes, shared radial edges and identical
   cameras need no special case. Each star's boundary is a list of *elements*
   (arcs and radial segments), oriented with the covered side on the left.
2. Candidate pairs (stars whose discs overlap; stars and zone edges within reach)
   come from a numpy uniform-grid box join; levels are nested, so the pairs of the
   detect level are filtered for the finer levels.
3. Every crossing of two elements, and of an element and a zone edge, is computed
   once in closed form (circle/circle, circle/segment, segment/segment) and becomes
   a shared *node* of both. Along each element the number of other stars covering
   it changes by ±1 at each crossing, so one point test per boundary loop and a
   cumulative sum classify every piece: the pieces covered by nothing and inside
   the zone are exactly the boundary of the coverage.
4. Area: Green's theorem over those pieces and the uncovered pieces of the zone
   edges. Gap rings: the pieces chained through their shared node ids (no
   coordinate matching), ranked by pointer jumping, holes assigned to shells.
5. Roads: intervals of each road segment inside each camera's disc and wedge, merged
   per segment; places: point in disc and wedge.

A FOV entirely inside one zone (most of them at the finer levels) costs a few numpy
operations and no geometry object at all. Configurations where a floating point
decision could be ambiguous (a crossing within 1e-7 m of a vertex, tangent arcs,
an apex on a zone edge) and any zone whose rings do not close are recomputed with
shapely (union and difference of :func:`geo.camera.fov_sectors` polygons): rare
(none in the demo world), and flagged in the ``fallback`` column.

Full and incremental recomputes
-------------------------------
:func:`grid_coverage` computes whatever zones it is given from whatever cameras it
is given. A full recompute passes all grids and all active cameras; after a camera
edit the service passes only the grids its old and new FOVs touch (detect level)
and every active camera whose detect FOV reaches those grids (within the largest
range of the apex: :func:`geo.camera.fov_sectors` polygons lie up to 0.13 % inside
the arcs, so pad a polygon test by that): the rows are the same as a full
recompute's. Roads and places need only cover the zones passed; pass
:attr:`Places.grid_id` so a place on the border of a recomputed grid keeps its grid.
``workers=2`` computes two spatial halves in forked processes, by this very path.

A small recompute costs mostly the fixed price of a pass (a few hundred numpy calls),
once per level: up to ``_STACK_MAX_CAMERAS`` camera copies, the levels share one pass,
each level's copy of the zones and cameras shifted east far enough that copies never
meet (the rows differ from a pass per level by rounding, ~1e-10 m).
:func:`grid_and_h3_coverage` adds the H3 cells under an edited camera to that same
pass: a camera edit recomputes its grids and cells in one.
"""

from __future__ import annotations

import itertools
import math
import mmap
import multiprocessing
import os
import pickle
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import shapely
from numpy.typing import ArrayLike, NDArray

from geo.camera import (
    DEFAULT_ARC_STEP_DEG,
    DISC_HFOV_DEG,
    DORI_LEVELS,
    fov_sectors,
    grid_convergence_deg,
    is_active,
    level_ranges_m,
)
from geo.crs import from_metric, to_metric

__all__ = [
    "DEFAULT_GAP_TOLERANCE_M",
    "DEFAULT_MIN_GAP_M2",
    "DEFAULT_WEIGHTS",
    "FovSet",
    "Places",
    "Roads",
    "coverage_h3",
    "grid_and_h3_coverage",
    "grid_coverage",
    "h3_cells_near",
    "h3_polygons",
    "place_gaps",
    "public_ratio",
    "road_gaps",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
ObjArray = NDArray[np.object_]
Progress = Callable[[str, float], None]

DEFAULT_WEIGHTS: tuple[float, float] = (0.5, 0.5)
"""Default (road, places) weights of :func:`public_ratio`."""

DEFAULT_MIN_GAP_M2: float = 1.0
"""Gap parts smaller than this (m²) are left out of the gap geometry by default."""

DEFAULT_GAP_TOLERANCE_M: float = 0.1
"""Default largest distance (m) between a gap polygon's chords and the true arcs."""

TWO_PI = 2.0 * math.pi
# Cell sizes (metres) of the box joins: FOVs, edges (cut to this length) and road
# segments; zone bounding boxes (for point location).
_JOIN_CELL_M = 256.0
# Sector edges of cameras on one pole closer than this (radians) are the same edge.
_ANGLE_SNAP = 1e-9
# Share of the cameras in the part computed by the calling process, of 1/workers.
_FIRST_PART_SHARE = 1.0
# Where forked workers leave their results for the parent to map (memory-backed).
_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Uncovered road stretches shorter than this (m) are rounding, not gaps.
_MIN_GAP_LINE_M = 1e-3
_MAX_ARC_STEP = math.radians(10.0)
# Decisions closer than this (metres) to a degenerate configuration send the zones
# involved to the shapely fallback. Coordinates are local (|x|, |y| < ~1e6 m), where
# float64 rounding is < 1e-9 m: far below it, and no real configuration is that
# close by chance (expected ~1e-6 cases in the demo world).
_TOL_M = 1e-7
# |sin| of the crossing angle below which two elements count as tangent.
_TANGENT_SIN = 1e-9
# Crossings (node ids) are numbered after the elements' own vertices.
_NODE_STRIDE = 1 << 40


# --- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FovSet:
    """The analytic fields of view of a set of (active) cameras, EPSG:4546.

    ``ranges_m[:, k]`` is the range (metres) at ``DORI_LEVELS[k]``
    (:func:`geo.camera.level_ranges_m`); ``azimuth_grid_deg`` is the azimuth from
    *grid* north (the meridian convergence already removed), ``hfov_deg`` the stored
    HFOV (>= 360: a disc). Build it with :meth:`from_cameras`, which drops offline and
    faulty cameras. ``camera_id`` is carried through for the caller.
    """

    camera_id: NDArray[Any]
    x_m: FloatArray
    y_m: FloatArray
    azimuth_grid_deg: FloatArray
    hfov_deg: FloatArray
    ranges_m: FloatArray

    def __post_init__(self) -> None:
        n = len(self.x_m)
        for name in ("camera_id", "y_m", "azimuth_grid_deg", "hfov_deg"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FovSet.{name} has {len(getattr(self, name))} rows, not {n}")
        if self.ranges_m.shape != (n, len(DORI_LEVELS)):
            raise ValueError(f"FovSet.ranges_m must be ({n}, {len(DORI_LEVELS)})")

    @classmethod
    def from_cameras(
        cls,
        x_m: ArrayLike,
        y_m: ArrayLike,
        kind: ArrayLike,
        azimuth_deg: ArrayLike,
        hfov_deg: ArrayLike,
        resolution_h_px: ArrayLike,
        range_m: ArrayLike | None = None,
        status: ArrayLike | None = None,
        camera_id: ArrayLike | None = None,
        *,
        north: str = "true",
    ) -> FovSet:
        """Cameras as stored (EPSG:4546 position, azimuth from true north by default).

        Keeps the cameras whose ``status`` is active (:func:`geo.camera.is_active`;
        all when ``status`` is None) and computes their DORI ranges
        (:func:`geo.camera.level_ranges_m`, ``range_m`` NaN = no override) and grid
        azimuths (``north="true"``: minus the meridian convergence at the camera).
        ``camera_id`` defaults to the row number.
        """
        x = np.atleast_1d(np.asarray(x_m, dtype=np.float64))
        n = len(x)
        keep = np.ones(n, dtype=bool) if status is None else is_active(status)
        ids = np.arange(n) if camera_id is None else np.asarray(camera_id)
        x = x[keep]
        y = np.atleast_1d(np.asarray(y_m, dtype=np.float64))[keep]
        az = np.broadcast_to(np.asarray(azimuth_deg, dtype=np.float64), (n,))[keep]
        if north == "true":
            az = az - grid_convergence_deg(x, y) if len(x) else az
        elif north != "grid":
            raise ValueError(f"north must be 'true' or 'grid', got {north!r}")
        fov = np.broadcast_to(np.asarray(hfov_deg, dtype=np.float64), (n,))[keep]
        kinds = np.broadcast_to(np.asarray(kind, dtype=object), (n,))[keep]
        res = np.broadcast_to(np.asarray(resolution_h_px, dtype=np.float64), (n,))[keep]
        cap = None
        if range_m is not None:
            cap = np.broadcast_to(np.asarray(range_m, dtype=np.float64), (n,))[keep]
        ranges = level_ranges_m(kinds, res, fov, cap) if len(x) else np.empty((0, 4))
        return cls(ids[keep], x, y, np.asarray(az, dtype=np.float64), fov, ranges)

    def __len__(self) -> int:
        return len(self.x_m)

    def subset(self, which: ArrayLike) -> FovSet:
        """The cameras selected by a boolean mask or an index array."""
        w = np.asarray(which)
        return FovSet(
            self.camera_id[w],
            self.x_m[w],
            self.y_m[w],
            self.azimuth_grid_deg[w],
            self.hfov_deg[w],
            self.ranges_m[w],
        )

    def polygons(
        self, level: str | Sequence[str], arc_step_deg: float = DEFAULT_ARC_STEP_DEG
    ) -> ObjArray:
        """FOV polygons at ``level`` (:func:`geo.camera.fov_sectors`, EPSG:4546), or at
        each of several levels, level after level, in one call (the fixed cost of a call is
        most of the work for the few cameras of an edit)."""
        ks = [_level_index(v) for v in ([level] if isinstance(level, str) else level)]
        n = len(ks)
        return fov_sectors(
            np.tile(self.x_m, n),
            np.tile(self.y_m, n),
            np.tile(self.azimuth_grid_deg, n),
            np.tile(self.hfov_deg, n),
            self.ranges_m[:, ks].T.reshape(-1),
            arc_step_deg=arc_step_deg,
            north="grid",
        )


@dataclass(frozen=True)
class Roads:
    """Target roads: ids and LineString/MultiLineString geometries (EPSG:4546)."""

    ids: NDArray[Any]
    lines: ObjArray

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.lines):
            raise ValueError("Roads.ids and Roads.lines differ in length")


@dataclass(frozen=True)
class Places:
    """Key places: ids and Point/Polygon/MultiPolygon geometries (EPSG:4546).

    ``grid_id`` optionally imposes each place's grid (values of the ``grid_ids``
    passed to :func:`grid_coverage`; None entries and unknown ids are located); by
    default a place belongs to the grid containing its point (polygons:
    ``point_on_surface``), the first grid in input order winning on shared edges.
    """

    ids: NDArray[Any]
    geoms: ObjArray
    grid_id: NDArray[Any] | None = None

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.geoms):
            raise ValueError("Places.ids and Places.geoms differ in length")
        if self.grid_id is not None and len(self.grid_id) != len(self.ids):
            raise ValueError("Places.grid_id differs in length from Places.ids")


def _level_index(level: str) -> int:
    try:
        return DORI_LEVELS.index(level)
    except ValueError:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(DORI_LEVELS)}") from None


def public_ratio(
    road_ratio: ArrayLike,
    places_ratio: ArrayLike,
    area_ratio: ArrayLike,
    weights: tuple[float, float] = DEFAULT_WEIGHTS,
) -> FloatArray:
    """The weighted public-space ratio (see the module docstring).

    ``road_ratio``/``places_ratio`` are NaN where there is nothing to measure; the
    result falls back to the other one, then to ``area_ratio``.
    """
    w_road, w_places = (float(w) for w in weights)
    if w_road < 0 or w_places < 0 or w_road + w_places <= 0:
        raise ValueError(f"weights must be >= 0 and not both 0, got {weights!r}")
    road = np.asarray(road_ratio, dtype=np.float64)
    places = np.asarray(places_ratio, dtype=np.float64)
    area = np.asarray(area_ratio, dtype=np.float64)
    has_road = ~np.isnan(road) & (w_road > 0)
    has_places = ~np.isnan(places) & (w_places > 0)
    both = (w_road * np.nan_to_num(road) + w_places * np.nan_to_num(places)) / (w_road + w_places)
    return np.where(
        has_road & has_places,
        both,
        np.where(has_road, road, np.where(has_places, places, area)),
    )


# --- ragged-array helpers --------------------------------------------------------------


def _cat(*parts: ArrayLike) -> NDArray[Any]:
    """``np.concatenate`` of arrays and scalars, as ``np.r_`` does at a tenth of its cost
    (it runs hundreds of times per small recompute, where such overheads dominate)."""
    return np.concatenate([p if isinstance(p, np.ndarray) else np.atleast_1d(p) for p in parts])


def _expand(counts: ArrayLike) -> tuple[IntArray, IntArray]:
    """For ragged groups of sizes ``counts``: (group of each item, position in group)."""
    c = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(len(c), dtype=np.int64), c)
    starts = np.cumsum(c) - c
    return owner, np.arange(len(owner), dtype=np.int64) - starts[owner]


def _run_firsts(keys: NDArray[Any]) -> BoolArray:
    """True where a sorted array's value differs from the previous one (and at 0)."""
    out = np.ones(len(keys), dtype=bool)
    out[1:] = keys[1:] != keys[:-1]
    return out


def _group_starts(sorted_keys: NDArray[Any]) -> tuple[IntArray, IntArray]:
    """Start index and length of each run of equal values in a sorted array."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(_cat(True, sorted_keys[1:] != sorted_keys[:-1]))
    return starts, np.diff(_cat(starts, n))


def _cell_range(v0: FloatArray, v1: FloatArray, cell: float) -> tuple[IntArray, IntArray]:
    return np.floor(v0 / cell).astype(np.int64), np.floor(v1 / cell).astype(np.int64)


def _cells(x0, y0, x1, y1, cell: float) -> tuple[IntArray, IntArray]:
    """The grid cells each box covers: (box index, cell key) per (box, cell)."""
    cx0, cx1 = _cell_range(x0, x1, cell)
    cy0, cy1 = _cell_range(y0, y1, cell)
    nx = cx1 - cx0 + 1
    owner, pos = _expand(nx * (cy1 - cy0 + 1))
    if len(owner) == len(x0):  # every box in one cell (the common case)
        return owner, (cx0 << 31) + cy0
    nxo = nx[owner]
    kx = cx0[owner] + pos % nxo
    ky = cy0[owner] + pos // nxo
    return owner, (kx << 31) + ky


def _ref_key(ax0, ay0, bx0, by0, cell: float) -> IntArray:
    """Cell key of the lower-left corner of the intersection of two boxes."""
    rx = np.floor(np.maximum(ax0, bx0) / cell).astype(np.int64)
    ry = np.floor(np.maximum(ay0, by0) / cell).astype(np.int64)
    return (rx << 31) + ry


class _BoxIndex:
    """Boxes listed in the cells of a uniform grid (``cell`` metres, local coordinates),
    sorted by cell, for repeated box joins (:meth:`query`).

    A pair is reported only in the cell holding the lower-left corner of the two
    boxes' intersection, so once. Keep boxes no larger than a few cells (split long
    segments first, :func:`_segment_boxes`).
    """

    def __init__(self, x0, y0, x1, y1, cell: float) -> None:
        self.cell = cell
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1
        ids, keys = _cells(x0, y0, x1, y1, cell)
        order = np.argsort(keys)
        keys = keys[order]
        self.ids = ids[order]
        self.ustart, self.ucount = _group_starts(keys)
        self.ukeys = keys[self.ustart]

    def query(self, x0, y0, x1, y1) -> tuple[IntArray, IntArray]:
        """(i, j): query box ``i`` and indexed box ``j`` overlap (closed boxes)."""
        if len(x0) == 0 or len(self.ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ia, ka = _cells(x0, y0, x1, y1, self.cell)
        pos = np.minimum(np.searchsorted(self.ukeys, ka), len(self.ukeys) - 1)
        hit = self.ukeys[pos] == ka
        ia, ka, pos = ia[hit], ka[hit], pos[hit]
        lo = self.ustart[pos]
        owner, k = _expand(self.ucount[pos])
        i = ia[owner]
        j = self.ids[lo[owner] + k]
        keep = (x0[i] <= self.x1[j]) & (self.x0[j] <= x1[i])
        i, j, owner = i[keep], j[keep], owner[keep]
        keep = (y0[i] <= self.y1[j]) & (self.y0[j] <= y1[i])
        i, j, owner = i[keep], j[keep], owner[keep]
        keep = _ref_key(x0[i], y0[i], self.x0[j], self.y0[j], self.cell) == ka[owner]
        return i[keep], j[keep]

    def query_items(
        self, x0, y0, x1, y1, item: IntArray, n_items: int
    ) -> tuple[IntArray, IntArray]:
        """Like :meth:`query`, mapping indexed boxes to ``item[j]`` (boxes of cut
        segments to their segment), each (query, item) pair once."""
        i, j = self.query(x0, y0, x1, y1)
        it = item[j]
        if len(item) == n_items:  # one box per item: pairs are already distinct
            return i, it
        cut = np.bincount(item, minlength=n_items) > 1
        m = cut[it]
        ui, uit = _unique_pairs(i[m], it[m], n_items)
        return _cat(i[~m], ui), _cat(it[~m], uit)


def _self_join(x0, y0, x1, y1, cell: float) -> tuple[IntArray, IntArray]:
    """All (i, j), i < j, of overlapping closed boxes (see :class:`_BoxIndex`)."""
    ids, keys = _cells(x0, y0, x1, y1, cell)
    order = np.argsort(keys)
    keys, ids = keys[order], ids[order]
    starts, counts = _group_starts(keys)
    # within each cell, every entry with every later entry
    grp = np.repeat(np.arange(len(starts)), counts)
    later = (starts + counts)[grp] - np.arange(len(ids)) - 1
    owner, pos = _expand(later)
    i = ids[owner]
    j = ids[owner + 1 + pos]
    key = keys[owner]
    keep = (x0[i] <= x1[j]) & (x0[j] <= x1[i])
    i, j, key = i[keep], j[keep], key[keep]
    keep = (y0[i] <= y1[j]) & (y0[j] <= y1[i])
    i, j, key = i[keep], j[keep], key[keep]
    keep = _ref_key(x0[i], y0[i], x0[j], y0[j], cell) == key
    i, j = i[keep], j[keep]
    return np.minimum(i, j), np.maximum(i, j)


def _segment_boxes(
    x0: FloatArray, y0: FloatArray, x1: FloatArray, y1: FloatArray, max_len: float
) -> tuple[tuple[FloatArray, FloatArray, FloatArray, FloatArray], IntArray]:
    """Boxes of segments cut into pieces no longer than ``max_len``: (box columns, segment)."""
    length = np.hypot(x1 - x0, y1 - y0)
    pieces = np.maximum(np.ceil(length / max_len), 1).astype(np.int64)
    if (pieces == 1).all():
        owner = np.arange(len(x0), dtype=np.int64)
        cols = (np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))
        return cols, owner
    owner, pos = _expand(pieces)
    f0 = pos / pieces[owner]
    f1 = (pos + 1) / pieces[owner]
    dx = (x1 - x0)[owner]
    dy = (y1 - y0)[owner]
    px0 = x0[owner] + f0 * dx
    py0 = y0[owner] + f0 * dy
    px1 = x0[owner] + f1 * dx
    py1 = y0[owner] + f1 * dy
    cols = (np.minimum(px0, px1), np.minimum(py0, py1), np.maximum(px0, px1), np.maximum(py0, py1))
    return cols, owner


def _unique(a: IntArray) -> IntArray:
    """Sorted distinct values (by sorting: numpy 2's hash-based ``np.unique`` is many
    times slower on the arrays here)."""
    s = np.sort(a)
    return s[_run_firsts(s)]


def _unique_inverse(a: IntArray) -> tuple[IntArray, IntArray]:
    """Sorted distinct values and, for each element, the index of its value."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    first = _run_firsts(s)
    inv = np.empty(len(a), dtype=np.int64)
    inv[order] = np.cumsum(first) - 1
    return s[first], inv


def _unique_pairs(i: IntArray, j: IntArray, nj: int) -> tuple[IntArray, IntArray]:
    """Distinct (i, j) pairs, sorted by i then j."""
    key = _unique(i * np.int64(max(nj, 1)) + j)
    return key // max(nj, 1), key % max(nj, 1)


def _point_segment_distance(
    px: FloatArray, py: FloatArray, x0: FloatArray, y0: FloatArray, x1: FloatArray, y1: FloatArray
) -> FloatArray:
    dx = x1 - x0
    dy = y1 - y0
    ll = dx * dx + dy * dy
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / ll, 0.0, 1.0)
    t = np.where(ll > 0, t, 0.0)
    return np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))


# --- zones ------------------------------------------------------------------------------


@dataclass
class _Zones:
    """Zone polygons (grids or H3 cells) as oriented edges in local coordinates.

    Rings are oriented with the zone's interior on the left (exteriors
    counter-clockwise, holes clockwise); vertex ``v`` starts edge ``v``, which ends at
    vertex ``v_next[v]``. Coordinates are EPSG:4546 minus (``ox``, ``oy``).
    """

    geoms: ObjArray
    ox: float
    oy: float
    area: FloatArray
    vx: FloatArray
    vy: FloatArray
    v_next: IntArray
    v_zone: IntArray
    v_ring: IntArray
    ring_zone: IntArray
    ring_start: IntArray
    ring_count: IntArray
    green: FloatArray
    _edge_index: tuple[_BoxIndex, IntArray] | None = field(default=None, repr=False)
    _tree: shapely.STRtree | None = field(default=None, repr=False)

    @classmethod
    def build(cls, geoms: ObjArray, origin: tuple[float, float] | None = None) -> _Zones:
        geoms = np.asarray(geoms, dtype=object)
        if origin is None:
            b = np.nan_to_num(shapely.total_bounds(geoms)) if len(geoms) else np.zeros(4)
            origin = (round((b[0] + b[2]) / 2.0, -3), round((b[1] + b[3]) / 2.0, -3))
        ox, oy = origin
        parts, part_zone = shapely.get_parts(geoms, return_index=True)
        poly = shapely.get_type_id(parts) == 3
        parts, part_zone = parts[poly], part_zone[poly]
        # rings: a polygon without holes is its exterior ring (no ring objects needed)
        holed = shapely.get_num_interior_rings(parts) > 0
        plain = np.flatnonzero(~holed)
        coords, raw_ring = shapely.get_coordinates(parts[plain], return_index=True)
        ring_zone = part_zone[plain]
        ring_ext = np.ones(len(plain), dtype=bool)
        if holed.any():
            hp = np.flatnonzero(holed)
            rings, ring_part = shapely.get_rings(parts[hp], return_index=True)
            c2, r2 = shapely.get_coordinates(rings, return_index=True)
            coords = np.concatenate([coords, c2])
            raw_ring = _cat(raw_ring, len(plain) + r2)
            ring_zone = _cat(ring_zone, part_zone[hp[ring_part]])
            # get_rings lists each polygon's exterior first
            ring_ext = _cat(ring_ext, _cat(True, ring_part[1:] != ring_part[:-1]))
        x = coords[:, 0] - ox
        y = coords[:, 1] - oy
        # drop each ring's closing vertex and repeated vertices (zero-length edges)
        last = _cat(raw_ring[1:] != raw_ring[:-1], True)[: len(x)]
        rep = _cat(False, (x[1:] == x[:-1]) & (y[1:] == y[:-1]) & (raw_ring[1:] == raw_ring[:-1]))
        rep = rep[: len(x)]
        keep = ~last & ~rep
        x, y, raw_ring = x[keep], y[keep], raw_ring[keep]
        # rings with fewer than 3 vertices enclose nothing
        good = np.bincount(raw_ring, minlength=len(ring_zone)) >= 3
        sel = good[raw_ring]
        x, y = x[sel], y[sel]
        v_ring = (np.cumsum(good) - 1)[raw_ring[sel]]
        ring_zone = ring_zone[good]
        ring_ext = ring_ext[good]
        ring_start, ring_count = _star_runs(v_ring, len(ring_zone))
        n = len(x)
        v_next = np.arange(1, n + 1, dtype=np.int64)
        if n:
            v_next[ring_start + ring_count - 1] = ring_start
        # orientation: the zone's interior left of every edge (exteriors counter-
        # clockwise, holes clockwise); reverse the rings that run the other way
        green = 0.5 * (x * y[v_next] - x[v_next] * y) if n else np.zeros(0)
        signed = np.bincount(v_ring, weights=green, minlength=len(ring_zone))
        flip = np.flatnonzero(ring_ext != (signed > 0))
        if len(flip):
            ow, kk = _expand(ring_count[flip])
            src = ring_start[flip][ow] + ring_count[flip][ow] - 1 - kk
            dst = ring_start[flip][ow] + kk
            x[dst] = x[src]
            y[dst] = y[src]
            green = 0.5 * (x * y[v_next] - x[v_next] * y)
        return cls(
            geoms=geoms,
            ox=float(ox),
            oy=float(oy),
            area=shapely.area(geoms).astype(np.float64),
            vx=x,
            vy=y,
            v_next=v_next,
            v_zone=ring_zone[v_ring] if n else np.zeros(0, np.int64),
            v_ring=v_ring,
            ring_zone=ring_zone,
            ring_start=ring_start,
            ring_count=ring_count,
            green=green,
        )

    def __len__(self) -> int:
        return len(self.geoms)

    def edge_index(self) -> tuple[_BoxIndex, IntArray]:
        """Box index of the edges (cut to <= ``_JOIN_CELL_M``), and each box's edge."""
        if self._edge_index is None:
            n = self.v_next
            cols, owner = _segment_boxes(self.vx, self.vy, self.vx[n], self.vy[n], _JOIN_CELL_M)
            self._edge_index = (_BoxIndex(*cols, _JOIN_CELL_M), owner)
        return self._edge_index

    def locate(self, x: FloatArray, y: FloatArray) -> IntArray:
        """Zone covering each local point (first zone in input order wins), or -1.

        Bounding-box candidates from an STRtree, then prepared ``contains``; points
        no zone contains (on a boundary, or outside) get ``intersects`` (covers).
        """
        out = np.full(len(x), -1, dtype=np.int64)
        if len(x) == 0 or len(self) == 0:
            return out
        if self._tree is None:
            shapely.prepare(self.geoms)
            self._tree = shapely.STRtree(self.geoms)
        gx = x + self.ox
        gy = y + self.oy
        pts = shapely.points(gx, gy)
        i, z = self._tree.query(pts)
        hit = shapely.contains_xy(self.geoms[z], gx[i], gy[i])
        miss = np.ones(len(x), dtype=bool)
        miss[i[hit]] = False
        again = miss[i]
        if again.any():
            hit[again] = shapely.intersects(self.geoms[z[again]], pts[i[again]])
        i, z = i[hit], z[hit]
        order = np.argsort(i * np.int64(len(self)) + z)
        i, z = i[order], z[order]
        first = _run_firsts(i)
        out[i[first]] = z[first]
        return out


# --- stars: the cameras of one apex at one level ----------------------------------------


@dataclass
class _Stars:
    """Cameras grouped by apex, at one level, as boundary elements (local coordinates).

    A star's coverage is ``distance < rho(angle)`` around its apex, ``rho`` piecewise
    constant between sorted breakpoints (``bp_*``; a star with none is a disc of
    ``disc_rho``). Its boundary is a list of elements: arcs (``kind`` 0: radius ``r``,
    start angle ``a0`` in [0, 2π), length ``alen``) and radial segments (``kind`` 1:
    from (``x0``, ``y0``) to (``x1``, ``y1``)), each with the covered side on its left,
    linked into closed loops (``nxt``). A loop through the apex closes one lobe, so
    lobes touching at the apex are separate loops (valid rings).
    """

    cx: FloatArray
    cy: FloatArray
    rmax: FloatArray
    members: IntArray
    m_start: IntArray
    m_count: IntArray
    bp_start: IntArray
    bp_count: IntArray
    bp_angle: FloatArray
    bp_rho: FloatArray
    bp_key: FloatArray
    disc_rho: FloatArray
    el_start: IntArray
    el_count: IntArray
    e_star: IntArray
    kind: IntArray
    r: FloatArray
    a0: FloatArray
    alen: FloatArray
    x0: FloatArray
    y0: FloatArray
    x1: FloatArray
    y1: FloatArray
    nxt: IntArray
    prev: IntArray
    lobe: IntArray
    lobe_first: IntArray
    u0x: FloatArray  # arcs: unit vectors to the start and the end of the arc
    u0y: FloatArray
    u1x: FloatArray
    u1y: FloatArray
    bx0: FloatArray  # element bounding boxes
    by0: FloatArray
    bx1: FloatArray
    by1: FloatArray
    _boxes: tuple[FloatArray, ...] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.cx)

    @property
    def n_elements(self) -> int:
        return len(self.kind)

    def star_boxes(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Bounding box of each star (of its elements' boxes)."""
        if self._boxes is None:
            e0 = self.el_start
            self._boxes = (
                np.minimum.reduceat(self.bx0, e0) if len(e0) else self.bx0,
                np.minimum.reduceat(self.by0, e0) if len(e0) else self.by0,
                np.maximum.reduceat(self.bx1, e0) if len(e0) else self.bx1,
                np.maximum.reduceat(self.by1, e0) if len(e0) else self.by1,
            )
        return self._boxes

    def contains(self, s: IntArray, px: FloatArray, py: FloatArray) -> tuple[BoolArray, BoolArray]:
        """(strictly inside star ``s``, within ``_TOL_M`` of its boundary) per point."""
        vx = px - self.cx[s]
        vy = py - self.cy[s]
        d = np.hypot(vx, vy)
        rho = self.disc_rho[s].copy()
        near = np.zeros(len(s), dtype=bool)
        has = self.bp_count[s] > 0
        # one sector (two breakpoints, one of them a lobe start): a wedge test
        sec = has & (self.bp_count[s] == 2) & (self.m_count[s] == 1)
        if sec.any():
            e = self.el_start[s[sec]] + 1  # the arc
            vxs, vys, ds = vx[sec], vy[sec], d[sec]
            c0 = self.u0x[e] * vys - self.u0y[e] * vxs
            c1 = vxs * self.u1y[e] - vys * self.u1x[e]
            wide = self.alen[e] > np.pi
            inw = np.where(wide, ~((c0 < 0) & (c1 < 0)), (c0 > 0) & (c1 > 0))
            rho[sec] = np.where(inw, self.r[e], 0.0)
            near_s = (np.abs(c0) < _TOL_M) & (self.u0x[e] * vxs + self.u0y[e] * vys > 0)
            near_s |= (np.abs(c1) < _TOL_M) & (self.u1x[e] * vxs + self.u1y[e] * vys > 0)
            near[sec] = near_s | (ds < _TOL_M)
            has &= ~sec
        if has.any():
            hs = s[has]
            phi = np.mod(np.arctan2(vy[has], vx[has]), TWO_PI)
            k = np.searchsorted(self.bp_key, hs * 8.0 + phi, "right") - 1
            first = self.bp_start[hs]
            last = first + self.bp_count[hs] - 1
            k = np.where(k < first, last, k)
            rho[has] = self.bp_rho[k]
            b_lo = self.bp_angle[k]
            k_hi = np.where(k == last, first, k + 1)
            b_hi = self.bp_angle[k_hi]
            ang = np.minimum(np.mod(phi - b_lo, TWO_PI), np.mod(b_hi - phi, TWO_PI))
            near[has] = ang * d[has] < _TOL_M
        near |= np.abs(d - rho) < _TOL_M
        return d < rho, near


def _apex_groups(x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray, IntArray]:
    """Cameras grouped by identical position: (members sorted by group, start, count)."""
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    new = _cat(True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])) if len(x) else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    counts = np.diff(_cat(starts, len(x)))
    return order.astype(np.int64), starts.astype(np.int64), counts.astype(np.int64)


def _build_stars(
    ax: FloatArray,
    ay: FloatArray,
    members: IntArray,
    m_start: IntArray,
    m_count: IntArray,
    r: FloatArray,
    theta0: FloatArray,
    span: FloatArray,
) -> _Stars:
    """Stars from apex groups and per-camera radius, start angle and span (radians).

    ``r``, ``theta0`` (math angle, counter-clockwise from east, of the sector's
    clockwise-most edge) and ``span`` (>= 2π: a disc) are indexed by camera;
    ``members[m_start[s]:m_start[s] + m_count[s]]`` are the cameras of star ``s`` at
    apex (``ax[s]``, ``ay[s]``). Every member must have ``r > 0``.
    """
    n = len(ax)
    single = m_count == 1
    # --- single-camera stars (nearly all): a disc, or radial out, arc, radial in
    sc = members[m_start]
    s_disc = single & (span[sc] >= TWO_PI)
    s_sec = single & ~s_disc
    el_count = np.where(s_disc, 1, np.where(s_sec, 3, 0)).astype(np.int64)
    bp_count = np.where(s_sec, 2, 0).astype(np.int64)
    rmax = np.where(single, r[sc], 0.0)
    # --- multi-camera stars: breakpoints where the radius changes (generic)
    multi = np.flatnonzero(~single)
    g = _generic_star_shapes(multi, members, m_start, m_count, r, theta0, span)
    rmax[multi] = g.rmax
    bp_count[multi] = g.bp_count
    el_count[multi] = g.el_count
    el_start = np.cumsum(el_count) - el_count
    bp_start = np.cumsum(bp_count) - bp_count
    ne = int(el_count.sum())
    nbp = int(bp_count.sum())
    e_star = np.repeat(np.arange(n, dtype=np.int64), el_count)
    kind = np.zeros(ne, dtype=np.int64)
    er = np.zeros(ne)
    ea0 = np.zeros(ne)
    elen = np.zeros(ne)
    x1 = np.zeros(ne)
    y1 = np.zeros(ne)
    from_apex = np.zeros(ne, dtype=bool)
    bp_angle = np.zeros(nbp)
    bp_rho = np.zeros(nbp)
    disc_rho = np.where(bp_count == 0, rmax, 0.0)

    # singles: discs
    d = np.flatnonzero(s_disc)
    e = el_start[d]
    er[e] = rmax[d]
    elen[e] = TWO_PI
    x1[e] = ax[d] + rmax[d]
    y1[e] = ay[d]
    # singles: sectors
    q = np.flatnonzero(s_sec)
    c = sc[q]
    t0 = np.mod(theta0[c], TWO_PI)
    sp = span[c]
    rq = rmax[q]
    t1 = t0 + sp
    e = el_start[q]
    kind[e] = 1
    from_apex[e] = True
    x1[e] = ax[q] + rq * np.cos(t0)
    y1[e] = ay[q] + rq * np.sin(t0)
    er[e + 1] = rq
    ea0[e + 1] = t0
    elen[e + 1] = sp
    x1[e + 1] = ax[q] + rq * np.cos(t1)
    y1[e + 1] = ay[q] + rq * np.sin(t1)
    kind[e + 2] = 1
    x1[e + 2] = ax[q]
    y1[e + 2] = ay[q]
    t1n = np.mod(t1, TWO_PI)
    lo_first = t0 < t1n
    b = bp_start[q]
    bp_angle[b] = np.where(lo_first, t0, t1n)
    bp_rho[b] = np.where(lo_first, rq, 0.0)
    bp_angle[b + 1] = np.where(lo_first, t1n, t0)
    bp_rho[b + 1] = np.where(lo_first, 0.0, rq)
    # multi-camera stars
    if len(multi):
        gs = multi[g.e_star]
        ge = el_start[gs] + g.e_local
        kind[ge] = g.kind
        er[ge] = g.r
        ea0[ge] = g.a0
        elen[ge] = g.alen
        x1[ge] = ax[gs] + g.x1
        y1[ge] = ay[gs] + g.y1
        from_apex[ge] = g.from_apex
        gb = bp_start[multi[g.bp_star]] + g.bp_local
        bp_angle[gb] = g.bp_angle
        bp_rho[gb] = g.bp_rho

    # loops: lobes (or the whole star when its radius never drops to 0)
    lobe_start = from_apex.copy()
    lobe_start[el_start[el_count > 0]] = True
    lobe = np.cumsum(lobe_start) - 1
    lobe_first = np.flatnonzero(lobe_start)
    lobe_last = _cat(lobe_first[1:] - 1, ne - 1) if ne else np.zeros(0, np.int64)
    nxt = np.arange(1, ne + 1, dtype=np.int64)
    nxt[lobe_last] = lobe_first
    prev = np.empty(ne, dtype=np.int64)
    prev[nxt] = np.arange(ne)
    # a loop's vertices are shared: each element starts where its predecessor ends
    x0 = x1[prev]
    y0 = y1[prev]
    u0x, u0y = np.cos(ea0), np.sin(ea0)
    u1x, u1y = np.cos(ea0 + elen), np.sin(ea0 + elen)
    bx0, by0 = np.minimum(x0, x1), np.minimum(y0, y1)
    bx1, by1 = np.maximum(x0, x1), np.maximum(y0, y1)
    arcs = np.flatnonzero(kind == 0)
    if len(arcs):
        # an arc's box also holds the circle's extreme points inside its range
        a0a, lena, rr = ea0[arcs], elen[arcs], er[arcs]
        ecx, ecy = ax[e_star[arcs]], ay[e_star[arcs]]
        has = [np.mod(k * np.pi / 2.0 - a0a, TWO_PI) <= lena for k in range(4)]
        bx1[arcs] = np.where(has[0], ecx + rr, bx1[arcs])
        by1[arcs] = np.where(has[1], ecy + rr, by1[arcs])
        bx0[arcs] = np.where(has[2], ecx - rr, bx0[arcs])
        by0[arcs] = np.where(has[3], ecy - rr, by0[arcs])
    bp_star = np.repeat(np.arange(n, dtype=np.int64), bp_count)
    return _Stars(
        cx=ax,
        cy=ay,
        rmax=rmax,
        members=members,
        m_start=m_start,
        m_count=m_count,
        bp_start=bp_start,
        bp_count=bp_count,
        bp_angle=bp_angle,
        bp_rho=bp_rho,
        bp_key=bp_star * 8.0 + bp_angle,
        disc_rho=disc_rho,
        el_start=el_start,
        el_count=el_count,
        e_star=e_star,
        kind=kind,
        r=er,
        a0=ea0,
        alen=elen,
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
        nxt=nxt,
        prev=prev,
        lobe=lobe,
        lobe_first=lobe_first,
        u0x=u0x,
        u0y=u0y,
        u1x=u1x,
        u1y=u1y,
        bx0=bx0,
        by0=by0,
        bx1=bx1,
        by1=by1,
    )


@dataclass
class _GenericShapes:
    """Elements and breakpoints of multi-camera stars, apex-relative (see _build_stars)."""

    rmax: FloatArray
    bp_count: IntArray
    el_count: IntArray
    bp_star: IntArray
    bp_local: IntArray
    bp_angle: FloatArray
    bp_rho: FloatArray
    e_star: IntArray
    e_local: IntArray
    kind: IntArray
    r: FloatArray
    a0: FloatArray
    alen: FloatArray
    x1: FloatArray
    y1: FloatArray
    from_apex: BoolArray


def _generic_star_shapes(
    stars: IntArray,
    members: IntArray,
    m_start: IntArray,
    m_count: IntArray,
    r: FloatArray,
    theta0: FloatArray,
    span: FloatArray,
) -> _GenericShapes:
    """Union of the sectors/discs sharing an apex, for each of ``stars`` (0..n-1 here).

    The radius is piecewise constant between breakpoints (the sector edges): each
    interval takes the largest radius of the members covering its middle; equal
    neighbours merge. Elements (per breakpoint, starting at a lobe start): a radial
    segment from the previous radius to this one, then an arc if the radius is > 0.
    """
    n = len(stars)
    cnt = m_count[stars]
    m_star = np.repeat(np.arange(n, dtype=np.int64), cnt)
    mem = members[np.repeat(m_start[stars], cnt) + _expand(cnt)[1]]
    mr = r[mem]
    disc = span[mem] >= TWO_PI
    t0 = np.mod(theta0[mem], TWO_PI)
    sp = np.where(disc, TWO_PI, span[mem])
    t1 = np.mod(t0 + sp, TWO_PI)
    mstart = np.cumsum(cnt) - cnt
    rmax = np.maximum.reduceat(mr, mstart) if n else np.zeros(0)
    # candidate breakpoints: both edges of every sector member, unique per star
    sec = ~disc
    b_star = _cat(m_star[sec], m_star[sec])
    b_ang = _cat(t0[sec], t1[sec])
    order = np.lexsort((b_ang, b_star))
    b_star, b_ang = b_star[order], b_ang[order]
    if len(b_star):
        # edges meant to coincide (abutting sectors) differ by rounding: one breakpoint
        dup = _cat(False, (b_star[1:] == b_star[:-1]) & (b_ang[1:] - b_ang[:-1] < _ANGLE_SNAP))
        b_star, b_ang = b_star[~dup], b_ang[~dup]
        # also across 0 / 2π: a star's last breakpoint just below its first + 2π
        st0, sc0 = _star_runs(b_star, n)
        two = np.flatnonzero(sc0 >= 2)
        lst = st0[two] + sc0[two] - 1
        drop = lst[b_ang[lst] > b_ang[st0[two]] + TWO_PI - _ANGLE_SNAP]
        if len(drop):
            keep_b = np.ones(len(b_star), dtype=bool)
            keep_b[drop] = False
            b_star, b_ang = b_star[keep_b], b_ang[keep_b]
    b_start, b_cnt = _star_runs(b_star, n)
    nb = len(b_star)
    pos = np.arange(nb) - b_start[b_star]
    nxt = np.where(pos + 1 < b_cnt[b_star], np.arange(nb) + 1, b_start[b_star])
    end = np.where(pos + 1 < b_cnt[b_star], b_ang[nxt], b_ang[nxt] + TWO_PI)
    mid = b_ang + 0.5 * (end - b_ang)
    owner, k = _expand(cnt[b_star])
    mm = mstart[b_star[owner]] + k
    covers = disc[mm] | (np.mod(mid[owner] - t0[mm], TWO_PI) < sp[mm])
    val = np.where(covers, mr[mm], 0.0)
    b_rho = np.maximum.reduceat(val, np.cumsum(cnt[b_star]) - cnt[b_star]) if nb else val
    # keep breakpoint k only where the radius changes
    prv = np.where(pos > 0, np.arange(nb) - 1, b_start[b_star] + b_cnt[b_star] - 1)
    keep = b_rho[prv] != b_rho
    bp_star, bp_angle, bp_rho = b_star[keep], b_ang[keep], b_rho[keep]
    bp_start, bp_count = _star_runs(bp_star, n)
    nbp = len(bp_star)
    bpos = np.arange(nbp) - bp_start[bp_star]
    bprev = np.where(bpos > 0, np.arange(nbp) - 1, bp_start[bp_star] + bp_count[bp_star] - 1)
    rho_prev = bp_rho[bprev]
    # rotate each star to start at a lobe start (previous interval empty), if any
    s0 = np.zeros(n, dtype=np.int64)
    ls = np.flatnonzero(rho_prev == 0.0)
    if len(ls):
        first = _cat(True, bp_star[ls[1:]] != bp_star[ls[:-1]])
        s0[bp_star[ls[first]]] = bpos[ls[first]]
    m = np.maximum(bp_count[bp_star], 1)
    gq = bp_start[bp_star] + np.mod(bpos + s0[bp_star], m)  # breakpoint visited q-th
    gn = bp_start[bp_star] + np.mod(bpos + s0[bp_star] + 1, m)
    bq = bp_angle[gq]
    bnext = np.where(bp_angle[gn] > bq, bp_angle[gn], bp_angle[gn] + TWO_PI)
    rho_q = bp_rho[gq]
    rho_p = rho_prev[gq]
    per_bp = 1 + (rho_q > 0)
    el_count = np.where(bp_count == 0, 1, 0).astype(np.int64)
    el_count += np.bincount(bp_star, weights=per_bp, minlength=n).astype(np.int64)
    # element lists: discs (no breakpoint) first, then per visited breakpoint
    dstars = np.flatnonzero(bp_count == 0)
    offs = np.cumsum(per_bp) - per_bp
    star_off0 = np.zeros(n, dtype=np.int64)
    if nbp:
        star_off0[bp_star[bpos == 0]] = offs[bpos == 0]
    local = offs - star_off0[bp_star]
    has_arc = rho_q > 0
    cb, sb = np.cos(bq), np.sin(bq)
    e_star = _cat(dstars, bp_star, bp_star[has_arc])
    e_local = _cat(np.zeros(len(dstars), np.int64), local, local[has_arc] + 1)
    n_d, n_r, n_a = len(dstars), nbp, int(has_arc.sum())
    kind = _cat(np.zeros(n_d, np.int64), np.ones(n_r, np.int64), np.zeros(n_a, np.int64))
    rr = _cat(rmax[dstars], np.zeros(n_r), rho_q[has_arc])
    a0 = _cat(np.zeros(n_d + n_r), np.mod(bq[has_arc], TWO_PI))
    alen = _cat(np.full(n_d, TWO_PI), np.zeros(n_r), (bnext - bq)[has_arc])
    x1 = _cat(rmax[dstars], rho_q * cb, rho_q[has_arc] * np.cos(bnext[has_arc]))
    y1 = _cat(np.zeros(n_d), rho_q * sb, rho_q[has_arc] * np.sin(bnext[has_arc]))
    from_apex = _cat(np.zeros(n_d, bool), rho_p == 0.0, np.zeros(n_a, bool))
    return _GenericShapes(
        rmax=rmax,
        bp_count=bp_count,
        el_count=el_count,
        bp_star=bp_star,
        bp_local=bpos,
        bp_angle=bp_angle,
        bp_rho=bp_rho,
        e_star=e_star,
        e_local=e_local,
        kind=kind,
        r=rr,
        a0=a0,
        alen=alen,
        x1=x1,
        y1=y1,
        from_apex=from_apex,
    )


def _star_runs(sorted_star: IntArray, n: int) -> tuple[IntArray, IntArray]:
    """Start and count of each star's run in an array sorted by star (0..n-1)."""
    count = np.bincount(sorted_star, minlength=n).astype(np.int64)
    return np.cumsum(count) - count, count


# --- crossings ---------------------------------------------------------------------------


@dataclass
class _Cross:
    """Crossings of element ``a`` and element (or zone edge) ``b``.

    ``ta``/``tb``: parameter along each (arc: angle offset from ``a0``; segment:
    fraction from its start). ``da``: +1 where ``a`` enters the region left of ``b``
    (``b``'s star, or the zone), -1 where it leaves; ``b`` gets ``-da``. ``bad``:
    the pair is too close to a degenerate configuration to decide in floating point.
    """

    a: IntArray
    b: IntArray
    ta: FloatArray
    tb: FloatArray
    x: FloatArray
    y: FloatArray
    da: IntArray

    @staticmethod
    def empty() -> _Cross:
        zi = np.zeros(0, np.int64)
        zf = np.zeros(0)
        return _Cross(zi, zi, zf, zf, zf, zf, zi)

    @staticmethod
    def concat(parts: Sequence[_Cross]) -> _Cross:
        parts = [p for p in parts if len(p.a)]
        if not parts:
            return _Cross.empty()
        return _Cross(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _Cross.__dataclass_fields__)
        )


def _arc_test(vx, vy, u0x, u0y, u1x, u1y, alen) -> tuple[BoolArray, BoolArray]:
    """Is the direction (vx, vy) from the centre within the arc, and is it within
    ``_TOL_M`` of one of the arc's end rays (|v| ≈ radius)? Cross products only."""
    c0 = u0x * vy - u0y * vx
    c1 = vx * u1y - vy * u1x
    full = alen >= TWO_PI
    on = full | np.where(alen <= np.pi, (c0 >= 0) & (c1 >= 0), ~((c0 < 0) & (c1 < 0)))
    # (a full circle's ends are its seam, where its loop starts: as unsafe)
    near = ((np.abs(c0) < _TOL_M) & (u0x * vx + u0y * vy > 0)) | (
        (np.abs(c1) < _TOL_M) & (u1x * vx + u1y * vy > 0)
    )
    return on, near


def _arc_param(vx, vy, a0, alen) -> FloatArray:
    """Angle offset from ``a0`` (radians, within [0, alen]) of a direction on the arc."""
    off = np.mod(np.arctan2(vy, vx) - a0, TWO_PI)
    # rounding can put a point on an end ray just outside: snap to the nearer end
    out = (alen < TWO_PI) & (off > alen)
    return np.where(out, np.where(TWO_PI - off < off - alen, 0.0, alen), off)


def _seg_param_near(t: FloatArray, length: FloatArray) -> tuple[BoolArray, BoolArray]:
    """(t within [0, 1], t within _TOL_M of an end) for a segment of ``length``."""
    on = (t >= 0.0) & (t <= 1.0)
    near = (np.abs(t) * length < _TOL_M) | (np.abs(1.0 - t) * length < _TOL_M)
    return on, near


def _emit(a, b, ta, tb, px, py, tax, tay, tbx, tby, ok, bad_acc) -> _Cross:
    """Keep valid crossings, with the sign of cross(tangent b, tangent a)."""
    a, b, ta, tb, px, py = a[ok], b[ok], ta[ok], tb[ok], px[ok], py[ok]
    tax, tay, tbx, tby = tax[ok], tay[ok], tbx[ok], tby[ok]
    cr = tbx * tay - tby * tax
    tangent = cr * cr < (_TANGENT_SIN**2) * (tax * tax + tay * tay) * (tbx * tbx + tby * tby)
    if tangent.any():
        bad_acc.append((a[tangent], b[tangent]))
        k = ~tangent
        a, b, ta, tb, px, py, cr = a[k], b[k], ta[k], tb[k], px[k], py[k], cr[k]
    return _Cross(a, b, ta, tb, px, py, np.where(cr > 0, 1, -1).astype(np.int64))


def _lazy(ok: BoolArray, fn: Callable[..., FloatArray], *args: NDArray[Any]) -> FloatArray:
    """``fn(*args)`` evaluated only where ``ok`` (zeros elsewhere)."""
    out = np.zeros(len(ok))
    if ok.any():
        out[ok] = fn(*(x[ok] for x in args))
    return out


def _cross_arc_arc(st: _Stars, a: IntArray, b: IntArray, bad: list) -> _Cross:
    sa, sb = st.e_star[a], st.e_star[b]
    dx = st.cx[sb] - st.cx[sa]
    dy = st.cy[sb] - st.cy[sa]
    r1, r2 = st.r[a], st.r[b]
    d2 = dx * dx + dy * dy
    # (nearly) tangent circles: no safe decision in floating point
    dd = np.sqrt(d2)
    tangent = (np.abs(dd - (r1 + r2)) < _TOL_M) | (np.abs(dd - np.abs(r1 - r2)) < _TOL_M)
    if tangent.any():
        bad.append((a[tangent], b[tangent]))
    # the circles cross only if |r1 - r2| < d < r1 + r2: drop the rest early
    m = (d2 < (r1 + r2) ** 2) & (d2 > (r1 - r2) ** 2)
    if not m.all():
        a, b, sa, dx, dy, r1, r2, d2 = a[m], b[m], sa[m], dx[m], dy[m], r1[m], r2[m], d2[m]
    c1x, c1y = st.cx[sa], st.cy[sa]
    d = np.sqrt(d2)
    with np.errstate(invalid="ignore", divide="ignore"):
        m_ = (d2 + r1 * r1 - r2 * r2) / (2.0 * d)
        h2 = r1 * r1 - m_ * m_
        h = np.sqrt(np.maximum(h2, 0.0))
        ux = dx / d
        uy = dy / d
    valid = (d > 0) & (h2 > 0)
    # two crossings closer than _TOL_M: (nearly) tangent circles
    tiny = valid & (2.0 * h < _TOL_M)
    bad.append((a[tiny], b[tiny]))
    out = []
    for sgn in (1.0, -1.0):
        px = c1x + m_ * ux - sgn * h * uy
        py = c1y + m_ * uy + sgn * h * ux
        v1x, v1y = px - c1x, py - c1y
        v2x, v2y = v1x - dx, v1y - dy
        on_a, near_a = _arc_test(v1x, v1y, st.u0x[a], st.u0y[a], st.u1x[a], st.u1y[a], st.alen[a])
        on_b, near_b = _arc_test(v2x, v2y, st.u0x[b], st.u0y[b], st.u1x[b], st.u1y[b], st.alen[b])
        nearv = valid & (near_a | near_b) & (on_a | near_a) & (on_b | near_b)
        if nearv.any():
            bad.append((a[nearv], b[nearv]))
        ok = valid & on_a & on_b
        oa = _lazy(ok, _arc_param, v1x, v1y, st.a0[a], st.alen[a])
        ob = _lazy(ok, _arc_param, v2x, v2y, st.a0[b], st.alen[b])
        out.append(_emit(a, b, oa, ob, px, py, -v1y, v1x, -v2y, v2x, ok, bad))
    return _Cross.concat(out)


def _cross_arc_seg(
    cx: FloatArray,
    cy: FloatArray,
    r: FloatArray,
    arcs: tuple[FloatArray, ...],
    sx0: FloatArray,
    sy0: FloatArray,
    sx1: FloatArray,
    sy1: FloatArray,
    a: IntArray,
    b: IntArray,
    bad: list,
    arc_first: bool,
) -> _Cross:
    """Crossings of arcs (circle ``c``, ``r``; ``arcs`` = (a0, alen, u0x, u0y, u1x,
    u1y)) with segments; ``a`` are the arcs' ids, ``b`` the segments'."""
    dx = sx1 - sx0
    dy = sy1 - sy0
    fx = sx0 - cx
    fy = sy0 - cy
    qa = dx * dx + dy * dy
    qb = 2.0 * (fx * dx + fy * dy)
    qc = fx * fx + fy * fy - r * r
    disc = qb * qb - 4.0 * qa * qc
    # the segment (nearly) tangent to the circle: no safe decision in floating point
    with np.errstate(invalid="ignore", divide="ignore"):
        foot = -0.5 * qb / qa
        line_d = np.sqrt(np.maximum(qc + r * r - 0.25 * qb * qb / qa, 0.0))
    touch = (qa > 0) & (np.abs(line_d - r) < _TOL_M) & (foot > -_TOL_M) & (foot < 1 + _TOL_M)
    if touch.any():
        ida, idb = (a, b) if arc_first else (b, a)
        bad.append((ida[touch], idb[touch]))
    # both ends inside the circle, or the line missing it: no crossing
    m = (qa > 0) & (disc > 0) & ~((qc < 0) & (qa + qb + qc < 0))
    if not m.all():
        a, b, cx, cy, r = a[m], b[m], cx[m], cy[m], r[m]
        arcs = tuple(v[m] for v in arcs)
        sx0, sy0, dx, dy, qa, qb, qc, disc = (
            sx0[m], sy0[m], dx[m], dy[m], qa[m], qb[m], qc[m], disc[m]
        )  # fmt: skip
    a0, alen, u0x, u0y, u1x, u1y = arcs
    length = np.sqrt(qa)
    valid = np.ones(len(a), dtype=bool)
    sq = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = -0.5 * (qb + np.where(qb >= 0, sq, -sq))
        t1 = q / qa
        t2 = qc / q
        close = valid & (np.abs(t1 - t2) * length < _TOL_M)  # double root: tangent
    ida, idb = (a, b) if arc_first else (b, a)
    bad.append((ida[close], idb[close]))
    out = []
    for t in (t1, t2):
        px = sx0 + t * dx
        py = sy0 + t * dy
        vx, vy = px - cx, py - cy
        on_arc, near_arc = _arc_test(vx, vy, u0x, u0y, u1x, u1y, alen)
        on_seg, near_seg = _seg_param_near(t, length)
        nearv = valid & (near_arc | near_seg) & (on_arc | near_arc) & (on_seg | near_seg)
        bad.append((ida[nearv], idb[nearv]))
        ok = valid & on_arc & on_seg
        off = _lazy(ok, _arc_param, vx, vy, a0, alen)
        if arc_first:
            out.append(_emit(a, b, off, t, px, py, -vy, vx, dx, dy, ok, bad))
        else:
            out.append(_emit(b, a, t, off, px, py, dx, dy, -vy, vx, ok, bad))
    return _Cross.concat(out)


def _cross_seg_seg(
    ax0, ay0, ax1, ay1, bx0, by0, bx1, by1, a: IntArray, b: IntArray, bad: list
) -> _Cross:
    dax = ax1 - ax0
    day = ay1 - ay0
    dbx = bx1 - bx0
    dby = by1 - by0
    den = dax * dby - day * dbx
    rx = bx0 - ax0
    ry = by0 - ay0
    la = np.hypot(dax, day)
    lb = np.hypot(dbx, dby)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (rx * dby - ry * dbx) / den
        u = (rx * day - ry * dax) / den
        # (nearly) parallel and (nearly) on one line: collinear overlap is degenerate
        parallel = np.abs(den) < _TANGENT_SIN * la * lb
        line_dist = np.abs(rx * day - ry * dax) / la
    collinear = parallel & (line_dist < _TOL_M)
    if collinear.any():
        # only when the segments' extents along the line overlap
        s0 = (rx * dax + ry * day) / la
        s1 = ((bx1 - ax0) * dax + (by1 - ay0) * day) / la
        overlap = collinear & (np.maximum(s0, s1) >= -_TOL_M) & (np.minimum(s0, s1) <= la + _TOL_M)
        bad.append((a[overlap], b[overlap]))
    on_a, near_a = _seg_param_near(t, la)
    on_b, near_b = _seg_param_near(u, lb)
    ok = ~parallel & on_a & on_b
    nearv = ~parallel & (near_a | near_b) & (on_a | near_a) & (on_b | near_b)
    bad.append((a[nearv], b[nearv]))
    px = ax0 + t * dax
    py = ay0 + t * day
    return _emit(a, b, t, u, px, py, dax, day, dbx, dby, ok, bad)


def _arc_cols(st: _Stars, e: IntArray) -> tuple[FloatArray, ...]:
    return st.a0[e], st.alen[e], st.u0x[e], st.u0y[e], st.u1x[e], st.u1y[e]


def _star_star_crossings(st: _Stars, si: IntArray, sj: IntArray) -> tuple[_Cross, IntArray]:
    """Crossings between the elements of star pairs (si, sj); and the stars too close to
    a degenerate configuration (tangent arcs, a crossing at a vertex, shared lines)."""
    # stars whose boxes (e.g. sectors looking apart) miss each other cannot cross
    sb = st.star_boxes()
    m = (sb[0][si] <= sb[2][sj]) & (sb[0][sj] <= sb[2][si])
    m &= (sb[1][si] <= sb[3][sj]) & (sb[1][sj] <= sb[3][si])
    si, sj = si[m], sj[m]
    owner, pos = _expand(st.el_count[si] * st.el_count[sj])
    nb = st.el_count[sj][owner]
    a = st.el_start[si][owner] + pos // nb
    b = st.el_start[sj][owner] + pos % nb
    near = (st.bx0[a] <= st.bx1[b]) & (st.bx0[b] <= st.bx1[a])
    near &= (st.by0[a] <= st.by1[b]) & (st.by0[b] <= st.by1[a])
    a, b = a[near], b[near]
    ka = st.kind[a]
    kb = st.kind[b]
    bad: list = []
    parts = []
    m = (ka == 0) & (kb == 0)
    if m.any():
        parts.append(_cross_arc_arc(st, a[m], b[m], bad))
    for arc_first, m in ((True, (ka == 0) & (kb == 1)), (False, (ka == 1) & (kb == 0))):
        if m.any():
            arc, seg = (a[m], b[m]) if arc_first else (b[m], a[m])
            s = st.e_star[arc]
            parts.append(
                _cross_arc_seg(
                    st.cx[s],
                    st.cy[s],
                    st.r[arc],
                    _arc_cols(st, arc),
                    st.x0[seg],
                    st.y0[seg],
                    st.x1[seg],
                    st.y1[seg],
                    arc,
                    seg,
                    bad,
                    arc_first,
                )
            )
    m = (ka == 1) & (kb == 1)
    if m.any():
        aa, bb = a[m], b[m]
        parts.append(
            _cross_seg_seg(
                st.x0[aa], st.y0[aa], st.x1[aa], st.y1[aa],
                st.x0[bb], st.y0[bb], st.x1[bb], st.y1[bb],
                aa, bb, bad,
            )
        )  # fmt: skip
    bad_el = np.concatenate([_cat(x, y) for x, y in bad]) if bad else np.zeros(0, np.int64)
    return _Cross.concat(parts), _unique(st.e_star[bad_el.astype(np.int64)])


def _star_edge_crossings(
    st: _Stars, zn: _Zones, s: IntArray, v: IntArray
) -> tuple[_Cross, IntArray, IntArray]:
    """Crossings between the elements of stars ``s`` and zone edges ``v`` (pairs).

    Returns the crossings (``a`` element, ``b`` edge; ``da`` +1 where the element
    enters the zone), and the (element, edge) pairs too close to a degeneracy.
    """
    owner, pos = _expand(st.el_count[s])
    e = st.el_start[s][owner] + pos
    ev = v[owner]
    ex0, ey0 = zn.vx[ev], zn.vy[ev]
    nv = zn.v_next[ev]
    ex1, ey1 = zn.vx[nv], zn.vy[nv]
    near = (st.bx0[e] <= np.maximum(ex0, ex1)) & (np.minimum(ex0, ex1) <= st.bx1[e])
    near &= (st.by0[e] <= np.maximum(ey0, ey1)) & (np.minimum(ey0, ey1) <= st.by1[e])
    e, ev, ex0, ey0, ex1, ey1 = e[near], ev[near], ex0[near], ey0[near], ex1[near], ey1[near]
    bad: list = []
    parts = []
    arc = st.kind[e] == 0
    if arc.any():
        ea = e[arc]
        sa = st.e_star[ea]
        parts.append(
            _cross_arc_seg(
                st.cx[sa], st.cy[sa], st.r[ea], _arc_cols(st, ea),
                ex0[arc], ey0[arc], ex1[arc], ey1[arc], ea, ev[arc], bad, True,
            )
        )  # fmt: skip
    seg = ~arc
    if seg.any():
        es = e[seg]
        parts.append(
            _cross_seg_seg(
                st.x0[es], st.y0[es], st.x1[es], st.y1[es],
                ex0[seg], ey0[seg], ex1[seg], ey1[seg], es, ev[seg], bad,
            )
        )  # fmt: skip
    if bad:
        be = np.concatenate([x for x, _ in bad]).astype(np.int64)
        bv = np.concatenate([y for _, y in bad]).astype(np.int64)
    else:
        be = bv = np.zeros(0, np.int64)
    return _Cross.concat(parts), be, bv


# --- one level: coverage boundary, area ---------------------------------------------------

_CROSS_BASE = np.int64(1) << 40
_VERTEX_BASE = np.int64(2) << 40
_ZONE_KEY = np.int64(1) << 42


@dataclass
class _Pieces:
    """Boundary pieces of the gaps, oriented with the gap on the left, keyed by zone.

    ``arc`` pieces run clockwise on circle (``cx``, ``cy``, ``r``) from angle ``f0`` to
    ``f1`` (< ``f0``); other pieces are straight. Endpoints are node ids: element end
    nodes (< ``_CROSS_BASE``), crossings (``_CROSS_BASE + i``), zone vertices
    (``_VERTEX_BASE + v``); ``node_xy`` gives their coordinates.
    """

    zone: IntArray
    start: IntArray
    end: IntArray
    arc: BoolArray
    cx: FloatArray
    cy: FloatArray
    r: FloatArray
    f0: FloatArray
    f1: FloatArray
    green: FloatArray  # ∫ (x dy - y dx) / 2 along the piece
    run: IntArray  # > 0: a run of that many whole zone edges from vertex start - _VERTEX_BASE
    iso: _IsoPieces  # the reversed boundary loops of isolated stars, already in order
    el_pinch: IntArray  # per element end node: its star, where several lobes meet there
    whole_rings: IntArray
    el_xy: FloatArray
    cross_xy: FloatArray

    def node_xy(self, zn: _Zones, node: IntArray) -> tuple[FloatArray, FloatArray]:
        x = np.empty(len(node))
        y = np.empty(len(node))
        el = node < _CROSS_BASE
        vt = node >= _VERTEX_BASE
        cr = ~el & ~vt
        x[el] = self.el_xy[node[el], 0]
        y[el] = self.el_xy[node[el], 1]
        c = node[cr] - _CROSS_BASE
        x[cr] = self.cross_xy[c, 0]
        y[cr] = self.cross_xy[c, 1]
        v = node[vt] - _VERTEX_BASE
        x[vt] = zn.vx[v]
        y[vt] = zn.vy[v]
        return x, y


@dataclass
class _LevelResult:
    covered: FloatArray
    bad: BoolArray
    touched: BoolArray
    pieces: _Pieces | None
    zone_star_s: IntArray  # (star, zone) pairs: the stars whose boundary may be in a zone
    zone_star_z: IntArray


def _excl_group_cumsum(values: NDArray[Any], group_first: BoolArray) -> NDArray[Any]:
    """Exclusive cumulative sum restarting at every ``group_first``."""
    c = np.cumsum(values)
    excl = c - values
    starts = np.flatnonzero(group_first)
    base = np.repeat(excl[starts], np.diff(_cat(starts, len(values))))
    return excl - base


def _order_by(owner: IntArray, p: FloatArray) -> IntArray:
    """Permutation sorting events by owner, then parameter p (in [0, 2π]).

    One integer argsort of owner · 2^41 + p quantised to 2^40 steps of 2π (6e-12: far
    below the resolution of any real difference between two crossings).
    """
    if len(owner) == 0:
        return np.zeros(0, np.int64)
    if owner.max() >= (1 << 22):
        return np.lexsort((p, owner))
    q = np.clip(p * ((1 << 40) / 7.0), 0, (1 << 41) - 1).astype(np.int64)
    return np.argsort((owner << 41) + q)


def _sweep(
    n_owner: int, ev_owner: IntArray, ev_p: FloatArray, ev_vals: Sequence[NDArray[Any]]
) -> tuple[IntArray, IntArray, IntArray, IntArray, list[NDArray[Any]]]:
    """Split owners (elements, edges) at their sorted events into sub-intervals.

    Returns per sub-interval: owner, index in owner, index of the event starting it
    (-1: owner start), of the event ending it (-1: owner end), and for each of
    ``ev_vals`` the sum of the values of the events before it within the owner.
    """
    order = _order_by(ev_owner, ev_p)
    ev_owner = ev_owner[order]
    cnt = np.bincount(ev_owner, minlength=n_owner).astype(np.int64)
    ev_start = np.cumsum(cnt) - cnt
    owner, k = _expand(cnt + 1)
    gidx = ev_start[owner] + k
    has_prev = k > 0
    has_next = k < cnt[owner]
    before = (
        np.where(has_prev, order[np.maximum(gidx - 1, 0)], -1)
        if len(order)
        else -np.ones(len(owner), np.int64)
    )
    after = (
        np.where(has_next, order[np.minimum(gidx, max(len(order) - 1, 0))], -1)
        if len(order)
        else -np.ones(len(owner), np.int64)
    )
    sums = []
    for vals in ev_vals:
        v = vals[order]
        c = _cat(0, np.cumsum(v))
        sums.append(c[gidx] - c[ev_start[owner]])
    return owner, k, before, after, sums


def _take(values: NDArray[Any], idx: IntArray, default: Any) -> NDArray[Any]:
    """``values[idx]`` where ``idx >= 0``, else ``default`` (scalar or per-row array)."""
    if len(values) == 0:
        return np.broadcast_to(np.asarray(default), idx.shape).copy()
    return np.where(idx >= 0, values[np.maximum(idx, 0)], default)


def _arc_green(cx, cy, r, f0, f1):
    """∫ (x dy - y dx) / 2 along the arc of circle (cx, cy, r) from angle f0 to f1."""
    return 0.5 * (
        r * r * (f1 - f0) + r * cx * (np.sin(f1) - np.sin(f0)) - r * cy * (np.cos(f1) - np.cos(f0))
    )


def _level_pass(
    zn: _Zones,
    st: _Stars,
    pair_i: IntArray,
    pair_j: IntArray,
    home: IntArray,
    se_s: IntArray,
    se_v: IntArray,
    want_pieces: bool,
) -> _LevelResult:
    """Covered area of every zone at one level, and the gap boundary pieces.

    ``pair_i``/``pair_j``: star pairs whose discs overlap; ``home``: zone holding each
    star's apex (-1: none); ``se_s``/``se_v``: (star, zone edge) pairs where the edge
    comes within the star's reach (those stars are the non-interior ones).
    """
    nz = len(zn)
    ns = len(st)
    ne = st.n_elements
    bad_star = np.zeros(ns, dtype=bool)
    bad_zone = np.zeros(nz, dtype=bool)

    cx_ss, bs = _star_star_crossings(st, pair_i, pair_j)
    bad_star[bs] = True
    cx_se, be, bv = _star_edge_crossings(st, zn, se_s, se_v)
    bad_star[st.e_star[be]] = True
    bad_zone[zn.v_zone[bv]] = True
    n_ss = len(cx_ss.a)
    n_se = len(cx_se.a)

    # element instances: (element, zone) for every zone a star's boundary may be in
    nonint = np.zeros(ns, dtype=bool)
    nonint[se_s] = True
    # isolated stars (inside one zone, overlapping no other star) skip the sweep: their
    # area is their own, their boundary loops are gap holes as they are
    degree = np.bincount(_cat(pair_i, pair_j), minlength=ns)
    iso = ~nonint & (home >= 0) & (degree == 0)
    inter = np.flatnonzero(~nonint & (home >= 0) & ~iso)
    ni_home = np.flatnonzero(nonint & (home >= 0))
    ns_s, ns_z = _unique_pairs(_cat(se_s, ni_home), _cat(zn.v_zone[se_v], home[ni_home]), nz)
    pz_s = _cat(inter, ns_s)
    pz_z = _cat(home[inter], ns_z)
    o = np.argsort(pz_s, kind="stable")  # by star (zones stay sorted within a star)
    pz_s, pz_z = pz_s[o], pz_z[o]
    owner, pos = _expand(st.el_count[pz_s])
    inst_e = st.el_start[pz_s][owner] + pos
    inst_z = pz_z[owner]
    inst_key = inst_e * nz + inst_z
    order = np.argsort(inst_key)
    inst_e, inst_z, inst_key = inst_e[order], inst_z[order], inst_key[order]
    n_inst = len(inst_e)
    e_inst_count = np.bincount(inst_e, minlength=ne).astype(np.int64)
    e_inst_start = np.cumsum(e_inst_count) - e_inst_count
    inst_nonint = nonint[st.e_star[inst_e]]

    # events on instances: star crossings (replicated to every instance of the element)
    # change the depth; zone edge crossings toggle "inside the zone"
    ev_e = _cat(cx_ss.a, cx_ss.b)
    ev_p = _cat(cx_ss.ta, cx_ss.tb)
    ev_dd = _cat(cx_ss.da, -cx_ss.da)
    ev_node = _CROSS_BASE + _cat(np.arange(n_ss), np.arange(n_ss))
    tot = np.bincount(ev_e, weights=ev_dd, minlength=ne).astype(np.int64)
    ow, k = _expand(e_inst_count[ev_e])
    ev1_inst = e_inst_start[ev_e][ow] + k
    y_inst = np.searchsorted(inst_key, cx_se.a * nz + zn.v_zone[cx_se.b])
    E_inst = _cat(ev1_inst, y_inst)
    E_p = _cat(ev_p[ow], cx_se.ta)
    E_dd = _cat(ev_dd[ow], np.zeros(n_se, np.int64))
    E_dz = _cat(np.zeros(len(ow), np.int64), cx_se.da)
    E_node = _cat(ev_node[ow], _CROSS_BASE + n_ss + np.arange(n_se))

    # depth (other stars covering) at every element start: one point test per loop,
    # then the crossings' signs summed along the loop
    nl = len(st.lobe_first)
    lobe_star = st.e_star[st.lobe_first]
    star_lobe_count = np.bincount(lobe_star, minlength=ns).astype(np.int64)
    star_lobe_start = np.cumsum(star_lobe_count) - star_lobe_count
    oth_s = _cat(pair_i, pair_j)
    oth_t = _cat(pair_j, pair_i)
    ow2, k2 = _expand(star_lobe_count[oth_s])
    lob = star_lobe_start[oth_s][ow2] + k2
    tst = oth_t[ow2]
    lf = st.lobe_first[lob]
    inside, near = st.contains(tst, st.x0[lf], st.y0[lf])
    bad_star[lobe_star[lob[near]]] = True
    depth0 = np.bincount(lob, weights=inside, minlength=nl).astype(np.int64)
    first_of_lobe = np.zeros(ne, dtype=bool)
    first_of_lobe[st.lobe_first] = True
    d_start = depth0[st.lobe] + _excl_group_cumsum(tot, first_of_lobe)
    lobe_sum = np.bincount(st.lobe, weights=tot, minlength=nl)
    bad_star[lobe_star[lobe_sum != 0]] = True

    # inside the zone at every instance start (non-interior stars only)
    tog = np.bincount(y_inst, weights=cx_se.da, minlength=n_inst).astype(np.int64)
    in_start = np.ones(n_inst, dtype=np.int64)
    if inst_nonint.any():
        idx = np.flatnonzero(inst_nonint)
        o2 = idx[np.argsort(inst_z[idx] * np.int64(ne) + inst_e[idx])]
        e2, z2 = inst_e[o2], inst_z[o2]
        gfirst = _cat(True, (z2[1:] != z2[:-1]) | (st.lobe[e2[1:]] != st.lobe[e2[:-1]]))
        lf_idx = o2[gfirst]
        lfe = inst_e[lf_idx]
        inz0 = shapely.contains_xy(
            zn.geoms[inst_z[lf_idx]], st.x0[lfe] + zn.ox, st.y0[lfe] + zn.oy
        ).astype(np.int64)
        grp = np.cumsum(gfirst) - 1
        in_start[o2] = inz0[grp] + _excl_group_cumsum(tog[o2], gfirst)
        gsum = np.bincount(grp, weights=tog[o2])
        bad_grp = np.flatnonzero(gsum != 0)
        bad_star[st.e_star[inst_e[lf_idx[bad_grp]]]] = True

    # sub-intervals of instances
    owner, k, ev_before, ev_after, (sdd, sdz) = _sweep(n_inst, E_inst, E_p, (E_dd, E_dz))
    e_of = inst_e[owner]
    z_of = inst_z[owner]
    is_arc = st.kind[e_of] == 0
    plen = np.where(is_arc, st.alen[e_of], 1.0)
    p0 = _take(E_p, ev_before, 0.0)
    p1 = _take(E_p, ev_after, plen)
    depth = d_start[e_of] + sdd
    inz = in_start[owner] + sdz
    bad_star[st.e_star[e_of[(depth < 0) | (inz < 0) | (inz > 1)]]] = True
    kept = (depth == 0) & (inz == 1) & (p1 > p0)

    # area of the gaps: Green's theorem over their boundary, pieces reversed (gap left)
    ke = e_of[kept]
    karc = is_arc[kept]
    kp0, kp1 = p0[kept], p1[kept]
    s_of = st.e_star[ke]
    g = np.empty(len(ke))
    a0 = st.a0[ke]
    g[karc] = -_arc_green(
        st.cx[s_of[karc]], st.cy[s_of[karc]], st.r[ke[karc]], a0[karc] + kp0[karc],
        a0[karc] + kp1[karc],
    )  # fmt: skip
    sg = ~karc
    es = ke[sg]
    dx = st.x1[es] - st.x0[es]
    dy = st.y1[es] - st.y0[es]
    xs = st.x0[es] + kp0[sg] * dx
    ys = st.y0[es] + kp0[sg] * dy
    xe = st.x0[es] + kp1[sg] * dx
    ye = st.y0[es] + kp1[sg] * dy
    g[sg] = 0.5 * (xe * ys - xs * ye)
    gap = zn.area - 0.0
    gap = gap + np.bincount(z_of[kept], weights=g, minlength=nz)

    # zone edges within reach of a non-interior star: split at crossings, keep uncovered
    cand_v, se_vi = _unique_inverse(se_v)
    nv = len(cand_v)
    ins_v, near_v = st.contains(se_s, zn.vx[se_v], zn.vy[se_v])
    bad_zone[zn.v_zone[se_v[near_v]]] = True
    v_depth0 = np.bincount(se_vi, weights=ins_v, minlength=nv).astype(np.int64)
    ye_vi = np.searchsorted(cand_v, cx_se.b)
    vowner, _, vb, va, (vdd,) = _sweep(nv, ye_vi, cx_se.tb, (-cx_se.da,))
    vdepth = v_depth0[vowner] + vdd
    vv = cand_v[vowner]
    bad_zone[zn.v_zone[vv[vdepth < 0]]] = True
    q0 = _take(cx_se.tb, vb, 0.0)
    q1 = _take(cx_se.tb, va, 1.0)
    vkept = (vdepth == 0) & (q1 > q0)
    vn = zn.v_next[vv]
    ex0, ey0, ex1, ey1 = zn.vx[vv], zn.vy[vv], zn.vx[vn], zn.vy[vn]
    xs = ex0 + q0 * (ex1 - ex0)
    ys = ey0 + q0 * (ey1 - ey0)
    xe = ex0 + q1 * (ex1 - ex0)
    ye = ey0 + q1 * (ey1 - ey0)
    gv = np.where(vkept, 0.5 * (xs * ye - xe * ys), 0.0)
    gap += np.bincount(zn.v_zone[vv], weights=gv, minlength=nz)
    gap -= np.bincount(zn.v_zone[cand_v], weights=zn.green[cand_v], minlength=nz)
    covered = np.clip(zn.area - gap, 0.0, zn.area)

    # zones of stars that met a degeneracy
    bs_idx = np.flatnonzero(bad_star)
    if len(bs_idx):
        m = bad_star[pz_s]
        bad_zone[pz_z[m]] = True
    # isolated stars: area by Green's theorem along their own elements
    iso_s = np.flatnonzero(iso)
    ow, kk = _expand(st.el_count[iso_s])
    iso_e = st.el_start[iso_s][ow] + kk
    iso_green = _element_green(st, iso_e)
    gap -= np.bincount(home[iso_s][ow], weights=iso_green, minlength=nz)
    covered = np.clip(zn.area - gap, 0.0, zn.area)
    touched = np.zeros(nz, dtype=bool)
    touched[pz_z] = True
    touched[home[iso_s]] = True
    touched[zn.v_zone[cand_v]] = True

    pieces = None
    if want_pieces:
        # star pieces, reversed: from the sub-interval's end node to its start node
        st_start = _take(E_node, ev_after, e_of)[kept]
        st_end = _take(E_node, ev_before, st.prev[e_of])[kept]
        # edge pieces, forward
        vnode0 = np.where(vb >= 0, _CROSS_BASE + n_ss + np.maximum(vb, 0), _VERTEX_BASE + vv)
        vnode1 = np.where(va >= 0, _CROSS_BASE + n_ss + np.maximum(va, 0), _VERTEX_BASE + vn)
        # untouched edges of rings that have a candidate edge; untouched rings
        ring_has = np.zeros(len(zn.ring_start), dtype=bool)
        ring_has[zn.v_ring[cand_v]] = True
        run_v, run_end, run_len, run_green = _edge_runs(zn, cand_v, ring_has)
        whole_rings = np.flatnonzero(touched[zn.ring_zone] & ~ring_has)
        n_vk = int(vkept.sum())
        n_rest = n_vk + len(run_v)
        s_arc = _cat(s_of, np.zeros(n_rest, np.int64))
        pieces = _Pieces(
            zone=_cat(z_of[kept], zn.v_zone[vv[vkept]], zn.v_zone[run_v]),
            start=_cat(st_start, vnode0[vkept], _VERTEX_BASE + run_v),
            end=_cat(st_end, vnode1[vkept], _VERTEX_BASE + run_end),
            arc=_cat(karc, np.zeros(n_rest, dtype=bool)),
            cx=st.cx[s_arc],
            cy=st.cy[s_arc],
            r=_cat(st.r[ke], np.zeros(n_rest)),
            f0=_cat(a0 + kp1, np.zeros(n_rest)),
            f1=_cat(a0 + kp0, np.zeros(n_rest)),
            green=_cat(g, gv[vkept], run_green),
            run=_cat(np.zeros(len(ke) + n_vk, np.int64), run_len),
            iso=_iso_pieces(st, iso_e, home[iso_s][ow], -iso_green),
            el_pinch=_pinch_nodes(st),
            whole_rings=whole_rings,
            el_xy=np.stack([st.x1, st.y1], axis=1),
            cross_xy=np.stack([_cat(cx_ss.x, cx_se.x), _cat(cx_ss.y, cx_se.y)], axis=1),
        )
    return _LevelResult(
        covered=covered,
        bad=bad_zone,
        touched=touched,
        pieces=pieces,
        zone_star_s=_cat(pz_s, iso_s),
        zone_star_z=_cat(pz_z, home[iso_s]),
    )


# --- set-up shared by the levels ------------------------------------------------------------


@dataclass
class _Setup:
    """Cameras grouped into stars, and the candidate pairs of the coarsest level."""

    zn: _Zones
    fovs: FovSet
    cam: IntArray  # FovSet rows of the usable cameras (finite position and ranges > 0)
    ax: FloatArray
    ay: FloatArray
    members: IntArray  # positions in ``cam``, grouped by star
    m_start: IntArray
    m_count: IntArray
    theta0: FloatArray  # per usable camera, radians
    span: FloatArray
    radius: FloatArray  # (n_cam, 4)
    star_r: FloatArray  # (n_star, 4): max member radius per level
    home: IntArray
    pair_i: IntArray
    pair_j: IntArray
    pair_d: FloatArray
    se_s: IntArray
    se_v: IntArray
    se_d: FloatArray

    def stars(self, k: int) -> _Stars:
        return _build_stars(
            self.ax,
            self.ay,
            self.members,
            self.m_start,
            self.m_count,
            self.radius[:, k],
            self.theta0,
            self.span,
        )

    def level_pairs(self, k: int) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        r = self.star_r[:, k]
        m = self.pair_d < r[self.pair_i] + r[self.pair_j]
        e = self.se_d <= r[self.se_s] + _TOL_M
        return self.pair_i[m], self.pair_j[m], self.se_s[e], self.se_v[e]


def _setup(zn: _Zones, fovs: FovSet) -> _Setup:
    ranges = np.nan_to_num(fovs.ranges_m, nan=0.0)
    ok = (
        np.isfinite(fovs.x_m)
        & np.isfinite(fovs.y_m)
        & (ranges > 0).all(axis=1)
        & np.isfinite(fovs.hfov_deg)
        & (fovs.hfov_deg > 0)
    )
    cam = np.flatnonzero(ok)
    x = fovs.x_m[cam] - zn.ox
    y = fovs.y_m[cam] - zn.oy
    radius = ranges[cam]
    hfov = fovs.hfov_deg[cam]
    span = np.where(hfov >= DISC_HFOV_DEG, TWO_PI, np.radians(np.minimum(hfov, 360.0)))
    az = np.nan_to_num(fovs.azimuth_grid_deg[cam])
    theta0 = np.pi / 2.0 - np.radians(az) - span / 2.0
    members, m_start, m_count = _apex_groups(x, y)
    ax = x[members[m_start]]
    ay = y[members[m_start]]
    ns = len(ax)
    m_star = np.repeat(np.arange(ns), m_count)
    star_r = np.zeros((ns, len(DORI_LEVELS)))
    np.maximum.at(star_r, m_star, radius[members])
    home = zn.locate(ax, ay)
    # candidate pairs at the coarsest level (the others are nested in it)
    r0 = star_r.max(axis=1) if ns else np.zeros(0)
    bx0, by0, bx1, by1 = ax - r0, ay - r0, ax + r0, ay + r0
    i, j = _self_join(bx0, by0, bx1, by1, _JOIN_CELL_M)
    d = np.hypot(ax[j] - ax[i], ay[j] - ay[i])
    keep = d < r0[i] + r0[j]
    pair_i, pair_j, pair_d = i[keep], j[keep], d[keep]
    index, ev = zn.edge_index()
    s, v = index.query_items(bx0, by0, bx1, by1, ev, len(zn.vx))
    vn = zn.v_next[v]
    dist = _point_segment_distance(ax[s], ay[s], zn.vx[v], zn.vy[v], zn.vx[vn], zn.vy[vn])
    keep = dist <= r0[s] + _TOL_M
    return _Setup(
        zn=zn,
        fovs=fovs,
        cam=cam,
        ax=ax,
        ay=ay,
        members=members,
        m_start=m_start,
        m_count=m_count,
        theta0=theta0,
        span=span,
        radius=radius,
        star_r=star_r,
        home=home,
        pair_i=pair_i,
        pair_j=pair_j,
        pair_d=pair_d,
        se_s=s[keep],
        se_v=v[keep],
        se_d=dist[keep],
    )


# --- gap polygons ----------------------------------------------------------------------------


def _cycle_labels(succ: IntArray) -> IntArray:
    """For a permutation made of cycles: each element's cycle label (smallest member),
    by pointer jumping (O(log L) doubling steps)."""
    label = np.arange(len(succ), dtype=np.int64)
    jump = succ.copy()
    while True:
        new = np.minimum(label, label[jump])
        jump = jump[jump]
        if np.array_equal(new, label):
            return label
        label = new


def _cycles(succ: IntArray) -> tuple[IntArray, IntArray]:
    """For a permutation made of cycles: (cycle label = smallest member, position from it).

    Positions come from list ranking (Wyllie) on the cycles cut before their label.
    """
    n = len(succ)
    label = _cycle_labels(succ)
    # cut each cycle before its head; Wyllie: distance to the tail by pointer jumping
    nxt = succ.copy()
    tail = succ == label
    nxt[tail] = np.flatnonzero(tail)
    dist = (~tail).astype(np.int64)
    while True:
        nn = nxt[nxt]
        if np.array_equal(nn, nxt):
            break
        dist = dist + dist[nxt]
        nxt = nn
    length = np.bincount(label, minlength=n)
    return label, length[label] - 1 - dist


def _element_green(st: _Stars, e: IntArray) -> FloatArray:
    """∫ (x dy - y dx) / 2 along elements ``e`` as oriented (covered side left)."""
    out = np.empty(len(e))
    arc = st.kind[e] == 0
    ea = e[arc]
    s = st.e_star[ea]
    out[arc] = _arc_green(st.cx[s], st.cy[s], st.r[ea], st.a0[ea], st.a0[ea] + st.alen[ea])
    es = e[~arc]
    out[~arc] = 0.5 * (st.x0[es] * st.y1[es] - st.x1[es] * st.y0[es])
    return out


@dataclass
class _IsoPieces:
    """Loops of isolated stars reversed (gap on the left), one ring per lobe, in order:
    ``ring`` (dense lobe number), ``zone`` and the piece columns of :class:`_Pieces`."""

    ring: IntArray
    zone: IntArray
    start: IntArray
    end: IntArray
    arc: BoolArray
    cx: FloatArray
    cy: FloatArray
    r: FloatArray
    f0: FloatArray
    f1: FloatArray
    green: FloatArray


def _iso_pieces(st: _Stars, e: IntArray, zone: IntArray, green: FloatArray) -> _IsoPieces:
    """Pieces of the isolated stars' elements ``e`` (grouped by star, loops in order),
    each reversed, rings in reversed element order."""
    lobe = st.lobe[e]
    order = np.argsort(lobe * np.int64(len(st.kind)) + (len(st.kind) - 1 - e))  # last first
    e, zone, green, lobe = e[order], zone[order], green[order], lobe[order]
    ring = np.cumsum(_run_firsts(lobe)) - 1
    s = st.e_star[e]
    arc = st.kind[e] == 0
    return _IsoPieces(
        ring=ring,
        zone=zone,
        start=e,  # a reversed element runs from the element's end node ...
        end=st.prev[e],  # ... to its start node (its predecessor's end node)
        arc=arc,
        cx=st.cx[s],
        cy=st.cy[s],
        r=st.r[e],
        f0=np.where(arc, st.a0[e] + st.alen[e], 0.0),
        f1=np.where(arc, st.a0[e], 0.0),
        green=green,
    )


def _edge_runs(
    zn: _Zones, cand_v: IntArray, ring_has: BoolArray
) -> tuple[IntArray, IntArray, IntArray, FloatArray]:
    """Maximal runs of non-candidate edges in the rings that have candidate edges.

    Returns per run: first vertex, the vertex where it ends (a candidate edge's
    start), number of edges, and the Green integral along it.
    """
    nv = len(zn.vx)
    is_cand = np.zeros(nv, dtype=bool)
    is_cand[cand_v] = True
    in_ring = ring_has[zn.v_ring]
    whole = in_ring & ~is_cand
    prev = np.empty(nv, dtype=np.int64)
    prev[zn.v_next] = np.arange(nv)
    starts = np.flatnonzero(whole & ~whole[prev])
    stops = np.flatnonzero(in_ring & is_cand)  # sorted: by ring, then position
    ring = zn.v_ring[starts]
    k = np.searchsorted(stops, starts)
    same = k < len(stops)
    same[same] = zn.v_ring[stops[k[same]]] == ring[same]
    # no candidate edge after the start in its ring: wrap to the ring's first one
    first_stop = np.zeros(len(zn.ring_start), dtype=np.int64)
    rs = zn.v_ring[stops]
    fs = _run_firsts(rs)
    first_stop[rs[fs]] = stops[fs]
    end = np.where(same, stops[np.minimum(k, max(len(stops) - 1, 0))], first_stop[ring])
    count = zn.ring_count[ring]
    length = np.where(end > starts, end - starts, end - starts + count)
    cs = _cat(0.0, np.cumsum(zn.green))
    rend = zn.ring_start[ring] + count
    direct = np.minimum(starts + length, rend)
    green = cs[direct] - cs[starts]
    wrap = starts + length - rend
    r0 = zn.ring_start[ring]
    green += np.where(wrap > 0, cs[r0 + np.maximum(wrap, 0)] - cs[r0], 0.0)
    return starts, end, length, green


def _pinch_nodes(st: _Stars) -> IntArray:
    """Per element: its star if the element ends at the apex of a star with several
    lobes (a point where rings may pinch), else -1."""
    lobes = np.bincount(st.e_star[st.lobe_first], minlength=len(st))
    to_apex = (st.kind == 1) & (st.x1 == st.cx[st.e_star]) & (st.y1 == st.cy[st.e_star])
    return np.where(to_apex & (lobes[st.e_star] > 1), st.e_star, -1)


def _split_pinched(succ: IntArray, zone: IntArray, end: IntArray, el_pinch: IntArray) -> None:
    """Split rings that pass twice through one apex (in place, on ``succ``).

    Lobes of cameras on one pole meet at the pole. Chaining pairs each lobe's edges
    there, which is right when the lobes are separate holes; but where coverage
    around closes a gap between lobes, a ring can run through the apex twice (an
    invalid, self-touching ring). Swapping the successors of the two pieces that
    reach the apex in the same ring splits it into two rings touching at that point.
    """
    is_el = end < _CROSS_BASE
    star = np.full(len(end), -1, np.int64)
    star[is_el] = el_pinch[end[is_el]]
    pp = np.flatnonzero(star >= 0)
    if len(pp) < 2:
        return
    for _ in range(64):
        label = _cycle_labels(succ)
        o = pp[np.lexsort((label[pp], star[pp], zone[pp]))]
        same = (zone[o[1:]] == zone[o[:-1]]) & (star[o[1:]] == star[o[:-1]])
        same &= label[o[1:]] == label[o[:-1]]
        dup = np.flatnonzero(same)
        if len(dup) == 0:
            return
        # one swap per ring and round: the first repeated visit of each ring
        first = _cat(True, label[o[dup[1:]]] != label[o[dup[:-1]]])
        a, b = o[dup[first]], o[dup[first] + 1]
        succ[a], succ[b] = succ[b].copy(), succ[a].copy()


# Arc vertices sit at multiples of 360°/N for N in this list (so their sines and cosines
# come from small tables): from 10° (N = 36) down to 2° (N = 180).
_ARC_DIVISIONS = np.array([36, 40, 45, 48, 60, 72, 80, 90, 120, 144, 180])
_ARC_TABLE_OFFSET = _cat(0, np.cumsum(_ARC_DIVISIONS)[:-1])
_ARC_COS = np.concatenate([np.cos(np.arange(n) * (TWO_PI / n)) for n in _ARC_DIVISIONS])
_ARC_SIN = np.concatenate([np.sin(np.arange(n) * (TWO_PI / n)) for n in _ARC_DIVISIONS])


def _arc_step(r: FloatArray, tolerance_m: float) -> tuple[FloatArray, IntArray]:
    """The vertex spacing on circles of radius ``r``: (step in radians, index into
    :data:`_ARC_DIVISIONS`). The coarsest division of the circle whose chords stay
    within ``tolerance_m`` of the arc (sagitta r (1 - cos(step/2))), 10° at most, 2° at
    least."""
    with np.errstate(invalid="ignore", divide="ignore"):
        want = 2.0 * np.arccos(np.clip(1.0 - tolerance_m / r, -1.0, 1.0))
    want = np.nan_to_num(want, nan=_MAX_ARC_STEP)
    steps = TWO_PI / _ARC_DIVISIONS  # decreasing
    k = np.searchsorted(-steps, -want)  # first division with step <= want
    k = np.minimum(k, len(steps) - 1)
    return steps[k], k


def _arc_vertex_counts(f0: FloatArray, f1: FloatArray, r: FloatArray, step: FloatArray):
    """Interior vertices of clockwise arcs from f0 down to f1: every multiple of ``step``
    strictly between, keeping ~1 mm (or a quarter step) from both ends."""
    eps = np.minimum(step / 4.0, 1e-3 / np.maximum(r, 1e-9))
    hi = np.floor((f0 - eps) / step)
    lo = np.ceil((f1 + eps) / step)
    return hi, np.maximum(hi - lo + 1, 0).astype(np.int64)


def _assemble_gaps(
    zn: _Zones, pc: _Pieces, zones: IntArray, tolerance_m: float, min_gap_m2: float
) -> tuple[_Ragged, IntArray]:
    """Gap MultiPolygons (EPSG:4546) of ``zones`` (sorted) from the boundary pieces.

    Arcs get vertices on the true circle, at angle steps whose chords stay within
    ``tolerance_m`` of the arc (2° to 10° apart, see :func:`_arc_step`). Ring areas
    (shell or hole, and the ``min_gap_m2`` filter) are the exact ones, from the pieces'
    Green integrals.
    Returns the geometries as ragged arrays (one MultiPolygon per zone of ``zones``,
    empty when fully covered) and the zones whose pieces do not close into rings
    (empty there: for the fallback).
    """
    nz = len(zn)
    want = np.zeros(nz, dtype=bool)
    want[zones] = True
    m = want[pc.zone]
    zone, start, end, green = pc.zone[m], pc.start[m], pc.end[m], pc.green[m]
    arc, cx, cy, r, f0, f1 = pc.arc[m], pc.cx[m], pc.cy[m], pc.r[m], pc.f0[m], pc.f1[m]
    run = pc.run[m]
    bad = np.zeros(nz, dtype=bool)

    # chain: each piece's successor starts at the node where it ends, in its zone
    n = len(zone)
    ks = zone * _ZONE_KEY + start
    ke = zone * _ZONE_KEY + end
    order = np.argsort(ks)
    ks_sorted = ks[order]
    if n:
        bad[zone[order[_cat(ks_sorted[1:] == ks_sorted[:-1], False)]]] = True
        pos = np.minimum(np.searchsorted(ks_sorted, ke), n - 1)
        found = ks_sorted[pos] == ke
        bad[zone[~found]] = True
        succ = order[pos]
        bad[zone[np.bincount(succ[found], minlength=n) != 1]] = True
    else:
        succ = np.zeros(0, np.int64)
    if bad.any():
        keep = ~bad[zone]
        remap = np.cumsum(keep) - 1
        succ = remap[succ[keep]]
        zone, start, end, green = zone[keep], start[keep], end[keep], green[keep]
        arc, cx, cy, r, f0, f1 = arc[keep], cx[keep], cy[keep], r[keep], f0[keep], f1[keep]
        run = run[keep]
        n = len(zone)
    _split_pinched(succ, zone, end, pc.el_pinch)
    label, rank = _cycles(succ)
    heads = np.flatnonzero(label == np.arange(n))
    ring_of = np.searchsorted(heads, label)
    head_zone = zone[heads]
    # the isolated stars' loops: rings already in order
    iso = pc.iso
    mi = want[iso.zone] & ~bad[iso.zone]
    if mi.any():
        iring = iso.ring[mi]
        ufirst = _run_firsts(iring)
        dense = np.cumsum(ufirst) - 1
        rank_iso = np.arange(len(iring)) - np.flatnonzero(ufirst)[dense]
        ring_of = _cat(ring_of, len(heads) + dense)
        rank = _cat(rank, rank_iso)
        head_zone = _cat(head_zone, iso.zone[mi][ufirst])
        zone = _cat(zone, iso.zone[mi])
        start = _cat(start, iso.start[mi])
        green = _cat(green, iso.green[mi])
        arc = _cat(arc, iso.arc[mi])
        cx, cy, r = _cat(cx, iso.cx[mi]), _cat(cy, iso.cy[mi]), _cat(r, iso.r[mi])
        f0, f1 = _cat(f0, iso.f0[mi]), _cat(f1, iso.f1[mi])
        run = _cat(run, np.zeros(int(mi.sum()), np.int64))
        end = _cat(end, iso.end[mi])
        n = len(zone)
    n_chain = len(head_zone)
    chain_pieces = np.bincount(ring_of, minlength=n_chain)
    end_all = end
    # untouched rings of these zones, copied whole
    wr = pc.whole_rings[want[zn.ring_zone[pc.whole_rings]]]
    wr = wr[~bad[zn.ring_zone[wr]]]
    ring_area = _cat(
        np.bincount(ring_of, weights=green, minlength=n_chain),
        np.bincount(zn.v_ring, weights=zn.green, minlength=len(zn.ring_start))[wr],
    )
    rz = _cat(head_zone, zn.ring_zone[wr])
    nring = len(rz)

    # vertices, ring by ring: each piece gives its start node, then its arc's (or run's)
    # interior vertices; whole rings their zone vertices; every ring closed
    step, div = _arc_step(r, tolerance_m)
    hi, n_int = _arc_vertex_counts(f0, f1, r, step)
    n_int = np.where(arc, n_int, np.maximum(run - 1, 0))
    pos_in = _cat(0, np.cumsum(chain_pieces))[ring_of] + rank  # ring-major position
    perm = np.empty(n, np.int64)
    perm[pos_in] = np.arange(n)
    cnt = 1 + n_int[perm]
    ring_len = _cat(np.bincount(ring_of[perm], weights=cnt, minlength=n_chain), zn.ring_count[wr])
    ring_len = ring_len.astype(np.int64) + 1
    # offset of each piece's first vertex within its ring
    csum = np.cumsum(cnt) - cnt
    within = csum - np.repeat(csum[np.cumsum(chain_pieces) - chain_pieces], chain_pieces)
    sx, sy = pc.node_xy(zn, start[perm])
    perm_ring = ring_of[perm]
    has_int = n_int[perm] > 0
    ia_all = np.flatnonzero(has_int & arc[perm])
    ir_all = np.flatnonzero(has_int & ~arc[perm])

    def emit(dest: IntArray, total: int) -> FloatArray:
        """Vertices of the rings with ``dest >= 0``, ring r at ``dest[r]`` (EPSG:4546)."""
        out = np.empty((total, 2))
        pd_ = dest[perm_ring]
        sel = pd_ >= 0
        fv = pd_ + within  # first vertex of each piece (perm order)
        out[fv[sel], 0] = sx[sel] + zn.ox
        out[fv[sel], 1] = sy[sel] + zn.oy
        ir = ir_all[sel[ir_all]]
        if len(ir):
            # runs of whole zone edges: the ring's next vertices, wrapping at its end
            pr = perm[ir]
            ow, kk = _expand(n_int[pr])
            v0 = start[pr][ow] - _VERTEX_BASE
            ring = zn.v_ring[v0]
            src = zn.ring_start[ring] + (v0 - zn.ring_start[ring] + 1 + kk) % zn.ring_count[ring]
            vi = fv[ir][ow] + 1 + kk
            out[vi, 0] = zn.vx[src] + zn.ox
            out[vi, 1] = zn.vy[src] + zn.oy
        ia = ia_all[sel[ia_all]]
        if len(ia):
            pa = perm[ia]
            ow, kk = _expand(n_int[pa])
            pw = pa[ow]
            # vertex angle (hi - k) steps of 360°/N: a table lookup, no trigonometry
            d = div[pw]
            t = _ARC_TABLE_OFFSET[d] + np.mod(hi[pw].astype(np.int64) - kk, _ARC_DIVISIONS[d])
            vi = fv[ia][ow] + 1 + kk
            rw = r[pw]
            out[vi, 0] = cx[pw] + rw * _ARC_COS[t] + zn.ox
            out[vi, 1] = cy[pw] + rw * _ARC_SIN[t] + zn.oy
        wd = dest[n_chain:]
        w = np.flatnonzero(wd >= 0)
        if len(w):
            ow, kk = _expand(zn.ring_count[wr[w]])
            vi = wd[w][ow] + kk
            src = zn.ring_start[wr[w]][ow] + kk
            out[vi, 0] = zn.vx[src] + zn.ox
            out[vi, 1] = zn.vy[src] + zn.oy
        used = np.flatnonzero(dest >= 0)
        out[dest[used] + ring_len[used] - 1] = out[dest[used]]  # close the rings
        return out

    def ring_point(rings: IntArray) -> tuple[FloatArray, FloatArray]:
        """A point on each ring, not a vertex (EPSG:4546): the middle of its first piece
        (an arc's middle, or the middle of its first straight edge)."""
        px = np.empty(len(rings))
        py = np.empty(len(rings))
        chain = rings < n_chain
        rc = rings[chain]
        p = perm[(np.cumsum(chain_pieces) - chain_pieces)[rc]]  # each ring's first piece
        x0, y0 = pc.node_xy(zn, start[p])
        # the next vertex of a straight first piece: its end, or a run's second vertex
        is_run = run[p] > 0
        nxt = np.where(is_run, _VERTEX_BASE + zn.v_next[np.maximum(start[p] - _VERTEX_BASE, 0)],
                       end_all[p])  # fmt: skip
        x1, y1 = pc.node_xy(zn, nxt)
        fm = 0.5 * (f0[p] + f1[p])
        px[chain] = np.where(arc[p], cx[p] + r[p] * np.cos(fm), 0.5 * (x0 + x1)) + zn.ox
        py[chain] = np.where(arc[p], cy[p] + r[p] * np.sin(fm), 0.5 * (y0 + y1)) + zn.oy
        rw = wr[rings[~chain] - n_chain]
        v0 = zn.ring_start[rw]
        v1 = zn.v_next[v0]
        px[~chain] = 0.5 * (zn.vx[v0] + zn.vx[v1]) + zn.ox
        py[~chain] = 0.5 * (zn.vy[v0] + zn.vy[v1]) + zn.oy
        return px, py

    # shells (gap on the left: counter-clockwise) and holes; holes go to the smallest
    # shell of their zone containing them
    shell = ring_area > 0
    parent = np.where(shell, np.arange(nring), -1)
    holes = np.flatnonzero(~shell)
    if len(holes):
        sh = np.flatnonzero(shell)
        n_shell = np.bincount(rz[sh], minlength=nz)
        single = n_shell[rz[holes]] == 1
        only = np.full(nz, -1, np.int64)
        only[rz[sh]] = sh  # valid where the zone has one shell
        parent[holes[single]] = only[rz[holes[single]]]
        multi = holes[~single & (n_shell[rz[holes]] > 1)]
        if len(multi):
            # the shells of these zones as polygons; each hole tested by a point on it
            cand = sh[n_shell[rz[sh]] > 1]
            dest = np.full(nring, -1, np.int64)
            dest[cand] = np.cumsum(ring_len[cand]) - ring_len[cand]
            xy = emit(dest, int(ring_len[cand].sum()))
            hx, hy = ring_point(multi)
            parent[multi] = _hole_parents(
                multi, hx, hy, cand, dest[cand], ring_len[cand], xy, rz, ring_area
            )
        bad[rz[holes[parent[holes] < 0]]] = True
    # polygon areas; small parts (and their holes) are left out of the output only
    poly_area = np.bincount(np.maximum(parent, 0), weights=ring_area, minlength=nring)
    keep_ring = (parent >= 0) & ~bad[rz]
    keep_ring &= poly_area[np.maximum(parent, 0)] >= min_gap_m2
    kr = np.flatnonzero(keep_ring)
    key = (rz[kr] * np.int64(nring) + parent[kr]) * 2 + ~shell[kr]
    kr = kr[np.argsort(key, kind="stable")]  # zone, polygon, shell first (then as built)
    out_ring_off = _cat(0, np.cumsum(ring_len[kr]))
    dest = np.full(nring, -1, np.int64)
    dest[kr] = out_ring_off[:-1]
    coords = emit(dest, int(out_ring_off[-1]))
    poly_first = np.flatnonzero(shell[kr])
    poly_off = _cat(poly_first, len(kr))
    zlist = np.asarray(zones, dtype=np.int64)
    zcount = np.bincount(np.searchsorted(zlist, rz[kr[poly_first]]), minlength=len(zlist))
    zone_off = _cat(0, np.cumsum(zcount))
    bad_z = np.flatnonzero(bad & want)
    return _Ragged(zlist, coords, out_ring_off, poly_off, zone_off), bad_z


@dataclass
class _Ragged:
    """MultiPolygons of ``zones`` as ragged arrays (EPSG:4546), cheap to pass around."""

    zones: IntArray
    coords: FloatArray
    ring_off: IntArray
    poly_off: IntArray
    zone_off: IntArray

    def geometries(self) -> ObjArray:
        if len(self.zones) == 0:
            return np.zeros(0, dtype=object)
        return np.asarray(
            shapely.from_ragged_array(
                shapely.GeometryType.MULTIPOLYGON,
                self.coords,
                (self.ring_off, self.poly_off, self.zone_off),
            ),
            dtype=object,
        )


def _hole_parents(
    holes: IntArray,
    hx: FloatArray,
    hy: FloatArray,
    shells: IntArray,
    shell_off: IntArray,
    shell_len: IntArray,
    xy: FloatArray,
    rz: IntArray,
    area: FloatArray,
) -> IntArray:
    """Smallest shell of the same zone containing each hole (-1: none).

    ``shells`` are the candidate shells, their closed rings at ``shell_off`` in ``xy``;
    a hole is tested by a point on it that is not a vertex (``hx``, ``hy``): rings do
    not cross, and touch only at vertices (lobes of one star at their apex).
    """
    order = np.argsort(rz[shells], kind="stable")
    so = shells[order]
    lo = np.searchsorted(rz[so], rz[holes], "left")
    hi = np.searchsorted(rz[so], rz[holes], "right")
    owner, k = _expand(hi - lo)
    si = order[lo[owner] + k]  # index into shells
    o, kk = _expand(shell_len)
    polys = shapely.polygons(shapely.linearrings(xy[shell_off[o] + kk], indices=o))
    shapely.prepare(polys)
    inside = shapely.contains_xy(polys[si], hx[owner], hy[owner])
    h, s = owner[inside], shells[si[inside]]
    order = np.lexsort((area[s], h))
    h, s = h[order], s[order]
    first = _run_firsts(h)
    best = np.full(len(holes), -1, np.int64)
    best[h[first]] = s[first]
    return best


# --- segments and points against camera shapes ------------------------------------------------


def _halfplane_interval(h0: FloatArray, h1: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Where the linear function h(t) = h0 + t (h1 - h0) is >= 0 within [0, 1]: (lo, hi)."""
    slope = h1 - h0
    with np.errstate(divide="ignore", invalid="ignore"):
        root = -h0 / slope
    lo = np.where(slope > 0, root, 0.0)
    hi = np.where(slope < 0, root, 1.0)
    flat = slope == 0
    lo = np.where(flat, np.where(h0 >= 0, 0.0, 2.0), lo)
    hi = np.where(flat, np.where(h0 >= 0, 1.0, -1.0), hi)
    return lo, hi


def _segment_shape_intervals(
    x0: FloatArray,
    y0: FloatArray,
    x1: FloatArray,
    y1: FloatArray,
    cx: FloatArray,
    cy: FloatArray,
    r: FloatArray,
    theta0: FloatArray,
    span: FloatArray,
) -> tuple[IntArray, FloatArray, FloatArray]:
    """The part of each segment inside the camera shape of the same row.

    Shape: disc of radius ``r`` about (``cx``, ``cy``), cut to the wedge of ``span``
    radians counter-clockwise from ``theta0`` (``span >= 2π``: the whole disc).
    Returns (row, t_lo, t_hi) with t_hi > t_lo, t along the segment in [0, 1]; a
    wedge wider than π is split in two convex halves, so a row can appear twice.
    """
    dx = x1 - x0
    dy = y1 - y0
    fx = x0 - cx
    fy = y0 - cy
    qa = dx * dx + dy * dy
    qb = 2.0 * (fx * dx + fy * dy)
    qc = fx * fx + fy * fy - r * r
    disc = qb * qb - 4.0 * qa * qc
    sq = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(qa > 0, (-qb - sq) / (2.0 * qa), 0.0)
        hi = np.where(qa > 0, (-qb + sq) / (2.0 * qa), 0.0)
    ok = (disc > 0) & (qa > 0)
    lo = np.maximum(lo, 0.0)
    hi = np.minimum(hi, 1.0)
    ok &= hi > lo
    full = span >= TWO_PI
    rows = [np.flatnonzero(ok & full)]
    los = [lo[rows[0]]]
    his = [hi[rows[0]]]
    wedge = np.flatnonzero(ok & ~full)
    if len(wedge):
        halves = span[wedge] > np.pi
        # wedges of at most π: [theta0, theta0 + w] (and [theta0 + w, theta0 + 2w])
        parts = [(wedge, theta0[wedge], np.where(halves, span[wedge] / 2.0, span[wedge]))]
        hw = wedge[halves]
        parts.append((hw, theta0[hw] + span[hw] / 2.0, span[hw] / 2.0))
        for idx, t0, w in parts:
            u0x, u0y = np.cos(t0), np.sin(t0)
            u1x, u1y = np.cos(t0 + w), np.sin(t0 + w)
            ax, ay = fx[idx], fy[idx]
            bx, by = ax + dx[idx], ay + dy[idx]
            # inside the wedge: cross(u0, p) >= 0 and cross(p, u1) >= 0
            l0, h0_ = _halfplane_interval(u0x * ay - u0y * ax, u0x * by - u0y * bx)
            l1, h1_ = _halfplane_interval(ax * u1y - ay * u1x, bx * u1y - by * u1x)
            a_lo = np.maximum(np.maximum(lo[idx], l0), l1)
            a_hi = np.minimum(np.minimum(hi[idx], h0_), h1_)
            good = a_hi > a_lo
            rows.append(idx[good])
            los.append(a_lo[good])
            his.append(a_hi[good])
    return np.concatenate(rows), np.concatenate(los), np.concatenate(his)


def _points_in_shapes(
    px: FloatArray,
    py: FloatArray,
    cx: FloatArray,
    cy: FloatArray,
    r: FloatArray,
    theta0: FloatArray,
    span: FloatArray,
) -> BoolArray:
    """Point of each row inside (boundary included) the camera shape of that row."""
    vx = px - cx
    vy = py - cy
    inside = vx * vx + vy * vy <= r * r
    off = np.mod(np.arctan2(vy, vx) - theta0, TWO_PI)
    at_apex = (vx == 0) & (vy == 0)
    return inside & ((span >= TWO_PI) | (off <= span) | at_apex)


def _merge_intervals(
    owner: IntArray, lo: FloatArray, hi: FloatArray, n_owner: int
) -> tuple[FloatArray, IntArray, FloatArray, FloatArray]:
    """Union of intervals in [0, 1] per owner.

    Returns the covered fraction per owner and the uncovered intervals (owner, lo, hi),
    including whole owners without any interval.
    """
    order = _order_by(owner, lo)
    owner, lo, hi = owner[order], lo[order], hi[order]
    # running maximum of hi within each owner (owners are apart by 2 > any t)
    run = np.maximum.accumulate(owner * 2.0 + hi) if len(owner) else hi
    prev = _cat(-1.0, run[:-1]) - owner * 2.0
    prev = np.where(_run_firsts(owner), 0.0, np.maximum(prev, 0.0))
    covered = np.bincount(
        owner, weights=np.maximum(0.0, hi - np.maximum(lo, prev)), minlength=n_owner
    )
    # gaps: before each interval (from the running max), and after the last one
    g_owner = [owner[lo > prev]]
    g_lo = [prev[lo > prev]]
    g_hi = [lo[lo > prev]]
    last = _cat(owner[1:] != owner[:-1], True) if len(owner) else np.zeros(0, bool)
    end = run[last] - owner[last] * 2.0
    tail = end < 1.0
    g_owner.append(owner[last][tail])
    g_lo.append(end[tail])
    g_hi.append(np.ones(int(tail.sum())))
    none = np.flatnonzero(np.bincount(owner, minlength=n_owner) == 0)
    g_owner.append(none)
    g_lo.append(np.zeros(len(none)))
    g_hi.append(np.ones(len(none)))
    return (
        np.minimum(covered, 1.0),
        np.concatenate(g_owner),
        np.concatenate(g_lo),
        np.concatenate(g_hi),
    )


# --- targets: roads cut to zones, places located ----------------------------------------------


@dataclass
class _RoadPieces:
    """Road segments cut at zone edges, each inside one zone (local coordinates)."""

    x0: FloatArray
    y0: FloatArray
    x1: FloatArray
    y1: FloatArray
    zone: IntArray
    road: IntArray  # index into Roads
    part: IntArray  # LineString part (global), for joining gap lines
    length: FloatArray
    index: _BoxIndex | None

    def __len__(self) -> int:
        return len(self.x0)


def _road_pieces(zn: _Zones, roads: Roads | None) -> _RoadPieces:
    if roads is None or len(roads.lines) == 0 or len(zn) == 0:
        z = np.zeros(0)
        zi = np.zeros(0, np.int64)
        return _RoadPieces(z, z, z, z, zi, zi, zi, z, None)
    parts, road = shapely.get_parts(np.asarray(roads.lines, dtype=object), return_index=True)
    coords, part = shapely.get_coordinates(parts, return_index=True)
    x = coords[:, 0] - zn.ox
    y = coords[:, 1] - zn.oy
    moves = (part[1:] == part[:-1]) & ((x[1:] != x[:-1]) | (y[1:] != y[:-1]))
    s = np.flatnonzero(moves)  # segment s runs from vertex s to s + 1
    sx0, sy0, sx1, sy1 = x[s], y[s], x[s + 1], y[s + 1]
    s_part = part[s]
    # split at every crossing with a zone edge, then each piece goes to the zone
    # holding its midpoint
    cols, owner = _segment_boxes(sx0, sy0, sx1, sy1, _JOIN_CELL_M)
    index, ev = zn.edge_index()
    i, v = index.query_items(*cols, ev, len(zn.vx))
    si, v = _unique_pairs(owner[i], v, len(zn.vx))
    vn = zn.v_next[v]
    dax, day = sx1[si] - sx0[si], sy1[si] - sy0[si]
    dbx, dby = zn.vx[vn] - zn.vx[v], zn.vy[vn] - zn.vy[v]
    den = dax * dby - day * dbx
    rx, ry = zn.vx[v] - sx0[si], zn.vy[v] - sy0[si]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rx * dby - ry * dbx) / den
        u = (rx * day - ry * dax) / den
    hit = (den != 0) & (t > 0) & (t < 1) & (u >= 0) & (u <= 1)
    # a zone edge at (or within rounding of) a segment's end: that joint is unsure
    near_end = (den != 0) & (u >= -1e-9) & (u <= 1 + 1e-9)
    seg_len = np.hypot(dax, day)
    near_end &= (np.abs(t) * seg_len < 1e-6) | (np.abs(1 - t) * seg_len < 1e-6)
    enter = den < 0  # the segment crosses to the edge's left: into its zone
    cut_s = _cat(np.arange(len(s)), np.arange(len(s)), si[hit])
    cut_t = _cat(np.zeros(len(s)), np.ones(len(s)), t[hit])
    cut_z = _cat(np.full(2 * len(s), -1), np.where(enter[hit], zn.v_zone[v[hit]], -1))
    order = np.lexsort((cut_z, cut_t, cut_s))
    cut_s, cut_t, cut_z = cut_s[order], cut_t[order], cut_z[order]
    k = np.flatnonzero((cut_s[1:] == cut_s[:-1]) & (cut_t[1:] > cut_t[:-1]))
    seg = cut_s[k]
    t0, t1 = cut_t[k], cut_t[k + 1]
    dx, dy = sx1[seg] - sx0[seg], sy1[seg] - sy0[seg]
    px0, py0 = sx0[seg] + t0 * dx, sy0[seg] + t0 * dy
    px1, py1 = sx0[seg] + t1 * dx, sy0[seg] + t1 * dy
    # the zone of a piece: the one a crossing at its start enters (the last cut at that
    # t, ordered so an entering crossing comes last); after a segment's start, the zone
    # of the previous segment's last piece on a clean joint; else point location
    zone = cut_z[k]
    unsure_seg = np.zeros(len(s) + 1, dtype=bool)
    unsure_seg[si[near_end]] = True
    at_start = t0 == 0.0
    prev_piece = np.arange(len(k)) - 1
    inherit = at_start & (prev_piece >= 0)
    pp = np.maximum(prev_piece, 0)
    inherit &= (seg[pp] == seg - 1) & (s_part[seg[pp]] == s_part[seg]) & (t1[pp] == 1.0)
    inherit &= (s[seg[pp]] + 1 == s[seg]) & ~unsure_seg[seg] & ~unsure_seg[np.maximum(seg - 1, 0)]
    need = (zone < 0) & ~inherit
    zone[need] = zn.locate(0.5 * (px0[need] + px1[need]), 0.5 * (py0[need] + py1[need]))
    # inherited zones follow chains of clean joints: forward-fill from the last known
    known = ~inherit
    last_known = np.maximum.accumulate(np.where(known, np.arange(len(k)), 0)) if len(k) else k
    zone = zone[last_known]
    m = zone >= 0
    px0, py0, px1, py1, zone, seg = px0[m], py0[m], px1[m], py1[m], zone[m], seg[m]
    idx = _BoxIndex(
        np.minimum(px0, px1), np.minimum(py0, py1), np.maximum(px0, px1), np.maximum(py0, py1),
        _JOIN_CELL_M,
    )  # fmt: skip
    return _RoadPieces(
        x0=px0,
        y0=py0,
        x1=px1,
        y1=py1,
        zone=zone,
        road=road[s_part[seg]],
        part=s_part[seg],
        length=np.hypot(px1 - px0, py1 - py0),
        index=idx,
    )


@dataclass
class _PlacePoints:
    x: FloatArray  # local
    y: FloatArray
    zone: IntArray  # -1: in no zone passed


def _assign_places(
    polys: ObjArray, ids: NDArray[Any], places: Places | None
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Each place's point (EPSG:4546) and zone index (-1: none), over all zones.

    A polygon's point is ``point_on_surface``. ``Places.grid_id`` imposes the grid
    (an id not among ``ids`` means outside the zones passed); otherwise the zone
    covering the point, the first in input order on a shared boundary.
    """
    if places is None or len(places.geoms) == 0:
        z = np.zeros(0)
        return z, z, np.zeros(0, np.int64)
    g = np.asarray(places.geoms, dtype=object)
    pt = np.where(shapely.get_type_id(g) == 0, g, shapely.point_on_surface(g))
    zone = np.full(len(g), -1, np.int64)
    free = np.arange(len(g))
    if places.grid_id is not None:
        given = np.array(
            [
                v is not None and not (isinstance(v, float) and math.isnan(v))
                for v in places.grid_id
            ],
            dtype=bool,
        )
        lookup = {v: i for i, v in enumerate(np.asarray(ids).tolist())}
        zone[given] = [lookup.get(v, -1) for v in np.asarray(places.grid_id, dtype=object)[given]]
        free = np.flatnonzero(~given)
    if len(free) and len(polys):
        i, z = shapely.STRtree(polys).query(pt[free], predicate="intersects")
        best = np.full(len(free), np.iinfo(np.int64).max)
        np.minimum.at(best, i, z)
        zone[free] = np.where(best == np.iinfo(np.int64).max, -1, best)
    return shapely.get_x(pt), shapely.get_y(pt), zone


# --- one set of zones, all levels -----------------------------------------------------------------


@dataclass
class _LevelOut:
    covered: FloatArray
    camera_count: IntArray
    road_covered: FloatArray
    places_covered: IntArray
    fallback: BoolArray
    gap_ragged: _Ragged | None
    gap_extra: dict[int, Any]  # zone -> geometry from the fallback
    road_gap: tuple[IntArray, FloatArray, FloatArray] | None  # (piece, t0, t1)
    place_uncovered: IntArray | None  # place indices
    gap_geoms: tuple[IntArray, ObjArray] | None = None  # (zones, geometries) once built


@dataclass
class _PartResult:
    area: FloatArray
    road_length: FloatArray
    places_total: IntArray
    levels: dict[str, _LevelOut]
    road_pieces: _RoadPieces
    zone_idx: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    place_idx: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    origin: tuple[float, float] = (0.0, 0.0)


def _camera_counts(
    S: _Setup,
    st: _Stars,
    res: _LevelResult,
    se_s: IntArray,
    se_v: IntArray,
    se_d: FloatArray,
    k: int,
) -> IntArray:
    """Cameras whose FOV meets each zone in a positive area."""
    zn = S.zn
    nz = len(zn)
    nonint = np.zeros(len(st), dtype=bool)
    nonint[se_s] = True
    counts = np.zeros(nz, dtype=np.int64)
    inter = ~nonint[res.zone_star_s]
    counts += np.bincount(
        res.zone_star_z[inter], weights=S.m_count[res.zone_star_s[inter]], minlength=nz
    ).astype(np.int64)
    # non-interior stars: per member camera, (a) its apex strictly inside the zone, or
    # (b) a zone edge within reach passes through the open FOV
    on_edge = np.zeros(len(st), dtype=bool)
    on_edge[se_s[se_d < _TOL_M]] = True
    a_s = np.flatnonzero(nonint & (S.home >= 0) & ~on_edge)
    ow, kk = _expand(S.m_count[a_s])
    cam_a = S.members[S.m_start[a_s][ow] + kk]
    zone_a = S.home[a_s][ow]
    ow, kk = _expand(S.m_count[se_s])
    cam_b = S.members[S.m_start[se_s][ow] + kk]
    v = se_v[ow]
    s = se_s[ow]
    vn = zn.v_next[v]
    rows, _, _ = _segment_shape_intervals(
        zn.vx[v], zn.vy[v], zn.vx[vn], zn.vy[vn], S.ax[s], S.ay[s],
        S.radius[cam_b, k], S.theta0[cam_b], S.span[cam_b],
    )  # fmt: skip
    cam = _cat(cam_a, cam_b[rows])
    zone = _cat(zone_a, zn.v_zone[v[rows]])
    cz, zz = _unique_pairs(cam, zone, nz) if len(cam) else (cam, zone)
    del cz
    counts += np.bincount(zz, minlength=nz).astype(np.int64)
    return counts


def _fallback(
    S: _Setup, res: _LevelResult, zones: IntArray, k: int, min_gap_m2: float
) -> tuple[FloatArray, list[Any]]:
    """Covered area and gap of ``zones`` by polygon overlay (shapely), for the rare
    configurations the analytic pass declines (see the module docstring)."""
    zn = S.zn
    covered = np.zeros(len(zones))
    gaps: list[Any] = []
    order = np.argsort(res.zone_star_z, kind="stable")
    zs = res.zone_star_z[order]
    ss = res.zone_star_s[order]
    for n, z in enumerate(zones):
        stars = ss[np.searchsorted(zs, z, "left") : np.searchsorted(zs, z, "right")]
        ow, kk = _expand(S.m_count[stars])
        cams = S.cam[S.members[S.m_start[stars][ow] + kk]]
        polys = fov_sectors(
            S.fovs.x_m[cams],
            S.fovs.y_m[cams],
            S.fovs.azimuth_grid_deg[cams],
            S.fovs.hfov_deg[cams],
            S.fovs.ranges_m[cams, k],
            arc_step_deg=2.0,
            north="grid",
        )
        gap = shapely.difference(zn.geoms[z], shapely.union_all(polys))
        covered[n] = max(0.0, zn.area[z] - shapely.area(gap))
        gaps.append(_as_multipolygon(gap, min_gap_m2))
    return covered, gaps


def _as_multipolygon(geom: Any, min_gap_m2: float) -> Any:
    """The polygons of ``geom`` of at least ``min_gap_m2`` as one MultiPolygon."""
    parts = shapely.get_parts(geom)
    parts = parts[shapely.get_type_id(parts) == 3] if len(parts) else parts
    parts = parts[shapely.area(parts) >= min_gap_m2] if len(parts) else parts
    return shapely.multipolygons(parts) if len(parts) else shapely.from_wkt("MULTIPOLYGON EMPTY")


def _compute(
    zn: _Zones,
    fovs: FovSet,
    roads: Roads | None,
    place_x: FloatArray,
    place_y: FloatArray,
    place_zone: IntArray,
    levels: Sequence[str],
    gap_zones: BoolArray | None,
    want_road_gaps: bool,
    want_place_gaps: bool,
    min_gap_m2: float,
    tolerance_m: float,
    progress: Progress,
) -> _PartResult:
    nz = len(zn)
    progress("cameras and zones", 0.0)
    S = _setup(zn, fovs)
    progress("roads and places", 0.1)
    rp = _road_pieces(zn, roads)
    pp = _PlacePoints(place_x - zn.ox, place_y - zn.oy, place_zone)
    road_length = np.bincount(rp.zone, weights=rp.length, minlength=nz)
    in_zone = pp.zone >= 0
    places_total = np.bincount(pp.zone[in_zone], minlength=nz).astype(np.int64)
    # candidate (road piece, star) and (place, star) pairs at the coarsest level
    r0 = S.star_r.max(axis=1) if len(S.ax) else np.zeros(0)
    sb = (S.ax - r0, S.ay - r0, S.ax + r0, S.ay + r0)
    if rp.index is not None and len(S.ax):
        rs_s, rs_p = rp.index.query(*sb)
        rs_d = _point_segment_distance(
            S.ax[rs_s], S.ay[rs_s], rp.x0[rs_p], rp.y0[rs_p], rp.x1[rs_p], rp.y1[rs_p]
        )
    else:
        rs_s = rs_p = np.zeros(0, np.int64)
        rs_d = np.zeros(0)
    pl = np.flatnonzero(in_zone)
    if len(pl) and len(S.ax):
        pidx = _BoxIndex(pp.x[pl], pp.y[pl], pp.x[pl], pp.y[pl], _JOIN_CELL_M)
        ps_s, ps_p = pidx.query(*sb)
        ps_p = pl[ps_p]
        ps_d = np.hypot(pp.x[ps_p] - S.ax[ps_s], pp.y[ps_p] - S.ay[ps_s])
    else:
        ps_s = ps_p = np.zeros(0, np.int64)
        ps_d = np.zeros(0)

    out: dict[str, _LevelOut] = {}
    for n, level in enumerate(levels):
        k = _level_index(level)
        progress(f"{level}: coverage", 0.15 + 0.85 * n / len(levels))
        st = S.stars(k)
        pi, pj, ss, sv = S.level_pairs(k)
        se_keep = S.se_d <= S.star_r[S.se_s, k] + _TOL_M
        res = _level_pass(zn, st, pi, pj, S.home, ss, sv, gap_zones is not None)
        covered = res.covered
        counts = _camera_counts(S, st, res, ss, sv, S.se_d[se_keep], k)
        fallback = res.bad.copy()
        ragged = None
        if gap_zones is not None:
            zones = np.flatnonzero(res.touched & ~res.bad & gap_zones)
            ragged, bad2 = _assemble_gaps(zn, res.pieces, zones, tolerance_m, min_gap_m2)
            fallback[bad2] = True
        extra: dict[int, Any] = {}
        fb = np.flatnonzero(fallback)
        if len(fb):
            fcov, fgaps = _fallback(S, res, fb, k, min_gap_m2)
            covered = covered.copy()
            covered[fb] = fcov
            if gap_zones is not None:
                extra = {z: g for z, g in zip(fb.tolist(), fgaps, strict=True) if gap_zones[z]}
        # roads: union of the FOV intervals along each piece
        rk = rs_d < S.star_r[rs_s, k]
        ow, kk = _expand(S.m_count[rs_s[rk]])
        rcam = S.members[S.m_start[rs_s[rk]][ow] + kk]
        rpiece = rs_p[rk][ow]
        rstar = rs_s[rk][ow]
        rows, lo, hi = _segment_shape_intervals(
            rp.x0[rpiece], rp.y0[rpiece], rp.x1[rpiece], rp.y1[rpiece], S.ax[rstar], S.ay[rstar],
            S.radius[rcam, k], S.theta0[rcam], S.span[rcam],
        )  # fmt: skip
        frac, g_piece, g_lo, g_hi = _merge_intervals(rpiece[rows], lo, hi, len(rp))
        road_covered = np.bincount(rp.zone, weights=frac * rp.length, minlength=nz)
        # places: covered when inside any FOV (boundary included)
        pk = ps_d <= S.star_r[ps_s, k]
        ow, kk = _expand(S.m_count[ps_s[pk]])
        pcam = S.members[S.m_start[ps_s[pk]][ow] + kk]
        pplace = ps_p[pk][ow]
        pstar = ps_s[pk][ow]
        seen = _points_in_shapes(
            pp.x[pplace], pp.y[pplace], S.ax[pstar], S.ay[pstar],
            S.radius[pcam, k], S.theta0[pcam], S.span[pcam],
        )  # fmt: skip
        covered_place = np.zeros(len(pp.x), dtype=bool)
        covered_place[pplace[seen]] = True
        places_covered = np.bincount(pp.zone[in_zone & covered_place], minlength=nz).astype(
            np.int64
        )
        out[level] = _LevelOut(
            covered=covered,
            camera_count=counts,
            road_covered=np.minimum(road_covered, road_length),
            places_covered=places_covered,
            fallback=fallback,
            gap_ragged=ragged,
            gap_extra=extra,
            road_gap=(g_piece, g_lo, g_hi) if want_road_gaps else None,
            place_uncovered=np.flatnonzero(in_zone & ~covered_place) if want_place_gaps else None,
        )
    progress("done", 1.0)
    return _PartResult(zn.area, road_length, places_total, out, rp)


# --- parts: the zones split in space, computed in forked processes ------------------------


@dataclass
class _Job:
    """Everything a part needs (shared with forked workers by memory, not pickled)."""

    polys: ObjArray
    fovs: FovSet
    roads: Roads | None
    place_x: FloatArray
    place_y: FloatArray
    place_zone: IntArray
    levels: list[str]
    gap_zone: BoolArray | None  # zones whose gap polygons are wanted (None: no zone's)
    options: _Options
    fov_reach: FloatArray = field(init=False)  # largest range of each camera (m)
    road_bounds: FloatArray | None = field(init=False)

    def __post_init__(self) -> None:
        ranges = np.nan_to_num(self.fovs.ranges_m, nan=0.0)
        self.fov_reach = ranges.max(axis=1) if len(self.fovs) else np.zeros(0)
        self.road_bounds = shapely.bounds(self.roads.lines) if self.roads is not None else None


def _split_zones(polys: ObjArray, fovs: FovSet, workers: int) -> list[IntArray]:
    """Zones in ``workers`` vertical strips with about equal numbers of cameras."""
    n = len(polys)
    if workers <= 1 or n < 2 * workers:
        return [np.arange(n, dtype=np.int64)]
    b = shapely.bounds(polys)
    cx = 0.5 * (b[:, 0] + b[:, 2])
    ref = fovs.x_m[np.isfinite(fovs.x_m)] if len(fovs) else cx
    # this process also builds every part's geometries afterwards: give it a bit less
    share = np.arange(1, workers) / workers
    share[0] *= _FIRST_PART_SHARE
    cuts = np.quantile(ref if len(ref) else cx, share)
    strip = np.searchsorted(cuts, cx)
    parts = [np.flatnonzero(strip == k) for k in range(workers)]
    return [p for p in parts if len(p)]


def _run_part(zone_idx: IntArray, job: _Job, progress: Progress) -> _PartResult:
    """Coverage of the zones ``zone_idx`` from the cameras, roads and places near them."""
    polys = job.polys[zone_idx]
    zn = _Zones.build(polys)
    b = shapely.total_bounds(polys)
    f = job.fovs
    reach = job.fov_reach
    near = (
        (f.x_m + reach >= b[0]) & (f.x_m - reach <= b[2])
        & (f.y_m + reach >= b[1]) & (f.y_m - reach <= b[3])
    )  # fmt: skip
    fovs = f if near.all() else f.subset(near)
    roads = None
    road_idx = np.zeros(0, np.int64)
    if job.roads is not None and job.road_bounds is not None:
        rb = job.road_bounds
        road_idx = np.flatnonzero(
            (rb[:, 2] >= b[0]) & (rb[:, 0] <= b[2]) & (rb[:, 3] >= b[1]) & (rb[:, 1] <= b[3])
        )
        roads = Roads(job.roads.ids[road_idx], job.roads.lines[road_idx])
    local = np.full(len(job.polys), -1, np.int64)
    local[zone_idx] = np.arange(len(zone_idx))
    place_idx = np.flatnonzero((job.place_zone >= 0) & (local[np.maximum(job.place_zone, 0)] >= 0))
    res = _compute(
        zn, fovs, roads, job.place_x[place_idx], job.place_y[place_idx],
        local[job.place_zone[place_idx]], job.levels,
        None if job.gap_zone is None else job.gap_zone[zone_idx], job.options.road_gaps,
        job.options.place_gaps, job.options.min_gap_m2, job.options.tolerance_m, progress,
    )  # fmt: skip
    res.zone_idx = zone_idx
    res.place_idx = place_idx
    res.origin = (zn.ox, zn.oy)
    res.road_pieces.index = None
    res.road_pieces.road = road_idx[res.road_pieces.road]
    return res


def _part_worker(conn: Any, zone_idx: IntArray, job: _Job) -> None:  # pragma: no cover
    """Body of a forked worker: compute one part, send it back, exit at once.

    The result's arrays (tens of MB) go through a file in shared memory (/dev/shm),
    mapped by the parent, instead of through the pipe: only a small pickle is sent.
    """
    try:
        result = (True, _run_part(zone_idx, job, lambda stage, fraction: None))
    except BaseException:
        result = (False, traceback.format_exc())
    try:
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
        lengths = [b.raw().nbytes for b in buffers]
        path = None
        if buffers:
            fd, path = tempfile.mkstemp(prefix="gridcover-", dir=_SHM_DIR)
            with os.fdopen(fd, "wb") as f:
                for b, n in zip(buffers, lengths, strict=True):
                    f.write(b.raw())
                    f.write(bytes(-n % 64))  # keep every array 64-byte aligned
        conn.send((data, path, lengths))
    finally:
        conn.close()
        os._exit(0)


def _run_parts(parts: list[IntArray], job: _Job, progress: Progress) -> list[_PartResult]:
    """Compute the parts: the first here, the others in forked processes."""
    if len(parts) == 1:
        return [_run_part(parts[0], job, progress)]
    ctx = multiprocessing.get_context("fork")
    workers = []
    for part in parts[1:]:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_part_worker, args=(send, part, job), daemon=True)
        proc.start()
        send.close()
        # read the result as soon as it comes (the pipe blocks the worker until then)
        box: list[Any] = []
        reader = threading.Thread(target=_receive, args=(recv, box), daemon=True)
        reader.start()
        workers.append((reader, box, proc))
    results = [_run_part(parts[0], job, progress)]
    # while the workers finish: this part's gap geometries
    _build_gaps(results[0])
    for reader, box, proc in workers:
        reader.join()
        proc.join()
        ok, payload = box[0]
        if not ok:
            raise RuntimeError(f"coverage worker failed:\n{payload}")
        results.append(payload)
    return results


def _build_gaps(res: _PartResult) -> None:
    """Turn a part's gap coordinates into geometries (once), freeing the coordinates."""
    for o in res.levels.values():
        if o.gap_ragged is not None:
            o.gap_geoms = (o.gap_ragged.zones, o.gap_ragged.geometries())
            o.gap_ragged = None


def _receive(conn: Any, box: list[Any]) -> None:
    """Read a worker's result (see :func:`_part_worker`) into ``box``."""
    try:
        data, path, lengths = conn.recv()
        views = []
        if path is not None:
            with open(path, "rb") as f:
                # a private copy-on-write mapping: the arrays stay writable
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if sum(lengths) else b""
            os.unlink(path)
            padded = np.asarray(lengths, dtype=np.int64)
            padded += -padded % 64
            offsets = _cat(0, np.cumsum(padded))
            view = memoryview(mm)
            views = [view[offsets[i] : offsets[i] + n] for i, n in enumerate(lengths)]
        box.append(pickle.loads(data, buffers=views))
    except (EOFError, OSError) as exc:
        box.append((False, f"the worker exited without a result ({exc!r})"))
    finally:
        conn.close()


# --- public API ------------------------------------------------------------------------


def _check_levels(levels: Sequence[str]) -> list[str]:
    levels = list(levels)
    for level in levels:
        _level_index(level)
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels repeat: {levels!r}")
    return levels


def _whole_gaps(polys: ObjArray, min_gap_m2: float) -> ObjArray:
    """Zones as MultiPolygons without their parts below ``min_gap_m2`` (vectorised)."""
    out = np.empty(len(polys), dtype=object)
    if len(polys) == 0:
        return out
    out[:] = [shapely.from_wkt("MULTIPOLYGON EMPTY")] * len(polys)
    parts, owner = shapely.get_parts(polys, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_gap_m2)
    parts, owner = parts[keep], owner[keep]
    if len(parts):
        uo = _unique(owner)
        out[uo] = shapely.multipolygons(parts, indices=np.searchsorted(uo, owner))
    return out


def _road_gap_lines(
    rp: _RoadPieces,
    origin: tuple[float, float],
    gap: tuple[IntArray, FloatArray, FloatArray],
    nz: int,
) -> ObjArray:
    """Uncovered road stretches as one MultiLineString per zone (None: no road gap)."""
    out = np.full(nz, None, dtype=object)
    piece, lo, hi = gap
    keep = (hi - lo) * rp.length[piece] > _MIN_GAP_LINE_M  # not rounding crumbs
    piece, lo, hi = piece[keep], lo[keep], hi[keep]
    if len(piece) == 0:
        return out
    order = np.lexsort((lo, piece))
    piece, lo, hi = piece[order], lo[order], hi[order]
    dx = rp.x1[piece] - rp.x0[piece]
    dy = rp.y1[piece] - rp.y0[piece]
    ax, ay = rp.x0[piece] + lo * dx, rp.y0[piece] + lo * dy
    bx, by = rp.x0[piece] + hi * dx, rp.y0[piece] + hi * dy
    zone = rp.zone[piece]
    # a stretch continues the previous one where that one ended where this starts
    cont = _cat(
        False,
        (zone[1:] == zone[:-1])
        & (rp.part[piece[1:]] == rp.part[piece[:-1]])
        & (np.abs(ax[1:] - bx[:-1]) < 1e-9)
        & (np.abs(ay[1:] - by[:-1]) < 1e-9),
    )
    line = np.cumsum(~cont) - 1
    last = _cat(~cont[1:], True)
    # vertices: every stretch's start, and the end of each line's last stretch
    vx = _cat(ax, bx[last]) + origin[0]
    vy = _cat(ay, by[last]) + origin[1]
    vline = _cat(line, line[last])
    vorder = _cat(np.arange(len(ax)), np.full(int(last.sum()), len(ax)))
    o = np.lexsort((vorder, vline))
    lines = shapely.linestrings(np.stack([vx[o], vy[o]], axis=1), indices=vline[o])
    line_zone = zone[np.flatnonzero(~cont)]
    lo_ = np.argsort(line_zone, kind="stable")
    uz = _unique(line_zone)
    out[uz] = shapely.multilinestrings(lines[lo_], indices=np.searchsorted(uz, line_zone[lo_]))
    return out


def grid_coverage(
    grid_ids: ArrayLike,
    grid_polys: ArrayLike,
    fovs: FovSet,
    roads: Roads | None = None,
    places: Places | None = None,
    *,
    levels: Sequence[str] = DORI_LEVELS,
    min_gap_m2: float = DEFAULT_MIN_GAP_M2,
    weights: tuple[float, float] = DEFAULT_WEIGHTS,
    gaps: bool = True,
    gap_tolerance_m: float = DEFAULT_GAP_TOLERANCE_M,
    road_gap_lines: bool = False,
    uncovered_places: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Coverage of grids by cameras, one row per (grid, level), grids in input order.

    ``grid_polys`` are Polygons/MultiPolygons in EPSG:4546 (not overlapping; grids
    tile their villages), ``fovs`` the active cameras (:meth:`FovSet.from_cameras`),
    ``roads``/``places`` the target layers (EPSG:4546; optional). For an incremental
    recompute pass only the grids to recompute and every camera whose detect FOV
    reaches them (see the module docstring); the rows equal a full recompute's.

    Columns: ``grid_id``, ``level``, ``area_m2``, ``covered_m2``, ``ratio``,
    ``camera_count``, ``road_length_m``, ``road_covered_m``, ``road_ratio`` (NaN: no
    road), ``places_total``, ``places_covered``, ``places_ratio`` (NaN: no place),
    ``public_ratio`` (:func:`public_ratio` with ``weights``), ``fallback`` (True where
    the shapely fallback computed area and gap) and, with ``gaps``, ``gap``
    (MultiPolygon, EPSG:4546, empty when covered; parts below ``min_gap_m2`` left out;
    arcs drawn within ``gap_tolerance_m``). With ``road_gap_lines``: ``road_gap``, the
    uncovered road stretches (MultiLineString, or None). With ``uncovered_places``:
    ``uncovered_places``, a list of place ids.

    ``workers`` > 1 splits the grids into that many strips computed in parallel, in
    forked processes (Linux; same results). Do not fork from a process whose other
    threads may hold locks (e.g. inside a threaded server): use 1 there.
    ``progress(stage, fraction)`` is called as stages start (this process's part).
    """
    levels = _check_levels(levels)
    ids = np.asarray(grid_ids)
    polys = np.asarray(grid_polys, dtype=object)
    if len(ids) != len(polys):
        raise ValueError(f"{len(ids)} grid ids but {len(polys)} grid polygons")
    options = _Options(min_gap_m2, gap_tolerance_m, weights, road_gap_lines, uncovered_places)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    report = progress or (lambda stage, fraction: None)
    (columns,) = _coverage(
        [(ids, polys, gaps)], fovs, roads, places, levels, options, workers, report
    )
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class _Options:
    """What :func:`grid_coverage` computes besides areas (checked on creation)."""

    min_gap_m2: float
    tolerance_m: float
    weights: tuple[float, float]
    road_gaps: bool
    place_gaps: bool

    def __post_init__(self) -> None:
        if self.min_gap_m2 < 0:
            raise ValueError(f"min_gap_m2 must be >= 0, got {self.min_gap_m2!r}")
        if not self.tolerance_m > 0:
            raise ValueError(f"gap_tolerance_m must be > 0, got {self.tolerance_m!r}")
        public_ratio(np.nan, np.nan, 0.0, self.weights)  # validates the weights


# Zones with their ids, and whether their gap polygons are wanted.
_ZoneSet = tuple[NDArray[Any], ObjArray, bool]
# A small recompute (the grids of one camera edit) costs mostly the fixed price of one
# pass per level and zone set; up to this many cameras × levels × sets, they share one.
_STACK_MAX_CAMERAS = 20_000


def _coverage(
    sets: list[_ZoneSet],
    fovs: FovSet,
    roads: Roads | None,
    places: Places | None,
    levels: list[str],
    options: _Options,
    workers: int,
    report: Progress,
) -> list[dict[str, Any]]:
    """The columns of :func:`grid_coverage` for each set of zones (sets may overlap one
    another; roads and places belong to the first set only)."""
    ids0, polys0, _ = sets[0]
    place_x, place_y, place_zone = _assign_places(polys0, ids0, places)
    place_ids = np.asarray(places.ids, dtype=object) if places is not None else np.zeros(0, object)
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    zones = sum(len(polys) for _, polys, _ in sets)
    passes = len(levels) * len(sets)
    if workers == 1 and passes > 1 and zones and 0 < len(fovs) * passes <= _STACK_MAX_CAMERAS:
        copies = _LevelCopies([polys for _, polys, _ in sets], fovs, levels)
        job = _Job(
            *copies.zones_and_fovs(),
            roads=copies.roads(roads),
            **copies.places(place_x, place_y, place_zone),
            levels=[DORI_LEVELS[0]],
            gap_zone=copies.per_zone([gaps for _, _, gaps in sets]),
            options=options,
        )
        results = _run_parts([np.arange(len(job.polys))], job, report)
        report("assembling", 1.0)
        place_ids = copies.place_ids(place_ids, place_zone)
        columns = _columns(np.arange(len(job.polys)), job, results, place_ids)
        return copies.unstack(columns, [ids for ids, _, _ in sets], [g for *_, g in sets])
    out = []
    for n, (ids, polys, gaps) in enumerate(sets):
        first = n == 0
        job = _Job(
            polys,
            fovs,
            roads=roads if first else None,
            place_x=place_x if first else np.zeros(0),
            place_y=place_y if first else np.zeros(0),
            place_zone=place_zone if first else np.zeros(0, np.int64),
            levels=levels,
            gap_zone=np.ones(len(polys), bool) if gaps else None,
            options=options if first else replace(options, road_gaps=False, place_gaps=False),
        )
        parts = _split_zones(polys, fovs, workers)
        results = _run_parts(parts, job, report) if len(polys) else []
        report("assembling", 1.0)
        out.append(_columns(ids, job, results, place_ids if first else np.zeros(0, object)))
    return out


class _LevelCopies:
    """Every level and zone set in one pass: the zones and cameras once per (set, level),
    copy ``c`` shifted east by ``c · step``, far enough that copies never meet, each
    camera copy with the range of its level. One single-level pass over the copies gives
    every (zone, level) row; only the gap geometries need shifting back. Coordinates
    differ from a pass per level by rounding only (~1e-10 m)."""

    def __init__(self, zone_sets: list[ObjArray], fovs: FovSet, levels: Sequence[str]) -> None:
        self.sizes = [len(polys) for polys in zone_sets]
        self.levels = list(levels)
        nl = len(self.levels)
        ks = [_level_index(level) for level in levels]
        ranges = np.nan_to_num(fovs.ranges_m, nan=0.0)
        # copy c = set s, level j (c = s · levels + j)
        copy_set = np.repeat(np.arange(len(zone_sets)), nl)
        copy_k = np.tile(ks, len(zone_sets))
        # each copy gets the cameras that may reach its zones at its level
        bounds = [shapely.total_bounds(polys) if len(polys) else None for polys in zone_sets]
        cams = [
            np.zeros(0, np.int64) if bounds[s] is None else _reaching(fovs, ranges[:, k], bounds[s])
            for s, k in zip(copy_set, copy_k, strict=True)
        ]
        b = shapely.total_bounds(np.concatenate(zone_sets))
        every = _unique(np.concatenate(cams))
        reach = ranges.max(axis=1)[every]
        west = min(b[0], float((fovs.x_m[every] - reach).min())) if len(every) else b[0]
        east = max(b[2], float((fovs.x_m[every] + reach).max())) if len(every) else b[2]
        self.bounds = b
        self.step = (east - west) + 1000.0
        self.shift = np.arange(len(copy_set)) * self.step
        self.offset = _cat(0, np.cumsum([self.sizes[s] for s in copy_set]))
        self._zones = _shift_x(
            np.concatenate([zone_sets[s] for s in copy_set]),
            np.repeat(self.shift, [self.sizes[s] for s in copy_set]),
        )
        self._fovs = FovSet(
            np.concatenate([fovs.camera_id[c] for c in cams]),
            np.concatenate([fovs.x_m[c] + dx for c, dx in zip(cams, self.shift, strict=True)]),
            np.concatenate([fovs.y_m[c] for c in cams]),
            np.concatenate([fovs.azimuth_grid_deg[c] for c in cams]),
            np.concatenate([fovs.hfov_deg[c] for c in cams]),
            np.repeat(
                np.concatenate([ranges[c, k] for c, k in zip(cams, copy_k, strict=True)])[:, None],
                len(DORI_LEVELS),
                axis=1,
            ),
        )

    def zones_and_fovs(self) -> tuple[ObjArray, FovSet]:
        return self._zones, self._fovs

    def per_zone(self, flags: list[bool]) -> BoolArray | None:
        """A per-set flag for each zone of the copies (None when no set has it)."""
        if not any(flags):
            return None
        nl = len(self.levels)
        return np.concatenate(
            [np.full(self.sizes[s], flags[s]) for s in range(len(self.sizes)) for _ in range(nl)]
        )

    def roads(self, roads: Roads | None) -> Roads | None:
        """The roads cut to the zones' bounds (a road may run far beyond them, into
        another copy), once per level of the first set."""
        if roads is None:
            return None
        b = self.bounds
        lines = shapely.clip_by_rect(roads.lines, b[0] - 1.0, b[1] - 1.0, b[2] + 1.0, b[3] + 1.0)
        keep = ~shapely.is_empty(lines)
        lines, ids = lines[keep], np.asarray(roads.ids)[keep]
        nl = len(self.levels)
        return Roads(
            np.tile(ids, nl), _shift_x(np.tile(lines, nl), np.repeat(self.shift[:nl], len(lines)))
        )

    def places(self, x: FloatArray, y: FloatArray, zone: IntArray) -> dict[str, NDArray[Any]]:
        """The places in a zone of the first set, once per level, in their zone's copy."""
        inside = np.flatnonzero(zone >= 0)
        nl = len(self.levels)
        return {
            "place_x": (x[inside][None, :] + self.shift[:nl, None]).reshape(-1),
            "place_y": np.tile(y[inside], nl),
            "place_zone": (zone[inside][None, :] + self.offset[:nl, None]).reshape(-1),
        }

    def place_ids(self, ids: ObjArray, zone: IntArray) -> ObjArray:
        return np.tile(ids[zone >= 0], len(self.levels))

    def unstack(
        self, columns: dict[str, Any], ids: list[NDArray[Any]], gaps: list[bool]
    ) -> list[dict[str, Any]]:
        """Columns of the copies (one level each) as rows per (zone, level), zone-major,
        one set of columns per zone set."""
        nl = len(self.levels)
        out = []
        for s, size in enumerate(self.sizes):
            first = self.offset[s * nl : (s + 1) * nl]
            order = (np.arange(size)[:, None] + first[None, :]).reshape(-1)
            cols = {
                name: [values[i] for i in order] if isinstance(values, list) else values[order]
                for name, values in columns.items()
            }
            cols["grid_id"] = np.repeat(ids[s], nl)
            cols["level"] = np.tile(np.asarray(self.levels, dtype=object), size)
            back = -np.tile(self.shift[s * nl : (s + 1) * nl], size)
            for name in ("gap", "road_gap"):
                if name in cols:
                    cols[name] = _shift_x(cols[name], back)
            if not gaps[s]:
                cols.pop("gap", None)
            if s:
                cols.pop("road_gap", None)
                cols.pop("uncovered_places", None)
            out.append(cols)
        return out


def _reaching(fovs: FovSet, reach: FloatArray, bounds: FloatArray) -> IntArray:
    """The cameras whose reach box meets ``bounds`` (x0, y0, x1, y1)."""
    return np.flatnonzero(
        (fovs.x_m + reach >= bounds[0]) & (fovs.x_m - reach <= bounds[2])
        & (fovs.y_m + reach >= bounds[1]) & (fovs.y_m - reach <= bounds[3])
    )  # fmt: skip


def _shift_x(geoms: ObjArray, dx: FloatArray) -> ObjArray:
    """``geoms`` moved east by ``dx`` (one value per geometry; None stays None)."""
    per_vertex = np.repeat(dx, shapely.get_num_coordinates(geoms))
    return shapely.transform(
        geoms, lambda xy: xy + np.stack([per_vertex, np.zeros_like(per_vertex)], axis=1)
    )


def _columns(
    ids: NDArray[Any],
    job: _Job,
    results: list[_PartResult],
    place_ids: ObjArray,
) -> dict[str, Any]:
    """The columns of :func:`grid_coverage` from the parts' results (zones ``ids``)."""
    nz = len(ids)
    levels = job.levels
    nl = len(levels)
    shape = (nz, nl)
    area = np.zeros(nz)
    road_length = np.zeros(nz)
    places_total = np.zeros(nz, np.int64)
    covered = np.zeros(shape)
    count = np.zeros(shape, np.int64)
    road_cov = np.zeros(shape)
    pcov = np.zeros(shape, np.int64)
    fallback = np.zeros(shape, bool)
    gap = np.full(shape, None, dtype=object) if job.gap_zone is not None else None
    road_gap = np.full(shape, None, dtype=object) if job.options.road_gaps else None
    unc: list[list[list[Any]]] | None = None
    if job.options.place_gaps:
        unc = [[[] for _ in range(nl)] for _ in range(nz)]
    pid = place_ids
    for res in results:
        zi = res.zone_idx
        area[zi] = res.area
        road_length[zi] = res.road_length
        places_total[zi] = res.places_total
        for j, level in enumerate(levels):
            o = res.levels[level]
            covered[zi, j] = o.covered
            count[zi, j] = o.camera_count
            road_cov[zi, j] = o.road_covered
            pcov[zi, j] = o.places_covered
            fallback[zi, j] = o.fallback
            if gap is not None:
                _build_gaps(res)
                if o.gap_geoms is not None:
                    gap[zi[o.gap_geoms[0]], j] = o.gap_geoms[1]
                for z, g in o.gap_extra.items():
                    gap[zi[z], j] = g
            if road_gap is not None and o.road_gap is not None:
                road_gap[zi, j] = _road_gap_lines(res.road_pieces, res.origin, o.road_gap, len(zi))
            if unc is not None and o.place_uncovered is not None:
                for p in res.place_idx[o.place_uncovered].tolist():
                    unc[int(job.place_zone[p])][j].append(pid[p])
    if gap is not None:
        # zones no FOV reaches (at a level): the gap is the whole zone
        empty = np.flatnonzero((gap == None).any(axis=1) & job.gap_zone)  # noqa: E711
        if len(empty):
            whole = _whole_gaps(job.polys[empty], job.options.min_gap_m2)
            for j in range(nl):
                none = gap[empty, j] == None  # noqa: E711 - elementwise
                gap[empty[none], j] = whole[none]
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.repeat(area, nl)
        cov = covered.reshape(-1)
        rl = np.repeat(road_length, nl)
        rc = road_cov.reshape(-1)
        tot = np.repeat(places_total, nl)
        pc = pcov.reshape(-1)
        ratio = np.clip(np.where(a > 0, cov / a, 0.0), 0.0, 1.0)
        road_ratio = np.where(rl > 0, np.clip(rc / rl, 0.0, 1.0), np.nan)
        places_ratio = np.where(tot > 0, pc / np.maximum(tot, 1), np.nan)
    cols: dict[str, Any] = {
        "grid_id": np.repeat(ids, nl),
        "level": np.tile(np.asarray(levels, dtype=object), nz),
        "area_m2": a,
        "covered_m2": cov,
        "ratio": ratio,
        "camera_count": count.reshape(-1),
        "road_length_m": rl,
        "road_covered_m": rc,
        "road_ratio": road_ratio,
        "places_total": tot,
        "places_covered": pc,
        "places_ratio": places_ratio,
        "public_ratio": public_ratio(road_ratio, places_ratio, ratio, job.options.weights),
        "fallback": fallback.reshape(-1),
    }
    if gap is not None:
        cols["gap"] = gap.reshape(-1)
    if road_gap is not None:
        cols["road_gap"] = road_gap.reshape(-1)
    if unc is not None:
        cols["uncovered_places"] = [unc[z][j] for z in range(nz) for j in range(nl)]
    return cols


def road_gaps(
    grid_ids: ArrayLike,
    grid_polys: ArrayLike,
    fovs: FovSet,
    roads: Roads,
    *,
    levels: Sequence[str] = DORI_LEVELS,
    workers: int = 1,
) -> pd.DataFrame:
    """Uncovered stretches of the target roads, per grid and level (EPSG:4546).

    One row per (grid, level) with an uncovered stretch: ``grid_id``, ``level``,
    ``length_m`` and ``geometry`` (MultiLineString: the road inside the grid minus
    the union of the FOVs). Stretches shorter than 1 mm (rounding) are left out.
    """
    df = grid_coverage(
        grid_ids, grid_polys, fovs, roads, None, levels=levels, gaps=False,
        road_gap_lines=True, workers=workers,
    )  # fmt: skip
    df = df[df["road_gap"].notna()]
    geoms = df["road_gap"].to_numpy()
    return pd.DataFrame(
        {
            "grid_id": df["grid_id"].to_numpy(),
            "level": df["level"].to_numpy(),
            "length_m": shapely.length(geoms) if len(geoms) else np.zeros(0),
            "geometry": geoms,
        }
    )


def place_gaps(
    grid_ids: ArrayLike,
    grid_polys: ArrayLike,
    fovs: FovSet,
    places: Places,
    *,
    levels: Sequence[str] = DORI_LEVELS,
) -> pd.DataFrame:
    """Key places not covered, per level: ``place_id``, ``grid_id``, ``level`` and
    ``geometry`` (the place's point, EPSG:4546; ``point_on_surface`` of a polygon)."""
    levels = _check_levels(levels)
    ids = np.asarray(grid_ids)
    polys = np.asarray(grid_polys, dtype=object)
    df = grid_coverage(
        ids, polys, fovs, None, places, levels=levels, gaps=False, uncovered_places=True
    )
    px, py, _ = _assign_places(polys, ids, places)
    index = {v: i for i, v in enumerate(np.asarray(places.ids, dtype=object).tolist())}
    rows = [
        (pid, gid, level)
        for gid, level, lst in zip(df["grid_id"], df["level"], df["uncovered_places"], strict=True)
        for pid in lst
    ]
    p = np.array([index[r[0]] for r in rows], dtype=np.int64)
    return pd.DataFrame(
        {
            "place_id": [r[0] for r in rows],
            "grid_id": [r[1] for r in rows],
            "level": [r[2] for r in rows],
            "geometry": shapely.points(px[p], py[p]) if len(p) else np.zeros(0, dtype=object),
        }
    )


# Cells a FOV only touches get a covered area of rounding size (~1e-10 m²): not coverage.
_H3_CRUMB_M2 = 1e-6


def h3_cells_near(
    x_m: ArrayLike, y_m: ArrayLike, radius_m: ArrayLike, *, res: int = 9
) -> list[str]:
    """The H3 cells (resolution ``res``, sorted) that discs of ``radius_m`` around the
    EPSG:4546 points may meet: a superset, from each point's cell and enough rings."""
    import h3  # the only user of h3 here; keeps `import geo.coverage` light

    x = np.atleast_1d(np.asarray(x_m, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y_m, dtype=np.float64))
    r = np.broadcast_to(np.asarray(radius_m, dtype=np.float64), x.shape)
    ok = (r > 0) & np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return []
    x, y, r = x[ok], y[ok], r[ok]
    lon, lat = from_metric(x, y)
    apex_cells = np.array([h3.latlng_to_cell(la, lo, res) for la, lo in zip(lat, lon, strict=True)])
    # a cell meets a disc only if its centre is within r + edge of the apex, itself
    # within an edge of its cell's centre; ring-k centres are >= k √3 edges from that
    # centre. Cells vary by a few % over a prefecture: 5 % margins.
    edge = math.sqrt(2.0 * h3.cell_area(apex_cells[0], unit="m^2") / (3.0 * math.sqrt(3.0)))
    ring = np.floor((r + 2.0 * 1.05 * edge) / (math.sqrt(3.0) * 0.95 * edge)).astype(np.int64)
    uniq: dict[str, int] = {}
    for cell, kk in zip(apex_cells.tolist(), ring.tolist(), strict=True):
        if uniq.get(cell, -1) < kk:
            uniq[cell] = kk
    return sorted({c for cell, kk in uniq.items() for c in h3.grid_disk(cell, kk)})


def h3_polygons(cells: Sequence[str], *, metric: bool = True) -> ObjArray:
    """The hexagons of H3 cells in EPSG:4546, converted vertex by vertex from WGS 84 (the
    straight edges differ from H3's great-circle ones by far less than a millimetre); with
    ``metric=False`` in WGS 84 (lon, lat)."""
    import h3

    if not len(cells):
        return np.zeros(0, dtype=object)
    rings = [h3.cell_to_boundary(c) for c in cells]
    n_vert = np.fromiter(map(len, rings), dtype=np.int64, count=len(rings))
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(rings))
    latlng = np.fromiter(flat, dtype=np.float64, count=2 * int(n_vert.sum())).reshape(-1, 2)
    if metric:
        cx, cy = to_metric(latlng[:, 1], latlng[:, 0])
    else:
        cx, cy = latlng[:, 1], latlng[:, 0]
    # closed rings: each cell's vertices and its first vertex again
    first = np.cumsum(n_vert) - n_vert
    o2, k2 = _expand(n_vert + 1)
    src = first[o2] + np.where(k2 == n_vert[o2], 0, k2)
    offsets = (_cat(0, np.cumsum(n_vert + 1)), np.arange(len(n_vert) + 1))
    coords = np.stack([cx, cy], axis=1)[src]
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)


def coverage_h3(
    fovs: FovSet,
    level: str | Sequence[str] = "detect",
    *,
    res: int = 9,
    cells: Sequence[str] | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Covered fraction of every H3 cell (resolution ``res``, default 9) the FOVs reach,
    or of the given ``cells`` only (e.g. those under an edited camera: pass every camera
    that may reach them).

    ``level``: a DORI level, or several (computed together: candidate cells, their
    polygons and the camera set-up are shared). Cells come from WGS 84
    (:func:`geo.crs.from_metric` of the cameras, the H3 library on lon/lat) and are
    computed as zones of :func:`grid_coverage` (:func:`h3_polygons`), so exactly as
    grids; ``workers`` as there. Returns one row per (cell, level) with coverage (more
    than a rounding crumb of 1e-6 m²): ``h3`` (cell id, str), ``level``, ``cell_m2``,
    ``covered_m2``, ``ratio`` — for heat maps.
    """
    levels = _check_levels([level] if isinstance(level, str) else level)
    ks = [_level_index(v) for v in levels]
    report = progress or (lambda stage, fraction: None)
    empty = pd.DataFrame(
        {"h3": np.zeros(0, object), "level": np.zeros(0, object), "cell_m2": np.zeros(0),
         "covered_m2": np.zeros(0), "ratio": np.zeros(0)}
    )  # fmt: skip
    if len(fovs) == 0 or not levels:
        return empty
    report("candidate cells", 0.0)
    if cells is None:
        r = np.nan_to_num(fovs.ranges_m[:, ks], nan=0.0).max(axis=1)
        cells = h3_cells_near(fovs.x_m, fovs.y_m, r, res=res)
    else:
        cells = sorted(set(cells))
    if not cells:
        return empty
    report("cell polygons", 0.3)
    polys = h3_polygons(cells)
    report("coverage", 0.5)
    (columns,) = _coverage(
        [(np.asarray(cells, dtype=object), polys, False)], fovs, None, None, levels,
        _Options(DEFAULT_MIN_GAP_M2, DEFAULT_GAP_TOLERANCE_M, DEFAULT_WEIGHTS, False, False),
        workers, report,
    )  # fmt: skip
    report("done", 1.0)
    return pd.DataFrame(_h3_columns(columns))


def _h3_columns(columns: dict[str, Any]) -> dict[str, NDArray[Any]]:
    """:func:`coverage_h3`'s columns from coverage columns of cells: those with coverage."""
    keep = columns["covered_m2"] > _H3_CRUMB_M2
    return {
        "h3": np.asarray(columns["grid_id"], dtype=object)[keep],
        "level": columns["level"][keep],
        "cell_m2": columns["area_m2"][keep],
        "covered_m2": columns["covered_m2"][keep],
        "ratio": columns["ratio"][keep],
    }


def grid_and_h3_coverage(
    grid_ids: ArrayLike,
    grid_polys: ArrayLike,
    cells: Sequence[str],
    fovs: FovSet,
    roads: Roads | None = None,
    places: Places | None = None,
    *,
    res: int = 9,
    min_gap_m2: float = DEFAULT_MIN_GAP_M2,
    weights: tuple[float, float] = DEFAULT_WEIGHTS,
    gap_tolerance_m: float = DEFAULT_GAP_TOLERANCE_M,
    cell_polygons: ArrayLike | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`grid_coverage` of the grids (every level, gaps, road gap lines, uncovered
    places) and :func:`coverage_h3` of the ``cells`` (every level), in one pass: what a
    camera edit recomputes, where the fixed cost of each pass dominates. Pass every
    camera whose FOV reaches a grid or a cell, and ``cell_polygons`` (the cells'
    :func:`h3_polygons`, distinct cells) when you have them. Returns the two results'
    columns (what ``pandas.DataFrame`` takes): for the few rows of an edit, building
    frames would cost more than the rows."""
    ids = np.asarray(grid_ids)
    polys = np.asarray(grid_polys, dtype=object)
    if len(ids) != len(polys):
        raise ValueError(f"{len(ids)} grid ids but {len(polys)} grid polygons")
    if cell_polygons is None:
        cells = sorted(set(cells))
        hexagons = h3_polygons(cells)
    else:
        hexagons = np.asarray(cell_polygons, dtype=object)
        if len(hexagons) != len(cells) or len(set(cells)) != len(cells):
            raise ValueError("cell_polygons must be the hexagons of distinct cells")
    grid_columns, cell_columns = _coverage(
        [(ids, polys, True), (np.asarray(cells, dtype=object), hexagons, False)],
        fovs, roads, places, list(DORI_LEVELS),
        _Options(min_gap_m2, gap_tolerance_m, weights, True, True),
        1, lambda stage, fraction: None,
    )  # fmt: skip
    return grid_columns, _h3_columns(cell_columns)
