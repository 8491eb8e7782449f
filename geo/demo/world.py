"""The demo world: :func:`build_world` and the :class:`World` it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geo.demo._util import (
    FloatArray,
    IntArray,
    largest_remainder,
    points_lonlat,
    rng_for,
    to_lonlat,
)
from geo.demo.addresses import VillageGeometry, county_addresses
from geo.demo.admin import CountyPlan, plan_counties
from geo.demo.cameras import county_cameras
from geo.demo.incidents import INCIDENTS_PER_YEAR, county_incidents, incident_anchors
from geo.demo.names import PREFECTURE_CODE, fake_phones, person_names
from geo.demo.places import county_places
from geo.demo.roads import TrunkLink, county_roads, trunk_network
from geo.demo.tiling import (
    Hierarchy,
    TiledCounty,
    place_grids,
    place_villages,
    power_cells,
    tile,
)
from geo.reference import load_counties, load_divisions

Scale = Literal["small", "full"]
SCALES: tuple[str, ...] = ("small", "full")
SMALL_SCALE_COUNTY = "433101"
"""The one county of the small world: 吉首市, the prefecture seat and the smallest
county (1,079 km²), with every kind of unit: sub-districts, towns and a township."""
FULL_SCALE_CAMERAS = 50_000
"""Cameras in the full world, split over counties by households (urban ×1.6)."""
_URBAN_CAMERA_WEIGHT = 1.6
_WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class World:
    """The demo world: one GeoDataFrame per layer, CRS EPSG:4326 (lon/lat degrees).

    Administrative layers (exact tilings: townships tile their county, villages
    their township, grids their village — no gaps, no overlaps, identical vertices
    on shared edges, in lon/lat as in EPSG:4546 where they were built):

    - ``counties``: code (6 digits), name, level ``'county'``, parent_code
      ``'433100'``, geometry (MultiPolygon) — the real outline as tiled (borders
      noded with the neighbours', densified to <= 50 m, overlaps given to the
      county with the lower code);
    - ``townships``: code (9 digits, real), name (real), level ``'township'``,
      parent_code (county code), geometry (MultiPolygon);
    - ``villages``: code (12 digits, real), name (real, as in the statistical
      table), level ``'village'``, parent_code (township code), geometry;
    - ``grids``: code (village code + 3-digit sequence), name (``<村/社区>第N网格``, or
      ``<place>专属网格``), village_code, kind (``'综合网格'`` or ``'专属网格'`` — a
      dedicated grid around a school, hospital or market), households (300–500),
      population, worker_name, worker_phone (made up: ``1990`` + county digit +
      serial), geometry (MultiPolygon). Sequences number a village's grids in
      reading order: rows of height sqrt(village area / grid count) from the
      village's northernmost point, then west to east by centroid x (all in
      EPSG:4546).

    Target layers:

    - ``roads``: id, road_class (national | provincial | county | village |
      street), name (route number, street name or ``<村>通村公路``), geometry
      (LineString or MultiLineString, cut at county borders);
    - ``key_places``: id, kind (school | hospital | clinic | market | bus_station |
      square | village_committee), name, geometry (Point, or Polygon for the
      compound of a school, hospital, market or square).

    Operational layers:

    - ``cameras``: gb_id (GB/T 28181, 20 digits: county code, ``00``, industry,
      131/132, network, serial), name, kind (bullet | dome | ptz), height_m,
      azimuth_deg (clockwise from true north, [0, 360)), hfov_deg (360 for dome and
      PTZ, 30–110 for bullets), resolution_h_px, range_m (NaN unless overridden),
      status (online | offline | fault), owner (public | industry | enterprise |
      residential), installed_at (Asia/Shanghai), county_code, geometry (Point);
    - ``incidents``: category (code of :data:`geo.catalogue.INCIDENT_CATEGORIES`),
      description, channel (hotline | grid_app | wechat | walk_in), reported_at
      (2025, Asia/Shanghai), address (gazetteer text or None), geometry (Point),
      sorted by reported_at;
    - ``addresses``: full_text, components (dict: province, prefecture, county,
      township, village, road, house_number, group — None when absent),
      village_code, precision (house_number | road | village), geometry (Point
      inside that village).
    """

    counties: gpd.GeoDataFrame
    townships: gpd.GeoDataFrame
    villages: gpd.GeoDataFrame
    grids: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    key_places: gpd.GeoDataFrame
    cameras: gpd.GeoDataFrame
    incidents: gpd.GeoDataFrame
    addresses: gpd.GeoDataFrame

    def layers(self) -> dict[str, gpd.GeoDataFrame]:
        """The layers by name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def build_world(
    scale: Scale = "full",
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
) -> World:
    """Build the demo world (see :class:`World` for every column).

    ``scale='full'``: all 8 counties (~9,900 grids, 50,000 cameras, 82,000
    incidents). ``scale='small'``: county 433101 only, exactly as it is in the full
    world for the same seed (its cameras and incidents are its full-scale share).
    ``seed`` (>= 0) fixes everything: the same seed gives identical output.
    ``progress(stage, fraction)`` is called as each stage starts (fraction of the
    work done so before it, in [0, 1]) and with ``("done", 1.0)`` at the end.

    Geometry is built in EPSG:4546 and converted to lon/lat vertex by vertex.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: use 'small' (one county) or 'full'")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    report = progress or (lambda stage, fraction: None)
    report("planning counties and trunk roads", 0.0)
    _, townships, villages = load_divisions()
    plans = plan_counties(seed, load_counties(), townships, villages)
    trunk = trunk_network(seed, plans)
    camera_quota, incident_quotas = _quotas(plans)
    chosen = [p for p in plans if scale == "full" or p.code == SMALL_SCALE_COUNTY]
    parts = []
    for i, plan in enumerate(chosen):

        def county_report(stage: str, done: float, i: int = i, plan: CountyPlan = plan) -> None:
            report(f"{plan.name}: {stage}", 0.05 + 0.93 * (i + done) / len(chosen))

        parts.append(
            _build_county(
                seed,
                plan,
                trunk,
                int(camera_quota[plan.index]),
                {c: int(q[plan.index]) for c, q in incident_quotas.items()},
                county_report,
            )
        )
    report("assembling layers", 0.98)
    layers = {}
    for name in (f.name for f in fields(World)):
        frame = pd.concat([part[name] for part in parts], ignore_index=True)
        layers[name] = gpd.GeoDataFrame(frame, geometry="geometry", crs=_WGS84)
    layers["incidents"] = (
        layers["incidents"].sort_values("reported_at", kind="stable").reset_index(drop=True)
    )
    report("done", 1.0)
    return World(**layers)


def _quotas(plans: list[CountyPlan]) -> tuple[IntArray, dict[str, IntArray]]:
    """Full-scale cameras and incidents per county (indexed by plan.index).

    Incidents follow population; cameras follow households with urban communities
    weighted ×1.6 (cameras concentrate in towns). Hamilton apportionment keeps the
    totals exact, so every county's share is the same at any scale.
    """
    population = np.array([p.grid_population.sum() for p in plans], dtype=np.float64)
    camera_weight = np.array(
        [
            (
                p.villages["households"] * np.where(p.villages["urban"], _URBAN_CAMERA_WEIGHT, 1.0)
            ).sum()
            for p in plans
        ]
    )
    cameras = largest_remainder(FULL_SCALE_CAMERAS, camera_weight)
    incidents = {
        code: largest_remainder(total, population) for code, total in INCIDENTS_PER_YEAR.items()
    }
    return cameras, incidents


def _reading_order(grids: np.ndarray, grid_village: IntArray, villages: np.ndarray) -> IntArray:
    """Permutation putting grids in code order: by village, then rows north to south,
    then west to east (see :class:`World`)."""
    centroids = shapely.centroid(grids)
    cx, cy = shapely.get_x(centroids), shapely.get_y(centroids)
    n_in_village = np.bincount(grid_village, minlength=len(villages))
    band = np.sqrt(shapely.area(villages) / n_in_village)[grid_village]
    top = shapely.bounds(villages)[:, 3][grid_village]
    row = np.floor((top - cy) / band).astype(np.int64)
    return np.lexsort((cx, row, grid_village))


def _grid_table(
    seed: int,
    plan: CountyPlan,
    tiled: TiledCounty,
    grid_village: IntArray,
    pinned_name: dict[tuple[int, int], str],
) -> tuple[pd.DataFrame, IntArray]:
    """Grid attributes in code order, and the permutation from generator order.

    ``grid_village`` is the village of each generator (grouped by village, pinned
    ones first); ``pinned_name[(village, rank)]`` names the place of the rank-th
    generator of a village when that grid is dedicated. Households and population
    come from the plan in its order, which is code order.
    """
    order = _reading_order(tiled.grids, grid_village, tiled.villages)
    first_of_village = np.searchsorted(grid_village, np.arange(len(plan.villages)))
    generator_rank = order - first_of_village[grid_village[order]]
    village = grid_village[order]
    seq = np.arange(len(order)) - first_of_village[village] + 1
    dedicated_place = [
        pinned_name.get((v, r)) for v, r in zip(village, generator_rank, strict=True)
    ]
    dedicated = np.array([name is not None for name in dedicated_place])
    village_codes = plan.villages["code"].to_numpy()[village]
    seq_text = pd.Series(seq).astype(str)
    names = (
        pd.Series(plan.villages["short_name"].to_numpy()[village]) + "第" + seq_text + "网格"
    ).to_numpy(dtype=object)
    names[dedicated] = [f"{place}专属网格" for place in np.array(dedicated_place)[dedicated]]
    table = pd.DataFrame(
        {
            "code": (pd.Series(village_codes) + seq_text.str.zfill(3)).to_numpy(dtype=object),
            "name": names,
            "village_code": village_codes,
            "kind": np.where(dedicated, "专属网格", "综合网格").astype(object),
            "households": plan.grid_households,
            "population": plan.grid_population,
            "worker_name": person_names(rng_for(seed, plan.code, "workers"), len(order)),
            "worker_phone": fake_phones(plan.index, np.arange(1, len(order) + 1)),
        }
    )
    return table, order


def _build_county(
    seed: int,
    plan: CountyPlan,
    trunk: list[TrunkLink],
    camera_quota: int,
    incident_quotas: dict[str, int],
    report: Callable[[str, float], None],
) -> dict[str, pd.DataFrame]:
    """Every layer of one county, lon/lat geometry in a ``geometry`` column."""
    outline = plan.outline
    towns = plan.townships
    vills = plan.villages
    village_town = vills["township_pos"].to_numpy()
    urban = vills["urban"].to_numpy()

    report("placing villages", 0.0)
    frame = shapely.buffer(shapely.box(*outline.bounds), 1000.0, join_style="mitre")
    town_xy, town_w = plan.township_generators
    town_cells = power_cells(town_xy, town_w, frame)
    village_xy, village_w, centres, village_cells = place_villages(
        rng_for(seed, plan.code, "villages"),
        outline,
        town_cells,
        plan.seats_xy,
        village_town,
        urban,
        vills["target_m2"].to_numpy(),
    )
    report("roads and key places", 0.25)
    urban_radius = np.zeros(len(towns))
    for t in np.unique(village_town[urban]):
        mine = urban & (village_town == t)
        urban_radius[t] = np.hypot(*(centres[mine] - plan.seats_xy[t]).T).max()
    roads = county_roads(seed, plan, trunk, centres, urban_radius)
    no_grids = Hierarchy(
        town_xy,
        town_w,
        village_xy,
        village_w,
        village_town,
        np.empty((0, 2)),
        np.empty(0, np.int64),
    )
    places = county_places(seed, plan, roads, no_grids, centres)
    report("placing grids", 0.35)
    pinned = [np.empty((0, 2)) for _ in range(len(vills))]
    pinned_name: dict[tuple[int, int], str] = {}
    for i in np.flatnonzero(places.dedicated):
        v = int(places.village[i])
        pinned_name[(v, len(pinned[v]))] = str(places.name[i])
        pinned[v] = np.vstack([pinned[v], [places.x[i], places.y[i]]])
    grid_xy, grid_village, grid_cells, samples = place_grids(
        rng_for(seed, plan.code, "grids"),
        outline,
        village_cells,
        vills["n_grids"].to_numpy(),
        pinned,
    )
    report("tiling", 0.55)
    hierarchy = Hierarchy(
        town_xy, town_w, village_xy, village_w, village_town, grid_xy, grid_village
    )
    tiled = tile(outline, hierarchy, [town_cells, village_cells, grid_cells])
    report("grid attributes, lon/lat", 0.75)

    grids, order = _grid_table(seed, plan, tiled, grid_village, pinned_name)
    grids_m = tiled.grids[order]
    grid_village = grid_village[order]

    county_ll = to_lonlat(np.array([tiled.county], dtype=object))[0]
    townships_ll = to_lonlat(tiled.townships)
    villages_ll = to_lonlat(tiled.villages)
    grids_ll = to_lonlat(grids_m)
    report("addresses", 0.8)

    village_geo = VillageGeometry(tiled.villages, villages_ll, centres, samples)
    addresses = county_addresses(seed, plan, roads, village_geo)
    report("cameras", 0.88)
    cameras = county_cameras(
        seed, plan, camera_quota, roads, places, addresses, centres, tiled.county, county_ll
    )
    report("incidents", 0.93)
    grid_tree = shapely.STRtree(grids_m)
    hit_address, hit_grid = grid_tree.query(
        shapely.points(addresses["x"].to_numpy(), addresses["y"].to_numpy()), predicate="within"
    )
    grid_of_address = np.full(len(addresses), -1, dtype=np.int64)
    grid_of_address[hit_address] = hit_grid
    anchors = incident_anchors(
        addresses,
        grid_of_address,
        plan.grid_population,
        urban[grid_village],
        shapely.get_coordinates(shapely.point_on_surface(grids_m)),
    )
    incidents = county_incidents(
        seed,
        plan.code,
        incident_quotas,
        anchors,
        roads.geometry,
        roads.road_class,
        tiled.county,
        county_ll,
    )

    return {
        "counties": pd.DataFrame(
            {
                "code": [plan.code],
                "name": [plan.name],
                "level": ["county"],
                "parent_code": [PREFECTURE_CODE],
                "geometry": [county_ll],
            }
        ),
        "townships": pd.DataFrame(
            {
                "code": towns["code"],
                "name": towns["name"],
                "level": "township",
                "parent_code": plan.code,
                "geometry": townships_ll,
            }
        ),
        "villages": pd.DataFrame(
            {
                "code": vills["code"],
                "name": vills["name"],
                "level": "village",
                "parent_code": vills["parent_code"],
                "geometry": villages_ll,
            }
        ),
        "grids": grids.assign(geometry=grids_ll),
        "roads": pd.DataFrame(
            {
                "id": _ids(plan.code, "R", len(roads)),
                "road_class": roads.road_class,
                "name": roads.name,
                "geometry": to_lonlat(roads.geometry),
            }
        ),
        "key_places": pd.DataFrame(
            {
                "id": _ids(plan.code, "P", len(places)),
                "kind": places.kind,
                "name": places.name,
                "geometry": to_lonlat(places.geometry),
            }
        ),
        "cameras": _with_points(cameras.drop(columns=["x", "y"]), cameras["x"], cameras["y"]),
        "incidents": _with_points(
            incidents.drop(columns=["x", "y"]), incidents["x"], incidents["y"]
        ),
        "addresses": _with_points(
            addresses[["full_text", "components", "village_code", "precision"]],
            addresses["x"],
            addresses["y"],
        ),
    }


def _ids(county_code: str, kind: str, n: int) -> np.ndarray:
    """Stable feature ids ``<county>-<kind><5 digits>`` (e.g. ``433101-R00012``)."""
    return (
        f"{county_code}-{kind}" + pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(5)
    ).to_numpy(dtype=object)


def _with_points(frame: pd.DataFrame, x: FloatArray, y: FloatArray) -> pd.DataFrame:
    """``frame`` plus a lon/lat Point ``geometry`` column from EPSG:4546 (x, y)."""
    lon, lat = points_lonlat(np.asarray(x), np.asarray(y))
    return frame.reset_index(drop=True).assign(geometry=shapely.points(lon, lat))
