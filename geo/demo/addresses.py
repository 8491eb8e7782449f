"""Address gazetteer of the demo world.

Four kinds of entries, every point inside the village-level unit it names (checked
in EPSG:4546 and in lon/lat):

- ``house_number`` in towns: ``湖南省湘西土家族苗族自治州吉首市乾州街道世纪大道88号``, a
  house 14–22 m beside a town street, odd numbers on the left and even on the right,
  growing by 2 every 20 m from the street's start;
- ``house_number`` in villages: ``…龙山县石牌镇<村>3组15号``, houses scattered around
  the village's groups (组), which cluster towards the village centre;
- ``road``: ``…吉首市乾州街道世纪大道``, the middle of each town street;
- ``village``: ``…吉首市矮寨镇<村>``, the village centre (its committee office).

Village names are the customary short forms (:func:`geo.demo.names.village_short_name`).
``components`` holds province, prefecture, county, township, village, road,
house_number and group (absent parts are None); joining the present parts in that
order, minus the village for town street addresses, gives ``full_text``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray

from geo.demo._util import FloatArray, IntArray, inside_both, line_tangents, rng_for
from geo.demo.admin import CountyPlan
from geo.demo.names import PREFECTURE, PROVINCE
from geo.demo.roads import Roads

ADDRESS_PRECISIONS: tuple[str, ...] = ("house_number", "road", "village")
COMPONENT_KEYS: tuple[str, ...] = (
    "province",
    "prefecture",
    "county",
    "township",
    "village",
    "road",
    "house_number",
    "group",
)
_HOUSE_SPACING_M = 70.0
_NUMBER_STEP_M = 20.0
_GROUPS_PER_VILLAGE = (4, 10)
_HOUSES_PER_GROUP = (1, 4)
_GROUP_SPREAD_M = 45.0


@dataclass
class VillageGeometry:
    """The villages of one county as the address generator needs them.

    ``polygons_m``/``polygons_ll``: the village MultiPolygons in EPSG:4546 and
    lon/lat (prepared); ``centres`` (V, 2) the village centres, EPSG:4546;
    ``samples`` per village uniform sample points (x, y) of its area.
    """

    polygons_m: NDArray[np.object_]
    polygons_ll: NDArray[np.object_]
    centres: FloatArray
    samples: list[tuple[FloatArray, FloatArray]]

    def __post_init__(self) -> None:
        shapely.prepare(self.polygons_m)
        shapely.prepare(self.polygons_ll)
        self.tree = shapely.STRtree(self.polygons_m)

    def locate(self, x: FloatArray, y: FloatArray) -> IntArray:
        """Village index containing each point in both CRSs, -1 where none does."""
        points = shapely.points(x, y)
        hit_point, hit_village = self.tree.query(points, predicate="within")
        village = np.full(len(x), -1, dtype=np.int64)
        village[hit_point] = hit_village
        found = village >= 0
        found[found] = inside_both(
            self.polygons_m[village[found]], self.polygons_ll[village[found]], x[found], y[found]
        )
        return np.where(found, village, -1)


def _street_houses(
    rng: np.random.Generator, roads: Roads, villages: VillageGeometry
) -> pd.DataFrame:
    """House-number addresses along town streets (one candidate per ~70 m)."""
    streets = np.flatnonzero(roads.road_class == "street")
    parts, part_of = shapely.get_parts(roads.geometry[streets], return_index=True)
    lengths = shapely.length(parts)
    per_part = np.floor(lengths / _HOUSE_SPACING_M).astype(np.int64)
    line = np.repeat(np.arange(len(parts)), per_part)
    along = rng.uniform(0, 1, len(line)) * lengths[line]
    x, y, tx, ty = line_tangents(parts[line], along, lengths[line])
    left = rng.random(len(line)) < 0.5
    offset = rng.uniform(14.0, 22.0, len(line)) * np.where(left, 1.0, -1.0)
    x, y = x - ty * offset, y + tx * offset
    number = 2 * np.floor(along / _NUMBER_STEP_M).astype(np.int64) + np.where(left, 1, 2)
    road = streets[part_of[line]]
    frame = pd.DataFrame(
        {
            "road": roads.name[road],
            "town": roads.township_pos[road],
            "number": number,
            "x": x,
            "y": y,
        }
    )
    frame["village"] = villages.locate(x, y)
    frame = frame[frame["village"] >= 0]
    # One house per number on each street of a town; the street name may repeat in
    # another town, where the township in the address tells them apart.
    return frame.drop_duplicates(["town", "road", "number"]).reset_index(drop=True)


def _street_middles(roads: Roads, villages: VillageGeometry) -> pd.DataFrame:
    """One road-precision address per town street, at the middle of its first part."""
    streets = np.flatnonzero(roads.road_class == "street")
    first_parts = shapely.get_geometry(roads.geometry[streets], 0)
    middles = shapely.line_interpolate_point(first_parts, 0.5, normalized=True)
    x, y = shapely.get_x(middles), shapely.get_y(middles)
    frame = pd.DataFrame({"road": roads.name[streets], "x": x, "y": y})
    frame["village"] = villages.locate(x, y)
    return frame[frame["village"] >= 0].reset_index(drop=True)


def _rural_houses(
    rng: np.random.Generator, plan: CountyPlan, villages: VillageGeometry
) -> pd.DataFrame:
    """House-number addresses ``<村>g组n号`` around each rural village's groups."""
    rural = np.flatnonzero(~plan.villages["urban"].to_numpy())
    group_x, group_y, group_village, group_no = [], [], [], []
    for v in rural:
        sx, sy = villages.samples[v]
        if len(sx) == 0:
            continue
        n_groups = int(rng.integers(_GROUPS_PER_VILLAGE[0], _GROUPS_PER_VILLAGE[1] + 1))
        # Groups (hamlets) lie mostly within ~1 km of the village centre.
        near = np.exp(-np.hypot(sx - villages.centres[v, 0], sy - villages.centres[v, 1]) / 800.0)
        picks = rng.choice(len(sx), min(n_groups, len(sx)), replace=False, p=near / near.sum())
        group_x.append(sx[picks])
        group_y.append(sy[picks])
        group_village.append(np.full(len(picks), v))
        group_no.append(np.arange(1, len(picks) + 1))
    if not group_x:
        return pd.DataFrame(columns=["group", "number", "x", "y", "village"])
    gx = np.concatenate(group_x)
    gy = np.concatenate(group_y)
    gv = np.concatenate(group_village)
    gno = np.concatenate(group_no)
    houses = rng.integers(_HOUSES_PER_GROUP[0], _HOUSES_PER_GROUP[1] + 1, len(gx))
    group = np.repeat(np.arange(len(gx)), houses)
    # House numbers grow within a group by 1–4 (strictly increasing, so distinct).
    step = rng.integers(1, 5, len(group))
    first = np.r_[0, np.cumsum(houses)[:-1]]
    cumulative = np.cumsum(step)
    number = cumulative - np.repeat(cumulative[first] - step[first], houses)
    x = gx[group] + rng.normal(0, _GROUP_SPREAD_M, len(group))
    y = gy[group] + rng.normal(0, _GROUP_SPREAD_M, len(group))
    village = gv[group]
    ok = inside_both(villages.polygons_m[village], villages.polygons_ll[village], x, y)
    return pd.DataFrame(
        {
            "group": gno[group][ok],
            "number": number[ok],
            "x": x[ok],
            "y": y[ok],
            "village": village[ok],
        }
    )


