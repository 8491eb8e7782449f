"""Coordinate systems used in gridcover and conversions between them.

Supported systems (names are case-insensitive):

``wgs84``
    Longitude/latitude in degrees on WGS 84 (EPSG:4326). The storage CRS.
``cgcs2000``
    Longitude/latitude in degrees on CGCS2000 (EPSG:4490). Treated as identical to
    WGS 84: in Xiangxi the two agree within 0.1 m, far below any accuracy we need.
``gcj02``
    The obfuscated "Mars" coordinates of Chinese web maps (Amap/高德, Tencent, Google
    China): degrees, WGS 84 plus a non-linear offset of a few hundred metres
    (545-600 m in Xiangxi). Outside the rough China bounding box (see
    :func:`out_of_china`) GCJ-02 equals WGS 84.
``bd09``
    Baidu's coordinates: degrees, GCJ-02 plus a further rotation/offset of ~1 km.
    Applied everywhere (no China bounding-box rule), like Baidu's own API.
``EPSG:<code>``
    Any CRS PROJ knows by EPSG code. Axis order is always (x, y) = (lon, lat) or
    (easting, northing) whatever the EPSG definition says (``always_xy=True``);
    projected coordinates are in that CRS's units (metres for EPSG:4546).

The metric working CRS is EPSG:4546, CGCS2000 / 3-degree Gauss-Kruger CM 111E
(metres), see :data:`METRIC_EPSG`, :func:`to_metric`, :func:`from_metric`.

All conversions are vectorised over numpy arrays. Non-finite input coordinates give
NaN outputs (both components) instead of raising.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, overload

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from pyproj.transformer import TransformerGroup

__all__ = [
    "COORD_SYSTEMS",
    "METRIC_EPSG",
    "UnknownCoordSys",
    "bd09_to_gcj02",
    "convert",
    "convert_geometry",
    "from_metric",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "out_of_china",
    "parse_coord_sys",
    "segmentize_then_convert",
    "to_metric",
    "wgs84_to_gcj02",
]

COORD_SYSTEMS: tuple[str, ...] = ("wgs84", "cgcs2000", "gcj02", "bd09")
"""The named coordinate systems every coordinate input accepts (``coord_sys``)."""

METRIC_EPSG: int = 4546
"""CGCS2000 / 3-degree Gauss-Kruger CM 111E; x = easting, y = northing, metres."""

DEFAULT_MAX_SEGMENT_M: float = 50.0
"""Default densification step (metres) before a non-linear transform."""

# --- GCJ-02 -------------------------------------------------------------------
# Krasovsky 1940 ellipsoid, as used by the published GCJ-02 offset formula.
_KRASOVSKY_A = 6378245.0
_KRASOVSKY_EE = 0.00669342162296594323
# The "rough China" bounding box every public GCJ-02 implementation uses.
_CHINA_LON_MIN, _CHINA_LON_MAX = 72.004, 137.8347
_CHINA_LAT_MIN, _CHINA_LAT_MAX = 0.8293, 55.8271

# Inverse iterations are fixed-point steps w -= residual. The maps' Jacobians differ
# from the identity by < 0.0075 (GCJ-02) / < 0.02 (BD-09), so the error left after a
# step is < 0.02 * that step: stopping once every step is below 1e-7 degrees leaves
# < 2e-9 degrees (0.2 mm); in practice ~1e-11 degrees. GCJ-02 takes 4 steps.
_INVERSE_TOL_DEG = 1e-7
_INVERSE_MAX_ITER = 30
# Points per slice in the vectorised kernels (see _chunked).
_CHUNK = 16384

# --- BD-09 --------------------------------------------------------------------
_BD_X_PI = math.pi * 3000.0 / 180.0
_BD_DLON = 0.0065
_BD_DLAT = 0.006

# An upper bound of the length of one degree (of latitude at the poles, 111.69 km;
# a degree of longitude is at most 111.32 km), so n degrees never exceed n * this.
_MAX_M_PER_DEG = 111_700.0

_WGS84_NAMES = frozenset({"wgs84", "cgcs2000"})
_WGS84_EPSG = frozenset({4326, 4490})
_EPSG_RE = re.compile(r"^epsg:(\d{1,6})$", re.IGNORECASE)


class UnknownCoordSys(ValueError):
    """A ``coord_sys`` value that is not one of the accepted names/EPSG codes."""


def _allowed_text(allow_epsg: bool) -> str:
    if allow_epsg:
        return "wgs84, cgcs2000, gcj02, bd09 or EPSG:<code>"
    return "wgs84, cgcs2000, gcj02 or bd09"


@functools.lru_cache(maxsize=256)
def _epsg_known(code: int) -> bool:
    try:
        CRS.from_epsg(code)
    except CRSError:
        return False
    return True


def parse_coord_sys(value: str, *, allow_epsg: bool = True) -> str:
    """Normalise and validate a ``coord_sys`` value.

    Returns one of ``"wgs84"``, ``"cgcs2000"``, ``"gcj02"``, ``"bd09"`` (lower case)
    or ``"EPSG:<code>"`` (upper-case prefix, code without leading zeros). Input is
    case-insensitive and surrounding whitespace is ignored.

    ``allow_epsg=False`` accepts only the four names: use it for API point inputs;
    file imports keep the default ``True``.

    Raises :class:`UnknownCoordSys` (a ``ValueError``) whose message names the bad
    value and lists the allowed values, e.g.
    ``unknown coord_sys 'xyz': use wgs84, cgcs2000, gcj02, bd09 or EPSG:<code>``.
    """
    if not isinstance(value, str):
        raise UnknownCoordSys(f"unknown coord_sys {value!r}: use {_allowed_text(allow_epsg)}")
    text = value.strip()
    low = text.lower()
    if low in COORD_SYSTEMS:
        return low
    match = _EPSG_RE.match(text)
    if match and allow_epsg:
        code = int(match.group(1))
        if not _epsg_known(code):
            raise UnknownCoordSys(
                f"unknown coord_sys {value!r}: EPSG:{code} is not known to PROJ; "
                f"use {_allowed_text(allow_epsg)}"
            )
        return f"EPSG:{code}"
    raise UnknownCoordSys(f"unknown coord_sys {value!r}: use {_allowed_text(allow_epsg)}")


def _kind(value: str) -> str | int:
    """Map a coord_sys to the internal kind: 'wgs84', 'gcj02', 'bd09' or an EPSG int."""
    norm = parse_coord_sys(value, allow_epsg=True)
    if norm in _WGS84_NAMES:
        return "wgs84"
    if norm in ("gcj02", "bd09"):
        return norm
    code = int(norm[5:])
    return "wgs84" if code in _WGS84_EPSG else code


@functools.lru_cache(maxsize=64)
def _transformer(src_epsg: int, dst_epsg: int) -> Transformer:
    """A transformer shared by every thread (pyproj >= 3.1 makes its PROJ object again in
    each thread that uses it, so sharing is safe).

    Made from two EPSG codes, that per-thread object comes from a search of PROJ's
    database: ~160 ms in every new thread, and a server's request threads come and go.
    When the search finds exactly one operation (EPSG:4326 <-> EPSG:4546 or 3857, say),
    its pipeline is pinned instead: the same numbers, ~0.5 ms per thread."""
    group = TransformerGroup(f"EPSG:{src_epsg}", f"EPSG:{dst_epsg}", always_xy=True)
    if len(group.transformers) == 1 and not group.unavailable_operations:
        return Transformer.from_pipeline(group.transformers[0].definition)
    return Transformer.from_crs(f"EPSG:{src_epsg}", f"EPSG:{dst_epsg}", always_xy=True)


def _pyproj(x: NDArray, y: NDArray, src: int, dst: int) -> tuple[NDArray, NDArray]:
    rx, ry = _transformer(src, dst).transform(x, y)
    return np.asarray(rx, dtype=np.float64), np.asarray(ry, dtype=np.float64)


# --- GCJ-02 core ----------------------------------------------------------------


def out_of_china(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
    """True where (lon, lat) in degrees lies outside the rough China bounding box.

    The box (lon 72.004-137.8347, lat 0.8293-55.8271) is the rule of the public
    GCJ-02 implementations: there GCJ-02 is defined to equal WGS 84. NaN gives False.
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    return (
        (lon < _CHINA_LON_MIN)
        | (lon > _CHINA_LON_MAX)
        | (lat < _CHINA_LAT_MIN)
        | (lat > _CHINA_LAT_MAX)
    )


