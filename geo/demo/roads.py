"""Synthetic road network of the demo world (EPSG:4546 metres).

- Trunk roads join township seats prefecture-wide: a minimum spanning tree of the
  county seats gives the national roads; a minimum spanning tree of all township
  seats plus the shortest Delaunay links not in it (~15 % more links, so the net
  has some loops) gives provincial roads (links that cross a county border or touch
  a county seat) and county roads (the rest). Every link meanders gently.
- Each township seat gets a small street grid (a single crossing in a township
  without urban communities), sized to its urban area.
- Each rural village gets a village road from its centre to the nearest trunk road
  or street of its county.
Roads are cut at county borders: every feature lies in one county.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.demo._util import FloatArray, IntArray, rng_for, wiggled_path
from geo.demo.admin import CountyPlan
from geo.demo.names import street_names

ROAD_CLASSES: tuple[str, ...] = ("national", "provincial", "county", "village", "street")

# Route numbers of national roads that cross Xiangxi; used as names in length order.
_NATIONAL_ROUTES = ("G209", "G319", "G352", "G354", "G242", "G536", "G537")
_EXTRA_LINK_SHARE = 0.15
_STREET_SPACING_M = {True: 400.0, False: 320.0}  # keyed by "city" (county seat/街道)
_VILLAGE_ROAD_MIN_M = 120.0
_MIN_PIECE_M = 1.0


@dataclass
class Roads:
    """Road features of one county: parallel arrays, geometry in EPSG:4546.

    ``township_pos`` is the township a street belongs to (-1 for other classes);
    ``village_pos`` the village a village road serves (-1 for other classes).
    """

    road_class: NDArray[np.object_]
    name: NDArray[np.object_]
    geometry: NDArray[np.object_]
    township_pos: IntArray
    village_pos: IntArray

    def __len__(self) -> int:
        return len(self.geometry)


@dataclass
class TrunkLink:
    """One trunk road between two township seats, not yet cut at county borders."""

    road_class: str
    name: str
    line: shapely.LineString


def _minimum_spanning_tree(xy: FloatArray) -> list[tuple[int, int]]:
    """Edges (i, j) of the Euclidean minimum spanning tree (Prim, O(n²))."""
    n = len(xy)
    in_tree = np.zeros(n, dtype=bool)
    in_tree[0] = True
    best = np.hypot(*(xy - xy[0]).T)
    parent = np.zeros(n, dtype=np.int64)
    edges = []
    for _ in range(n - 1):
        cand = np.where(in_tree, np.inf, best)
        j = int(np.argmin(cand))
        edges.append((int(parent[j]), j))
        in_tree[j] = True
        d = np.hypot(*(xy - xy[j]).T)
        closer = d < best
        best[closer] = d[closer]
        parent[closer] = j
    return edges


def _delaunay_links(xy: FloatArray) -> list[tuple[int, int]]:
    """Node pairs (i < j) joined by an edge of the Delaunay triangulation of ``xy``."""
    edges = shapely.get_parts(shapely.delaunay_triangles(shapely.multipoints(xy), only_edges=True))
    where = {(float(x), float(y)): i for i, (x, y) in enumerate(xy)}
    links = set()
    for a, b in shapely.get_coordinates(edges).reshape(-1, 2, 2):
        i, j = where[(float(a[0]), float(a[1]))], where[(float(b[0]), float(b[1]))]
        links.add((min(i, j), max(i, j)))
    return sorted(links)


def trunk_network(seed: int, plans: list[CountyPlan]) -> list[TrunkLink]:
    """National, provincial and county roads between all township seats (uncut)."""
    rng = rng_for(seed, "trunk-roads")
    xy = np.concatenate([p.seats_xy for p in plans])
    county = np.concatenate([np.full(len(p.townships), p.index) for p in plans])
    county_seat = np.concatenate([p.townships["is_county_seat"].to_numpy() for p in plans])
    seats = np.flatnonzero(county_seat)

    national = [(int(seats[i]), int(seats[j])) for i, j in _minimum_spanning_tree(xy[seats])]
    national.sort(key=lambda e: -np.hypot(*(xy[e[0]] - xy[e[1]])))
    taken = {tuple(sorted(e)) for e in national}
    tree = [tuple(sorted(e)) for e in _minimum_spanning_tree(xy)]
    in_tree = set(tree)
    extra_pool = [e for e in _delaunay_links(xy) if e not in taken and e not in in_tree]
    extra_pool.sort(key=lambda e: np.hypot(*(xy[e[0]] - xy[e[1]])))
    extra = extra_pool[: round(_EXTRA_LINK_SHARE * len(xy))]
    others = [e for e in tree if e not in taken] + extra

    links: list[TrunkLink] = []
    for k, (i, j) in enumerate(national):
        path = wiggled_path(rng, tuple(xy[i]), tuple(xy[j]), 250.0, 0.05, 1500.0)
        links.append(
            TrunkLink(
                "national", _NATIONAL_ROUTES[k % len(_NATIONAL_ROUTES)], shapely.linestrings(path)
            )
        )
    provincial = [
        e for e in others if county[e[0]] != county[e[1]] or county_seat[e[0]] or county_seat[e[1]]
    ]
    numbers = np.sort(rng.choice(np.arange(200, 360), len(provincial), replace=False))
    provincial_number = dict(zip(provincial, numbers, strict=True))
    county_counter: dict[int, int] = {}
    for i, j in others:
        if (i, j) in provincial_number:
            name = f"S{provincial_number[(i, j)]}"
            road_class = "provincial"
        else:
            county_counter[county[i]] = county_counter.get(county[i], 0) + 1
            name = f"X{county_counter[county[i]]:03d}"
            road_class = "county"
        path = wiggled_path(rng, tuple(xy[i]), tuple(xy[j]), 250.0, 0.07, 1200.0)
        links.append(TrunkLink(road_class, name, shapely.linestrings(path)))
    return links


def _lines_only(geoms: NDArray[np.object_]) -> NDArray[np.object_]:
    """Drop points, empties and crumbs (< 1 m, e.g. where a line grazes the border)
    from clipping results; LineString or MultiLineString out, None if nothing is left."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) >= _MIN_PIECE_M)
    out = np.full(len(geoms), None, dtype=object)
    shapely.multilinestrings(parts[keep], indices=index[keep], out=out)
    single = np.array([g is not None and shapely.get_num_geometries(g) == 1 for g in out])
    if single.any():
        out[single] = shapely.get_geometry(out[single], 0)
    return out


