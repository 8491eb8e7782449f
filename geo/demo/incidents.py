"""A year (2025) of reported incidents (网格事件) in the demo world.

Categories are the shipped catalogue :data:`geo.catalogue.INCIDENT_CATEGORIES`;
:data:`INCIDENTS_PER_YEAR` gives each category's yearly count for the whole
prefecture (82,000 cases, 11,703 of them disputes, as in the 2018 report), split
over the counties by population.

Where: most incidents happen where people live — at a gazetteer address (or a
grid's representative point for grids without one) chosen with probability
proportional to its grid's population (×1.5 in urban communities), give or take
25 m. Four in five traffic accidents happen on a road instead (national,
provincial and town streets weighted up). Every point lies inside its county in
both CRSs.

When: days weighted Monday–Friday 1.0, Saturday 0.75, Sunday 0.65; hours follow
an office-hours profile (public-order cases lean to the evening, traffic accidents
to the rush hours); timestamps are Asia/Shanghai local time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray

from geo.catalogue import INCIDENT_CATEGORIES
from geo.demo._util import FloatArray, IntArray, inside_both, pick, rng_for

INCIDENTS_PER_YEAR: dict[str, int] = {
    "dispute": 11_703,
    "public_order": 14_000,
    "traffic": 6_500,
    "environment": 16_000,
    "facility": 10_000,
    "safety_hazard": 8_000,
    "petition": 7_500,
    "other": 8_297,
}
"""Full-scale (prefecture) incidents per year by category code; sums to 82,000."""

TRAFFIC_CATEGORY = "traffic"
INCIDENT_CHANNELS: tuple[str, ...] = ("hotline", "grid_app", "wechat", "walk_in")

# Short case descriptions per category, space-separated.
_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    code: tuple(text.split())
    for code, text in {
        "dispute": "邻里因宅基地边界发生纠纷 家庭婚姻矛盾，请求调解 土地承包经营权纠纷 "
        "劳资纠纷，拖欠务工人员工资 相邻通行、排水纠纷 山林权属纠纷 物业服务纠纷 民间借贷纠纷",
        "public_order": "夜间有人聚众喧哗 可疑人员在小区徘徊 商铺夜间被盗 酒后滋事 电动车被盗 "
        "疑似赌博活动",
        "traffic": "两车追尾，无人员受伤 摩托车与小车刮擦 车辆侧翻 行人被车辆碰撞，已送医 "
        "货车占道抛锚 电动车与三轮车相撞",
        "environment": "垃圾堆放未及时清运 占道经营 违章搭建 乱贴小广告 污水外溢 渣土车沿路抛洒",
        "facility": "路灯不亮 井盖缺失 道路破损坑洼 护栏损坏 供水管道漏水 公交站亭损坏",
        "safety_hazard": "危房存在倒塌风险 山体滑坡隐患 燃气管道疑似泄漏 电线私拉乱接 "
        "消防通道被堵塞 河道水位上涨",
        "petition": "反映低保待遇问题 反映征地补偿问题 咨询医保报销政策 反映拆迁安置问题 "
        "要求解决子女入学问题",
        "other": "寻找走失老人 流浪犬伤人隐患 咨询办事流程 噪音扰民 反映手机信号差",
    }.items()
}
_CHANNEL_P: dict[str, tuple[float, float, float, float]] = {
    "dispute": (0.20, 0.45, 0.10, 0.25),
    "traffic": (0.60, 0.20, 0.15, 0.05),
}
_DEFAULT_CHANNEL_P = (0.22, 0.50, 0.18, 0.10)


def _hourly(*rows: str) -> FloatArray:
    """24 relative weights, hour 0 first, from space-separated strings."""
    weights = np.array(" ".join(rows).split(), dtype=np.float64)
    if len(weights) != 24:
        raise ValueError(f"an hourly profile needs 24 weights, got {len(weights)}")
    return weights


_HOUR_PROFILE = _hourly(
    "0.15 0.1 0.08 0.08 0.1 0.2 0.5 1 2 3 3.2 2.8 1.8 1.6 2.6 3 2.8 2.2 1.6 1.4 1.2 1 0.6 0.3"
)
_HOUR_PROFILE_BY_CATEGORY = {
    "traffic": _hourly(
        "0.4 0.3 0.25 0.25 0.3 0.5 1.2 2.5 2.8 1.8 1.5 1.6",
        "1.8 1.6 1.5 1.7 2.2 2.8 3 2.2 1.6 1.2 0.9 0.6",
    ),
    "public_order": _hourly(
        "1.2 1 0.8 0.6 0.4 0.3 0.4 0.7 1 1.2 1.3 1.3",
        "1.2 1.2 1.3 1.4 1.5 1.6 1.8 2 2.2 2.2 1.9 1.5",
    ),
}
_YEAR_START = np.datetime64("2025-01-01T00:00:00")
_DAYS = 365
# 2025-01-01 was a Wednesday (Monday = 0).
_FIRST_WEEKDAY = 2
_WEEKDAY_WEIGHT = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.65])
_URBAN_WEIGHT = 1.5
_JITTER_M = 25.0
_ON_ROAD_SHARE = 0.8
_ROAD_WEIGHT = {"national": 4.0, "provincial": 3.0, "county": 2.0, "street": 3.0, "village": 0.5}
_WITH_ADDRESS_SHARE = 0.65


def _times(rng: np.random.Generator, category: str, n: int) -> pd.DatetimeIndex:
    """``n`` report times in 2025 (Asia/Shanghai), by weekday and hourly profile."""
    day_weight = _WEEKDAY_WEIGHT[(np.arange(_DAYS) + _FIRST_WEEKDAY) % 7]
    day = rng.choice(_DAYS, n, p=day_weight / day_weight.sum())
    profile = _HOUR_PROFILE_BY_CATEGORY.get(category, _HOUR_PROFILE)
    hour = rng.choice(24, n, p=profile / profile.sum())
    seconds = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n)
    return pd.DatetimeIndex(_YEAR_START + seconds.astype("timedelta64[s]")).tz_localize(
        "Asia/Shanghai"
    )


def _on_roads(
    rng: np.random.Generator,
    roads_geometry: NDArray[np.object_],
    road_class: NDArray[np.object_],
    n: int,
) -> tuple[FloatArray, FloatArray]:
    """``n`` points within ~3 m of the roads, busier classes and longer roads likelier."""
    parts, index = shapely.get_parts(roads_geometry, return_index=True)
    weight = np.array([_ROAD_WEIGHT[c] for c in road_class[index]]) * shapely.length(parts)
    line = rng.choice(len(parts), n, p=weight / weight.sum())
    points = shapely.line_interpolate_point(parts[line], rng.random(n), normalized=True)
    noise = rng.normal(0, 3.0, (2, n))
    return shapely.get_x(points) + noise[0], shapely.get_y(points) + noise[1]


def county_incidents(
    seed: int,
    county_code: str,
    quotas: dict[str, int],
    anchors: pd.DataFrame,
    roads_geometry: NDArray[np.object_],
    road_class: NDArray[np.object_],
    outline_m: shapely.Geometry,
    outline_ll: shapely.Geometry,
) -> pd.DataFrame:
    """Exactly ``quotas[code]`` incidents per category for one county.

    ``anchors``: places people live — columns x, y (EPSG:4546), weight (> 0) and
    address (full text or None); every anchor lies inside the county. Returns
    columns category, description, channel, reported_at, address, x, y.
    """
    rng = rng_for(seed, county_code, "incidents")
    ax = anchors["x"].to_numpy()
    ay = anchors["y"].to_numpy()
    aw = anchors["weight"].to_numpy(dtype=np.float64)
    atext = anchors["address"].to_numpy(dtype=object)
    frames = []
    for category in (c.code for c in INCIDENT_CATEGORIES):
        n = int(quotas.get(category, 0))
        if n == 0:
            continue
        on_road = np.zeros(n, dtype=bool)
        if category == TRAFFIC_CATEGORY and len(roads_geometry):
            on_road = rng.random(n) < _ON_ROAD_SHARE
        x = np.empty(n)
        y = np.empty(n)
        address = np.full(n, None, dtype=object)
        k = int((~on_road).sum())
        which = rng.choice(len(ax), k, p=aw / aw.sum())
        jx = ax[which] + rng.normal(0, _JITTER_M, k)
        jy = ay[which] + rng.normal(0, _JITTER_M, k)
        # A jitter that leaves the county falls back to the anchor itself.
        ok = inside_both(outline_m, outline_ll, jx, jy)
        x[~on_road] = np.where(ok, jx, ax[which])
        y[~on_road] = np.where(ok, jy, ay[which])
        address[~on_road] = np.where(rng.random(k) < _WITH_ADDRESS_SHARE, atext[which], None)
        road_x, road_y = _road_points(
            rng, roads_geometry, road_class, int(on_road.sum()), outline_m, outline_ll
        )
        x[on_road] = road_x
        y[on_road] = road_y
        p = _CHANNEL_P.get(category, _DEFAULT_CHANNEL_P)
        frames.append(
            pd.DataFrame(
                {
                    "category": category,
                    "description": pick(rng, _DESCRIPTIONS.get(category, ("群众反映情况",)), n),
                    "channel": np.asarray(INCIDENT_CHANNELS, dtype=object)[rng.choice(4, n, p=p)],
                    "reported_at": _times(rng, category, n),
                    "address": address,
                    "x": x,
                    "y": y,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _road_points(
    rng: np.random.Generator,
    roads_geometry: NDArray[np.object_],
    road_class: NDArray[np.object_],
    n: int,
    outline_m: shapely.Geometry,
    outline_ll: shapely.Geometry,
) -> tuple[FloatArray, FloatArray]:
    """``n`` points on (within ~3 m of) the county's roads, inside the county."""
    xs: list[FloatArray] = []
    ys: list[FloatArray] = []
    have = 0
    while have < n:
        x, y = _on_roads(rng, roads_geometry, road_class, int((n - have) * 1.1) + 8)
        ok = inside_both(outline_m, outline_ll, x, y)
        xs.append(x[ok])
        ys.append(y[ok])
        have += int(ok.sum())
    return np.concatenate(xs)[:n] if xs else np.empty(0), np.concatenate(ys)[
        :n
    ] if ys else np.empty(0)