def _gcj_angles(lon: NDArray, lat: NDArray) -> tuple[NDArray, ...]:
    """sin/cos of the three base angles of the GCJ-02 offset at (lon, lat) degrees.

    Every sine in the published formula is a sine of an integer multiple of
    ``pi*(lon-105)/60`` or ``pi*(lat-35)/60`` (periods 1/3, 2, 6, 24 and 60 degrees),
    plus the geodetic latitude; see :func:`_gcj_offset_from`.
    """
    ax = (lon - 105.0) * (np.pi / 60.0)
    ay = (lat - 35.0) * (np.pi / 60.0)
    sphi = np.sin(lat * (np.pi / 180.0))
    # |lat| <= 90 so cos(lat) >= 0, and >= 0.56 inside the China box: no
    # cancellation in the square root, one libm call saved.
    cphi = np.sqrt(1.0 - sphi * sphi)
    return np.sin(ax), np.cos(ax), np.sin(ay), np.cos(ay), sphi, cphi


def _rotate(s: NDArray, c: NDArray, eps: NDArray) -> tuple[NDArray, NDArray]:
    """sin/cos of (a + eps) from sin/cos of a, by the addition theorem and short series.

    Series truncation error <= eps**6/720: < 2e-15 for |eps| < 0.01 rad. Lets the
    inverse iterations reuse the trigonometry of their start point (libm sines
    dominate the cost): GCJ-02 iterates move < 0.012 degrees from it (eps < 7e-4 rad,
    exact to double precision).
    """
    e2 = eps * eps
    ce = 1.0 - e2 * (0.5 - e2 * (1.0 / 24.0))
    se = eps * (1.0 - e2 * (1.0 / 6.0 - e2 * (1.0 / 120.0)))
    return s * ce + c * se, c * ce - s * se


