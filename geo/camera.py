"""Camera fields of view: DORI distances (IEC 62676-4), FOV polygons, visibility.

Everything here is vectorised over numpy arrays of cameras and works in EPSG:4546
(CGCS2000 / 3-degree Gauss-Kruger CM 111E): x = easting, y = northing, metres.

DORI levels
-----------
IEC 62676-4 names four pixel densities on the target (pixels per metre of scene
width, :data:`DORI_PPM`): *detect* 25, *observe* 62.5, *recognize* 125, *identify*
250. A camera whose sensor has ``resolution_h_px`` pixels across a horizontal field
of view of ``hfov_deg`` degrees sees a plane ``2 · d · tan(HFOV/2)`` metres wide at
distance ``d``, so the pixel density ``ppm`` is reached up to

    d = H_px / (2 · ppm · tan(HFOV/2))                     (:func:`dori_distance_m`)

capped by the camera's range override when it has one (:func:`level_ranges_m`).
The levels are nested: detect ⊇ observe ⊇ recognize ⊇ identify, for ranges as for
the FOV polygons built from them.

Full-disc cameras
-----------------
Dome and PTZ cameras are stored with ``hfov_deg = 360``: they can look anywhere, so
their field of view is a disc. ``tan(180°)`` gives no pixel density, though: what
the camera resolves at any one moment is set by its lens, so the density of a disc
camera is that of its lens's nominal HFOV, :data:`LENS_HFOV_DEG` (dome 90°, a
typical 2.8-4 mm dome lens; PTZ 60°, a PTZ at a moderate zoom). The same rule
applies to every camera whose stored HFOV is 180° or more (no lens images a
half-plane flat): a bullet stored with such an HFOV uses 90°. The polygon still
spans the stored HFOV (a disc at 360°).

Azimuths
--------
``azimuth_deg`` is measured clockwise from *true* north, as stored in the database
and returned by the API. EPSG:4546 grid north differs from true north by the
meridian convergence (:func:`grid_convergence_deg`: -1.2° to +0.1° over Xiangxi,
which lies west of the 111°E central meridian). By default
(``north="true"``) the functions here correct for it, so a sector built in EPSG:4546
points where the camera points; ``north="grid"`` takes azimuths as grid azimuths.

FOV polygons
------------
:func:`fov_sectors` approximates the arc by a polyline with segments of at most
``arc_step_deg`` (default 10°) and pushes its vertices out by the factor
``sqrt(θ / sin θ)`` (θ the segment angle in radians) so the polygon's area equals
the exact sector area ``π r² · HFOV / 360`` (to rounding): an inscribed polygon
would under-report coverage. The boundary then lies within ``+0.26 % / -0.13 %``
of the true arc at 10° (vertices outside, chord midpoints inside).

Offline cameras
---------------
Offline and faulty cameras cover nothing. The functions here take the cameras they
are given; callers pass only working ones, e.g. ``active = is_active(status)`` and
then ``x_m[active]``, ... (:func:`is_active`). :meth:`geo.coverage.FovSet.from_cameras`
does this filtering for the coverage computation (pass ``status``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from geo.crs import from_metric

__all__ = [
    "ACTIVE_STATUSES",
    "CAMERA_KINDS",
    "CENTRAL_MERIDIAN_DEG",
    "DEFAULT_ARC_STEP_DEG",
    "DEFAULT_HFOV_DEG",
    "DISC_HFOV_DEG",
    "DORI_LEVELS",
    "DORI_PPM",
    "LENS_HFOV_DEG",
    "WIDE_HFOV_DEG",
    "SightIndex",
    "dori_distance_m",
    "effective_hfov_deg",
    "fov_sectors",
    "fov_sectors_by_level",
    "grid_convergence_deg",
    "is_active",
    "level_ranges_m",
    "visible_from",
]

FloatArray = NDArray[np.float64]
North = Literal["true", "grid"]

CAMERA_KINDS: tuple[str, ...] = ("bullet", "dome", "ptz")
"""Camera kinds: bullets look one way (a sector), domes and PTZ cameras all around."""

DORI_LEVELS: tuple[str, ...] = ("detect", "observe", "recognize", "identify")
"""The IEC 62676-4 levels from the coarsest (longest range) to the finest."""

DORI_PPM: dict[str, float] = {
    "detect": 25.0,
    "observe": 62.5,
    "recognize": 125.0,
    "identify": 250.0,
}
"""Pixel density (pixels per metre of scene width) each level needs (IEC 62676-4)."""

LENS_HFOV_DEG: dict[str, float] = {"bullet": 90.0, "dome": 90.0, "ptz": 60.0}
"""Nominal lens HFOV (degrees) giving the pixel density of a camera stored with an
HFOV of 180° or more (a full disc): dome 90° (2.8-4 mm lens), PTZ 60° (moderate
zoom), bullet 90°. See the module docstring."""

DEFAULT_HFOV_DEG: dict[str, float] = {"bullet": 90.0, "dome": 360.0, "ptz": 360.0}
"""HFOV (degrees) of a camera created without one: dome and PTZ see all around (a
disc), a bullet gets a common 90° lens."""

DISC_HFOV_DEG: float = 360.0 - 1e-6
"""An HFOV at or above this many degrees is a full disc (no apex, no azimuth): 360,
less a micro-degree so a rounded 360 (359.99999999999994) is a disc, not a sector
whose two edges meet within rounding."""

WIDE_HFOV_DEG: float = 180.0
"""From this HFOV up (degrees), the pixel density is the lens's nominal one."""

