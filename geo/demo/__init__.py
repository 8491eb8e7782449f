"""Deterministic synthetic demo world for Xiangxi (湘西州, 433100).

Real county outlines and real division codes/names; synthetic township, village
and grid geometry (exact nested tilings), roads, key places, cameras, a year of
incidents and an address gazetteer. Pure computation: no database, no web layer.

    from geo.demo import build_world
    world = build_world("small", seed=0)   # one county, about a second
    world.grids.head()

See :func:`build_world` and :class:`World`.
"""

from geo.demo.incidents import INCIDENTS_PER_YEAR
from geo.demo.world import SCALES, SMALL_SCALE_COUNTY, World, build_world

__all__ = ["INCIDENTS_PER_YEAR", "SCALES", "SMALL_SCALE_COUNTY", "World", "build_world"]