def _gcj_offset_from(
    lon: NDArray,
    lat: NDArray,
    sx: NDArray,
    cx: NDArray,
    sy: NDArray,
    cy: NDArray,
    sphi: NDArray,
    cphi: NDArray,
) -> tuple[NDArray, NDArray]:
    """The GCJ-02 offset (dlon, dlat) in degrees at WGS 84 (lon, lat), no box rule.

    ``sx, cx, sy, cy, sphi, cphi`` are from :func:`_gcj_angles` (or rotated copies).
    The published formula's eleven sines are rebuilt from them with double/triple
    angle identities (absolute error < 1e-13, i.e. < 1e-17 degrees of offset),
    which is 2-3x faster than calling ``np.sin`` for each.
    """
    x = lon - 105.0
    y = lat - 35.0
    # angle multiples of a = pi*x/60: 2a = pi*x/30, 5a = pi*x/12, 20a = pi*x/3,
    # 60a = pi*x, 120a = 2*pi*x, 360a = 6*pi*x
    s2 = 2.0 * sx * cx
    c2 = 1.0 - 2.0 * sx * sx
    s4 = 2.0 * s2 * c2
    c4 = 1.0 - 2.0 * s2 * s2
    s5 = s4 * cx + c4 * sx
    c5 = c4 * cx - s4 * sx
    s10 = 2.0 * s5 * c5
    c10 = 1.0 - 2.0 * s5 * s5
    s20 = 2.0 * s10 * c10
    c20 = 1.0 - 2.0 * s10 * s10
    s60 = s20 * (3.0 - 4.0 * s20 * s20)
    c60 = c20 * (4.0 * c20 * c20 - 3.0)
    s120 = 2.0 * s60 * c60
    # 20 sin(6 pi x) + 20 sin(2 pi x), shared by both components
    common = s120 * (80.0 - 80.0 * s120 * s120)

    # same multiples of b = pi*y/60
    t2 = 2.0 * sy * cy
    d2 = 1.0 - 2.0 * sy * sy
    t4 = 2.0 * t2 * d2
    d4 = 1.0 - 2.0 * t2 * t2
    t5 = t4 * cy + d4 * sy
    d5 = d4 * cy - t4 * sy
    t10 = 2.0 * t5 * d5
    d10 = 1.0 - 2.0 * t5 * t5
    t20 = 2.0 * t10 * d10
    t60 = t20 * (3.0 - 4.0 * t20 * t20)

    xy = x * y
    sqrt_abs_x = np.sqrt(np.abs(x))
    t_lat = common + 20.0 * t60 + 40.0 * t20 + 160.0 * t5 + 320.0 * t2
    t_lat *= 2.0 / 3.0
    t_lat += -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * xy + 0.2 * sqrt_abs_x
    t_lon = common + 20.0 * s60 + 40.0 * s20 + 150.0 * s5 + 300.0 * s2
    t_lon *= 2.0 / 3.0
    t_lon += 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * xy + 0.1 * sqrt_abs_x

    magic = 1.0 - _KRASOVSKY_EE * sphi * sphi
    sqrt_magic = np.sqrt(magic)
    # t_* are metre-like; divide by the Krasovsky meridian / parallel radii.
    dlat = t_lat * (magic * sqrt_magic) * ((180.0 / np.pi) / (_KRASOVSKY_A * (1.0 - _KRASOVSKY_EE)))
    dlon = t_lon * (sqrt_magic / cphi) * ((180.0 / np.pi) / _KRASOVSKY_A)
    return dlon, dlat