DEFAULT_ARC_STEP_DEG: float = 10.0
"""Default largest angle (degrees) of one arc segment of a FOV polygon: 36 segments
for a disc, area exact, boundary within 0.26 % of the radius."""

CENTRAL_MERIDIAN_DEG: float = 111.0
"""Central meridian (degrees east) of EPSG:4546."""

ACTIVE_STATUSES: frozenset[str] = frozenset({"online"})
"""Camera statuses that cover anything (offline and fault cover nothing)."""


# --- DORI ranges ---------------------------------------------------------------------


def dori_distance_m(resolution_h_px: ArrayLike, hfov_deg: ArrayLike, ppm: ArrayLike) -> FloatArray:
    """Largest distance (metres) at which a camera reaches ``ppm`` pixels per metre.

    ``d = H_px / (2 · ppm · tan(HFOV/2))``, broadcast over the three inputs.
    ``hfov_deg`` must be the imaging HFOV of the lens, in (0, 180) degrees: use
    :func:`effective_hfov_deg` for stored HFOVs (360 for dome/PTZ). Values outside
    (0, 180) give NaN rather than a negative or infinite distance.
    """
    h = np.asarray(resolution_h_px, dtype=np.float64)
    fov = np.asarray(hfov_deg, dtype=np.float64)
    p = np.asarray(ppm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = h / (2.0 * p * np.tan(np.radians(fov) / 2.0))
    ok = (fov > 0.0) & (fov < WIDE_HFOV_DEG)
    return np.where(ok, d, np.nan)


def effective_hfov_deg(kind: ArrayLike, hfov_deg: ArrayLike) -> FloatArray:
    """The HFOV (degrees) that sets a camera's pixel density.

    The stored ``hfov_deg`` when it is below 180°, else the nominal lens HFOV of the
    camera's ``kind`` (:data:`LENS_HFOV_DEG`; unknown kinds use the bullet's 90°).
    """
    fov = np.asarray(hfov_deg, dtype=np.float64)
    kinds = np.asarray(kind, dtype=object)
    lens = np.full(np.broadcast_shapes(kinds.shape, fov.shape), LENS_HFOV_DEG["bullet"])
    kinds = np.broadcast_to(kinds, lens.shape)
    for name, value in LENS_HFOV_DEG.items():
        lens[kinds == name] = value
    return np.where(fov < WIDE_HFOV_DEG, fov, lens)


def level_ranges_m(
    kind: ArrayLike,
    resolution_h_px: ArrayLike,
    hfov_deg: ArrayLike,
    range_override_m: ArrayLike | None = None,
) -> FloatArray:
    """Range (metres) of each camera at each DORI level: an ``(n, 4)`` array.

    Columns follow :data:`DORI_LEVELS` (detect, observe, recognize, identify), so each
    row is non-increasing. Each is :func:`dori_distance_m` at the level's
    :data:`DORI_PPM` for the camera's :func:`effective_hfov_deg`, capped by
    ``range_override_m`` (NaN or None: no cap). Inputs are 1-d arrays (or scalars)
    of equal length.
    """
    kinds = np.atleast_1d(np.asarray(kind, dtype=object))
    h = np.atleast_1d(np.asarray(resolution_h_px, dtype=np.float64))
    fov = np.atleast_1d(np.asarray(hfov_deg, dtype=np.float64))
    n = np.broadcast_shapes(kinds.shape, h.shape, fov.shape)
    fov_eff = effective_hfov_deg(np.broadcast_to(kinds, n), np.broadcast_to(fov, n))
    ppm = np.array([DORI_PPM[level] for level in DORI_LEVELS])
    ranges = dori_distance_m(np.broadcast_to(h, n)[:, None], fov_eff[:, None], ppm[None, :])
    if range_override_m is not None:
        cap = np.atleast_1d(np.asarray(range_override_m, dtype=np.float64))
        cap = np.broadcast_to(np.where(np.isnan(cap), np.inf, cap), n)
        ranges = np.minimum(ranges, cap[:, None])
    return ranges


def is_active(status: ArrayLike) -> NDArray[np.bool_]:
    """True for cameras whose ``status`` covers anything (``'online'``)."""
    s = np.asarray(status, dtype=object)
    return np.isin(s, list(ACTIVE_STATUSES))


# --- azimuths --------------------------------------------------------------------------


def grid_convergence_deg(x_m: ArrayLike, y_m: ArrayLike) -> FloatArray:
    """Meridian convergence (degrees) at EPSG:4546 points: the true azimuth of grid north.

    ``γ = atan(tan(λ - 111°) · sin φ)`` (the spherical transverse Mercator formula;
    the ellipsoid changes it by < 1e-5° here), negative west of the central meridian.
    A true azimuth ``A`` is the grid azimuth ``A - γ``.
    """
    lon, lat = from_metric(np.asarray(x_m, dtype=np.float64), np.asarray(y_m, dtype=np.float64))
    lam = np.radians(np.asarray(lon) - CENTRAL_MERIDIAN_DEG)
    return np.degrees(np.arctan(np.tan(lam) * np.sin(np.radians(lat))))


def _grid_azimuth(
    x: FloatArray, y: FloatArray, azimuth_deg: FloatArray, north: North
) -> FloatArray:
    if north == "grid":
        return azimuth_deg
    if north != "true":
        raise ValueError(f"north must be 'true' or 'grid', got {north!r}")
    if azimuth_deg.size == 0:
        return azimuth_deg
    return azimuth_deg - grid_convergence_deg(x, y)


# --- FOV polygons ------------------------------------------------------------------------


def fov_sectors(
    x_m: ArrayLike,
    y_m: ArrayLike,
    azimuth_deg: ArrayLike,
    hfov_deg: ArrayLike,
    radius_m: ArrayLike,
    *,
    arc_step_deg: float = DEFAULT_ARC_STEP_DEG,
    north: North = "true",
) -> NDArray[np.object_]:
    """FOV polygons (EPSG:4546) of cameras at (``x_m``, ``y_m``): an object array.

    A camera with ``hfov_deg < 360`` sees a sector: apex at the camera, arc of radius
    ``radius_m`` from ``azimuth_deg - hfov_deg/2`` to ``azimuth_deg + hfov_deg/2``
    (degrees clockwise from north; ``north`` says which, see the module docstring).
    With ``hfov_deg >= 360`` it sees a disc (no apex). A radius that is 0, negative or
    not finite gives an empty polygon.

    The arc is split into ``ceil(hfov / arc_step_deg)`` equal segments and scaled so
    the polygon area is exactly ``π r² · min(hfov, 360) / 360`` (see the module
    docstring). Rings are counter-clockwise (RFC 7946 exterior orientation).

    Vectorised: coordinates are computed as numpy arrays for all cameras with the
    same vertex count at once and turned into polygons by :func:`shapely.polygons`.
    """
    x, y, az, fov, r = np.broadcast_arrays(
        *(
            np.atleast_1d(np.asarray(a, dtype=np.float64))
            for a in (x_m, y_m, azimuth_deg, hfov_deg, radius_m)
        )
    )
    if not arc_step_deg > 0:
        raise ValueError(f"arc_step_deg must be > 0, got {arc_step_deg!r}")
    n = x.shape[0]
    out = np.empty(n, dtype=object)
    ok = np.isfinite(r) & (r > 0) & np.isfinite(x) & np.isfinite(y) & (fov > 0)
    out[~ok] = shapely.from_wkt("POLYGON EMPTY")
    if not ok.any():
        return out
    disc = fov >= DISC_HFOV_DEG
    az = np.where(disc, 0.0, np.nan_to_num(az))
    az_grid = np.where(disc, 0.0, _grid_azimuth(x, y, az, north))
    span = np.where(disc, 360.0, fov)
    segments = np.maximum(np.ceil(span / arc_step_deg - 1e-9), 1).astype(np.int64)
    if (segments[disc & ok] < 3).any():
        raise ValueError("arc_step_deg must be <= 120 so a disc has at least 3 segments")
    theta = np.radians(span) / segments
    # Area of the polygon with vertices at r': n/2 · r'² · sin θ; the sector's: n/2 · r² · θ.
    scale = np.sqrt(theta / np.sin(theta))
    # coordinates per group of equal vertex count, then one ragged-array construction
    rows, rings = [], []
    for is_disc in (False, True):
        for k in np.unique(segments[ok & (disc == is_disc)]):
            idx = np.flatnonzero(ok & (disc == is_disc) & (segments == k))
            rows.append(idx)
            rings.append(
                _ring_coords(
                    x[idx], y[idx], az_grid[idx], span[idx], r[idx] * scale[idx], int(k), is_disc
                )
            )
    idx = np.concatenate(rows)
    counts = np.concatenate([np.full(len(c), c.shape[1]) for c in rings])
    coords = np.concatenate([c.reshape(-1, 2) for c in rings])
    offsets = (np.r_[0, np.cumsum(counts)], np.arange(len(idx) + 1))
    out[idx] = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)
    return out


