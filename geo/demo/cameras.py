"""Video cameras (雪亮工程) of the demo world.

A county's cameras come in five groups (shares of its quota):

- ``road`` 28 %: beside national/provincial/county roads, denser near towns;
- ``street`` 30 %: beside town streets;
- ``place`` 14 %: around schools, hospitals, markets, bus stations, squares, clinics
  and committee offices, bullets aimed at the place;
- ``residential`` 16 %: at town houses and shops (residential/enterprise owners);
- ``village`` 12 %: along the first 300 m of village roads (village entrances).

Bullets on roads and streets look along the road (either way, ±8°); domes and PTZ
cameras have a 360° field of view and a nominal heading. ``azimuth_deg`` is
clockwise from true north (computed on the WGS 84 ellipsoid, not from grid north
of EPSG:4546, which differs by ~0.5–1° here).

GB/T 28181 ids: county code + grassroots unit ``00`` + industry code by owner +
type ``132`` (IP camera, 88 %) or ``131`` (camera behind an encoder) + network +
a 6-digit serial numbered from 1 within the county.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray
from pyproj import Geod

from geo.codes import make_gb28181
from geo.demo._util import (
    FloatArray,
    IntArray,
    inside_both,
    largest_remainder,
    line_tangents,
    nearest_index,
    pick,
    points_lonlat,
    rng_for,
)
from geo.demo.admin import CountyPlan
from geo.demo.places import Places
from geo.demo.roads import Roads

CAMERA_KINDS: tuple[str, ...] = ("bullet", "dome", "ptz")
CAMERA_OWNERS: tuple[str, ...] = ("public", "industry", "enterprise", "residential")
CAMERA_STATUSES: tuple[str, ...] = ("online", "offline", "fault")

_GROUP_SHARES = {"road": 0.28, "street": 0.30, "place": 0.14, "residential": 0.16, "village": 0.12}
# GB/T 28181 industry codes (digits 9-10) and network codes (digit 14) by owner:
# 00 public-security road, 01 community, 02 internal (enterprise), 04 traffic road;
# network 0 = video surveillance private network, 8 = social-resource access network.
_INDUSTRY_BY_OWNER = {"public": "00", "industry": "04", "enterprise": "02", "residential": "01"}
_NETWORK_BY_OWNER = {"public": "0", "industry": "0", "enterprise": "8", "residential": "8"}
_RESOLUTIONS = np.array([1280, 1920, 2560, 3840])
_RESOLUTION_P = np.array([0.10, 0.55, 0.25, 0.10])
_BULLET_HFOV = np.array([32, 40, 48, 56, 64, 72, 80, 90, 100, 110])
_HEIGHT_M = {"bullet": (3.5, 6.5), "dome": (2.8, 4.5), "ptz": (6.0, 12.0)}
_STATUS_P = np.array([0.97, 0.02, 0.01])
_RANGE_OVERRIDE_SHARE = 0.07
_ROAD_CLASS_WEIGHT = {"national": 3.0, "provincial": 2.0, "county": 1.0}
_PLACE_WEIGHT = {
    "school": 4.0,
    "hospital": 4.0,
    "market": 4.0,
    "bus_station": 5.0,
    "square": 4.0,
    "clinic": 1.0,
    "village_committee": 1.5,
}
_PLACE_SUFFIXES = ("大门", "东侧", "西侧", "南侧", "北侧", "入口", "停车场", "周界")
_INSTALLED_FROM = np.datetime64("2016-01-01T00:00:00")
_INSTALLED_TO = np.datetime64("2025-06-30T00:00:00")
_GEOD = Geod(ellps="WGS84")


def _explode(roads: Roads, mask: NDArray[np.bool_]) -> tuple[NDArray[np.object_], IntArray]:
    """LineString parts of the selected roads and the road index of each part."""
    chosen = np.flatnonzero(mask)
    parts, index = shapely.get_parts(roads.geometry[chosen], return_index=True)
    return parts, chosen[index]


def _along(
    rng: np.random.Generator,
    lines: NDArray[np.object_],
    weight: FloatArray,
    n: int,
    max_along: float | None = None,
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """``n`` random positions on ``lines`` (line chosen with probability ∝ weight × length).

    Returns (line index, distance along, x, y, tangent x, tangent y); with
    ``max_along`` positions stay within that distance of each line's start.
    """
    lengths = shapely.length(lines)
    reach = lengths if max_along is None else np.minimum(lengths, max_along)
    p = weight * reach
    line = rng.choice(len(lines), n, p=p / p.sum())
    along = rng.uniform(0, 1, n) * reach[line]
    x, y, tx, ty = line_tangents(lines[line], along, lengths[line])
    return line, along, x, y, tx, ty


def _beside(
    rng: np.random.Generator,
    x: FloatArray,
    y: FloatArray,
    tx: FloatArray,
    ty: FloatArray,
    lo: float,
    hi: float,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Points ``lo``–``hi`` m to either side of (x, y) and a view direction along the line."""
    n = len(x)
    side = rng.uniform(lo, hi, n) * rng.choice([-1.0, 1.0], n)
    way = rng.choice([-1.0, 1.0], n)
    return x - ty * side, y + tx * side, tx * way, ty * way