def _gcj_offset(lon: NDArray, lat: NDArray) -> tuple[NDArray, NDArray]:
    """The GCJ-02 offset (dlon, dlat) in degrees at WGS 84 (lon, lat), no box rule."""
    return _gcj_offset_from(lon, lat, *_gcj_angles(lon, lat))


def _flat_pair(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray, NDArray, tuple[int, ...]]:
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    x, y = np.broadcast_arrays(x, y)
    return np.ravel(x), np.ravel(y), x.shape


def _wgs_to_gcj_chunk(lon: NDArray, lat: NDArray) -> tuple[NDArray, NDArray]:
    dlon, dlat = _gcj_offset(lon, lat)
    outside = out_of_china(lon, lat)
    if outside.any():
        dlon[outside] = 0.0
        dlat[outside] = 0.0
    return lon + dlon, lat + dlat


def _step(w_lon: NDArray, w_lat: NDArray, r_lon: NDArray, r_lat: NDArray, active: NDArray) -> bool:
    """One fixed-point step ``w -= r`` on the still active points, in place.

    A point stops (and is left alone afterwards) once its own step is below the
    tolerance, so its result does not depend on which other points share the
    batch: a point converts identically alone or among a million. NaN steps count
    as converged. Returns True when no point is active any more.
    """
    done = ~((np.abs(r_lon) > _INVERSE_TOL_DEG) | (np.abs(r_lat) > _INVERSE_TOL_DEG))
    if active.all():
        w_lon -= r_lon
        w_lat -= r_lat
    else:
        w_lon -= np.where(active, r_lon, 0.0)
        w_lat -= np.where(active, r_lat, 0.0)
    active &= ~done
    return not active.any()


def _gcj_to_wgs_chunk(glon: NDArray, glat: NDArray) -> tuple[NDArray, NDArray]:
    out_lon = glon.copy()
    out_lat = glat.copy()
    inside = ~out_of_china(glon, glat)
    if not inside.any():
        return out_lon, out_lat
    all_inside = bool(inside.all())
    g_lon = glon if all_inside else glon[inside]
    g_lat = glat if all_inside else glat[inside]
    base = _gcj_angles(g_lon, g_lat)
    sx0, cx0, sy0, cy0, sp0, cp0 = base
    w_lon = g_lon.copy()
    w_lat = g_lat.copy()
    active = np.ones(g_lon.shape, dtype=bool)
    for i in range(_INVERSE_MAX_ITER):
        if i == 0:
            angles = base
        else:
            # trig at the iterate from the trig at the start point (no libm calls)
            e_lon = w_lon - g_lon
            e_lat = w_lat - g_lat
            sx, cx = _rotate(sx0, cx0, e_lon * (np.pi / 60.0))
            sy, cy = _rotate(sy0, cy0, e_lat * (np.pi / 60.0))
            sp, cp = _rotate(sp0, cp0, e_lat * (np.pi / 180.0))
            angles = (sx, cx, sy, cy, sp, cp)
        dlon, dlat = _gcj_offset_from(w_lon, w_lat, *angles)
        # residual r = (w + offset(w)) - g; the fixed-point step is w -= r
        r_lon = w_lon + dlon - g_lon
        r_lat = w_lat + dlat - g_lat
        if _step(w_lon, w_lat, r_lon, r_lat, active):
            break
    if all_inside:
        return w_lon, w_lat
    out_lon[inside] = w_lon
    out_lat[inside] = w_lat
    return out_lon, out_lat


