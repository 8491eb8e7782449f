"""CQL2-text: the parser alone, the compiler's SQL (bound parameters only), and every
operator against PostGIS on the small demo world, each compared with hand-written SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import shapely
from sqlalchemy import column, func, select, table
from sqlalchemy.dialects import postgresql

from api.cql2 import (
    And,
    Between,
    Compare,
    CQL2Error,
    Geom,
    InList,
    Interval,
    IsNull,
    Like,
    Lit,
    Not,
    Or,
    Prop,
    Queryable,
    Spatial,
    Temporal,
    compile_filter,
    parse,
)
from tests.api.test_ogc import World, demo_world

# --- parser -----------------------------------------------------------------------------------


def test_precedence_is_or_then_and_then_not():
    tree = parse("a = 1 OR b = 2 AND NOT c = 3")
    assert isinstance(tree, Or)
    left, right = tree.items
    assert isinstance(left, Compare) and isinstance(right, And)
    assert isinstance(right.items[1], Not)
    grouped = parse("(a = 1 OR b = 2) AND c = 3")
    assert isinstance(grouped, And) and isinstance(grouped.items[0], Or)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("name LIKE 'x%'", Like),
        ("name NOT LIKE 'x%'", Like),
        ("name ILIKE 'x%'", Like),
        ("population BETWEEN 1 AND 5", Between),
        ("population NOT BETWEEN 1 AND 5", Between),
        ("kind IN ('a', 'b')", InList),
        ("kind NOT IN ('a')", InList),
        ("worker_name IS NULL", IsNull),
        ("worker_name IS NOT NULL", IsNull),
        ("S_INTERSECTS(geometry, POINT(109.7 28.2))", Spatial),
        ("s_within(geometry, BBOX(109, 28, 110, 29))", Spatial),
        ("T_BEFORE(reported_at, TIMESTAMP('2025-01-01T00:00:00Z'))", Temporal),
        ("T_DURING(reported_at, INTERVAL('2025-01-01', '..'))", Temporal),
        ("TRUE", Lit),
        ("NOT FALSE", Not),
    ],
)
def test_each_predicate_parses(text, kind):
    assert isinstance(parse(text), kind)


def test_literals_keep_their_types():
    text = (
        "a = 'it''s' AND b = -1.5e2 AND c = 7 AND d = TRUE AND e = DATE('2025-01-02') "
        "AND f = TIMESTAMP('2025-01-02T03:04:05+08:00') AND \"odd name\" = 'x'"
    )
    tree = parse(text)
    assert isinstance(tree, And)
    values = [(item.right.value, item.right.kind) for item in tree.items]
    assert values[:4] == [("it's", "string"), (-150.0, "number"), (7, "number"), (True, "boolean")]
    assert values[4] == (date(2025, 1, 2), "date")
    assert values[5][0] == datetime(2025, 1, 1, 19, 4, 5, tzinfo=UTC)
    assert tree.items[6].left == Prop("odd name", text.index('"odd name"'))


def test_wkt_is_read_by_geos():
    tree = parse(
        "S_INTERSECTS(geometry, MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)), ((2 2, 3 2, 3 3, 2 2))))"
    )
    assert isinstance(tree, Spatial) and isinstance(tree.b, Geom)
    assert shapely.get_num_geometries(tree.b.geometry) == 2
    collection = parse(
        "S_INTERSECTS(geometry, GEOMETRYCOLLECTION(POINT(1 2), LINESTRING(0 0, 1 1)))"
    )
    assert collection.b.geometry.geom_type == "GeometryCollection"


def test_interval_bounds_may_be_open_or_properties():
    tree = parse("T_INTERSECTS(INTERVAL(valid_from, valid_to), INTERVAL('..', '2025-01-01'))")
    assert isinstance(tree.a, Interval) and tree.a.start == Prop("valid_from", 22)
    assert tree.b.start is None and tree.b.end.value == date(2025, 1, 1)


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("", 0, "empty"),
        ("code = ", 7, "expected a value"),
        ("code == 1", 6, "expected a value"),
        ("(code = 1", 9, "expected ')'"),
        ("code = 1)", 8, "unexpected ')'"),
        ("code = 'open", 7, "unterminated"),
        ("code = 1; DROP TABLE grid", 8, "unexpected character ';'"),
        ("code = 1 -- comment", 9, "unexpected character '-'"),
        ("code BETWEEN 1 OR 2", 15, "expected AND"),
        ("code IS 1", 8, "expected NULL"),
        ("code", None, None),  # a bare property is `code = TRUE`: parses, fails at compile time
        ("S_INTERSECTS(geometry, POINT(1))", 23, "invalid POINT"),
        ("S_INTERSECTS(geometry, POINT(1 2)", 33, "expected ')'"),
        ("T_AFTER(reported_at, TIMESTAMP('yesterday'))", 31, "invalid timestamp"),
        ("T_AFTER(reported_at, DATE('2025-13-01'))", 26, "invalid date"),
        ("a = INTERVAL('..', '..')", 4, "INTERVAL"),
        ("a = POINT(1 2)", 4, "geometry"),
        ("AND = 1", 0, "unexpected keyword"),
        ("a = 1 " + "AND a = 1 " * 2000, None, "longer than"),
        ("(" * 100 + "a = 1" + ")" * 100, None, "nests too deeply"),
    ],
)
def test_syntax_errors_name_the_position(text, position, words):
    if words is None:
        parse(text)
        return
    with pytest.raises(CQL2Error) as caught:
        parse(text)
    assert words in str(caught.value)
    if position is not None:
        assert caught.value.position == position
        assert f"at position {position}" in str(caught.value)


# --- compiler: SQL text never carries a value ----------------------------------------------------

T = table("t", column("name"), column("n"), column("at"), column("geom"))
QUERYABLES = {
    "name": Queryable("name", T.c.name, "string"),
    "n": Queryable("n", T.c.n, "integer"),
    "at": Queryable("at", T.c.at, "date-time"),
    "geometry": Queryable("geometry", T.c.geom, "geometry"),
}


def sql_of(text: str) -> tuple[str, dict]:
    condition, _ = compile_filter(
        parse(text), QUERYABLES, lambda g: func.ST_GeomFromWKB(shapely.to_wkb(g), 4326)
    )
    compiled = select(T.c.name).where(condition).compile(dialect=postgresql.psycopg.dialect())
    return str(compiled), compiled.params


def test_huge_integers_are_compared_as_numbers():
    _, params = sql_of(f"n > {10**30}")
    assert float(10**30) in params.values()


def test_values_become_bound_parameters():
    hostile = "x' OR '1'='1'; DROP TABLE grid; --"
    sql, params = sql_of(f"name = '{hostile.replace(chr(39), chr(39) * 2)}' AND n < 5")
    assert hostile in params.values() and 5 in params.values()
    assert "DROP" not in sql and "'" not in sql
    sql, params = sql_of("S_INTERSECTS(geometry, POINT(109.7 28.2))")
    assert "109.7" not in sql and "ST_Intersects" in sql


@pytest.mark.parametrize(
    ("text", "prop", "words"),
    [
        ("nope = 1", "nope", "unknown property 'nope'"),
        ("name = 1", "name", "is a string"),
        ("n = 'one'", None, "is a number"),
        ("at = 'not a time'", "at", "date-time"),
        ("name > n", None, "cannot compare"),
        ("S_INTERSECTS(name, POINT(1 2))", "name", "not a geometry"),
        ("T_AFTER(name, DATE('2025-01-01'))", "name", "not a date-time"),
        ("n LIKE 5", None, "LIKE compares strings"),
        ("UPPER(name) = 'X'", None, "unknown function UPPER"),
        ("name", "name", "not a boolean"),
        ("'a' = 1", None, "different types"),
        ("geometry = 'x'", None, "geometry"),
    ],
)
def test_compile_errors_name_the_property(text, prop, words):
    with pytest.raises(CQL2Error) as caught:
        sql_of(text)
    assert words in str(caught.value)
    if prop:
        assert caught.value.property == prop


# --- every operator on PostGIS -------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(small_demo_url: str) -> Iterator[World]:
    with demo_world(small_demo_url, "cql2") as w:
        yield w


GRIDS = "SELECT count(*) FROM grid WHERE valid_to IS NULL AND "
INCIDENTS = "SELECT count(*) FROM incident WHERE deleted_at IS NULL AND "
CAMERAS = "SELECT count(*) FROM camera WHERE "
POLYGON = "POLYGON((109.70 28.15, 109.80 28.15, 109.80 28.25, 109.70 28.25, 109.70 28.15))"
SQL_POLYGON = f"ST_GeomFromText('{POLYGON}', 4326)"


def wkt(text: str) -> str:
    return f"ST_GeomFromText('{text}', 4326)"


CASES = [
    ("grids", "population = 1500", GRIDS + "population = 1500"),
    ("grids", "kind <> '综合网格'", GRIDS + "kind <> '综合网格'"),
    ("grids", "population < 1200", GRIDS + "population < 1200"),
    ("grids", "population <= 1200", GRIDS + "population <= 1200"),
    ("grids", "population > 1400", GRIDS + "population > 1400"),
    ("grids", "population >= 1400", GRIDS + "population >= 1400"),
    ("grids", "1400 <= population", GRIDS + "population >= 1400"),
    ("grids", "households > 400", GRIDS + "households > 400"),
    ("grids", "name LIKE '%社区%'", GRIDS + "name LIKE '%社区%'"),
    ("grids", "name NOT LIKE '%社区%'", GRIDS + "name NOT LIKE '%社区%'"),
    ("grids", "code LIKE '43310100200_00_'", GRIDS + "code LIKE '43310100200_00_'"),
    ("grids", "CASEI(kind) = CASEI('综合网格')", GRIDS + "lower(kind) = lower('综合网格')"),
    ("grids", "population BETWEEN 1200 AND 1500", GRIDS + "population BETWEEN 1200 AND 1500"),
    (
        "grids",
        "population NOT BETWEEN 1200 AND 1500",
        GRIDS + "population NOT BETWEEN 1200 AND 1500",
    ),
    ("grids", "kind IN ('专属网格', 'x')", GRIDS + "kind IN ('专属网格', 'x')"),
    ("grids", "households NOT IN (400, 401, 402)", GRIDS + "households NOT IN (400, 401, 402)"),
    ("grids", "valid_to IS NULL", GRIDS + "true"),
    ("grids", "valid_to IS NOT NULL", GRIDS + "false"),
    (
        "grids",
        "(population > 1500 OR households < 350) AND NOT kind = '专属网格'",
        GRIDS + "(population > 1500 OR households < 350) AND NOT kind = '专属网格'",
    ),
    ("grids", "NOT (population > 1500)", GRIDS + "NOT population > 1500"),
    ("grids", "TRUE", GRIDS + "true"),
    (
        "grids",
        "valid_from = TIMESTAMP('2024-01-01T00:00:00Z')",
        GRIDS + "valid_from = '2024-01-01T00:00:00Z'",
    ),
    ("grids", f"S_INTERSECTS(geometry, {POLYGON})", GRIDS + f"ST_Intersects(geom, {SQL_POLYGON})"),
    ("grids", f"S_WITHIN(geometry, {POLYGON})", GRIDS + f"ST_Within(geom, {SQL_POLYGON})"),
    (
        "grids",
        f"S_DISJOINT(geometry, {POLYGON})",
        GRIDS + f"NOT ST_Intersects(geom, {SQL_POLYGON})",
    ),
    ("grids", f"S_OVERLAPS(geometry, {POLYGON})", GRIDS + f"ST_Overlaps(geom, {SQL_POLYGON})"),
    (
        "grids",
        "S_INTERSECTS(geometry, BBOX(109.70, 28.15, 109.80, 28.25))",
        GRIDS + "ST_Intersects(geom, ST_MakeEnvelope(109.70, 28.15, 109.80, 28.25, 4326))",
    ),
    (
        "grids",
        "S_CROSSES(geometry, LINESTRING(109.70 28.15, 109.80 28.25))",
        GRIDS + "ST_Crosses(geom, " + wkt("LINESTRING(109.70 28.15, 109.80 28.25)") + ")",
    ),
    (
        "grids",
        "S_TOUCHES(geometry, POINT(109.75 28.2))",
        GRIDS + "ST_Touches(geom, " + wkt("POINT(109.75 28.2)") + ")",
    ),
    ("grids", "S_EQUALS(geometry, POINT(109.75 28.2))", GRIDS + "false"),
    (
        "cameras",
        f"S_WITHIN(geometry, {POLYGON}) AND status = 'online'",
        CAMERAS + f"ST_Within(geom, {SQL_POLYGON}) AND status = 'online'",
    ),
    (
        "cameras",
        "height_m >= 6.5 AND kind IN ('dome', 'ptz')",
        CAMERAS + "round(height_m::numeric, 2) >= 6.5 AND kind IN ('dome', 'ptz')",
    ),
    (
        "villages",
        "S_CONTAINS(geometry, POINT(109.75 28.2))",
        "SELECT count(*) FROM admin_area WHERE level = 'village' AND "
        "ST_Contains(geom, 'SRID=4326;POINT(109.75 28.2)')",
    ),
    (
        "incidents",
        "T_BEFORE(reported_at, TIMESTAMP('2025-03-01T00:00:00Z'))",
        INCIDENTS + "reported_at < '2025-03-01T00:00:00Z'",
    ),
    (
        "incidents",
        "T_AFTER(reported_at, DATE('2025-10-01'))",
        INCIDENTS + "reported_at > '2025-10-01T00:00:00+08:00'",
    ),
    (
        "incidents",
        "T_INTERSECTS(reported_at, INTERVAL('2025-05-01T00:00:00Z', '2025-06-01T00:00:00Z'))",
        INCIDENTS + "reported_at BETWEEN '2025-05-01T00:00:00Z' AND '2025-06-01T00:00:00Z'",
    ),
    (
        "incidents",
        "T_DURING(reported_at, INTERVAL('2025-05-01T00:00:00Z', '..'))",
        INCIDENTS + "reported_at > '2025-05-01T00:00:00Z'",
    ),
    (
        "incidents",
        "T_DISJOINT(reported_at, INTERVAL('..', '2025-02-01T00:00:00Z'))",
        INCIDENTS + "reported_at > '2025-02-01T00:00:00Z'",
    ),
    (
        "incidents",
        "reported_at >= '2025-07-01T00:00:00Z' AND category = 'dispute'",
        INCIDENTS + "reported_at >= '2025-07-01T00:00:00Z' AND category = 'dispute'",
    ),
    ("incidents", "due_at IS NULL AND NOT overdue", INCIDENTS + "due_at IS NULL"),
    (
        "incidents",
        "overdue = TRUE",
        INCIDENTS + "due_at < now() AND status NOT IN ('closed', 'evaluated', 'rejected')",
    ),
    (
        "incidents",
        "grid_code LIKE '4331010020%' AND S_INTERSECTS(geometry, BBOX(109.6, 28.0, 110.0, 28.5))",
        INCIDENTS + "grid_code LIKE '4331010020%' AND "
        "ST_Intersects(location, ST_MakeEnvelope(109.6, 28.0, 110.0, 28.5, 4326))",
    ),
]


@pytest.mark.parametrize(("cid", "filter_", "sql"), CASES)
def test_each_operator_matches_sql(world, cid, filter_, sql):
    expected = world.sql(sql)
    assert world.matched(cid, filter_) == expected
    page = world.items(cid, filter=filter_, limit=50)
    assert page["numberReturned"] == min(50, expected)


def test_operators_select_something_on_the_demo_world(world):
    """Guard against vacuous passes: the interesting cases match some but not all features."""
    total = world.sql(GRIDS + "true")
    for filter_ in (
        "population > 1400",
        "name LIKE '%社区%'",
        "population BETWEEN 1200 AND 1500",
        f"S_INTERSECTS(geometry, {POLYGON})",
        f"S_WITHIN(geometry, {POLYGON})",
    ):
        assert 0 < world.matched("grids", filter_) < total, filter_
    incidents = world.sql(INCIDENTS + "true")
    for filter_ in (
        "T_BEFORE(reported_at, TIMESTAMP('2025-03-01T00:00:00Z'))",
        "T_AFTER(reported_at, DATE('2025-10-01'))",
    ):
        assert 0 < world.matched("incidents", filter_) < incidents, filter_


def test_filter_crs_reads_geometries_in_metres(world):
    box_degrees = world.matched("grids", "S_INTERSECTS(geometry, POINT(109.75 28.2))")
    from pyproj import Transformer

    easting, northing = Transformer.from_crs(4326, 4546, always_xy=True).transform(109.75, 28.2)
    metric = world.matched(
        "grids",
        f"S_INTERSECTS(geometry, POINT({northing} {easting}))",
        **{"filter-crs": "http://www.opengis.net/def/crs/EPSG/0/4546"},
    )
    assert metric == box_degrees >= 1
