"""Small numeric and geometric helpers shared by the demo-world modules.

All coordinates here are EPSG:4546 metres (x = easting, y = northing) unless a name
says ``lon``/``lat``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.crs import METRIC_EPSG, convert_geometry, from_metric

METRIC_CRS = f"EPSG:{METRIC_EPSG}"
"""The CRS every demo geometry is built in (CGCS2000 / 3-degree GK CM 111E, metres)."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """An independent PCG64 generator for ``seed`` and a key path.

    Keys name what the stream is for (e.g. ``("433101", "villages")``): every
    (seed, county, stage) gets its own stream, so a county builds the same way
    whether or not the other counties are built, and adding draws to one stage
    never shifts another. Strings are hashed with CRC-32 (stable across runs and
    platforms, unlike ``hash``).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    words = [seed] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def nearest_index(
    px: FloatArray,
    py: FloatArray,
    gx: FloatArray,
    gy: FloatArray,
    weights: FloatArray | None = None,
) -> IntArray:
    """Index of the nearest generator (gx, gy) for every point (px, py), ties -> lowest.

    With ``weights`` (m²) "nearest" is in the power-diagram sense: the generator
    minimising ``squared distance - weight``. Brute force in chunks of at most ~4 M
    pairs; the generator sets here are small, so this beats building a tree.
    """
    out = np.empty(len(px), dtype=np.int64)
    if len(px) == 0:
        return out
    chunk = max(1, 4_000_000 // max(1, len(gx)))
    for start in range(0, len(px), chunk):
        sl = slice(start, start + chunk)
        d2 = (px[sl, None] - gx[None, :]) ** 2 + (py[sl, None] - gy[None, :]) ** 2
        if weights is not None:
            d2 -= weights[None, :]
        out[sl] = np.argmin(d2, axis=1)
    return out


def sample_region(
    rng: np.random.Generator,
    n: int,
    bounds: tuple[float, float, float, float],
    accept: Callable[[FloatArray, FloatArray], BoolArray],
    max_rounds: int = 40,
) -> tuple[FloatArray, FloatArray]:
    """Up to ``n`` uniform random points of the region ``accept`` describes.

    Rejection sampling in ``bounds`` (xmin, ymin, xmax, ymax); the batch size adapts
    to the acceptance rate seen so far. Returns fewer than ``n`` points only if the
    region is (nearly) empty after ``max_rounds`` batches.
    """
    xmin, ymin, xmax, ymax = bounds
    xs: list[FloatArray] = []
    ys: list[FloatArray] = []
    got = 0
    tried = 0
    accepted = 0
    for _ in range(max_rounds):
        if got >= n:
            break
        rate = max(accepted / tried, 0.02) if tried else 0.5
        batch = int((n - got) / rate * 1.2) + 32
        x = rng.uniform(xmin, xmax, batch)
        y = rng.uniform(ymin, ymax, batch)
        ok = accept(x, y)
        tried += batch
        accepted += int(ok.sum())
        xs.append(x[ok])
        ys.append(y[ok])
        got += int(ok.sum())
    x = np.concatenate(xs)[:n] if xs else np.empty(0)
    y = np.concatenate(ys)[:n] if ys else np.empty(0)
    return x, y


def farthest_points(
    rng: np.random.Generator, sx: FloatArray, sy: FloatArray, existing: FloatArray, n: int
) -> FloatArray:
    """``n`` samples picked one by one, each farthest from ``existing`` and earlier picks.

    Without ``existing`` points the first pick is random. Returns (n, 2).
    """
    if n == 0:
        return np.empty((0, 2))
    if len(existing):
        d2 = np.min(
            (sx[:, None] - existing[None, :, 0]) ** 2 + (sy[:, None] - existing[None, :, 1]) ** 2,
            axis=1,
        )
        first = int(np.argmax(d2))
    else:
        d2 = np.full(len(sx), np.inf)
        first = int(rng.integers(len(sx)))
    picks = [first]
    d2 = np.minimum(d2, (sx - sx[first]) ** 2 + (sy - sy[first]) ** 2)
    for _ in range(n - 1):
        nxt = int(np.argmax(d2))
        picks.append(nxt)
        d2 = np.minimum(d2, (sx - sx[nxt]) ** 2 + (sy - sy[nxt]) ** 2)
    return np.column_stack([sx[picks], sy[picks]])


def spread_generators(
    rng: np.random.Generator,
    sx: FloatArray,
    sy: FloatArray,
    fixed_xy: FloatArray,
    n_free: int,
    iterations: int,
) -> FloatArray:
    """Place ``n_free`` generators evenly over a sampled region, around fixed ones.

    ``sx``/``sy`` are uniform samples of the region, ``fixed_xy`` (k, 2) generators
    that must not move. Free generators start at farthest-point picks among the
    samples and then take ``iterations`` Lloyd steps (each moves to the mean of the
    samples nearest to it), which evens out cell areas. Finally every free
    generator snaps to the sample of its own cluster nearest to it: a cluster mean
    can fall outside a non-convex region, a sample never does, and clusters are
    disjoint so no two generators coincide. Returns (k + n_free, 2): fixed first.
    """
    fixed_xy = np.asarray(fixed_xy, dtype=np.float64).reshape(-1, 2)
    if n_free == 0:
        return fixed_xy
    if len(sx) < n_free:
        raise ValueError(f"{len(sx)} samples cannot place {n_free} generators")
    start = farthest_points(rng, sx, sy, fixed_xy, n_free)
    gx = np.concatenate([fixed_xy[:, 0], start[:, 0]])
    gy = np.concatenate([fixed_xy[:, 1], start[:, 1]])
    k = len(gx)
    free = np.arange(k) >= len(fixed_xy)
    for _ in range(iterations):
        label = nearest_index(sx, sy, gx, gy)
        count = np.bincount(label, minlength=k)
        move = free & (count > 0)
        gx[move] = np.bincount(label, weights=sx, minlength=k)[move] / count[move]
        gy[move] = np.bincount(label, weights=sy, minlength=k)[move] / count[move]
    label = nearest_index(sx, sy, gx, gy)
    d2 = (sx - gx[label]) ** 2 + (sy - gy[label]) ** 2
    order = np.lexsort((d2, label))
    first_of_label = order[np.r_[True, label[order][1:] != label[order][:-1]]]
    owners = label[first_of_label]
    snap = free[owners]
    gx[owners[snap]] = sx[first_of_label[snap]]
    gy[owners[snap]] = sy[first_of_label[snap]]
    # A free generator that ended with no samples may sit on a stale cluster mean
    # (possibly outside the region): re-seat it on the sample farthest from the rest.
    for lonely in np.flatnonzero(free & (np.bincount(label, minlength=k) == 0)):
        others = np.arange(k) != lonely
        d2 = np.min(
            (sx[:, None] - gx[None, others]) ** 2 + (sy[:, None] - gy[None, others]) ** 2, axis=1
        )
        far = int(np.argmax(d2))
        gx[lonely], gy[lonely] = sx[far], sy[far]
    return np.column_stack([gx, gy])


def largest_remainder(total: int, weights: FloatArray) -> IntArray:
    """Split the integer ``total`` in proportion to ``weights`` (Hamilton's method).

    The parts sum to ``total`` exactly; ties in the remainders go to the lower index.
    """
    w = np.asarray(weights, dtype=np.float64)
    if total == 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    quota = total * w / w.sum()
    base = np.floor(quota).astype(np.int64)
    short = total - int(base.sum())
    order = np.argsort(-(quota - base), kind="stable")
    base[order[:short]] += 1
    return base


def wiggled_path(
    rng: np.random.Generator,
    start: tuple[float, float],
    end: tuple[float, float],
    step_m: float,
    amplitude_frac: float,
    amplitude_max_m: float,
) -> FloatArray:
    """Vertices (n, 2) of a gently meandering path from ``start`` to ``end``.

    The path leaves the straight line sideways by a sum of three sine waves under a
    ``sin(pi t)`` envelope, so both ends stay exactly in place; the largest sideways
    scale is ``min(amplitude_frac * length, amplitude_max_m)``. Vertices are about
    ``step_m`` apart.
    """
    a = np.asarray(start, dtype=np.float64)
    b = np.asarray(end, dtype=np.float64)
    length = float(np.hypot(*(b - a)))
    n = max(2, int(np.ceil(length / step_m)) + 1)
    t = np.linspace(0.0, 1.0, n)
    if length == 0:
        return np.repeat(a[None, :], 2, axis=0)
    direction = (b - a) / length
    normal = np.array([-direction[1], direction[0]])
    scale = min(amplitude_frac * length, amplitude_max_m)
    harmonics = np.arange(1, 4)
    amps = rng.normal(0.0, scale / harmonics)
    phases = rng.uniform(0.0, 2 * np.pi, 3)
    wave = (amps[None, :] * np.sin(np.pi * harmonics[None, :] * t[:, None] + phases)).sum(axis=1)
    offset = np.sin(np.pi * t) * wave
    pts = a[None, :] + t[:, None] * (b - a)[None, :] + offset[:, None] * normal[None, :]
    pts[0], pts[-1] = a, b
    return pts


def to_multipolygons(geoms: NDArray[np.object_]) -> NDArray[np.object_]:
    """Polygons/MultiPolygons -> MultiPolygons (same parts, same vertices)."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    return shapely.multipolygons(parts, indices=index, out=np.empty(len(geoms), dtype=object))


def to_lonlat(geoms: NDArray[np.object_]) -> NDArray[np.object_]:
    """EPSG:4546 geometries -> WGS 84 lon/lat, vertex by vertex (no densifying).

    The transform is a pure function of each vertex, so a vertex shared by two
    polygons maps to one lon/lat vertex in both and a tiling stays a tiling.
    """
    return convert_geometry(np.asarray(geoms, dtype=object), METRIC_CRS, "wgs84")


def points_lonlat(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """EPSG:4546 (x, y) arrays -> WGS 84 (lon, lat) arrays."""
    lon, lat = from_metric(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(lon), np.asarray(lat)


def inside_both(
    polygons_m: NDArray[np.object_] | shapely.Geometry,
    polygons_ll: NDArray[np.object_] | shapely.Geometry,
    x: FloatArray,
    y: FloatArray,
) -> BoolArray:
    """True where point (x, y) (metres) is inside its polygon in both CRSs.

    ``polygons_m``/``polygons_ll`` are one polygon or one per point, the same
    polygon in EPSG:4546 and in lon/lat. Straight edges differ slightly between the
    two CRSs, so a point within millimetres of an edge can be inside in one and not
    the other; demanding both keeps every point unambiguous for any consumer.
    """
    if len(x) == 0:
        return np.zeros(0, dtype=bool)
    lon, lat = points_lonlat(x, y)
    return shapely.contains_xy(polygons_m, x, y) & shapely.contains_xy(polygons_ll, lon, lat)


def line_tangents(
    lines: NDArray[np.object_], dist: FloatArray, lengths: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Points at ``dist`` metres along ``lines`` and the unit tangent there.

    Returns (x, y, tx, ty). The tangent is taken over +-1 m (clamped to the line),
    which is the direction of the segment the point lies on.
    """
    here = shapely.line_interpolate_point(lines, dist)
    ahead = shapely.line_interpolate_point(lines, np.minimum(dist + 1.0, lengths))
    behind = shapely.line_interpolate_point(lines, np.maximum(dist - 1.0, 0.0))
    hx, hy = shapely.get_x(here), shapely.get_y(here)
    dx = shapely.get_x(ahead) - shapely.get_x(behind)
    dy = shapely.get_y(ahead) - shapely.get_y(behind)
    norm = np.hypot(dx, dy)
    norm[norm == 0] = 1.0
    return hx, hy, dx / norm, dy / norm


def pick(rng: np.random.Generator, options: list[str] | tuple[str, ...], n: int) -> NDArray:
    """``n`` uniform picks (with replacement) from ``options`` as an object array."""
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]