def _chunked(fn: Any, lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray, NDArray]:
    """Apply ``fn`` to cache-sized slices: the ~100 temporaries of the offset formula
    then stay in L2, which halves the run time on a million points."""
    x, y, shape = _flat_pair(lon, lat)
    n = x.size
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if n <= _CHUNK:
            rx, ry = fn(x, y)
        else:
            rx = np.empty(n, dtype=np.float64)
            ry = np.empty(n, dtype=np.float64)
            for i in range(0, n, _CHUNK):
                rx[i : i + _CHUNK], ry[i : i + _CHUNK] = fn(x[i : i + _CHUNK], y[i : i + _CHUNK])
    return rx.reshape(shape), ry.reshape(shape)


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray, NDArray]:
    """WGS 84 (lon, lat) degrees -> GCJ-02 (lon, lat) degrees, as new float64 arrays.

    Identity outside the China box (:func:`out_of_china`, tested on the WGS 84 input).
    """
    return _chunked(_wgs_to_gcj_chunk, lon, lat)


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray, NDArray]:
    """GCJ-02 (lon, lat) degrees -> WGS 84 (lon, lat) degrees, exact inverse.

    Solves ``wgs + offset(wgs) = gcj`` by fixed-point iteration (the offset's
    Jacobian is < 0.0075, so each step gains 2+ digits) until the remaining error
    is below ~1e-9 degrees (0.1 mm); typically the result maps back to the input
    within 1e-11 degrees (1 micrometre). Usually 4 steps. Identity where the GCJ-02
    input is outside the China box: the inverse of the box rule, exact everywhere
    except within ~1 km of the box edges, none of which come near China's land.
    """
    return _chunked(_gcj_to_wgs_chunk, lon, lat)


def _bd_forward(x: NDArray, y: NDArray, s_y: NDArray, c_x: NDArray) -> tuple[NDArray, NDArray]:
    """GCJ-02 -> BD-09 given ``s_y = sin(lat*pi*3000/180)``, ``c_x = cos(lon*pi*3000/180)``.

    Baidu's formula is z = r + 2e-5 sin(..), theta = atan2(y, x) + 3e-6 cos(..),
    out = z (cos theta, sin theta) + (0.0065, 0.006). The extra angle is < 3e-6 rad,
    so the rotation by it is written as a two-term series (exact to 1e-17) and the
    atan2/cos/sin of the full angle are not needed.
    """
    r = np.maximum(np.hypot(x, y), 1e-300)
    k = 1.0 + 0.00002 * s_y / r
    d = 0.000003 * c_x
    cd = 1.0 - 0.5 * d * d
    return k * (x * cd - y * d) + _BD_DLON, k * (y * cd + x * d) + _BD_DLAT


def _gcj_to_bd_chunk(x: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
    return _bd_forward(x, y, np.sin(y * _BD_X_PI), np.cos(x * _BD_X_PI))


def _bd_to_gcj_chunk(bx: NDArray, by: NDArray) -> tuple[NDArray, NDArray]:
    # Start at the BD-09 point less the constant shift (off by <= 4e-4 degrees,
    # the rotation term) and iterate; the map's Jacobian is within 0.02 of the
    # identity, so each step gains ~1.7 digits.
    g_lon = bx - _BD_DLON
    g_lat = by - _BD_DLAT
    a_y0 = g_lat * _BD_X_PI
    a_x0 = g_lon * _BD_X_PI
    sy0, cy0 = np.sin(a_y0), np.cos(a_y0)
    sx0, cx0 = np.sin(a_x0), np.cos(a_x0)
    s_y, c_x = sy0, cx0
    w_lon = g_lon.copy()
    w_lat = g_lat.copy()
    active = np.ones(g_lon.shape, dtype=bool)
    for i in range(_INVERSE_MAX_ITER):
        if i > 0:
            # |eps| < 0.03 rad here: _rotate's series error (eps**6/720 < 1e-12) is
            # scaled by the 2e-5 / 3e-6 amplitudes to < 1e-16 degrees.
            s_y, _ = _rotate(sy0, cy0, (w_lat - g_lat) * _BD_X_PI)
            _, c_x = _rotate(sx0, cx0, (w_lon - g_lon) * _BD_X_PI)
        f_lon, f_lat = _bd_forward(w_lon, w_lat, s_y, c_x)
        if _step(w_lon, w_lat, f_lon - bx, f_lat - by, active):
            break
    return w_lon, w_lat


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray, NDArray]:
    """GCJ-02 (lon, lat) degrees -> BD-09 (lon, lat) degrees (Baidu's formula).

    Applied everywhere (Baidu has no out-of-China rule for this step).
    """
    return _chunked(_gcj_to_bd_chunk, lon, lat)