def _town_streets(
    rng: np.random.Generator, seat: FloatArray, urban_radius: float, n_urban: int, city: bool
) -> list[shapely.LineString]:
    """A slightly irregular, randomly rotated street grid centred on ``seat``."""
    if n_urban == 0:
        half, per_direction, spacing = 450.0, 1, 0.0
    else:
        spacing = _STREET_SPACING_M[city]
        half = 0.8 * urban_radius + 400.0
        per_direction = int(np.clip(round(2 * half / spacing), 2, 8))
    angle = rng.uniform(0, np.pi / 2)
    u = np.array([np.cos(angle), np.sin(angle)])
    v = np.array([-u[1], u[0]])
    streets = []
    for along, across in ((u, v), (v, u)):
        offsets = (np.arange(per_direction) - (per_direction - 1) / 2) * spacing
        offsets += rng.uniform(-0.12, 0.12, per_direction) * spacing
        for off in offsets:
            a = seat + off * across - rng.uniform(0.7, 1.0) * half * along
            b = seat + off * across + rng.uniform(0.7, 1.0) * half * along
            streets.append(shapely.linestrings(np.array([a, b])))
    return streets


def county_roads(
    seed: int,
    plan: CountyPlan,
    trunk: list[TrunkLink],
    village_xy: FloatArray,
    urban_radius: FloatArray,
) -> Roads:
    """All roads inside one county: trunk pieces, town streets, village roads.

    ``village_xy`` are the village centres (villages in code order),
    ``urban_radius`` per township the distance from the seat to its farthest
    urban-community centre (0 without urban communities).
    """
    rng = rng_for(seed, plan.code, "roads")
    outline = plan.outline
    shapely.prepare(outline)
    trunk_lines = np.array([link.line for link in trunk], dtype=object)
    clipped = np.full(len(trunk), None, dtype=object)
    touching = shapely.intersects(outline, trunk_lines)
    clipped[touching] = _lines_only(shapely.intersection(trunk_lines[touching], outline))
    has = np.array([g is not None for g in clipped])
    classes = [link.road_class for link in trunk]
    names = [link.name for link in trunk]
    road_class = [classes[i] for i in np.flatnonzero(has)]
    road_name = [names[i] for i in np.flatnonzero(has)]
    geoms = list(clipped[has])
    township_pos = [-1] * len(geoms)
    village_pos = [-1] * len(geoms)

    towns = plan.townships
    street_lines: list[shapely.LineString] = []
    street_town: list[int] = []
    for t in range(len(towns)):
        grid = _town_streets(
            rng,
            plan.seats_xy[t],
            float(urban_radius[t]),
            int(towns["n_urban"].iloc[t]),
            bool(towns["is_city"].iloc[t]),
        )
        street_lines.extend(grid)
        street_town.extend([t] * len(grid))
    clipped_streets = _lines_only(
        shapely.intersection(np.array(street_lines, dtype=object), outline)
    )
    keep = np.flatnonzero([g is not None for g in clipped_streets])
    kept_town = np.array(street_town)[keep]
    per_town = street_names(rng, np.bincount(kept_town, minlength=len(towns)).tolist())
    labels = [per_town[t].pop() for t in kept_town]
    road_class += ["street"] * len(keep)
    road_name += labels
    geoms += list(clipped_streets[keep])
    township_pos += [street_town[i] for i in keep]
    village_pos += [-1] * len(keep)

    # Village roads: rural villages to the nearest trunk road or street.
    network = shapely.STRtree(np.array(geoms, dtype=object))
    rural = np.flatnonzero(~plan.villages["urban"].to_numpy())
    centres = shapely.points(village_xy[rural])
    target = network.query_nearest(centres, all_matches=False)[1]
    links = shapely.shortest_line(centres, np.array(geoms, dtype=object)[target])
    lengths = shapely.length(links)
    for v, link, length in zip(rural, links, lengths, strict=True):
        if length < _VILLAGE_ROAD_MIN_M:
            continue
        end = shapely.get_coordinates(link)[-1]
        line = shapely.linestrings(
            wiggled_path(rng, tuple(village_xy[v]), tuple(end), 120.0, 0.12, 300.0)
        )
        if not shapely.contains_properly(outline, line):
            line = _lines_only(np.array([shapely.intersection(line, outline)]))[0]
            if line is None:
                continue
        road_class.append("village")
        road_name.append(plan.villages["short_name"].iloc[v] + "通村公路")
        geoms.append(line)
        township_pos.append(-1)
        village_pos.append(int(v))
    return Roads(
        road_class=np.array(road_class, dtype=object),
        name=np.array(road_name, dtype=object),
        geometry=np.array(geoms, dtype=object),
        township_pos=np.array(township_pos, dtype=np.int64),
        village_pos=np.array(village_pos, dtype=np.int64),
    )