def _kinds(rng: np.random.Generator, n: int, p: tuple[float, float, float]) -> NDArray[np.object_]:
    """``n`` camera kinds drawn with probabilities ``p`` for (bullet, dome, ptz)."""
    return np.asarray(CAMERA_KINDS, dtype=object)[rng.choice(3, n, p=p)]


def _group(
    x: FloatArray,
    y: FloatArray,
    dx: FloatArray,
    dy: FloatArray,
    kind: NDArray[np.object_],
    owner: NDArray[np.object_],
    label: NDArray[np.object_],
) -> pd.DataFrame:
    """One group's camera drafts: position, view direction (EPSG:4546), kind, owner, name."""
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            "dx": dx,
            "dy": dy,
            "kind": kind,
            "owner": owner,
            "name": label,
        }
    )


def _road_group(rng: np.random.Generator, plan: CountyPlan, roads: Roads, n: int) -> pd.DataFrame:
    classes = np.isin(roads.road_class, list(_ROAD_CLASS_WEIGHT))
    lines, road = _explode(roads, classes)
    weight = np.array([_ROAD_CLASS_WEIGHT[c] for c in roads.road_class[road]])
    line, along, x, y, tx, ty = _along(rng, lines, weight, n)
    # Denser near towns: keep a position with probability 0.25–1 by distance to a seat.
    seats = plan.seats_xy
    nearest = nearest_index(x, y, seats[:, 0], seats[:, 1])
    dist = np.hypot(x - seats[nearest, 0], y - seats[nearest, 1])
    keep = rng.random(n) < 0.25 + 0.75 * np.exp(-dist / 2000.0)
    line, along, x, y, tx, ty = (a[keep] for a in (line, along, x, y, tx, ty))
    cx, cy, dx, dy = _beside(rng, x, y, tx, ty, 4.0, 8.0)
    km = (along // 1000).astype(np.int64)
    metres = (along % 1000).astype(np.int64)
    label = (
        pd.Series(roads.name[road[line]])
        + " K"
        + pd.Series(km).astype(str)
        + "+"
        + pd.Series(metres).astype(str).str.zfill(3)
    ).to_numpy(dtype=object)
    owner = np.where(rng.random(len(cx)) < 0.15, "industry", "public").astype(object)
    return _group(cx, cy, dx, dy, _kinds(rng, len(cx), (0.80, 0.08, 0.12)), owner, label)


def _street_group(rng: np.random.Generator, plan: CountyPlan, roads: Roads, n: int) -> pd.DataFrame:
    lines, road = _explode(roads, roads.road_class == "street")
    line, along, x, y, tx, ty = _along(rng, lines, np.ones(len(lines)), n)
    cx, cy, dx, dy = _beside(rng, x, y, tx, ty, 5.0, 9.0)
    town_short = plan.townships["short_name"].to_numpy()[roads.township_pos[road[line]]]
    pole = (along // 30).astype(np.int64) + 1
    label = (
        pd.Series(town_short)
        + pd.Series(roads.name[road[line]])
        + pd.Series(pole).astype(str)
        + "号杆"
    ).to_numpy(dtype=object)
    owner = np.where(rng.random(n) < 0.25, "enterprise", "public").astype(object)
    return _group(cx, cy, dx, dy, _kinds(rng, n, (0.60, 0.28, 0.12)), owner, label)


def _place_group(rng: np.random.Generator, places: Places, n: int) -> pd.DataFrame:
    weight = np.array([_PLACE_WEIGHT[k] for k in places.kind])
    which = rng.choice(len(places), n, p=weight / weight.sum())
    radius = rng.uniform(25.0, 80.0, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    cx = places.x[which] + radius * np.cos(angle)
    cy = places.y[which] + radius * np.sin(angle)
    # Bullets watch the place: aim at its centre, give or take 25°.
    turn = np.radians(rng.uniform(-25.0, 25.0, n))
    to_x, to_y = -np.cos(angle), -np.sin(angle)
    dx = to_x * np.cos(turn) - to_y * np.sin(turn)
    dy = to_x * np.sin(turn) + to_y * np.cos(turn)
    kind = places.kind[which]
    sector = np.isin(kind, ["school", "hospital", "clinic", "bus_station"])
    owner = np.where(sector & (rng.random(n) < 0.5), "industry", "public").astype(object)
    owner[(kind == "market") & (rng.random(n) < 0.4)] = "enterprise"
    label = (pd.Series(places.name[which]) + pd.Series(pick(rng, _PLACE_SUFFIXES, n))).to_numpy(
        dtype=object
    )
    return _group(cx, cy, dx, dy, _kinds(rng, n, (0.55, 0.35, 0.10)), owner, label)


def _residential_group(
    rng: np.random.Generator, addresses: pd.DataFrame, places: Places, n: int
) -> pd.DataFrame:
    homes = addresses[addresses["road"].notna() & (addresses["precision"] == "house_number")]
    if len(homes) == 0:
        return _place_group(rng, places, n)
    which = rng.integers(0, len(homes), n)
    radius = rng.uniform(6.0, 20.0, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    cx = homes["x"].to_numpy()[which] + radius * np.cos(angle)
    cy = homes["y"].to_numpy()[which] + radius * np.sin(angle)
    heading = rng.uniform(0, 2 * np.pi, n)
    residential = rng.random(n) < 0.6
    owner = np.where(residential, "residential", "enterprise").astype(object)
    label = (
        pd.Series(homes["road"].to_numpy()[which])
        + pd.Series(homes["house_number"].to_numpy()[which])
        + pd.Series(np.where(residential, "小区门口", "商铺"))
    ).to_numpy(dtype=object)
    kind = _kinds(rng, n, (0.45, 0.55, 0.0))
    return _group(cx, cy, np.cos(heading), np.sin(heading), kind, owner, label)


def _village_group(
    rng: np.random.Generator, plan: CountyPlan, roads: Roads, centres: FloatArray, n: int
) -> pd.DataFrame:
    village_roads = roads.road_class == "village"
    if not village_roads.any():
        which = rng.integers(0, len(centres), n)
        angle = rng.uniform(0, 2 * np.pi, n)
        cx = centres[which, 0] + 30.0 * np.cos(angle)
        cy = centres[which, 1] + 30.0 * np.sin(angle)
        label = (pd.Series(plan.villages["short_name"].to_numpy()[which]) + "村委会").to_numpy(
            dtype=object
        )
        owner = np.full(n, "public", dtype=object)
        return _group(
            cx,
            cy,
            np.cos(angle),
            np.sin(angle),
            _kinds(rng, n, (0.5, 0.4, 0.1)),
            owner,
            label,
        )
    lines, road = _explode(roads, village_roads)
    # Village roads start at the village centre: cameras watch the way in.
    line, _, x, y, tx, ty = _along(rng, lines, np.ones(len(lines)), n, max_along=300.0)
    cx, cy, dx, dy = _beside(rng, x, y, tx, ty, 3.0, 6.0)
    short = plan.villages["short_name"].to_numpy()[roads.village_pos[road[line]]]
    label = (pd.Series(short) + pd.Series(pick(rng, ("村口", "村部", "路口", "桥头"), n))).to_numpy(
        dtype=object
    )
    owner = np.full(n, "public", dtype=object)
    return _group(cx, cy, dx, dy, _kinds(rng, n, (0.5, 0.4, 0.1)), owner, label)


def _true_azimuth(x: FloatArray, y: FloatArray, dx: FloatArray, dy: FloatArray) -> FloatArray:
    """Azimuth (degrees clockwise from true north, [0, 360)) of direction (dx, dy) at (x, y).

    (dx, dy) is a direction in EPSG:4546; the bearing of the point 10 m ahead is
    measured on the WGS 84 ellipsoid, which removes the grid convergence.
    """
    lon1, lat1 = points_lonlat(x, y)
    lon2, lat2 = points_lonlat(x + 10.0 * dx, y + 10.0 * dy)
    forward, _, _ = _GEOD.inv(lon1, lat1, lon2, lat2)
    azimuth = np.mod(np.round(np.asarray(forward), 1), 360.0)
    return np.where(azimuth >= 360.0, 0.0, azimuth)


def _gb_ids(
    county_code: str, owner: NDArray[np.object_], type_code: NDArray[np.object_]
) -> NDArray[np.object_]:
    """20-digit GB/T 28181 ids: a 14-digit head per (owner, type) + serial 1..n.

    :func:`geo.codes.make_gb28181` builds (and checks) each of the few distinct
    heads; the per-camera serials are appended as vectorised strings.
    """
    heads = np.empty(len(owner), dtype=object)
    for o in CAMERA_OWNERS:
        for t in ("131", "132"):
            mask = (owner == o) & (type_code == t)
            if mask.any():
                full_id = make_gb28181(
                    county_code, t, 0, _INDUSTRY_BY_OWNER[o], _NETWORK_BY_OWNER[o]
                )
                heads[mask] = full_id[:14]
    serial = pd.Series(np.arange(1, len(owner) + 1)).astype(str).str.zfill(6)
    return (pd.Series(heads) + serial).to_numpy(dtype=object)


def county_cameras(
    seed: int,
    plan: CountyPlan,
    quota: int,
    roads: Roads,
    places: Places,
    addresses: pd.DataFrame,
    village_centres: FloatArray,
    outline_m: shapely.Geometry,
    outline_ll: shapely.Geometry,
) -> pd.DataFrame:
    """Exactly ``quota`` cameras of one county, all inside it (both CRSs).

    Columns: gb_id, name, kind, height_m, azimuth_deg, hfov_deg, resolution_h_px,
    range_m (NaN = no override), status, owner, installed_at (tz Asia/Shanghai),
    county_code, x, y (EPSG:4546 metres).
    """
    rng = rng_for(seed, plan.code, "cameras")
    sizes = largest_remainder(quota, np.array(list(_GROUP_SHARES.values())))
    makers = {
        "road": lambda k: _road_group(rng, plan, roads, k),
        "street": lambda k: _street_group(rng, plan, roads, k),
        "place": lambda k: _place_group(rng, places, k),
        "residential": lambda k: _residential_group(rng, addresses, places, k),
        "village": lambda k: _village_group(rng, plan, roads, village_centres, k),
    }
    groups = []
    for (name, make), size in zip(makers.items(), sizes, strict=True):
        got = []
        have = 0
        while have < size:
            # Oversample: the road group thins itself and a few points fall outside.
            batch = make(int((size - have) * (4.0 if name == "road" else 1.2)) + 16)
            batch = batch[
                inside_both(outline_m, outline_ll, batch["x"].to_numpy(), batch["y"].to_numpy())
            ]
            got.append(batch)
            have += len(batch)
        groups.append(pd.concat(got, ignore_index=True).iloc[:size])
    cams = pd.concat(groups, ignore_index=True)
    n = len(cams)
    kind = cams["kind"].to_numpy()
    bullet = kind == "bullet"
    lo = np.array([_HEIGHT_M[k][0] for k in CAMERA_KINDS])[pd.Categorical(kind, CAMERA_KINDS).codes]
    hi = np.array([_HEIGHT_M[k][1] for k in CAMERA_KINDS])[pd.Categorical(kind, CAMERA_KINDS).codes]
    turn = np.radians(np.where(bullet, rng.uniform(-8.0, 8.0, n), 0.0))
    dx0, dy0 = cams["dx"].to_numpy(), cams["dy"].to_numpy()
    dx = dx0 * np.cos(turn) - dy0 * np.sin(turn)
    dy = dx0 * np.sin(turn) + dy0 * np.cos(turn)
    range_m = np.where(
        rng.random(n) < _RANGE_OVERRIDE_SHARE, np.round(rng.uniform(20.0, 150.0, n) / 5) * 5, np.nan
    )
    span = (_INSTALLED_TO - _INSTALLED_FROM).astype("timedelta64[s]").astype(np.int64)
    # More recent installations are more common (the programme grew year by year).
    offset = (rng.random(n) ** 0.7 * span).astype("timedelta64[s]")
    installed = pd.DatetimeIndex(_INSTALLED_FROM + offset).tz_localize("Asia/Shanghai")
    type_code = np.where(rng.random(n) < 0.88, "132", "131").astype(object)
    owner = cams["owner"].to_numpy()
    return pd.DataFrame(
        {
            "gb_id": _gb_ids(plan.code, owner, type_code),
            "name": cams["name"].to_numpy(),
            "kind": kind,
            "height_m": np.round(rng.uniform(lo, hi), 1),
            "azimuth_deg": _true_azimuth(cams["x"].to_numpy(), cams["y"].to_numpy(), dx, dy),
            "hfov_deg": np.where(bullet, rng.choice(_BULLET_HFOV, n), 360).astype(np.float64),
            "resolution_h_px": rng.choice(_RESOLUTIONS, n, p=_RESOLUTION_P),
            "range_m": range_m,
            "status": np.asarray(CAMERA_STATUSES, dtype=object)[rng.choice(3, n, p=_STATUS_P)],
            "owner": owner,
            "installed_at": installed,
            "county_code": plan.code,
            "x": cams["x"].to_numpy(),
            "y": cams["y"].to_numpy(),
        }
    )