def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray, NDArray]:
    """BD-09 (lon, lat) degrees -> GCJ-02 (lon, lat) degrees, exact inverse.

    The usual closed-form inverse evaluates the perturbation terms at the BD-09
    point instead of the GCJ-02 one and is off by up to ~1 m; instead this iterates
    the forward formula until the remaining error is below ~1e-9 degrees (0.1 mm).
    """
    return _chunked(_bd_to_gcj_chunk, lon, lat)


# --- generic conversion ----------------------------------------------------------


def _to_wgs84(x: NDArray, y: NDArray, kind: str | int) -> tuple[NDArray, NDArray]:
    if kind == "wgs84":
        return x, y
    if kind == "gcj02":
        return gcj02_to_wgs84(x, y)
    if kind == "bd09":
        return gcj02_to_wgs84(*bd09_to_gcj02(x, y))
    return _pyproj(x, y, int(kind), 4326)


def _from_wgs84(x: NDArray, y: NDArray, kind: str | int) -> tuple[NDArray, NDArray]:
    if kind == "wgs84":
        return x, y
    if kind == "gcj02":
        return wgs84_to_gcj02(x, y)
    if kind == "bd09":
        return gcj02_to_bd09(*wgs84_to_gcj02(x, y))
    return _pyproj(x, y, 4326, int(kind))


def _convert_arrays(
    x: NDArray, y: NDArray, src: str | int, dst: str | int
) -> tuple[NDArray, NDArray]:
    """Convert float64 arrays of equal shape; always returns new arrays."""
    if src == dst:
        rx, ry = x.copy(), y.copy()
    elif src == "gcj02" and dst == "bd09":
        rx, ry = gcj02_to_bd09(x, y)
    elif src == "bd09" and dst == "gcj02":
        rx, ry = bd09_to_gcj02(x, y)
    elif isinstance(src, int) and isinstance(dst, int):
        rx, ry = _pyproj(x, y, src, dst)
    else:
        rx, ry = _from_wgs84(*_to_wgs84(x, y, src), dst)
        if rx is x:
            rx, ry = x.copy(), y.copy()
    with np.errstate(invalid="ignore"):
        # pyproj reports failures as inf; inf inputs may come back as inf, too.
        bad = ~(np.isfinite(x) & np.isfinite(y) & np.isfinite(rx) & np.isfinite(ry))
    if bad.any():
        rx = np.where(bad, np.nan, rx)
        ry = np.where(bad, np.nan, ry)
    return rx, ry


# --- scalar fast path ------------------------------------------------------------
# A single point through the numpy kernels costs ~0.2-0.6 ms of per-call overhead;
# API point inputs are single points, so they get the same algorithms in plain
# float arithmetic (~5-15 us). tests/geo/test_crs.py checks both paths agree.


def _is_real(value: object) -> bool:
    return isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool)


def _gcj_offset_scalar(lon: float, lat: float) -> tuple[float, float]:
    x = lon - 105.0
    y = lat - 35.0
    pi = math.pi
    common = 20.0 * math.sin(6.0 * pi * x) + 20.0 * math.sin(2.0 * pi * x)
    sqrt_abs_x = math.sqrt(abs(x))
    t_lat = common + 20.0 * math.sin(pi * y) + 40.0 * math.sin(pi * y / 3.0)
    t_lat += 160.0 * math.sin(pi * y / 12.0) + 320.0 * math.sin(pi * y / 30.0)
    t_lat = t_lat * (2.0 / 3.0) - 100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y
    t_lat += 0.2 * sqrt_abs_x
    t_lon = common + 20.0 * math.sin(pi * x) + 40.0 * math.sin(pi * x / 3.0)
    t_lon += 150.0 * math.sin(pi * x / 12.0) + 300.0 * math.sin(pi * x / 30.0)
    t_lon = t_lon * (2.0 / 3.0) + 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y
    t_lon += 0.1 * sqrt_abs_x
    sphi = math.sin(lat * (pi / 180.0))
    magic = 1.0 - _KRASOVSKY_EE * sphi * sphi
    sqrt_magic = math.sqrt(magic)
    dlat = t_lat * (magic * sqrt_magic) * ((180.0 / pi) / (_KRASOVSKY_A * (1.0 - _KRASOVSKY_EE)))
    dlon = t_lon * (sqrt_magic / math.sqrt(1.0 - sphi * sphi)) * ((180.0 / pi) / _KRASOVSKY_A)
    return dlon, dlat