def _ring_coords(
    x: FloatArray,
    y: FloatArray,
    az_deg: FloatArray,
    span_deg: FloatArray,
    r: FloatArray,
    segments: int,
    disc: bool,
) -> FloatArray:
    """Closed exterior rings, ``(len(x), vertices, 2)``, of sectors (or discs) with
    ``segments`` arc segments each."""
    if disc:
        # angles decreasing = counter-clockwise (azimuth runs clockwise)
        steps = -np.arange(segments + 1)[None, :] * (360.0 / segments)
        ang = np.radians(steps) + np.zeros((len(x), 1))
        px = x[:, None] + r[:, None] * np.sin(ang)
        py = y[:, None] + r[:, None] * np.cos(ang)
        px[:, -1] = px[:, 0]
        py[:, -1] = py[:, 0]
    else:
        frac = np.arange(segments, -1, -1)[None, :] / segments  # last arc vertex first: CCW
        ang = np.radians((az_deg - span_deg / 2.0)[:, None] + frac * span_deg[:, None])
        px = np.empty((len(x), segments + 3))
        py = np.empty_like(px)
        px[:, 0] = px[:, -1] = x
        py[:, 0] = py[:, -1] = y
        px[:, 1:-1] = x[:, None] + r[:, None] * np.sin(ang)
        py[:, 1:-1] = y[:, None] + r[:, None] * np.cos(ang)
    return np.stack([px, py], axis=-1)


