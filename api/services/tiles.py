"""Mapbox Vector Tiles of the OGC collections (WebMercatorQuad), their TileJSON, their cache.

Every tile is one SQL statement built from the collection registry of
`api.services.features` (`COLLECTIONS`: source, geometry, properties and who may see each,
conditions, the tables it reads) plus a few tile-only facts per collection (`TILED`: min
zoom, extra fields). The tile envelope is `ST_TileEnvelope(z, x, y)` with z/x/y bound, the
features are picked with the geometry index (`&&` against the envelope widened by the tile
buffer), admin areas (large, detailed polygons) cut to that box first, simplified below z13 by
half an output pixel (ST_Simplify keeping collapsed rings), projected, clipped and quantised by
`ST_AsMVTGeom`, and encoded by `ST_AsMVT` — one layer per tile, named after the collection.

Decisions:
- An empty tile (nothing there, or a zoom below the collection's `minzoom`) is
  `204 No Content`; MapLibre, GDAL and QGIS read 204 as an empty tile.
- Layers with DORI levels (coverage, gaps, camera_fov, coverage_h3) and the coverage fields
  of grids are served at one `level` (default detect): four stacked copies would hide each
  other anyway.
- Grids carry `public_ratio`, `ratio` and `camera_count` of that level (LEFT JOIN: grids
  without computed coverage have none) for callers who may read coverage (viewer and up).
- Tiles hold current grid versions only, and leave out `valid_from`/`valid_to`.
- The cache is in-process: a tile is reused while the change marker of every table it reads
  (`features.change_markers`, the very marker numberMatched is cached under: relfilenode,
  the statistics counters, and the generation that write paths bump through
  `invalidate_counts`) is unchanged, for at most `TILE_TTL_S`; tiles whose properties
  depend on the clock (incidents' `overdue`) are keyed by the minute as well. Tiles are
  keyed by role, since roles see different fields. Bounded in bytes (GRIDCOVER_TILE_CACHE_MB).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal,
    select,
    table,
)
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from api.auth import Principal
from api.errors import Problem
from api.services.features import (
    COLLECTIONS,
    DORI_LEVELS,
    MARKER_LEASE_S,
    ChangeAwareCache,
    Collection,
    MarkerLease,
    Property,
    change_marker,
    rounded,
)

TILE_MATRIX_SET = "WebMercatorQuad"
MVT = "application/vnd.mapbox-vector-tile"
EXTENT = 4096  # tile coordinate units per side
BUFFER = 64  # units drawn beyond each side, so lines and outlines join across tiles
MAX_ZOOM = 24  # the deepest tile served (MapLibre overzooms past a source's maxzoom)
SOURCE_MAXZOOM = 16  # what TileJSON advertises: deeper tiles add no detail
SIMPLIFY_BELOW_ZOOM = 13
TILE_TTL_S = 300.0
TILE_CACHE_BYTES = 128 * 1024 * 1024
TILE_CACHE_MAX_BYTES_PER_TILE = 2 * 1024 * 1024
HALF_WORLD_M = 20037508.342789244
# Where the data are when a collection is empty: Xiangxi prefecture.
DEFAULT_BOUNDS = (109.1, 27.7, 110.7, 29.6)


@dataclass(frozen=True)
class TileField:
    """A tile-only property: its SQL (over the collection's source), type and who sees it."""

    name: str
    type: str
    title: str
    permission: str


@dataclass(frozen=True)
class Tiling:
    """How one collection is tiled."""

    minzoom: int
    exclude: tuple[str, ...] = ()  # registry properties left out of tiles
    numeric_id: bool = False  # the one string key is all digits: it is the MVT feature id
    coverage: bool = False  # grids: the coverage fields at ?level
    clip: bool = False  # large polygons: cut to the tile before projecting them


# Which collections have tiles, and from which zoom on. Dense point layers start at street
# scale; grids from the zoom where a county fits in a tile or two.
TILED: dict[str, Tiling] = {
    "counties": Tiling(0, numeric_id=True, clip=True),
    "townships": Tiling(6, numeric_id=True, clip=True),
    "villages": Tiling(8, numeric_id=True, clip=True),
    "grids": Tiling(8, exclude=("valid_from", "valid_to"), numeric_id=True, coverage=True),
    "roads": Tiling(8),
    "key_places": Tiling(11),
    "cameras": Tiling(13),
    "camera_fov": Tiling(13),
    "coverage": Tiling(8),
    "gaps": Tiling(11),
    "incidents": Tiling(11),
    "coverage_h3": Tiling(9),
}
COVERAGE_FIELDS = (
    TileField("public_ratio", "number", "Public-space coverage at the level", "read:coverage"),
    TileField("ratio", "number", "Area coverage at the level", "read:coverage"),
    TileField("camera_count", "integer", "Cameras covering the grid", "read:coverage"),
)


def _coverage_h3() -> Collection:
    """H3 cells (resolution 9) with the share cameras cover, per level; the registry's own
    definition wins once `COLLECTIONS` has one."""
    cells = table(
        "coverage_h3",
        column("h3", String),
        column("level", String),
        column("covered_fraction", Float),
        column("covered_m2", Float),
        column("geom"),
    ).alias("h3_cells")
    return Collection(
        id="coverage_h3",
        title="Coverage on H3 cells",
        description="Share of each H3 resolution-9 cell (~0.1 km²) that cameras cover, per "
        "DORI level; cells no camera sees are left out",
        source=cells,
        keys=(cells.c.h3, cells.c.level),
        key_types=("string", "string"),
        geometry=cells.c.geom,
        geometry_type="polygon",
        properties=(
            Property("h3", cells.c.h3, "string", "H3 cell"),
            Property("level", cells.c.level, "string", "DORI level", enum=DORI_LEVELS),
            Property(
                "covered_fraction",
                rounded(cells.c.covered_fraction, 4),
                "number",
                "Covered share of the cell",
            ),
            Property("covered_m2", rounded(cells.c.covered_m2, 1), "number", "Covered m²"),
        ),
        permission="read:coverage",
        tables=("coverage_h3",),
    )


TILE_ONLY = {"coverage_h3": _coverage_h3()}


def tiled_collection(cid: str) -> Collection | None:
    """The collection `cid` if it has tiles (registry first, then the tile-only ones)."""
    if cid not in TILED:
        return None
    return COLLECTIONS.get(cid) or TILE_ONLY.get(cid)


def tiled_collections() -> list[Collection]:
    return [c for c in (tiled_collection(cid) for cid in TILED) if c is not None]


def has_levels(collection: Collection) -> bool:
    """Whether tiles of the collection are served at one `level`."""
    return TILED[collection.id].coverage or dori_level(collection) is not None


def dori_level(collection: Collection) -> Property | None:
    """The collection's DORI `level` property, if it has one (admin areas' `level` is not)."""
    return next(
        (p for p in collection.properties if p.name == "level" and p.enum == DORI_LEVELS), None
    )


# --- tile addresses --------------------------------------------------------------------------


def check_tile(z: int, x: int, y: int) -> None:
    """400 unless z/x/y address a WebMercatorQuad tile."""
    if not 0 <= z <= MAX_ZOOM:
        raise _tile_problem("z", f"zoom {z} is outside 0..{MAX_ZOOM}")
    size = 1 << z
    for name, value in (("x", x), ("y", y)):
        if not 0 <= value < size:
            raise _tile_problem(name, f"{name} = {value} is outside 0..{size - 1} at zoom {z}")


def _tile_problem(name: str, detail: str) -> Problem:
    return Problem(400, detail, errors=[{"field": name, "in": "path", "reason": detail}])


def tile_bounds(z: int, x: int, y: int, margin: float = 0.0) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of a tile widened by `margin` of its size."""
    n = 1 << z

    def lon(tx: float) -> float:
        return tx / n * 360.0 - 180.0

    def lat(ty: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * ty / n))))

    return (
        max(-180.0, lon(x - margin)),
        max(-85.06, lat(min(n, y + 1 + margin))),
        min(180.0, lon(x + 1 + margin)),
        min(85.06, lat(max(0, y - margin))),
    )


# --- the SQL ---------------------------------------------------------------------------------


def _iso_text(expr: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.to_char(func.timezone("UTC", expr), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')


def _tile_property(prop: Property) -> ColumnElement[Any]:
    expr = _iso_text(prop.expr) if prop.type == "date-time" else prop.expr
    return expr.label(prop.name)


def tile_properties(collection: Collection, principal: Principal) -> list[Property]:
    """The registry properties a caller sees in tiles of the collection."""
    excluded = set(TILED[collection.id].exclude)
    return [p for p in collection.visible(principal) if p.name not in excluded]


def tile_fields(collection: Collection, principal: Principal) -> list[TileField]:
    """The tile-only properties a caller sees."""
    if not TILED[collection.id].coverage:
        return []
    return [f for f in COVERAGE_FIELDS if principal.can(f.permission)]


def tile_tables(collection: Collection, principal: Principal) -> tuple[str, ...]:
    """The tables a caller's tile of the collection reads (what its cache entry watches)."""
    if tile_fields(collection, principal):
        return tuple(sorted({*collection.tables, "coverage"}))
    return collection.tables


_coverage = table(
    "coverage",
    column("grid_id", BigInteger),
    column("level", String),
    column("ratio", Float),
    column("public_ratio", Float),
    column("camera_count", Integer),
).alias("tile_coverage")


@dataclass(frozen=True)
class TileQuery:
    """A tile statement of one shape (collection, what the caller sees, simplified or not),
    built once and run with the tile's values as bound parameters."""

    statement: Any
    parameters: frozenset[str]

    def run(self, conn: Connection, z: int, x: int, y: int, level: str) -> bytes | None:
        west, south, east, north = tile_bounds(z, x, y, BUFFER / EXTENT)
        values = {
            "z": z,
            "x": x,
            "y": y,
            "west": west,
            "south": south,
            "east": east,
            "north": north,
            "level": level,
            "half_pixel": 360.0 / ((1 << z) * EXTENT) / 2,
            "step": (east - west) / 16,
        }
        params = {k: v for k, v in values.items() if k in self.parameters}
        return conn.execute(self.statement, params).scalar()


_queries: dict[tuple[Any, ...], TileQuery] = {}


def tile_query(collection: Collection, principal: Principal, z: int) -> TileQuery:
    """The statement for tiles of the collection at zoom z as the caller sees them."""
    simplify = collection.geometry_type != "point" and z < SIMPLIFY_BELOW_ZOOM
    props = tuple(p.name for p in tile_properties(collection, principal))
    fields = tuple(f.name for f in tile_fields(collection, principal))
    key = (collection.id, id(collection), props, fields, simplify)
    query = _queries.get(key)
    if query is None:
        statement = tile_statement(collection, principal, simplify)
        names = frozenset(statement.compile().params)
        query = _queries.setdefault(key, TileQuery(statement, names))
    return query


def tile_statement(collection: Collection, principal: Principal, simplify: bool) -> Any:
    """The one statement that returns a tile of the collection as MVT bytes; the tile is
    given by the bound parameters z, x, y, its buffered bounds west, south, east, north (in
    degrees), level, half_pixel (degrees) and step (degrees)."""
    tiling = TILED[collection.id]
    envelope = func.ST_TileEnvelope(
        bindparam("z", type_=Integer()),
        bindparam("x", type_=Integer()),
        bindparam("y", type_=Integer()),
    )
    near = func.ST_MakeEnvelope(
        bindparam("west", type_=Float()), bindparam("south", type_=Float()),
        bindparam("east", type_=Float()), bindparam("north", type_=Float()), 4326,
    )  # fmt: skip
    geometry = collection.geometry
    if tiling.clip:  # only the part near the tile of a large polygon
        geometry = func.ST_ClipByBox2D(geometry, near)
    if simplify:  # no detail finer than half an output pixel: smaller tiles, made faster
        geometry = func.ST_Simplify(geometry, bindparam("half_pixel", type_=Float()), True)
    mvt_geometry = func.ST_AsMVTGeom(
        func.ST_Transform(geometry, 3857), envelope, EXTENT, BUFFER, True
    ).label("geom")

    columns: list[Any] = [mvt_geometry]
    if len(collection.keys) == 1 and (collection.key_types == ("integer",) or tiling.numeric_id):
        columns.append(cast(collection.keys[0], BigInteger).label("_fid"))
    columns += [_tile_property(p) for p in tile_properties(collection, principal)]

    if isinstance(collection.geometry, ColumnClause) or collection.geometry_m is None:
        is_near = collection.geometry.op("&&")(near)
    else:  # a computed geometry (gaps: ST_Transform(gap_m)): the metric column has the index
        segmented = func.ST_Segmentize(near, bindparam("step", type_=Float()))
        is_near = collection.geometry_m.op("&&")(func.ST_Transform(segmented, 4546))
    source = collection.source
    conditions: list[ColumnElement[bool]] = [*collection.where, *collection.current, is_near]
    level = bindparam("level", type_=String())
    fields = tile_fields(collection, principal)
    if fields:
        source = source.outerjoin(
            _coverage,
            and_(_coverage.c.grid_id == collection.source.c.id, _coverage.c.level == level),
        )
        exprs = {
            "public_ratio": rounded(_coverage.c.public_ratio, 4),
            "ratio": rounded(_coverage.c.ratio, 4),
            "camera_count": _coverage.c.camera_count,
        }
        columns += [exprs[f.name].label(f.name) for f in fields]
    level_prop = dori_level(collection)
    if level_prop is not None:
        conditions.append(level_prop.expr == level)

    rows = select(*columns).select_from(source).where(*conditions).subquery("tile_rows")
    args: list[Any] = [rows.table_valued(), literal(collection.id, String()), EXTENT, "geom"]
    if "_fid" in rows.c:
        args.append("_fid")
    # No `WHERE geom IS NOT NULL` here: PostgreSQL would push it into the rows and compute
    # ST_AsMVTGeom twice; ST_AsMVT leaves out the rows whose geometry was clipped away.
    return select(func.ST_AsMVT(*args)).select_from(rows)


# --- the cache and the store -----------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    data: bytes
    etag: str


class TileCache(ChangeAwareCache):
    """`ChangeAwareCache` bounded by the bytes of the tiles it holds as well."""

    def __init__(self, ttl_s: float, max_bytes: int):
        super().__init__(ttl_s, max_entries=1 << 30)
        self._lock = threading.RLock()  # put() below holds it around the base class's put()
        self.max_bytes = max_bytes
        self.bytes = 0

    def put(self, key: Any, marker: tuple[Any, ...], value: Tile) -> None:
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self.bytes -= len(old.value.data)
            super().put(key, marker, value)
            self.bytes += len(value.data)
            while self.bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= len(evicted.value.data)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'


EMPTY = Tile(b"", etag_of(b""))


class TileStore:
    """Tiles of the tiled collections, cached in this process while their data hold."""

    def __init__(self, ttl_s: float = TILE_TTL_S, max_bytes: int = TILE_CACHE_BYTES):
        self.cache = TileCache(ttl_s, max_bytes)
        self.markers = MarkerLease(MARKER_LEASE_S)

    def tile(
        self,
        engine: Engine,
        collection: Collection,
        principal: Principal,
        z: int,
        x: int,
        y: int,
        level: str = DORI_LEVELS[0],
    ) -> Tile:
        """Tile z/x/y (already checked) of the collection as the caller may see it; a tile
        cached while the marker lease holds costs no query. `engine` reads (autocommit)."""
        if z < TILED[collection.id].minzoom:
            return EMPTY
        if not has_levels(collection):
            level = ""  # not part of the tile: one cache entry for every ?level
        props = tile_properties(collection, principal)
        fields = tile_fields(collection, principal)
        key: tuple[Any, ...] = (
            collection.id,
            z,
            x,
            y,
            level,
            tuple(p.name for p in props),
            tuple(f.name for f in fields),
        )
        if any(p.volatile for p in props):
            key += (int(time.time() // 60),)
        tables = tile_tables(collection, principal)
        marker = self.markers.get(tables)
        cached = self.cache.get(key, marker) if marker is not None else None
        if cached is not None:
            return cached
        with _missing_table_is_404(collection), engine.connect() as conn:
            if marker is None:
                marker = self.markers.read(conn, tables)
                cached = self.cache.get(key, marker)
                if cached is not None:
                    return cached
            data = tile_query(collection, principal, z).run(conn, z, x, y, level)
        tile = Tile(bytes(data), etag_of(bytes(data))) if data else EMPTY
        if len(tile.data) <= min(TILE_CACHE_MAX_BYTES_PER_TILE, self.cache.max_bytes):
            self.cache.put(key, marker, tile)
        return tile


@contextmanager
def _missing_table_is_404(collection: Collection) -> Iterator[None]:
    """A collection whose table a database lacks (not migrated yet) answers 404, not 500."""
    try:
        yield
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42P01":  # undefined table
            raise
        raise Problem(
            404, f"collection {collection.id} is not in this database yet; run gridcover db migrate"
        ) from None


def collection_extent(conn: Connection, features: Any, collection: Collection) -> dict[str, Any]:
    """The collection's extent from the feature store `features` (cached there)."""
    with _missing_table_is_404(collection):
        return features.extent(conn, collection, change_marker(conn, collection.tables))


# --- TileJSON --------------------------------------------------------------------------------

TILEJSON_TYPES: Mapping[str, str] = {
    "string": "String",
    "integer": "Number",
    "number": "Number",
    "boolean": "Boolean",
    "date-time": "String",
}


def tilejson(
    collection: Collection,
    principal: Principal,
    base_url: str,
    extent: Mapping[str, Any],
    level: str | None,
) -> dict[str, Any]:
    """TileJSON 3.0.0 of the collection's vector tiles, as the caller sees them."""
    tiling = TILED[collection.id]
    url = f"{base_url}/collections/{collection.id}/tiles/{TILE_MATRIX_SET}/{{z}}/{{x}}/{{y}}"
    if has_levels(collection):
        url += f"?level={level or DORI_LEVELS[0]}"
    bbox = extent.get("spatial", {}).get("bbox", [DEFAULT_BOUNDS])[0]
    west, south, east, north = (float(v) for v in bbox)
    fields = {
        p.name: f"{TILEJSON_TYPES[p.type]}: {p.title}"
        for p in tile_properties(collection, principal)
    }
    fields |= {
        f.name: f"{TILEJSON_TYPES[f.type]}: {f.title}" for f in tile_fields(collection, principal)
    }
    center_zoom = min(max(tiling.minzoom, 9), SOURCE_MAXZOOM)
    return {
        "tilejson": "3.0.0",
        "name": collection.title,
        "description": collection.description,
        "version": "1.0.0",
        "scheme": "xyz",
        "tiles": [url],
        "minzoom": tiling.minzoom,
        "maxzoom": SOURCE_MAXZOOM,
        "bounds": [west, south, east, north],
        "center": [round((west + east) / 2, 6), round((south + north) / 2, 6), center_zoom],
        "vector_layers": [
            {
                "id": collection.id,
                "description": collection.description,
                "minzoom": tiling.minzoom,
                "maxzoom": SOURCE_MAXZOOM,
                "fields": fields,
            }
        ],
    }