def _inside_china(lon: float, lat: float) -> bool:
    return _CHINA_LON_MIN <= lon <= _CHINA_LON_MAX and _CHINA_LAT_MIN <= lat <= _CHINA_LAT_MAX


def _wgs_to_gcj_scalar(lon: float, lat: float) -> tuple[float, float]:
    if not _inside_china(lon, lat):
        return lon, lat
    dlon, dlat = _gcj_offset_scalar(lon, lat)
    return lon + dlon, lat + dlat


def _gcj_to_wgs_scalar(lon: float, lat: float) -> tuple[float, float]:
    if not _inside_china(lon, lat):
        return lon, lat
    w_lon, w_lat = lon, lat
    for _ in range(_INVERSE_MAX_ITER):
        dlon, dlat = _gcj_offset_scalar(w_lon, w_lat)
        r_lon = w_lon + dlon - lon
        r_lat = w_lat + dlat - lat
        w_lon -= r_lon
        w_lat -= r_lat
        if abs(r_lon) <= _INVERSE_TOL_DEG and abs(r_lat) <= _INVERSE_TOL_DEG:
            break
    return w_lon, w_lat


def _gcj_to_bd_scalar(lon: float, lat: float) -> tuple[float, float]:
    z = math.hypot(lon, lat) + 0.00002 * math.sin(lat * _BD_X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _BD_X_PI)
    return z * math.cos(theta) + _BD_DLON, z * math.sin(theta) + _BD_DLAT


def _bd_to_gcj_scalar(lon: float, lat: float) -> tuple[float, float]:
    g_lon, g_lat = lon - _BD_DLON, lat - _BD_DLAT
    for _ in range(_INVERSE_MAX_ITER):
        f_lon, f_lat = _gcj_to_bd_scalar(g_lon, g_lat)
        r_lon = f_lon - lon
        r_lat = f_lat - lat
        g_lon -= r_lon
        g_lat -= r_lat
        if abs(r_lon) <= _INVERSE_TOL_DEG and abs(r_lat) <= _INVERSE_TOL_DEG:
            break
    return g_lon, g_lat


