"""Key places of the demo world: schools, hospitals, clinics, markets, bus stations,
squares and village committees (EPSG:4546 metres).

Town places (schools, township hospital, market, bus station, square; the county
hospitals and high schools in the county seat) stand beside the town's streets;
every village-level unit has its committee office at its centre, many rural villages
a clinic and some a primary school nearby. Schools, hospitals, markets and squares
are small rectangles (their compound), the rest points. Schools, hospitals and
markets inside an urban community get a dedicated grid (专属网格) when the community
has grids to spare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.demo._util import FloatArray, IntArray, line_tangents, rng_for
from geo.demo.admin import CountyPlan
from geo.demo.names import committee_name, county_short_name
from geo.demo.roads import Roads
from geo.demo.tiling import Hierarchy, locate_villages

PLACE_KINDS: tuple[str, ...] = (
    "school",
    "hospital",
    "clinic",
    "market",
    "bus_station",
    "square",
    "village_committee",
)
_DEDICATED_GRID_KINDS = frozenset({"school", "hospital", "market"})
_DEDICATED_MIN_GAP_M = 80.0
_TRIES = 16


@dataclass
class Places:
    """Key places of one county as parallel arrays.

    ``x``/``y`` is the place's anchor point (the point itself or the compound's
    centre); ``village`` the village index containing it; ``dedicated`` marks the
    places that get their own grid.
    """

    kind: NDArray[np.object_]
    name: NDArray[np.object_]
    geometry: NDArray[np.object_]
    x: FloatArray
    y: FloatArray
    village: IntArray
    dedicated: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.kind)


def _town_specs(
    rng: np.random.Generator, plan: CountyPlan, t: int
) -> list[tuple[str, str, float, float]]:
    """(kind, name, width m, depth m) of a township's town places; 0 x 0 = a point."""
    row = plan.townships.iloc[t]
    short, level = row["short_name"], row["level"]
    specs = []
    if row["is_county_seat"]:
        county = plan.name
        specs += [
            ("hospital", f"{county}人民医院", 120.0, 90.0),
            ("hospital", f"{county}中医医院", 90.0, 70.0),
            ("school", f"{county}第一中学", 160.0, 120.0),
            ("school", f"{county}民族中学", 140.0, 100.0),
            ("bus_station", f"{county}汽车站", 0.0, 0.0),
            ("square", f"{county_short_name(county)}文化广场", 100.0, 80.0),
            ("market", f"{county}农贸大市场", 90.0, 70.0),
        ]
    if level == "farm":
        return [*specs, ("school", f"{short}子弟学校", 60.0, 45.0)]
    specs.append(
        ("school", f"{short}{'小学' if level == 'subdistrict' else '中心小学'}", 110.0, 80.0)
    )
    if level != "township" or rng.random() < 0.5:
        specs.append(("school", f"{short}中学", 130.0, 90.0))
    if level == "subdistrict":
        specs.append(("clinic", f"{row['name']}社区卫生服务中心", 0.0, 0.0))
    else:
        specs.append(("hospital", f"{row['name']}卫生院", 60.0, 45.0))
    if level != "township" or rng.random() < 0.6:
        specs.append(("market", f"{short}农贸市场", 70.0, 50.0))
    if level == "town" and rng.random() < 0.8:
        specs.append(("bus_station", f"{short}汽车站", 0.0, 0.0))
    if row["n_urban"] >= 2 and not row["is_county_seat"]:
        specs.append(("square", f"{short}广场", 70.0, 60.0))
    return specs


def _rectangles(x: FloatArray, y: FloatArray, w: FloatArray, d: FloatArray, angle: FloatArray):
    """Rectangles of width ``w`` (along ``angle``) and depth ``d`` centred at (x, y)."""
    ux, uy = np.cos(angle), np.sin(angle)
    corners = np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5)])
    a = corners[None, :, 0] * w[:, None]
    b = corners[None, :, 1] * d[:, None]
    cx = x[:, None] + a * ux[:, None] - b * uy[:, None]
    cy = y[:, None] + a * uy[:, None] + b * ux[:, None]
    return shapely.polygons(np.stack([cx, cy], axis=-1))