def fov_sectors_by_level(
    x_m: ArrayLike,
    y_m: ArrayLike,
    azimuth_deg: ArrayLike,
    hfov_deg: ArrayLike,
    ranges_m: ArrayLike,
    *,
    arc_step_deg: float = DEFAULT_ARC_STEP_DEG,
    north: North = "true",
) -> dict[str, NDArray[np.object_]]:
    """:func:`fov_sectors` for each DORI level: ``{level: polygons}``.

    ``ranges_m`` is the ``(n, 4)`` output of :func:`level_ranges_m`. The meridian
    convergence is computed once for all levels.
    """
    x = np.atleast_1d(np.asarray(x_m, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y_m, dtype=np.float64))
    az = np.broadcast_to(np.atleast_1d(np.asarray(azimuth_deg, dtype=np.float64)), x.shape)
    ranges = np.asarray(ranges_m, dtype=np.float64).reshape(len(x), len(DORI_LEVELS))
    az_grid = _grid_azimuth(x, y, np.nan_to_num(az), north) if len(x) else az
    return {
        level: fov_sectors(
            x, y, az_grid, hfov_deg, ranges[:, k], arc_step_deg=arc_step_deg, north="grid"
        )
        for k, level in enumerate(DORI_LEVELS)
    }


# --- visibility ---------------------------------------------------------------------------