def county_addresses(
    seed: int, plan: CountyPlan, roads: Roads, villages: VillageGeometry
) -> pd.DataFrame:
    """The gazetteer of one county.

    Columns: full_text, components (dict), village_code, precision, x, y (EPSG:4546
    metres), village (index into the plan's villages) and, for the camera and
    incident generators, road and house_number; rows in the order town houses,
    street middles, rural houses, village centres.
    """
    rng = rng_for(seed, plan.code, "addresses")
    towns = plan.townships
    vills = plan.villages
    village_town = vills["township_pos"].to_numpy()

    street = _street_houses(rng, roads, villages)
    street_parts = pd.DataFrame(
        {
            "road": street["road"],
            "house_number": street["number"].astype(str) + "号",
            "group": None,
            "precision": "house_number",
        }
    )
    middles = _street_middles(roads, villages)
    middle_parts = pd.DataFrame(
        {"road": middles["road"], "house_number": None, "group": None, "precision": "road"}
    )
    rural = _rural_houses(rng, plan, villages)
    rural_parts = pd.DataFrame(
        {
            "road": None,
            "house_number": rural["number"].astype(str) + "号",
            "group": rural["group"].astype(str) + "组",
            "precision": "house_number",
        }
    )
    centres = villages.centres
    centre_village = villages.locate(centres[:, 0], centres[:, 1])
    centre_ok = centre_village == np.arange(len(centres))
    centre_parts = pd.DataFrame(
        {
            "road": [None] * int(centre_ok.sum()),
            "house_number": None,
            "group": None,
            "precision": "village",
        }
    )
    parts = pd.concat([street_parts, middle_parts, rural_parts, centre_parts], ignore_index=True)
    village = np.concatenate(
        [street["village"], middles["village"], rural["village"], np.flatnonzero(centre_ok)]
    ).astype(np.int64)
    x = np.concatenate([street["x"], middles["x"], rural["x"], centres[centre_ok, 0]])
    y = np.concatenate([street["y"], middles["y"], rural["y"], centres[centre_ok, 1]])

    parts["province"] = PROVINCE
    parts["prefecture"] = PREFECTURE
    parts["county"] = plan.name
    parts["township"] = towns["name"].to_numpy()[village_town[village]]
    parts["village"] = vills["short_name"].to_numpy()[village]
    # Town street addresses name the road, not the community (as people write them).
    shown_village = parts["village"].where(parts["road"].isna(), "")
    full_text = (
        parts["province"]
        + parts["prefecture"]
        + parts["county"]
        + parts["township"]
        + shown_village
        + parts["road"].fillna("")
        + parts["group"].fillna("")
        + parts["house_number"].fillna("")
    )
    columns = [parts[key].astype(object) for key in COMPONENT_KEYS]
    columns = [column.where(column.notna(), None).to_numpy() for column in columns]
    # One dict per address is what the layer holds; zipping plain arrays builds them
    # ~8x faster than DataFrame.to_dict, which boxes every value on the way.
    components = [dict(zip(COMPONENT_KEYS, row, strict=True)) for row in zip(*columns, strict=True)]
    frame = pd.DataFrame(
        {
            "full_text": full_text,
            "components": components,
            "village_code": vills["code"].to_numpy()[village],
            "precision": parts["precision"],
            "x": x,
            "y": y,
            "village": village,
            "road": parts["road"],
            "house_number": parts["house_number"],
        }
    )
    return frame.drop_duplicates("full_text").reset_index(drop=True)