def county_places(
    seed: int,
    plan: CountyPlan,
    roads: Roads,
    hierarchy: Hierarchy,
    village_xy: FloatArray,
) -> Places:
    """All key places of one county (see the module docstring).

    ``hierarchy`` needs only its township and village levels; ``village_xy`` are
    the village centres (committee offices).
    """
    rng = rng_for(seed, plan.code, "places")
    outline = plan.outline
    seats = plan.seats_xy

    def locate(x: FloatArray, y: FloatArray) -> tuple[IntArray, IntArray]:
        inside = shapely.contains_xy(outline, x, y)
        t, v = locate_villages(hierarchy, x, y)
        return np.where(inside, t, -1), np.where(inside, v, -1)

    kinds, names, xs, ys, widths, depths, angles, town_place = [], [], [], [], [], [], [], []
    streets = roads.geometry
    street_lengths = shapely.length(streets)
    for t in range(len(plan.townships)):
        specs = _town_specs(rng, plan, t)
        if not specs:
            continue
        mine = np.flatnonzero(roads.township_pos == t)
        n = len(specs) * _TRIES
        if len(mine):
            street = mine[rng.integers(0, len(mine), n)]
            along = rng.uniform(0.15, 0.85, n) * street_lengths[street]
            px, py, tx, ty = line_tangents(streets[street], along, street_lengths[street])
            side = rng.choice([-1.0, 1.0], n) * rng.uniform(45.0, 90.0, n)
            cx, cy = px - ty * side, py + tx * side
            heading = np.arctan2(ty, tx)
        else:
            r = rng.uniform(60.0, 400.0, n)
            a = rng.uniform(0, 2 * np.pi, n)
            cx, cy = seats[t, 0] + r * np.cos(a), seats[t, 1] + r * np.sin(a)
            heading = rng.uniform(0, np.pi, n)
        found_t, _ = locate(cx, cy)
        ok = (found_t == t).reshape(len(specs), _TRIES)
        first = np.argmax(ok, axis=1)
        for k, (kind, name, w, d) in enumerate(specs):
            i = k * _TRIES + first[k]
            # No try landed in the township (it is tiny or oddly cut): use the seat,
            # which is always inside its own township.
            x, y = (cx[i], cy[i]) if ok[k, first[k]] else (seats[t, 0], seats[t, 1])
            kinds.append(kind)
            names.append(name)
            xs.append(x)
            ys.append(y)
            widths.append(w)
            depths.append(d)
            angles.append(heading[i])
            town_place.append(True)

    villages = plan.villages
    n_v = len(villages)
    rural = ~villages["urban"].to_numpy()
    for v in range(n_v):
        short = villages["short_name"].iloc[v]
        kinds.append("village_committee")
        names.append(committee_name(short))
        xs.append(village_xy[v, 0])
        ys.append(village_xy[v, 1])
        widths.append(0.0)
        depths.append(0.0)
        angles.append(0.0)
        town_place.append(False)
    has_clinic = rural & (rng.random(n_v) < 0.55)
    has_school = rural & (rng.random(n_v) < 0.2)
    extra_v = np.r_[np.flatnonzero(has_clinic), np.flatnonzero(has_school)]
    extra_kind = ["clinic"] * int(has_clinic.sum()) + ["school"] * int(has_school.sum())
    n = len(extra_v) * _TRIES
    r = rng.uniform(60.0, 200.0, n)
    a = rng.uniform(0, 2 * np.pi, n)
    cx = np.repeat(village_xy[extra_v, 0], _TRIES) + r * np.cos(a)
    cy = np.repeat(village_xy[extra_v, 1], _TRIES) + r * np.sin(a)
    _, found_v = locate(cx, cy)
    ok = (found_v == np.repeat(extra_v, _TRIES)).reshape(len(extra_v), _TRIES)
    first = np.argmax(ok, axis=1) if len(extra_v) else np.empty(0, dtype=np.int64)
    for k, (v, kind) in enumerate(zip(extra_v, extra_kind, strict=True)):
        i = k * _TRIES + first[k]
        # As a last resort the place shares the village centre with the committee.
        x, y = (cx[i], cy[i]) if ok[k, first[k]] else (village_xy[v, 0], village_xy[v, 1])
        short = villages["short_name"].iloc[v]
        kinds.append(kind)
        names.append(short + ("卫生室" if kind == "clinic" else "小学"))
        xs.append(x)
        ys.append(y)
        widths.append(50.0 if kind == "school" else 0.0)
        depths.append(40.0 if kind == "school" else 0.0)
        angles.append(a[i])
        town_place.append(False)

    x = np.array(xs)
    y = np.array(ys)
    w = np.array(widths)
    geometry = shapely.points(x, y)
    area = w > 0
    geometry[area] = _rectangles(
        x[area], y[area], w[area], np.array(depths)[area], np.array(angles)[area]
    )
    _, village = locate(x, y)
    kind_arr = np.array(kinds, dtype=object)
    dedicated = _choose_dedicated(plan, kind_arr, np.array(town_place), x, y, village)
    return Places(
        kind=kind_arr,
        name=np.array(names, dtype=object),
        geometry=geometry,
        x=x,
        y=y,
        village=village,
        dedicated=dedicated,
    )


def _choose_dedicated(
    plan: CountyPlan,
    kind: NDArray[np.object_],
    town_place: NDArray[np.bool_],
    x: FloatArray,
    y: FloatArray,
    village: IntArray,
) -> NDArray[np.bool_]:
    """Town schools/hospitals/markets in urban communities that get their own grid.

    A community keeps at least two thirds of its grids ordinary, and dedicated grid
    generators stay >= 80 m apart so their cells are not slivers.
    """
    n_grids = plan.villages["n_grids"].to_numpy()
    urban = plan.villages["urban"].to_numpy()
    dedicated = np.zeros(len(kind), dtype=bool)
    taken: dict[int, list[int]] = {}
    for i in np.flatnonzero(town_place & (village >= 0)):
        v = int(village[i])
        if kind[i] not in _DEDICATED_GRID_KINDS or not urban[v] or n_grids[v] < 4:
            continue
        mine = taken.setdefault(v, [])
        if len(mine) >= n_grids[v] // 3:
            continue
        if any(np.hypot(x[i] - x[j], y[i] - y[j]) < _DEDICATED_MIN_GAP_M for j in mine):
            continue
        mine.append(int(i))
        dedicated[i] = True
    return dedicated
