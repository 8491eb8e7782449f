"""Stage A of the demo world: county outlines, township seats and the household plan.

Everything here is cheap and is computed for all eight counties at every scale, so
that a one-county ("small") world is exactly that county's part of the full world:
the county outlines are resolved against each other, the trunk road network joins
all township seats, and per-county camera/incident quotas use all counties' sizes.

Geometry is EPSG:4546 metres (see :mod:`geo.demo._util`).
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geo.codes import is_urban_village
from geo.crs import convert_geometry, to_metric
from geo.demo._util import (
    METRIC_CRS,
    BoolArray,
    FloatArray,
    IntArray,
    farthest_points,
    rng_for,
    sample_region,
    to_multipolygons,
)
from geo.demo.names import township_short_name, village_short_name
from geo.demo.tiling import centres_inside, relax_power

OUTLINE_MAX_SEGMENT_M = 50.0
"""County outlines are densified to this step (in lon/lat) before projecting."""

# Approximate WGS 84 positions of the real county-seat towns (public map knowledge,
# ~1 km accuracy): the demo's main urban area sits where the real one is.
COUNTY_SEAT_LONLAT: dict[str, tuple[float, float]] = {
    "433101": (109.698, 28.262),  # 吉首市 (乾州/镇溪)
    "433122": (110.219, 28.216),  # 泸溪县 武溪镇
    "433123": (109.599, 27.948),  # 凤凰县 沱江镇
    "433124": (109.482, 28.572),  # 花垣县 花垣镇
    "433125": (109.660, 28.699),  # 保靖县 迁陵镇
    "433126": (109.950, 28.617),  # 古丈县 古阳镇
    "433127": (109.853, 28.998),  # 永顺县 灵溪镇
    "433130": (109.443, 29.457),  # 龙山县 民安街道
}

_COUNTY_SAMPLES = 6000
_CITY_COMMUNITY_KM2 = (0.9, 2.4)
_TOWN_COMMUNITY_KM2 = (0.5, 1.4)
_HOUSEHOLDS_PER_GRID = (300, 500)
_PERSONS_PER_HOUSEHOLD = (2.6, 3.3)
# Grids per village-level unit. Urban communities of the county seat and of
# sub-districts (街道) are dense: many small grids; communities of ordinary towns
# fewer; rural villages 2–8 (mean ~4.7). Calibrated so the prefecture gets ~9,900.
_CITY_COMMUNITY_GRIDS = (8, 20)
_TOWN_COMMUNITY_GRIDS = (3, 9)
_RURAL_GRIDS = np.arange(2, 9)
_RURAL_GRID_P = np.array([0.08, 0.17, 0.24, 0.22, 0.15, 0.09, 0.05])


def township_level(code: str) -> str:
    """Level of a township-level unit from its code: 001–099 sub-district (街道),
    100–199 town (镇), 200–399 township (乡), 400+ farm or other unit."""
    seq = int(code[-3:])
    if seq < 100:
        return "subdistrict"
    if seq < 200:
        return "town"
    if seq < 400:
        return "township"
    return "farm"


@dataclass
class CountyPlan:
    """One county before any township/village geometry exists.

    ``townships``: one row per township-level unit in code order — code, name,
    short_name, level (see :func:`township_level`), is_county_seat, is_city (county
    seat or sub-district: urban communities there are dense), n_urban, n_villages,
    gen_x, gen_y, weight (power-diagram generator, EPSG:4546 m, and weight, m²),
    seat_x, seat_y (the town centre, inside the township, EPSG:4546 m).

    ``villages``: one row per village-level unit in code order — code, name,
    short_name, township_pos (row in ``townships``), urban, target_m2 (planned
    area), n_grids, households, population.

    ``outline``: the county as tiled (see :func:`resolve_county_outlines`),
    EPSG:4546. ``grid_households``/``grid_population``: one entry per planned grid,
    villages in code order (``n_grids`` each), grids in the order they will be
    numbered.
    """

    index: int
    code: str
    name: str
    outline: shapely.MultiPolygon
    townships: pd.DataFrame
    villages: pd.DataFrame
    grid_households: IntArray
    grid_population: IntArray

    @property
    def seats_xy(self) -> FloatArray:
        """Town centres (T, 2), EPSG:4546 metres."""
        return self.townships[["seat_x", "seat_y"]].to_numpy(dtype=np.float64)

    @property
    def township_generators(self) -> tuple[FloatArray, FloatArray]:
        """Township power-diagram generators (T, 2) and weights (T,)."""
        return (
            self.townships[["gen_x", "gen_y"]].to_numpy(dtype=np.float64),
            self.townships["weight"].to_numpy(dtype=np.float64),
        )


def resolve_county_outlines(raw: gpd.GeoDataFrame) -> list[shapely.MultiPolygon]:
    """Non-overlapping EPSG:4546 county outlines that share their common borders.

    ``raw`` holds the real outlines in WGS 84, one row per county in code order.
    Their boundaries are noded together in lon/lat (a shared border appears once),
    densified to <= 50 m in lon/lat (so straight lon/lat edges stay on their lines),
    projected vertex by vertex and polygonized into faces. A face belongs to the
    first county in code order whose raw outline contains it — the same as
    subtracting every earlier county from each later one — and faces in no county
    (gaps) belong to none. Each county is then the coverage union of its faces, so
    neighbouring counties share exactly the same border vertices and never overlap.
    """
    raw_geoms = raw.geometry.to_numpy()
    borders = shapely.unary_union(shapely.boundary(raw_geoms))
    borders_m = convert_geometry(borders, "wgs84", METRIC_CRS, max_segment_m=OUTLINE_MAX_SEGMENT_M)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(borders_m)))
    probes = convert_geometry(shapely.point_on_surface(faces), METRIC_CRS, "wgs84")
    owner = np.full(len(faces), -1)
    for i, outline in enumerate(raw_geoms):
        owner[(owner < 0) & shapely.contains(outline, probes)] = i
    outlines = []
    for i, code in enumerate(raw["code"]):
        mine = faces[owner == i]
        if len(mine) == 0:
            raise ValueError(f"county {code} has no area left after resolving overlaps")
        outlines.append(to_multipolygons(np.array([shapely.coverage_union_all(mine)]))[0])
    return outlines


def _county_seat_xy(
    code: str, outline: shapely.Geometry, sx: FloatArray, sy: FloatArray
) -> tuple[float, float]:
    """The county-seat town in EPSG:4546: the known position if it is inside the
    outline, else the sample point nearest to it (or the outline's middle)."""
    lonlat = COUNTY_SEAT_LONLAT.get(code)
    if lonlat is None:
        point = shapely.point_on_surface(outline)
        x, y = point.x, point.y
    else:
        x, y = to_metric(*lonlat)
    if shapely.contains_xy(outline, x, y):
        return float(x), float(y)
    nearest = int(np.argmin((sx - x) ** 2 + (sy - y) ** 2))
    return float(sx[nearest]), float(sy[nearest])


def _village_targets(
    rng: np.random.Generator, county_area: float, townships: pd.DataFrame, villages: pd.DataFrame
) -> FloatArray:
    """Target area (m²) of every village-level unit; they sum to ``county_area``.

    Urban communities are small: 0.9–2.4 km² in the county seat and sub-districts,
    0.5–1.4 km² in other towns. Rural villages share the rest, each ±30 % around
    an equal share.
    """
    city = townships["is_city"].to_numpy()[villages["township_pos"].to_numpy()]
    urban = villages["urban"].to_numpy()
    n = len(villages)
    target = (
        np.where(
            city,
            rng.uniform(*_CITY_COMMUNITY_KM2, n),
            rng.uniform(*_TOWN_COMMUNITY_KM2, n),
        )
        * 1e6
    )
    rural_weight = rng.uniform(0.7, 1.3, n)
    if urban.all():
        return target * county_area / target.sum()
    urban_total = min(target[urban].sum(), 0.5 * county_area)
    target[urban] *= urban_total / max(target[urban].sum(), 1.0)
    target[~urban] = rural_weight[~urban] * (county_area - urban_total) / rural_weight[~urban].sum()
    return target


def _place_townships(
    seed: int,
    code: str,
    outline: shapely.Geometry,
    townships: pd.DataFrame,
    township_target_m2: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Township generators, power weights and seats, in township order.

    The county seat goes to the township with the most urban communities (ties ->
    lowest code), its generator fixed at the real town's position; the other
    sub-districts (街道) start on a ring around it whose radius fits their combined
    target area; the remaining townships start at farthest-point picks. Power-diagram
    relaxation then gives every township about its target area (the sum of its
    villages' targets). Seats (town centres) are the generators when inside their own
    township, else the nearest sample of it. Returns (generators (T, 2), weights (T,)
    m², seats (T, 2)).
    """
    rng = rng_for(seed, code, "township-seats")
    shapely.prepare(outline)

    def inside_county(x: FloatArray, y: FloatArray) -> BoolArray:
        return shapely.contains_xy(outline, x, y)

    sx, sy = sample_region(rng, _COUNTY_SAMPLES, outline.bounds, inside_county)
    n = len(townships)
    seat_pos = int(np.argmax(townships["n_urban"].to_numpy()))
    cx, cy = _county_seat_xy(code, outline, sx, sy)
    start = np.empty((n, 2))
    placed = np.zeros(n, dtype=bool)
    start[seat_pos] = cx, cy
    placed[seat_pos] = True
    ring = [i for i in range(n) if i != seat_pos and townships["level"].iloc[i] == "subdistrict"]
    city_area = township_target_m2[[seat_pos, *ring]].sum()
    radius = np.sqrt(city_area / np.pi)
    angle0 = rng.uniform(0, 2 * np.pi)
    for k, pos in enumerate(ring):
        angle = angle0 + 2 * np.pi * k / len(ring)
        x, y = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
        if not shapely.contains_xy(outline, x, y):
            # Off the county: take the sample nearest to the intended place instead.
            nearest = int(np.argmin((sx - x) ** 2 + (sy - y) ** 2))
            x, y = sx[nearest], sy[nearest]
        start[pos] = x, y
        placed[pos] = True
    start[~placed] = farthest_points(rng, sx, sy, start[placed], int((~placed).sum()))
    fixed = np.arange(n) == seat_pos
    sample_area = np.full(len(sx), outline.area / len(sx))
    gens, weights = relax_power(sx, sy, sample_area, start, fixed, township_target_m2)
    seats = centres_inside(gens, weights, inside_county, sx, sy)
    return gens, weights, seats


def _plan_households(
    rng: np.random.Generator, townships: pd.DataFrame, villages: pd.DataFrame
) -> tuple[pd.DataFrame, IntArray, IntArray]:
    """Grids per village and households/population per grid (villages in code order)."""
    city = townships["is_city"].to_numpy()[villages["township_pos"].to_numpy()]
    urban = villages["urban"].to_numpy()
    n = len(villages)
    n_grids = np.where(
        urban & city,
        rng.integers(_CITY_COMMUNITY_GRIDS[0], _CITY_COMMUNITY_GRIDS[1] + 1, n),
        np.where(
            urban,
            rng.integers(_TOWN_COMMUNITY_GRIDS[0], _TOWN_COMMUNITY_GRIDS[1] + 1, n),
            rng.choice(_RURAL_GRIDS, n, p=_RURAL_GRID_P),
        ),
    )
    grid_village = np.repeat(np.arange(n), n_grids)
    households = rng.integers(
        _HOUSEHOLDS_PER_GRID[0], _HOUSEHOLDS_PER_GRID[1] + 1, len(grid_village)
    )
    persons = rng.uniform(*_PERSONS_PER_HOUSEHOLD, len(grid_village))
    population = np.round(households * persons).astype(np.int64)
    villages = villages.assign(
        n_grids=n_grids,
        households=np.bincount(grid_village, weights=households, minlength=n).astype(np.int64),
        population=np.bincount(grid_village, weights=population, minlength=n).astype(np.int64),
    )
    return villages, households.astype(np.int64), population


def plan_counties(
    seed: int,
    raw_counties: gpd.GeoDataFrame,
    townships: pd.DataFrame,
    villages: pd.DataFrame,
) -> list[CountyPlan]:
    """Stage A for every county in ``raw_counties`` (WGS 84 outlines, any order).

    ``townships``/``villages`` are the real division tables (code, name,
    parent_code). Returns one :class:`CountyPlan` per county in code order.
    """
    raw = raw_counties.assign(code=raw_counties["code"].astype(str)).sort_values("code")
    raw = raw.reset_index(drop=True)
    outlines = resolve_county_outlines(raw)
    towns = townships.assign(
        code=townships["code"].astype(str), parent_code=townships["parent_code"].astype(str)
    )
    vills = villages.assign(
        code=villages["code"].astype(str), parent_code=villages["parent_code"].astype(str)
    )
    plans = []
    for index, (code, name, outline) in enumerate(
        zip(raw["code"], raw["name"], outlines, strict=True)
    ):
        t = towns[towns["parent_code"] == code].sort_values("code").reset_index(drop=True)
        v = vills[vills["parent_code"].isin(t["code"])].sort_values("code").reset_index(drop=True)
        v["short_name"] = v["name"].map(village_short_name)
        v["urban"] = v["code"].map(is_urban_village).astype(bool)
        v["township_pos"] = (
            t.reset_index().set_index("code").loc[v["parent_code"], "index"].to_numpy()
        )
        t["short_name"] = t["name"].map(township_short_name)
        t["level"] = t["code"].map(township_level)
        t["n_urban"] = np.bincount(
            v["township_pos"], weights=v["urban"].astype(float), minlength=len(t)
        ).astype(np.int64)
        t["n_villages"] = np.bincount(v["township_pos"], minlength=len(t))
        if (t["n_villages"] == 0).any():
            empty = ", ".join(t.loc[t["n_villages"] == 0, "code"])
            raise ValueError(f"townships without village-level units: {empty}")
        seat_pos = int(np.argmax(t["n_urban"].to_numpy()))
        t["is_county_seat"] = np.arange(len(t)) == seat_pos
        t["is_city"] = t["is_county_seat"] | (t["level"] == "subdistrict")
        rng = rng_for(seed, code, "plan")
        v["target_m2"] = _village_targets(rng, outline.area, t, v)
        v, households, population = _plan_households(rng, t, v)
        gens, weights, seats = _place_townships(
            seed,
            code,
            outline,
            t,
            np.bincount(v["township_pos"], weights=v["target_m2"], minlength=len(t)),
        )
        t["gen_x"], t["gen_y"], t["weight"] = gens[:, 0], gens[:, 1], weights
        t["seat_x"], t["seat_y"] = seats[:, 0], seats[:, 1]
        plans.append(
            CountyPlan(
                index=index,
                code=code,
                name=str(name),
                outline=outline,
                townships=t,
                villages=v,
                grid_households=households,
                grid_population=population,
            )
        )
    return plans