def incident_anchors(
    addresses: pd.DataFrame,
    grid_of_address: IntArray,
    grid_population: IntArray,
    grid_urban: NDArray[np.bool_],
    grid_points: FloatArray,
) -> pd.DataFrame:
    """Anchor points for :func:`county_incidents`: every address that lies in a grid,
    plus ``grid_points[g]`` for each grid without an address.

    An anchor's weight is its grid's population (×1.5 in urban communities) shared
    equally among the grid's anchors, so each grid gets incidents in proportion.
    """
    n_grids = len(grid_population)
    located = grid_of_address >= 0
    grid = grid_of_address[located]
    empty = np.flatnonzero(np.bincount(grid, minlength=n_grids) == 0)
    grid = np.concatenate([grid, empty])
    x = np.concatenate([addresses["x"].to_numpy()[located], grid_points[empty, 0]])
    y = np.concatenate([addresses["y"].to_numpy()[located], grid_points[empty, 1]])
    text = np.concatenate(
        [addresses["full_text"].to_numpy(dtype=object)[located], np.full(len(empty), None)]
    )
    per_grid = np.bincount(grid, minlength=n_grids)
    weight = grid_population[grid] * np.where(grid_urban[grid], _URBAN_WEIGHT, 1.0) / per_grid[grid]
    return pd.DataFrame({"x": x, "y": y, "weight": weight, "address": text})
