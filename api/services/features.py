"""OGC API – Features: the collection registry, the SQL of every collection, numberMatched.

One table, `COLLECTIONS`, says what each collection is: where its rows come from, its
feature id, geometry, properties (names and types as DESIGN.md lists them), time, and the
permission that reads it. Every query below is built from that table with SQLAlchemy Core;
values from the request are bound parameters, names are only ever looked up in the table.

numberMatched is exact. A page that is not full tells it without counting; otherwise the
count is cached per (collection, filter, bbox, datetime) and reused while nothing it reads
may have changed. "May have changed" is decided by a change marker read from PostgreSQL
before the count: per table, its relfilenode (TRUNCATE) and the cumulative
inserted/updated/deleted tuple counters of the statistics system, plus a process-local
generation that `invalidate_counts(table)` bumps (write paths in this process call it after
commit, so their own writes are seen at once). The statistics counters of another process'
write become visible when its backend flushes them, normally within a second (PostgreSQL 15
flushes at most once a second, later only under lock contention), so a count cached from
before such a write can be served until then; entries also expire after `COUNT_TTL_S`
whatever the markers say (the hard bound, and the bound for counts that depend on the clock,
e.g. `overdue`, which are never cached at all).

Single features are cached the same way (`ITEM_TTL_S`, `ITEM_CACHE_BYTES`), so a feature read
again costs no query at all: the marker read for counts and features is reused for
`MARKER_LEASE_S` (unless this process' generation moved), which adds that much to how late
another process' write can show.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import shapely
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    String,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from api.auth import Principal
from api.cql2 import CQL2Error, Queryable, compile_filter, parse, parse_timestamp
from api.errors import Problem
from api.services.incidents import FINISHED_STATES
from geo.camera import DORI_LEVELS

# --- coordinate reference systems ------------------------------------------------------------

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


@dataclass(frozen=True)
class CRS:
    """An output/input CRS: `north_first` when its authority axis order is lat/lon or N/E
    (coordinates are then written in that order, as OGC API – Features Part 2 requires)."""

    uri: str
    srid: int
    north_first: bool
    decimals: int
    metric: bool = False


# EPSG:4490 (CGCS2000) is the storage datum within 0.1 m here: it is served without a shift.
CRSS = (
    CRS(CRS84, 4326, north_first=False, decimals=7),
    CRS(EPSG + "4326", 4326, north_first=True, decimals=7),
    CRS(EPSG + "4490", 4490, north_first=True, decimals=7),
    CRS(EPSG + "4546", 4546, north_first=True, decimals=2, metric=True),
    CRS(EPSG + "3857", 3857, north_first=False, decimals=2, metric=True),
)
CRS_BY_URI = {crs.uri: crs for crs in CRSS}
DEFAULT_CRS = CRSS[0]


def crs_from(value: str | None, parameter: str) -> CRS:
    """A CRS from its OGC URI, a safe CURIE `[EPSG:4546]` or `EPSG:4546`; 400 otherwise."""
    if value is None or value == "":
        return DEFAULT_CRS
    key = value.strip()
    if key.startswith("[") and key.endswith("]"):
        key = key[1:-1]
    upper = key.upper()
    if upper in ("OGC:CRS84", "CRS84"):
        key = CRS84
    elif upper.startswith("EPSG:"):
        key = EPSG + key[5:]
    found = CRS_BY_URI.get(key)
    if found is None:
        raise Problem(
            400,
            f"unsupported {parameter} {value!r}; use one of " + ", ".join(CRS_BY_URI),
            errors=[{"field": parameter, "in": "query", "reason": "unsupported CRS"}],
        )
    return found


def srid_geometry(crs: CRS, geometry: shapely.Geometry) -> ColumnElement[Any]:
    """A geometry given in `crs` (its axis order) as a bound EPSG:4326 SQL geometry."""
    if crs.north_first:
        geometry = shapely.transform(geometry, lambda xy: xy[:, ::-1])
    wkb = literal(shapely.to_wkb(geometry), LargeBinary())
    if crs.srid in (4326, 4490):
        return func.ST_GeomFromWKB(wkb, 4326)
    return func.ST_Transform(func.ST_GeomFromWKB(wkb, crs.srid), 4326)


# --- the registry ---------------------------------------------------------------------------


def rounded(expr: ColumnElement[Any], digits: int) -> ColumnElement[Any]:
    """float4 columns read back as 12.300000190734863; serve and filter them as 12.3."""
    return cast(func.round(cast(expr, Numeric), digits), Float)


@dataclass(frozen=True)
class Property:
    name: str
    expr: ColumnElement[Any]
    type: str  # string, integer, number, boolean, date-time
    title: str
    permission: str | None = None  # who may see (and filter or sort on) it
    volatile: bool = False  # depends on the clock: counts filtered on it are not cached
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Collection:
    id: str
    title: str
    description: str
    source: FromClause
    keys: tuple[ColumnElement[Any], ...]  # feature id parts, joined with "-"
    key_types: tuple[str, ...]  # integer or string, per part
    geometry: ColumnElement[Any]  # EPSG:4326
    geometry_type: str  # point, linestring, polygon, multipolygon, multilinestring, any
    properties: tuple[Property, ...]
    permission: str
    tables: tuple[str, ...]  # what its rows are read from (for the change marker)
    where: tuple[ColumnElement[bool], ...] = ()
    geometry_m: ColumnElement[Any] | None = None  # EPSG:4546, when stored
    instant: ColumnElement[Any] | None = None  # ?datetime matches this moment column
    validity: tuple[ColumnElement[Any], ColumnElement[Any]] | None = None  # or this interval
    current: tuple[ColumnElement[bool], ...] = ()  # without ?datetime (validity collections)

    def visible(self, principal: Principal) -> tuple[Property, ...]:
        return tuple(
            p for p in self.properties if p.permission is None or principal.can(p.permission)
        )

    @property
    def has_time(self) -> bool:
        return self.instant is not None or self.validity is not None


def _t(name: str, *columns: tuple[str, Any]) -> Any:
    return table(name, *(column(c, t) for c, t in columns)).alias(name[0] + "_" + name[-1])


TZ = DateTime(timezone=True)
_admin = _t(
    "admin_area",
    ("code", String),
    ("level", String),
    ("name", String),
    ("parent_code", String),
    ("geom", None),
    ("geom_m", None),
)
_grid = _t(
    "grid",
    ("id", BigInteger),
    ("code", String),
    ("name", String),
    ("village_code", String),
    ("kind", String),
    ("households", Integer),
    ("population", Integer),
    ("worker_name", String),
    ("valid_from", TZ),
    ("valid_to", TZ),
    ("geom", None),
    ("geom_m", None),
)
_road = _t(
    "road", ("id", BigInteger), ("road_class", String), ("name", String), ("geom", None),
    ("geom_m", None),
)  # fmt: skip
_place = _t(
    "key_place", ("id", BigInteger), ("kind", String), ("name", String), ("geom", None),
    ("geom_m", None),
)  # fmt: skip
_camera = _t(
    "camera",
    ("id", BigInteger),
    ("gb_id", String),
    ("name", String),
    ("kind", String),
    ("height_m", Float),
    ("azimuth_deg", Float),
    ("hfov_deg", Float),
    ("resolution_h_px", Integer),
    ("range_m", Float),
    ("status", String),
    ("owner", String),
    ("county_code", String),
    ("geom", None),
    ("geom_m", None),
)
_fov = _t(
    "camera_fov", ("camera_id", BigInteger), ("level", String), ("geom", None), ("geom_m", None)
)
_coverage = _t(
    "coverage",
    ("grid_id", BigInteger),
    ("level", String),
    ("covered_m2", Float),
    ("ratio", Float),
    ("road_ratio", Float),
    ("places_covered", Integer),
    ("places_total", Integer),
    ("public_ratio", Float),
    ("camera_count", Integer),
    ("gap_m", None),
)
_incident = _t(
    "incident",
    ("id", BigInteger),
    ("category", String),
    ("status", String),
    ("grid_code", String),
    ("reported_at", TZ),
    ("due_at", TZ),
    ("closed_at", TZ),
    ("location", None),
    ("deleted_at", TZ),
)
# The grid a key place lies in: the current grid covering a point on its surface.
_place_grid = _grid.alias("place_grid")
_place_grid_code = (
    select(_place_grid.c.code)
    .where(
        _place_grid.c.valid_to.is_(None),
        func.ST_Covers(_place_grid.c.geom, func.ST_PointOnSurface(_place.c.geom)),
    )
    .order_by(_place_grid.c.code)
    .limit(1)
    .scalar_subquery()
)
_coverage_grid = _coverage.join(_grid, _grid.c.id == _coverage.c.grid_id)


def _admin_collection(level: str, plural: str, title: str) -> Collection:
    return Collection(
        id=plural,
        title=title,
        description=f"{level.capitalize()}-level divisions of Xiangxi prefecture",
        source=_admin,
        where=(_admin.c.level == level,),
        keys=(_admin.c.code,),
        key_types=("string",),
        geometry=_admin.c.geom,
        geometry_m=_admin.c.geom_m,
        geometry_type="multipolygon",
        properties=(
            Property("code", _admin.c.code, "string", "Division code"),
            Property("name", _admin.c.name, "string", "Name"),
            Property("parent_code", _admin.c.parent_code, "string", "Parent division code"),
            Property("level", _admin.c.level, "string", "Level", enum=(level,)),
        ),
        permission="read:public",
        tables=("admin_area",),
    )


COLLECTIONS: dict[str, Collection] = {
    c.id: c
    for c in (
        _admin_collection("county", "counties", "Counties (县)"),
        _admin_collection("township", "townships", "Townships (乡镇)"),
        _admin_collection("village", "villages", "Villages and communities (村/社区)"),
        Collection(
            id="grids",
            title="Grids (网格)",
            description="Management grids; current versions, or those valid at ?datetime",
            source=_grid,
            keys=(_grid.c.code,),
            key_types=("string",),
            geometry=_grid.c.geom,
            geometry_m=_grid.c.geom_m,
            geometry_type="multipolygon",
            properties=(
                Property("code", _grid.c.code, "string", "Grid code"),
                Property("name", _grid.c.name, "string", "Name"),
                Property("village_code", _grid.c.village_code, "string", "Village code"),
                Property("kind", _grid.c.kind, "string", "Kind", enum=("综合网格", "专属网格")),
                Property("households", _grid.c.households, "integer", "Households"),
                Property("population", _grid.c.population, "integer", "Population"),
                Property(
                    "worker_name",
                    _grid.c.worker_name,
                    "string",
                    "Grid worker",
                    permission="read:worker_name",
                ),
                Property("valid_from", _grid.c.valid_from, "date-time", "Valid from"),
                Property("valid_to", _grid.c.valid_to, "date-time", "Valid until"),
            ),
            permission="read:public",
            tables=("grid",),
            validity=(_grid.c.valid_from, _grid.c.valid_to),
            current=(_grid.c.valid_to.is_(None),),
        ),
        Collection(
            id="roads",
            title="Roads",
            description="Road network (a coverage target layer)",
            source=_road,
            keys=(_road.c.id,),
            key_types=("integer",),
            geometry=_road.c.geom,
            geometry_m=_road.c.geom_m,
            geometry_type="multilinestring",
            properties=(
                Property("id", _road.c.id, "integer", "Road id"),
                Property(
                    "road_class",
                    _road.c.road_class,
                    "string",
                    "Class",
                    enum=("national", "provincial", "county", "village", "street"),
                ),
                Property("name", _road.c.name, "string", "Name"),
            ),
            permission="read:public",
            tables=("road",),
        ),
        Collection(
            id="key_places",
            title="Key places",
            description="Schools, hospitals, markets, stations ... and the grid each lies in",
            source=_place,
            keys=(_place.c.id,),
            key_types=("integer",),
            geometry=_place.c.geom,
            geometry_m=_place.c.geom_m,
            geometry_type="any",
            properties=(
                Property("id", _place.c.id, "integer", "Place id"),
                Property("kind", _place.c.kind, "string", "Kind"),
                Property("name", _place.c.name, "string", "Name"),
                Property("grid_code", _place_grid_code, "string", "Grid code"),
            ),
            permission="read:public",
            tables=("key_place", "grid"),
        ),
        Collection(
            id="cameras",
            title="Cameras (雪亮工程)",
            description="Public video cameras",
            source=_camera,
            keys=(_camera.c.id,),
            key_types=("integer",),
            geometry=_camera.c.geom,
            geometry_m=_camera.c.geom_m,
            geometry_type="point",
            properties=(
                Property("id", _camera.c.id, "integer", "Camera id"),
                Property("gb_id", _camera.c.gb_id, "string", "GB/T 28181 device id"),
                Property("name", _camera.c.name, "string", "Name"),
                Property("kind", _camera.c.kind, "string", "Kind", enum=("bullet", "dome", "ptz")),
                Property("height_m", rounded(_camera.c.height_m, 2), "number", "Mount height"),
                Property("azimuth_deg", rounded(_camera.c.azimuth_deg, 2), "number", "Azimuth"),
                Property("hfov_deg", rounded(_camera.c.hfov_deg, 2), "number", "Horizontal FOV"),
                Property(
                    "resolution_h_px", _camera.c.resolution_h_px, "integer", "Horizontal pixels"
                ),
                Property("range_m", rounded(_camera.c.range_m, 2), "number", "Range override"),
                Property(
                    "status",
                    _camera.c.status,
                    "string",
                    "Status",
                    enum=("online", "offline", "fault"),
                ),
                Property(
                    "owner",
                    _camera.c.owner,
                    "string",
                    "Owner",
                    enum=("public", "industry", "enterprise", "residential"),
                ),
                Property("county_code", _camera.c.county_code, "string", "County code"),
            ),
            permission="read:cameras",
            tables=("camera",),
        ),
        Collection(
            id="camera_fov",
            title="Camera fields of view",
            description="Field of view of each camera per DORI level",
            source=_fov,
            keys=(_fov.c.camera_id, _fov.c.level),
            key_types=("integer", "string"),
            geometry=_fov.c.geom,
            geometry_m=_fov.c.geom_m,
            geometry_type="polygon",
            properties=(
                Property("camera_id", _fov.c.camera_id, "integer", "Camera id"),
                Property("level", _fov.c.level, "string", "DORI level", enum=DORI_LEVELS),
            ),
            permission="read:fov",
            tables=("camera_fov",),
        ),
        Collection(
            id="coverage",
            title="Grid coverage",
            description="Camera coverage of each current grid per DORI level",
            source=_coverage_grid,
            where=(_grid.c.valid_to.is_(None),),
            keys=(_grid.c.code, _coverage.c.level),
            key_types=("string", "string"),
            geometry=_grid.c.geom,
            geometry_m=_grid.c.geom_m,
            geometry_type="multipolygon",
            properties=(
                Property("grid_code", _grid.c.code, "string", "Grid code"),
                Property("level", _coverage.c.level, "string", "DORI level", enum=DORI_LEVELS),
                Property("ratio", _coverage.c.ratio, "number", "Covered share of the area"),
                Property("covered_m2", _coverage.c.covered_m2, "number", "Covered area (m²)"),
                Property("road_ratio", _coverage.c.road_ratio, "number", "Covered road share"),
                Property("places_covered", _coverage.c.places_covered, "integer", "Places seen"),
                Property("places_total", _coverage.c.places_total, "integer", "Key places"),
                Property("public_ratio", _coverage.c.public_ratio, "number", "Public coverage"),
                Property("camera_count", _coverage.c.camera_count, "integer", "Cameras"),
            ),
            permission="read:coverage",
            tables=("coverage", "grid"),
        ),
        Collection(
            id="gaps",
            title="Coverage gaps",
            description="The parts of each current grid no camera covers, per DORI level",
            source=_coverage_grid,
            where=(
                _grid.c.valid_to.is_(None),
                _coverage.c.gap_m.is_not(None),
                ~func.ST_IsEmpty(_coverage.c.gap_m),
            ),
            keys=(_grid.c.code, _coverage.c.level),
            key_types=("string", "string"),
            geometry=func.ST_Transform(_coverage.c.gap_m, 4326),
            geometry_m=_coverage.c.gap_m,
            geometry_type="multipolygon",
            properties=(
                Property("grid_code", _grid.c.code, "string", "Grid code"),
                Property("level", _coverage.c.level, "string", "DORI level", enum=DORI_LEVELS),
                Property("area_m2", rounded(func.ST_Area(_coverage.c.gap_m), 2), "number", "m²"),
            ),
            permission="read:gaps",
            tables=("coverage", "grid"),
        ),
        Collection(
            id="incidents",
            title="Incidents (事件)",
            description="Reported incidents and where they happened",
            source=_incident,
            where=(_incident.c.deleted_at.is_(None),),
            keys=(_incident.c.id,),
            key_types=("integer",),
            geometry=_incident.c.location,
            geometry_type="point",
            properties=(
                Property("id", _incident.c.id, "integer", "Incident id"),
                Property("category", _incident.c.category, "string", "Category"),
                Property("status", _incident.c.status, "string", "Status"),
                Property("grid_code", _incident.c.grid_code, "string", "Grid code"),
                Property("reported_at", _incident.c.reported_at, "date-time", "Reported at"),
                Property("due_at", _incident.c.due_at, "date-time", "Due at"),
                Property(
                    "overdue",
                    and_(
                        _incident.c.due_at.is_not(None),
                        _incident.c.due_at < func.now(),
                        _incident.c.status.not_in(FINISHED_STATES),
                    ),
                    "boolean",
                    "Open past its due time (as in /v1/incidents)",
                    volatile=True,
                ),
            ),
            permission="read:incidents",
            tables=("incident",),
            instant=_incident.c.reported_at,
        ),
    )
}


# --- requests -------------------------------------------------------------------------------

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
COUNT_TTL_S = 30.0
EXTENT_TTL_S = 300.0
ITEM_TTL_S = 300.0
ITEM_CACHE_BYTES = 32 * 1024 * 1024
MARKER_LEASE_S = 0.25


@dataclass(frozen=True)
class ItemsQuery:
    """What a request for items asked for, already parsed (the routes' dependencies do that)."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: CRS = DEFAULT_CRS
    crs: CRS = DEFAULT_CRS
    properties: tuple[str, ...] | None = None
    sortby: tuple[tuple[str, bool], ...] = ()  # (name, descending)
    datetime: tuple[datetime | None, datetime | None] | None = None  # None = open end
    filter: str | None = None
    filter_crs: CRS = DEFAULT_CRS
    equals: tuple[tuple[str, str], ...] = ()  # ?property=value
    at: datetime | None = None  # ?at= (as /v1/grids): versions valid then

    def moment(self, collection: Collection) -> tuple[datetime | None, datetime | None] | None:
        """`datetime`, or `at` (which only versioned collections take) as an instant."""
        if self.at is None:
            return self.datetime
        if collection.validity is None:
            raise _field_problem("at", f"{collection.id} have no versions; use datetime")
        if self.datetime is not None:
            raise _field_problem("at", "give datetime or at, not both")
        return self.at, self.at

    def count_key(self, collection: Collection) -> tuple[Any, ...]:
        """What numberMatched depends on (not paging, sorting, output CRS or properties)."""
        return (
            collection.id,
            self.bbox,
            self.bbox_crs.uri if self.bbox else None,
            self.moment(collection),
            self.filter,
            self.filter_crs.uri if self.filter else None,
        )


@dataclass
class Page:
    features: list[dict[str, Any]]
    number_matched: int
    number_returned: int


@dataclass(frozen=True)
class ItemStatement:
    """A single-feature SELECT as SQL text for the driver, and the values it always binds."""

    sql: str
    constants: dict[str, Any]


def _field_problem(field_name: str, detail: str, **extra: Any) -> Problem:
    return Problem(
        400, detail, errors=[{"field": field_name, "in": "query", "reason": detail}], **extra
    )


def queryables(collection: Collection, principal: Principal) -> dict[str, Queryable]:
    found = {p.name: Queryable(p.name, p.expr, p.type) for p in collection.visible(principal)}
    found["geometry"] = Queryable("geometry", collection.geometry, "geometry")
    return found


def _bbox_condition(collection: Collection, query: ItemsQuery) -> ColumnElement[bool]:
    assert query.bbox is not None
    a, b, c, d = query.bbox
    crs = query.bbox_crs
    xmin, ymin, xmax, ymax = (b, a, d, c) if crs.north_first else (a, b, c, d)
    if not crs.metric and (abs(ymin) > 90 or abs(ymax) > 90 or abs(xmin) > 180 or abs(xmax) > 180):
        raise _field_problem("bbox", "bbox latitudes must be within ±90 and longitudes ±180")
    if xmin > xmax or ymin > ymax:
        raise _field_problem("bbox", "bbox must give its lower corner first")
    envelope = func.ST_MakeEnvelope(
        literal(xmin, Float()), literal(ymin, Float()), literal(xmax, Float()),
        literal(ymax, Float()), crs.srid if crs.srid != 4490 else 4326,
    )  # fmt: skip
    if crs.srid == 4546 and collection.geometry_m is not None:
        return func.ST_Intersects(collection.geometry_m, envelope)
    if crs.srid in (4326, 4490):
        return func.ST_Intersects(collection.geometry, envelope)
    # A metric box is straight in its own CRS: densify its edges before reprojecting it.
    step = max(xmax - xmin, ymax - ymin, 1.0) / 32
    return func.ST_Intersects(
        collection.geometry, func.ST_Transform(func.ST_Segmentize(envelope, step), 4326)
    )


def _literal_moment(value: datetime) -> ColumnElement[Any]:
    return literal(value, TZ)


def _time_conditions(
    collection: Collection,
    query: ItemsQuery,
    moment_sql: Callable[[datetime], ColumnElement[Any]] = _literal_moment,
) -> list[ColumnElement[bool]]:
    """The conditions of `query`'s datetime (or at); `moment_sql` makes a moment SQL."""
    moment = query.moment(collection)
    if moment is None:
        return list(collection.current)
    start, end = moment
    if collection.instant is not None:
        conditions = []
        if start is not None:
            conditions.append(collection.instant >= moment_sql(start))
        if end is not None:
            conditions.append(collection.instant <= moment_sql(end))
        return conditions
    if collection.validity is not None:
        if start is None or start != end:
            raise _field_problem(
                "datetime", f"{collection.id} take one instant (the moment to read them at)"
            )
        valid_from, valid_to = collection.validity
        at = moment_sql(start)
        return [valid_from <= at, or_(valid_to.is_(None), valid_to > at)]
    raise _field_problem(
        "datetime",
        f"{collection.id} have no time; datetime applies to "
        + ", ".join(c.id for c in COLLECTIONS.values() if c.has_time),
    )


def _filter_conditions(
    collection: Collection, principal: Principal, query: ItemsQuery
) -> tuple[list[ColumnElement[bool]], tuple[Any, ...] | None]:
    """SQL conditions of bbox, datetime, property values and filter, and the key of their
    count in the cache (None: not to be cached)."""
    conditions = list(collection.where)
    conditions.extend(_time_conditions(collection, query))
    if query.bbox is not None:
        conditions.append(_bbox_condition(collection, query))
    cacheable = True
    visible = {p.name: p for p in collection.visible(principal)}
    applied = []
    for name, raw in query.equals:
        prop = visible.get(name)
        if prop is not None:
            conditions.append(prop.expr == _typed_value(prop, raw))
            applied.append((name, raw))
            cacheable = cacheable and not prop.volatile
    if query.filter is not None:
        try:
            tree = parse(query.filter)
            condition, used = compile_filter(
                tree,
                queryables(collection, principal),
                lambda geometry: srid_geometry(query.filter_crs, geometry),
            )
        except CQL2Error as exc:
            raise Problem(
                400,
                f"invalid filter: {exc}",
                errors=[{"field": "filter", "in": "query", "reason": str(exc)}],
                position=exc.position,
                property=exc.property,
            ) from None
        conditions.append(condition)
        volatile = {p.name for p in collection.properties if p.volatile}
        cacheable = cacheable and not (used & volatile)
    key = (*query.count_key(collection), tuple(sorted(applied))) if cacheable else None
    return conditions, key


def _typed_value(prop: Property, raw: str) -> ColumnElement[Any]:
    """A `?name=value` value as a bound parameter of the property's type; 400 if it is none."""
    try:
        if "\x00" in raw:
            raise ValueError(raw)
        if prop.type == "integer":
            number = int(raw)
            if abs(number) >= 2**63:
                raise ValueError(raw)
            return literal(number, BigInteger())
        if prop.type == "number":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return literal(value, Float())
        if prop.type == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return literal(raw.lower() == "true", Boolean())
        if prop.type == "date-time":
            moment = parse_timestamp(raw)
            if moment is None:
                raise ValueError(raw)
            return literal(moment, TZ)
    except ValueError:
        raise _field_problem(prop.name, f"{prop.name} takes a {prop.type}, not {raw!r}") from None
    return literal(raw, String())


def _selected(collection: Collection, principal: Principal, query: ItemsQuery) -> list[Property]:
    visible = collection.visible(principal)
    if query.properties is None:
        return list(visible)
    by_name = {p.name: p for p in visible}
    unknown = [name for name in query.properties if name not in by_name]
    if unknown:
        raise _field_problem(
            "properties",
            f"unknown properties {', '.join(unknown)}; {collection.id} have " + ", ".join(by_name),
        )
    return [by_name[name] for name in query.properties]


def _order(
    collection: Collection, principal: Principal, query: ItemsQuery
) -> list[ColumnElement[Any]]:
    by_name = {p.name: p for p in collection.visible(principal)}
    order: list[ColumnElement[Any]] = []
    for name, descending in query.sortby:
        prop = by_name.get(name)
        if prop is None:
            raise _field_problem(
                "sortby",
                f"cannot sort {collection.id} by {name!r}; sortable: " + ", ".join(by_name),
            )
        order.append(prop.expr.desc() if descending else prop.expr.asc())
    return order + list(collection.keys)  # the id breaks ties, so pages never overlap


def geojson_geometry(collection: Collection, crs: CRS) -> ColumnElement[Any]:
    if crs.srid == 4546 and collection.geometry_m is not None:
        geometry = collection.geometry_m
    elif crs.srid in (4326, 4490):
        geometry = collection.geometry
    else:
        geometry = func.ST_Transform(collection.geometry, crs.srid)
    if crs.north_first:
        geometry = func.ST_FlipCoordinates(geometry)
    return func.ST_AsGeoJSON(geometry, crs.decimals, 0)


def _features(
    collection: Collection, rows: Iterable[Any], names: list[str]
) -> list[dict[str, Any]]:
    nkeys = len(collection.keys)
    features = []
    for row in rows:
        fid = row[0] if nkeys == 1 else "-".join(str(part) for part in row[:nkeys])
        geometry = row[nkeys]
        features.append(
            {
                "type": "Feature",
                "id": fid,
                "geometry": orjson.Fragment(geometry) if geometry is not None else None,
                "properties": dict(zip(names, row[nkeys + 1 :], strict=True)),
            }
        )
    return features


def _columns(collection: Collection, crs: CRS, props: list[Property]) -> list[Any]:
    return [
        *(key.label(f"_k{i}") for i, key in enumerate(collection.keys)),
        geojson_geometry(collection, crs).label("_geometry"),
        *(p.expr.label(p.name) for p in props),
    ]


class FeatureStore:
    """Items, single features, extents and cached counts of the collections on one engine."""

    def __init__(self, count_ttl_s: float = COUNT_TTL_S, max_entries: int = 4096):
        self.counts = ChangeAwareCache(count_ttl_s, max_entries)
        self.extents = ChangeAwareCache(EXTENT_TTL_S, 256)
        # One per (collection, CRS, visible properties, timed): a few dozen at most.
        self.item_statements: dict[tuple[Any, ...], ItemStatement] = {}
        self.features = FeatureCache(ITEM_TTL_S, ITEM_CACHE_BYTES)
        self.markers = MarkerLease(MARKER_LEASE_S)

    def items(
        self, conn: Connection, collection: Collection, principal: Principal, query: ItemsQuery
    ) -> Page:
        conditions, count_key = _filter_conditions(collection, principal, query)
        props = _selected(collection, principal, query)
        statement = (
            select(*_columns(collection, query.crs, props))
            .select_from(collection.source)
            .where(*conditions)
            .order_by(*_order(collection, principal, query))
            .limit(literal(query.limit, Integer()))
            .offset(literal(query.offset, BigInteger()))
        )
        rows = conn.execute(statement).all()
        returned = len(rows)
        if (returned and returned < query.limit) or (returned == 0 and query.offset == 0):
            matched = query.offset + returned  # a page that is not full ends the collection
        else:
            matched = self.count(conn, collection, conditions, count_key)
        return Page(_features(collection, rows, [p.name for p in props]), matched, returned)

    def count(
        self,
        conn: Connection,
        collection: Collection,
        conditions: list[ColumnElement[bool]],
        key: tuple[Any, ...] | None,
    ) -> int:
        """COUNT(*) under `conditions`, reused while `key`'s entry is valid (None: always)."""
        marker = None
        if key is not None:
            marker = self.markers.get(collection.tables) or self.markers.read(
                conn, collection.tables
            )
            cached = self.counts.get(key, marker)
            if cached is not None:
                return cached
        statement = select(func.count()).select_from(collection.source).where(*conditions)
        value = conn.execute(statement).scalar_one()
        if marker is not None:
            self.counts.put(key, marker, value)
        return value

    def cached_item(
        self,
        collection: Collection,
        principal: Principal,
        fid: str,
        crs: CRS,
        at: datetime | None = None,
    ) -> dict[str, Any] | None:
        """Feature `fid` if this process holds it and its marker lease says it is still so,
        without touching the database; None: ask `item`. Do not change what it returns."""
        key = _item_key(collection, collection.visible(principal), fid, crs, at)
        marker = self.markers.get(collection.tables) if key is not None else None
        return self.features.get(key, marker) if marker is not None else None

    def item(
        self,
        engine: Engine,
        collection: Collection,
        principal: Principal,
        fid: str,
        crs: CRS,
        at: datetime | None = None,
    ) -> dict[str, Any] | None:
        """Feature `fid` as the caller may see it (None: no such feature), current or at `at`;
        from the cache when it holds. Do not change what it returns: others get it too.
        `engine` reads in autocommit (`api.db.reads_only`)."""
        key_values = _key_values(collection, fid)
        if key_values is None:
            return None
        props = collection.visible(principal)
        key = _item_key(collection, props, fid, crs, at)
        marker = self.markers.get(collection.tables) if key is not None else None
        if marker is not None:
            cached = self.features.get(key, marker)
            if cached is not None:
                return cached
        with engine.connect() as conn:
            if key is not None and marker is None:
                marker = self.markers.read(conn, collection.tables)
                cached = self.features.get(key, marker)
                if cached is not None:
                    return cached
            statement = self._item_statement(conn, collection, crs, props, at)
            values = {f"fid{i}": part for i, part in enumerate(key_values)}
            if at is not None:
                values["at"] = at
            rows = conn.exec_driver_sql(statement.sql, statement.constants | values).all()
        features = _features(collection, rows, [p.name for p in props])
        if not features:
            return None
        if marker is not None:  # read before the feature, so a later write moves it
            self.features.put(key, marker, features[0])
        return features[0]

    def _item_statement(
        self,
        conn: Connection,
        collection: Collection,
        crs: CRS,
        props: tuple[Property, ...],
        at: datetime | None,
    ) -> ItemStatement:
        """The SQL of one feature of this shape (at a moment or current), compiled once.

        A single feature is one indexed row, so building, cache-keying and compiling the
        SQLAlchemy statement on every request cost three times what the database did. The
        id parts (`fid0`, `fid1`) and the moment (`at`) are bound per request.
        """
        shape = (collection.id, crs.uri, tuple(p.name for p in props), at is not None)
        found = self.item_statements.get(shape)
        if found is not None:
            return found
        query = ItemsQuery(crs=crs, datetime=None if at is None else (at, at))
        conditions = [
            *collection.where,
            *_time_conditions(collection, query, lambda _: _per_request("at", TZ)),
            *(
                key == _per_request(f"fid{i}", BigInteger() if kind == "integer" else String())
                for i, (key, kind) in enumerate(
                    zip(collection.keys, collection.key_types, strict=True)
                )
            ),
        ]
        statement = (
            select(*_columns(collection, crs, list(props)))
            .select_from(collection.source)
            .where(*conditions)
            .limit(1)
        )
        # render_postcompile: IN lists (overdue's finished states) become plain parameters
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        per_request = {"at", *(f"fid{i}" for i in range(len(collection.keys)))}
        constants = {k: v for k, v in compiled.params.items() if k not in per_request}
        found = ItemStatement(compiled.string, constants)
        self.item_statements[shape] = found
        return found

    def extents_of(self, conn: Connection, collections: list[Collection]) -> list[dict[str, Any]]:
        """The extent of each collection; one change-marker query for all of them."""
        markers = change_markers(conn, {t for c in collections for t in c.tables})
        return [self.extent(conn, c, marker_of(markers, c.tables)) for c in collections]

    def extent(
        self, conn: Connection, collection: Collection, marker: tuple[Any, ...]
    ) -> dict[str, Any]:
        """The spatial (CRS84) and temporal extent of what the collection holds now."""
        cached = self.extents.get(collection.id, marker)
        if cached is not None:
            return cached
        box = func.ST_Extent(collection.geometry)
        columns: list[Any] = [
            func.ST_XMin(box),
            func.ST_YMin(box),
            func.ST_XMax(box),
            func.ST_YMax(box),
        ]
        if collection.instant is not None:
            columns += [func.min(collection.instant), func.max(collection.instant)]
        elif collection.validity is not None:
            start, end = collection.validity
            columns += [func.min(start), func.max(end), func.bool_or(end.is_(None))]
        statement = (
            select(*columns)
            .select_from(collection.source)
            .where(*collection.where, *collection.current)
        )
        row = conn.execute(statement).one()
        extent: dict[str, Any] = {}
        if row[0] is not None:
            extent["spatial"] = {
                "bbox": [[round(float(v), 7) for v in row[:4]]],
                "crs": CRS84,
            }
        if collection.has_time and row[4] is not None:
            end_value = row[5]
            if collection.validity is not None and row[6]:
                end_value = None  # current versions are open-ended
            extent["temporal"] = {
                "interval": [[_iso(row[4]), _iso(end_value)]],
                "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
            }
        self.extents.put(collection.id, marker, extent)
        return extent


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _per_request(name: str, type_: Any) -> ColumnElement[Any]:
    """A parameter of a statement compiled ahead, whose value each execution gives."""
    return bindparam(name, None, type_=type_, required=False)


def _item_key(
    collection: Collection,
    props: tuple[Property, ...],
    fid: str,
    crs: CRS,
    at: datetime | None,
) -> tuple[Any, ...] | None:
    """What a cached single feature is filed under; None: not to be cached, as a property
    that depends on the clock (incidents' overdue) is read anew each time."""
    if any(p.volatile for p in props):
        return None
    return (collection.id, fid, crs.uri, tuple(p.name for p in props), at)


def _key_values(collection: Collection, fid: str) -> list[int | str] | None:
    """The parts of feature id `fid`, or None when it cannot be an id of the collection."""
    count = len(collection.keys)
    if "\x00" in fid:
        return None
    parts = fid.split("-", count - 1) if count > 1 else [fid]
    if len(parts) != count:
        return None
    values: list[int | str] = []
    for kind, part in zip(collection.key_types, parts, strict=True):
        if kind == "integer":
            if not part.isdigit() or len(part) > 18:
                return None
            values.append(int(part))
        else:
            if not part or len(part) > 200:
                return None
            values.append(part)
    return values


# --- change markers and the cache -----------------------------------------------------------

_generations: dict[str, int] = {}
_generations_lock = threading.Lock()


def invalidate_counts(*tables: str) -> None:
    """Call after committing a write to `tables`: cached counts and extents over them go."""
    with _generations_lock:
        for name in tables:
            _generations[name] = _generations.get(name, 0) + 1


MARKER_SQL = text(
    """
    SELECT r::text, pg_relation_filenode(r), pg_stat_get_tuples_inserted(r),
           pg_stat_get_tuples_updated(r), pg_stat_get_tuples_deleted(r)
    FROM unnest(CAST(:tables AS regclass[])) AS r
    """
)


def change_markers(conn: Connection, tables: Iterable[str]) -> dict[str, tuple[Any, ...]]:
    """Per table, a value that changes whenever its rows may have changed (see the module
    doc). The process-local generation is read first, so a hook that fires while the
    statement runs still invalidates what is computed under this marker."""
    names = sorted(set(tables))
    with _generations_lock:
        generations = {name: _generations.get(name, 0) for name in names}
    rows = conn.execute(MARKER_SQL, {"tables": names}).all()
    return {row[0]: (generations[row[0]], *row[1:]) for row in rows}


def marker_of(markers: Mapping[str, tuple[Any, ...]], tables: Iterable[str]) -> tuple[Any, ...]:
    return tuple(markers[name] for name in sorted(set(tables)))


def change_marker(conn: Connection, tables: Iterable[str]) -> tuple[Any, ...]:
    return marker_of(change_markers(conn, tables), tables)


@dataclass
class _Entry:
    marker: tuple[Any, ...]
    value: Any
    stored_at: float = field(default_factory=time.monotonic)


class ChangeAwareCache:
    """A bounded LRU of values valid while their change marker holds and for at most `ttl_s`."""

    def __init__(self, ttl_s: float, max_entries: int):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, marker: tuple[Any, ...]) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if (
                entry is None
                or entry.marker != marker
                or time.monotonic() - entry.stored_at > self.ttl_s
            ):
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value

    def put(self, key: Any, marker: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._entries[key] = _Entry(marker, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class FeatureCache(ChangeAwareCache):
    """`ChangeAwareCache` of single features, bounded by their size in JSON as well."""

    def __init__(self, ttl_s: float, max_bytes: int):
        super().__init__(ttl_s, max_entries=1 << 30)
        self._lock = threading.RLock()  # put() below holds it around the base class's put()
        self.max_bytes = max_bytes
        self.bytes = 0
        self._sizes: dict[Any, int] = {}

    def put(self, key: Any, marker: tuple[Any, ...], value: dict[str, Any]) -> None:
        size = len(orjson.dumps(value, default=str))
        if size > self.max_bytes // 8:
            return  # a whole county outline would push out thousands of grids
        with self._lock:
            self.bytes += size - self._sizes.get(key, 0)
            self._sizes[key] = size
            super().put(key, marker, value)
            while self.bytes > self.max_bytes and self._entries:
                evicted, _ = self._entries.popitem(last=False)
                self.bytes -= self._sizes.pop(evicted)


class MarkerLease:
    """Change markers reused for up to `lease_s` after they were read, so a cache hit needs no
    query: writes through this process still show at once (their generation moves the
    marker), writes by anyone else `lease_s` later than through a marker read per request."""

    def __init__(self, lease_s: float):
        self.lease_s = lease_s
        self._read: dict[tuple[str, ...], tuple[float, tuple[Any, ...]]] = {}

    def get(self, tables: tuple[str, ...]) -> tuple[Any, ...] | None:
        """The marker of `tables` if it was read within the lease and no write hook has fired
        since; None: `read` it."""
        found = self._read.get(tables)
        if found is None or time.monotonic() - found[0] > self.lease_s:
            return None
        with _generations_lock:
            generations = tuple(_generations.get(name, 0) for name in sorted(set(tables)))
        marker = found[1]
        return marker if generations == tuple(part[0] for part in marker) else None

    def read(self, conn: Connection, tables: tuple[str, ...]) -> tuple[Any, ...]:
        started = time.monotonic()
        marker = change_marker(conn, tables)
        self._read[tables] = (started, marker)
        return marker


# --- descriptions ----------------------------------------------------------------------------

JSON_TYPES: Mapping[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date-time": {"type": "string", "format": "date-time"},
}


def property_schemas(collection: Collection, principal: Principal) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for prop in collection.visible(principal):
        schema = {"title": prop.title, **JSON_TYPES[prop.type]}
        if prop.enum:
            schema["enum"] = list(prop.enum)
        schemas[prop.name] = schema
    return schemas


def geometry_schema(collection: Collection) -> dict[str, Any]:
    return {
        "title": "Geometry",
        "format": f"geometry-{collection.geometry_type}",
        "x-ogc-role": "primary-geometry",
    }


def readable(principal: Principal) -> list[Collection]:
    return [c for c in COLLECTIONS.values() if principal.can(c.permission)]