def _convert_scalar(lon: float, lat: float, src: str, dst: str) -> tuple[float, float]:
    """One point between the named systems ('wgs84', 'gcj02', 'bd09')."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return math.nan, math.nan
    if src == dst:
        return lon, lat
    if src == "bd09":
        lon, lat = _bd_to_gcj_scalar(lon, lat)
        if dst == "gcj02":
            return lon, lat
        src = "gcj02"
    if src == "gcj02":
        if dst == "bd09":
            return _gcj_to_bd_scalar(lon, lat)
        return _gcj_to_wgs_scalar(lon, lat)
    # src is wgs84
    lon, lat = _wgs_to_gcj_scalar(lon, lat)
    return _gcj_to_bd_scalar(lon, lat) if dst == "bd09" else (lon, lat)


def _convert_point(lon: float, lat: float, src: str | int, dst: str | int) -> tuple[float, float]:
    """One point between any two kinds, by the same route as :func:`_convert_arrays`."""
    if isinstance(src, str) and isinstance(dst, str):
        return _convert_scalar(lon, lat, src, dst)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return math.nan, math.nan
    if src == dst:
        return lon, lat
    if isinstance(src, int) and isinstance(dst, int):
        x, y = _transformer(src, dst).transform(lon, lat)
    elif isinstance(src, int):
        x, y = _convert_scalar(*_transformer(src, 4326).transform(lon, lat), "wgs84", dst)
    else:
        x, y = _transformer(4326, dst).transform(*_convert_scalar(lon, lat, src, "wgs84"))
    if not (math.isfinite(x) and math.isfinite(y)):
        return math.nan, math.nan
    return float(x), float(y)


@overload
def convert(lon: float, lat: float, src: str, dst: str) -> tuple[float, float]: ...
@overload
def convert(lon: ArrayLike, lat: ArrayLike, src: str, dst: str) -> tuple[NDArray, NDArray]: ...


def convert(lon: Any, lat: Any, src: str, dst: str) -> tuple[Any, Any]:
    """Convert coordinates from ``src`` to ``dst``.

    ``lon``/``lat`` are floats or array-likes (broadcast together). For geographic
    systems they are longitude/latitude in degrees; for a projected ``EPSG:<code>``
    they are x (easting) / y (northing) in that CRS's units. ``src``/``dst`` are any
    value :func:`parse_coord_sys` accepts (``wgs84``, ``cgcs2000``, ``gcj02``,
    ``bd09`` or ``EPSG:<code>``, case-insensitive).

    Returns ``(lon, lat)`` (or ``(x, y)``): Python floats if both inputs are scalars,
    otherwise new float64 arrays of the broadcast shape. Points with any non-finite
    input (or that PROJ cannot transform) come back as NaN in both components.
    Raises :class:`UnknownCoordSys` for an unknown ``src``/``dst``.

    GCJ-02 -> WGS 84 and BD-09 -> GCJ-02 are exact (iterated) inverses of the
    forward formulas, round-trip error far below 1 mm; cgcs2000 and EPSG:4490 are
    treated as identical to WGS 84.
    """
    s = _kind(src)
    d = _kind(dst)
    if _is_real(lon) and _is_real(lat):
        return _convert_point(float(lon), float(lat), s, d)
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    scalar = x.ndim == 0 and y.ndim == 0
    x, y = np.broadcast_arrays(x, y)
    rx, ry = _convert_arrays(x, y, s, d)
    if scalar:
        return float(rx), float(ry)
    return rx, ry


def to_metric(lon: Any, lat: Any) -> tuple[Any, Any]:
    """WGS 84 (lon, lat) degrees -> EPSG:4546 (x easting, y northing) metres.

    Same scalar/array behaviour as :func:`convert`.
    """
    return convert(lon, lat, "wgs84", f"EPSG:{METRIC_EPSG}")


def from_metric(x: Any, y: Any) -> tuple[Any, Any]:
    """EPSG:4546 (x easting, y northing) metres -> WGS 84 (lon, lat) degrees.

    Same scalar/array behaviour as :func:`convert`.
    """
    return convert(x, y, f"EPSG:{METRIC_EPSG}", "wgs84")


# --- geometries -----------------------------------------------------------------


def _metres_per_unit(kind: str | int) -> float:
    """Upper bound of metres per coordinate unit of ``kind`` (for densifying)."""
    if isinstance(kind, str):
        return _MAX_M_PER_DEG
    crs = CRS.from_epsg(kind)
    if crs.is_geographic:
        return _MAX_M_PER_DEG
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return float(factor or 1.0)


def convert_geometry(geoms: Any, src: str, dst: str, *, max_segment_m: float | None = None) -> Any:
    """Convert a shapely geometry, or an array-like of them, from ``src`` to ``dst``.

    Without ``max_segment_m`` every vertex is converted as is (vertex count kept).
    With it, edges are first densified in ``src`` (:func:`shapely.segmentize`) so
    no segment is longer than ``max_segment_m`` metres: a straight edge in one CRS
    is a curve in another (GCJ-02 and projections are non-linear), and without extra
    vertices the converted edge would cut the corner. For geographic ``src`` the
    step in degrees is ``max_segment_m / 111,700`` (a degree is never longer than
    111.7 km), so segments are at most ``max_segment_m`` long and usually shorter.

    Z coordinates are kept unchanged; ``None`` entries and empty geometries pass
    through. Returns the same kind as the input (a geometry or an ndarray).
    """
    s = _kind(src)
    d = _kind(dst)
    if max_segment_m is not None:
        if not max_segment_m > 0:
            raise ValueError(f"max_segment_m must be > 0, got {max_segment_m!r}")
        if s != d:
            geoms = shapely.segmentize(geoms, max_segment_m / _metres_per_unit(s))
    if s == d:
        return shapely.transform(geoms, lambda c: c, include_z=None)

    def _fn(x: NDArray, y: NDArray, *z: NDArray) -> tuple[NDArray, ...]:
        rx, ry = _convert_arrays(
            np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), s, d
        )
        return (rx, ry, *z)

    return shapely.transform(geoms, _fn, include_z=None, interleaved=False)


def segmentize_then_convert(
    geoms: Any, src: str, dst: str, max_segment_m: float = DEFAULT_MAX_SEGMENT_M
) -> Any:
    """Densify edges to <= ``max_segment_m`` metres (default 50) in ``src``, then convert.

    Use this for polygons and lines (outlines, tilings, FOV sectors) crossing a
    non-linear transform; see :func:`convert_geometry`.
    """
    return convert_geometry(geoms, src, dst, max_segment_m=max_segment_m)