def visible_from(
    px: float,
    py: float,
    cam_x: ArrayLike,
    cam_y: ArrayLike,
    azimuth_deg: ArrayLike,
    hfov_deg: ArrayLike,
    ranges_m: ArrayLike,
    *,
    north: North = "true",
) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """Which of the candidate cameras see the point (``px``, ``py``), and how well.

    All coordinates EPSG:4546 metres. Returns, per camera, ``(distance_m,
    bearing_deg, level)``: the planar distance from the camera to the point, the
    bearing of the point from the camera (degrees clockwise from ``north``, [0, 360)),
    and the index in :data:`DORI_LEVELS` of the finest level that sees it, or -1.

    A camera sees the point at a level when ``distance_m <= ranges_m[:, level]`` and
    the bearing is within ``±hfov/2`` of the azimuth (inclusive; any bearing for
    ``hfov >= 360``, and a point at the camera itself). This is the exact geometry;
    the polygons of :func:`fov_sectors` follow it to within 0.26 % of the range.
    ``ranges_m`` is ``(n, 4)`` (:func:`level_ranges_m`); NaN ranges see nothing.
    """
    cx = np.atleast_1d(np.asarray(cam_x, dtype=np.float64))
    cy = np.atleast_1d(np.asarray(cam_y, dtype=np.float64))
    az = np.broadcast_to(np.atleast_1d(np.asarray(azimuth_deg, dtype=np.float64)), cx.shape)
    fov = np.broadcast_to(np.atleast_1d(np.asarray(hfov_deg, dtype=np.float64)), cx.shape)
    ranges = np.asarray(ranges_m, dtype=np.float64)
    ranges = ranges.reshape(len(cx), ranges.shape[-1] if ranges.ndim == 2 else -1)
    dx = float(px) - cx
    dy = float(py) - cy
    distance = np.hypot(dx, dy)
    bearing_grid = np.degrees(np.arctan2(dx, dy))
    if north == "true" and len(cx):
        gamma = grid_convergence_deg(cx, cy)
        bearing = np.mod(bearing_grid + gamma, 360.0)
    elif north in ("true", "grid"):
        bearing = np.mod(bearing_grid, 360.0)
    else:
        raise ValueError(f"north must be 'true' or 'grid', got {north!r}")
    bearing = np.where(bearing >= 360.0, 0.0, bearing)
    off = np.abs(np.mod(bearing - az + 180.0, 360.0) - 180.0)
    in_angle = (fov >= DISC_HFOV_DEG) | (off <= fov / 2.0) | (distance == 0.0)
    level = np.full(len(cx), -1, dtype=np.int64)
    for k in range(ranges.shape[1]):
        seen = in_angle & (distance <= ranges[:, k])
        level[seen] = k
    return distance, bearing, level


class SightIndex:
    """Cameras indexed to ask :func:`visible_from` about one point at a time.

    Built from arrays of n cameras: EPSG:4546 position (metres), azimuth from true
    north and stored HFOV (degrees), and the ``(n, 4)`` level ranges of
    :func:`level_ranges_m`. A camera is a candidate for a point when the point lies in
    the square of side ``2 r`` centred on it, ``r`` its detect range (the longest);
    :meth:`sees` then decides with the exact geometry, so the index never adds or drops
    a camera. Cameras without a positive, finite detect range see nothing.

    Fewer than ``tree_from`` cameras are scanned rather than put in an STRtree: a scan of
    a few hundred costs microseconds, and building the tree costs more than that.
    """

    def __init__(
        self,
        x_m: ArrayLike,
        y_m: ArrayLike,
        azimuth_deg: ArrayLike,
        hfov_deg: ArrayLike,
        ranges_m: ArrayLike,
        *,
        tree_from: int = 1024,
    ):
        self.x_m = np.atleast_1d(np.asarray(x_m, dtype=np.float64))
        n = len(self.x_m)
        self.y_m = np.atleast_1d(np.asarray(y_m, dtype=np.float64))
        self.azimuth_deg = np.broadcast_to(np.asarray(azimuth_deg, dtype=np.float64), (n,))
        self.hfov_deg = np.broadcast_to(np.asarray(hfov_deg, dtype=np.float64), (n,))
        self.ranges_m = np.asarray(ranges_m, dtype=np.float64).reshape(n, len(DORI_LEVELS))
        reach = self.ranges_m[:, 0]
        # NaN and non-positive reaches: no square, so never a candidate
        self._reach = np.where(np.isfinite(reach) & (reach > 0), reach, -np.inf)
        self._tree = None
        if n >= tree_from:
            squares = shapely.box(
                self.x_m - reach, self.y_m - reach, self.x_m + reach, self.y_m + reach
            )
            squares[np.isneginf(self._reach)] = None  # the tree skips them
            self._tree = shapely.STRtree(squares)

    def _candidates(self, px: float, py: float) -> NDArray[np.intp]:
        if self._tree is not None:
            return self._tree.query(shapely.Point(px, py))
        x, y, r = self.x_m, self.y_m, self._reach  # the squares' corners, as the tree has them
        return np.flatnonzero((x - r <= px) & (px <= x + r) & (y - r <= py) & (py <= y + r))

    def __len__(self) -> int:
        return len(self.x_m)

    def sees(
        self, px: float, py: float
    ) -> tuple[NDArray[np.intp], FloatArray, FloatArray, NDArray[np.int64]]:
        """The cameras that see the EPSG:4546 point (``px``, ``py``), in no set order:
        ``(rows, distance_m, bearing_deg, level)``, rows into the arrays the index was
        built from, the rest as :func:`visible_from` gives them (bearing from true
        north, level an index into :data:`DORI_LEVELS`)."""
        rows = self._candidates(px, py)
        if not len(rows):
            nothing = np.empty(0)
            return rows, nothing, nothing, np.empty(0, dtype=np.int64)
        distance, bearing, level = visible_from(
            px,
            py,
            self.x_m[rows],
            self.y_m[rows],
            self.azimuth_deg[rows],
            self.hfov_deg[rows],
            self.ranges_m[rows],
        )
        seen = level >= 0
        return rows[seen], distance[seen], bearing[seen], level[seen]
