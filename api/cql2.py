"""CQL2-text (OGC 21-065): a small parser and a compiler to SQLAlchemy expressions.

`parse(text)` turns a filter into a tree of the dataclasses below, or raises `CQL2Error`
naming the character position. `compile_filter(tree, queryables, geometry_literal)` turns
the tree into a boolean SQLAlchemy expression over the columns of `queryables` (the only
names a filter may use); every literal becomes a bound parameter, never SQL text.

Supported: comparisons (= <> < <= > >=), LIKE, BETWEEN, IN, IS NULL (each with NOT),
AND/OR/NOT, parentheses, TRUE/FALSE, CASEI(), DATE()/TIMESTAMP()/INTERVAL() literals,
the eight S_* spatial functions on WKT (POINT ... GEOMETRYCOLLECTION, BBOX) and the
fifteen T_* temporal functions. A DATE, or a TIMESTAMP without an offset, is read in
China Standard Time (+08:00), as the rest of the service reads naive times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import shapely
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    String,
    and_,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
MAX_FILTER_LENGTH = 20_000
MAX_DEPTH = 64
# Digits of one number literal: a double has 17 significant ones; Python refuses to read
# integers of more than 4,300.
MAX_NUMBER_LENGTH = 40


class CQL2Error(ValueError):
    """A filter that cannot be parsed or compiled; `position` is a 0-based character offset."""

    def __init__(self, message: str, position: int | None = None, prop: str | None = None):
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{where}")
        self.message = message
        self.position = position
        self.property = prop


# --- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prop:
    name: str
    pos: int


@dataclass(frozen=True)
class Lit:
    """A scalar literal; kind is string, number, boolean, timestamp or date."""

    value: Any
    kind: str
    pos: int


@dataclass(frozen=True)
class Geom:
    geometry: shapely.Geometry
    pos: int


@dataclass(frozen=True)
class Interval:
    """INTERVAL(start, end); None stands for an open end ('..')."""

    start: Prop | Lit | None
    end: Prop | Lit | None
    pos: int


@dataclass(frozen=True)
class Call:
    name: str  # upper case
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True)
class Like:
    expr: Node
    pattern: Node
    negate: bool
    pos: int
    insensitive: bool = False  # ILIKE: not CQL2 (that is CASEI(a) LIKE CASEI(b)); GDAL sends it


@dataclass(frozen=True)
class Between:
    expr: Node
    low: Node
    high: Node
    negate: bool
    pos: int


@dataclass(frozen=True)
class InList:
    expr: Node
    items: tuple[Node, ...]
    negate: bool
    pos: int


@dataclass(frozen=True)
class IsNull:
    expr: Node
    negate: bool
    pos: int


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Spatial:
    op: str
    a: Node
    b: Node
    pos: int


@dataclass(frozen=True)
class Temporal:
    op: str
    a: Node
    b: Node
    pos: int


Node = (
    Prop
    | Lit
    | Geom
    | Interval
    | Call
    | Compare
    | Like
    | Between
    | InList
    | IsNull
    | And
    | Or
    | Not
    | Spatial
    | Temporal
)

# --- tokens --------------------------------------------------------------------------------

SPATIAL_OPS = {
    "S_INTERSECTS",
    "S_EQUALS",
    "S_DISJOINT",
    "S_TOUCHES",
    "S_WITHIN",
    "S_OVERLAPS",
    "S_CROSSES",
    "S_CONTAINS",
}
TEMPORAL_OPS = {
    "T_AFTER",
    "T_BEFORE",
    "T_CONTAINS",
    "T_DISJOINT",
    "T_DURING",
    "T_EQUALS",
    "T_FINISHEDBY",
    "T_FINISHES",
    "T_INTERSECTS",
    "T_MEETS",
    "T_METBY",
    "T_OVERLAPPEDBY",
    "T_OVERLAPS",
    "T_STARTEDBY",
    "T_STARTS",
}
WKT_TYPES = {
    "POINT",
    "LINESTRING",
    "POLYGON",
    "MULTIPOINT",
    "MULTILINESTRING",
    "MULTIPOLYGON",
    "GEOMETRYCOLLECTION",
}
# Words that cannot name a property without double quotes.
RESERVED = {
    "AND",
    "OR",
    "NOT",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "IN",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "DATE",
    "TIMESTAMP",
    "INTERVAL",
    "BBOX",
    *WKT_TYPES,
    *SPATIAL_OPS,
    *TEMPORAL_OPS,
}

TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|''|\\.)*')
  | (?P<qident>"(?:[^"]|"")+")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.:]*)
  | (?P<op><>|<=|>=|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, qident, ident, op, punct, end
    text: str
    pos: int
    end: int

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos] in "'\"":
                raise CQL2Error("unterminated quoted text", pos)
            raise CQL2Error(f"unexpected character {text[pos]!r}", pos)
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos, match.end()))
        pos = match.end()
    tokens.append(Token("end", "", len(text), len(text)))
    return tokens


def _unquote_string(token: Token) -> str:
    body = token.text[1:-1]
    return re.sub(r"''|\\(.)", lambda m: m.group(1) if m.group(1) is not None else "'", body)


# --- parser --------------------------------------------------------------------------------


class Parser:
    """Recursive descent over the CQL2-text grammar (precedence: OR < AND < NOT)."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tok
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def accept_word(self, *words: str) -> Token | None:
        if self.tok.word in words:
            return self.advance()
        return None

    def expect_punct(self, char: str) -> Token:
        if self.tok.kind == "punct" and self.tok.text == char:
            return self.advance()
        raise CQL2Error(f"expected '{char}' but found {self.describe(self.tok)}", self.tok.pos)

    @staticmethod
    def describe(token: Token) -> str:
        return "the end of the filter" if token.kind == "end" else repr(token.text)

    def is_punct(self, char: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text == char

    # grammar
    def parse(self) -> Node:
        if not self.text.strip():
            raise CQL2Error("the filter is empty", 0)
        node = self.boolean_expression()
        if self.tok.kind != "end":
            raise CQL2Error(f"unexpected {self.describe(self.tok)}", self.tok.pos)
        return node

    def boolean_expression(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CQL2Error("the filter nests too deeply", self.tok.pos)
        items = [self.boolean_term()]
        while self.accept_word("OR"):
            items.append(self.boolean_term())
        self.depth -= 1
        return items[0] if len(items) == 1 else Or(tuple(items))

    def boolean_term(self) -> Node:
        items = [self.boolean_factor()]
        while self.accept_word("AND"):
            items.append(self.boolean_factor())
        return items[0] if len(items) == 1 else And(tuple(items))

    def boolean_factor(self) -> Node:
        if self.accept_word("NOT"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CQL2Error("the filter nests too deeply", self.tok.pos)
            node = Not(self.boolean_factor())
            self.depth -= 1
            return node
        return self.boolean_primary()

    def boolean_primary(self) -> Node:
        token = self.tok
        if self.is_punct("("):
            self.advance()
            node = self.boolean_expression()
            self.expect_punct(")")
            return node
        if token.word in SPATIAL_OPS:
            self.advance()
            a, b = self.two_args(self.geometry_expression)
            return Spatial(token.word, a, b, token.pos)
        if token.word in TEMPORAL_OPS:
            self.advance()
            a, b = self.two_args(self.temporal_expression)
            return Temporal(token.word, a, b, token.pos)
        if token.word in ("TRUE", "FALSE") and not self.starts_predicate_tail(self.peek()):
            self.advance()
            return Lit(token.word == "TRUE", "boolean", token.pos)
        return self.predicate()

    @staticmethod
    def starts_predicate_tail(token: Token) -> bool:
        return token.kind == "op" or token.word in ("LIKE", "ILIKE", "BETWEEN", "IN", "IS", "NOT")

    def two_args(self, parse_arg: Callable[[], Node]) -> tuple[Node, Node]:
        self.expect_punct("(")
        a = parse_arg()
        self.expect_punct(",")
        b = parse_arg()
        self.expect_punct(")")
        return a, b

    def predicate(self) -> Node:
        start = self.tok
        left = self.scalar()
        token = self.tok
        if token.kind == "op":
            self.advance()
            return Compare(token.text, left, self.scalar(), token.pos)
        negate = False
        if token.word == "NOT" and self.peek().word in ("LIKE", "ILIKE", "BETWEEN", "IN"):
            self.advance()
            negate = True
            token = self.tok
        if self.accept_word("LIKE"):
            return Like(left, self.scalar(), negate, token.pos)
        if self.accept_word("ILIKE"):
            return Like(left, self.scalar(), negate, token.pos, insensitive=True)
        if self.accept_word("BETWEEN"):
            low = self.scalar()
            if not self.accept_word("AND"):
                raise CQL2Error(
                    f"expected AND in BETWEEN but found {self.describe(self.tok)}", self.tok.pos
                )
            return Between(left, low, self.scalar(), negate, token.pos)
        if self.accept_word("IN"):
            self.expect_punct("(")
            items = [self.scalar()]
            while self.is_punct(","):
                self.advance()
                items.append(self.scalar())
            self.expect_punct(")")
            return InList(left, tuple(items), negate, token.pos)
        if self.accept_word("IS"):
            is_not = self.accept_word("NOT") is not None
            if not self.accept_word("NULL"):
                raise CQL2Error(
                    f"expected NULL after IS but found {self.describe(self.tok)}", self.tok.pos
                )
            return IsNull(left, is_not, token.pos)
        if isinstance(left, Prop | Call):
            # A boolean property (or function) stands as a predicate of its own.
            return Compare("=", left, Lit(True, "boolean", start.pos), start.pos)
        raise CQL2Error(
            f"expected a comparison, LIKE, BETWEEN, IN or IS NULL but found {self.describe(token)}",
            token.pos,
        )

    def scalar(self) -> Node:
        token = self.tok
        if token.kind == "string":
            self.advance()
            return Lit(_unquote_string(token), "string", token.pos)
        if token.kind == "number":
            self.advance()
            return Lit(number_value(token), "number", token.pos)
        if token.kind == "qident":
            self.advance()
            return Prop(token.text[1:-1].replace('""', '"'), token.pos)
        if token.kind == "ident":
            word = token.word
            if word in ("TRUE", "FALSE"):
                self.advance()
                return Lit(word == "TRUE", "boolean", token.pos)
            if word in ("DATE", "TIMESTAMP"):
                return self.instant()
            if word == "INTERVAL":
                raise CQL2Error("an INTERVAL may only appear in a T_* function", token.pos)
            if word in WKT_TYPES or word == "BBOX":
                raise CQL2Error("a geometry may only appear in an S_* function", token.pos)
            if self.peek().kind == "punct" and self.peek().text == "(":
                return self.call()
            if word in RESERVED:
                raise CQL2Error(f"unexpected keyword {token.text}", token.pos)
            self.advance()
            return Prop(token.text, token.pos)
        raise CQL2Error(
            f"expected a value or a property but found {self.describe(token)}", token.pos
        )

    def call(self) -> Node:
        token = self.advance()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CQL2Error("the filter nests too deeply", token.pos)
        self.expect_punct("(")
        args: list[Node] = []
        if not self.is_punct(")"):
            args.append(self.scalar())
            while self.is_punct(","):
                self.advance()
                args.append(self.scalar())
        self.expect_punct(")")
        self.depth -= 1
        return Call(token.word, tuple(args), token.pos)

    def instant(self) -> Lit:
        token = self.advance()
        self.expect_punct("(")
        value = self.tok
        if value.kind != "string":
            raise CQL2Error(f"{token.word} takes a quoted date or time", value.pos)
        self.advance()
        self.expect_punct(")")
        text = _unquote_string(value)
        if token.word == "DATE":
            try:
                return Lit(date.fromisoformat(text), "date", token.pos)
            except ValueError:
                raise CQL2Error(f"invalid date {text!r} (use YYYY-MM-DD)", value.pos) from None
        parsed = parse_timestamp(text)
        if parsed is None:
            raise CQL2Error(
                f"invalid timestamp {text!r} (use RFC 3339, e.g. 2025-01-31T08:00:00Z)", value.pos
            )
        return Lit(parsed, "timestamp", token.pos)

    def temporal_expression(self) -> Node:
        token = self.tok
        if token.word == "INTERVAL":
            self.advance()
            self.expect_punct("(")
            start = self.interval_bound()
            self.expect_punct(",")
            end = self.interval_bound()
            self.expect_punct(")")
            return Interval(start, end, token.pos)
        return self.scalar()

    def interval_bound(self) -> Prop | Lit | None:
        token = self.tok
        if token.kind == "string":
            self.advance()
            text = _unquote_string(token)
            if text == "..":
                return None
            parsed = parse_timestamp(text)
            if parsed is None:
                try:
                    return Lit(date.fromisoformat(text), "date", token.pos)
                except ValueError:
                    raise CQL2Error(
                        f"invalid interval bound {text!r} (a date, a timestamp or '..')",
                        token.pos,
                    ) from None
            return Lit(parsed, "timestamp", token.pos)
        node = self.scalar()
        if not isinstance(node, Prop | Lit):
            raise CQL2Error(
                "an interval bound is a date, a timestamp, '..' or a property", token.pos
            )
        return node

    def geometry_expression(self) -> Node:
        token = self.tok
        if token.word == "BBOX":
            self.advance()
            self.expect_punct("(")
            numbers = [self.number()]
            while self.is_punct(","):
                self.advance()
                numbers.append(self.number())
            self.expect_punct(")")
            if len(numbers) == 6:
                numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
            if len(numbers) != 4:
                raise CQL2Error("BBOX takes 4 (or 6) numbers", token.pos)
            xmin, ymin, xmax, ymax = numbers
            if xmin > xmax or ymin > ymax:
                raise CQL2Error("BBOX must be (xmin, ymin, xmax, ymax) with min <= max", token.pos)
            return Geom(shapely.box(xmin, ymin, xmax, ymax), token.pos)
        if token.word in WKT_TYPES:
            return self.wkt()
        return self.scalar()

    def number(self) -> float:
        token = self.tok
        if token.kind != "number":
            raise CQL2Error(f"expected a number but found {self.describe(token)}", token.pos)
        self.advance()
        return float(number_value(token))

    def wkt(self) -> Geom:
        """Take the source text of a WKT geometry (balanced parentheses) and let GEOS read it."""
        start = self.advance()
        depth = 0
        end = start.end
        if self.tok.word in ("Z", "M", "ZM"):
            end = self.advance().end
        if self.tok.word == "EMPTY":
            end = self.advance().end
        else:
            while True:
                token = self.tok
                if token.kind == "end":
                    raise CQL2Error("unterminated geometry", start.pos)
                if token.kind == "punct" and token.text == "(":
                    depth += 1
                elif token.kind == "punct" and token.text == ")":
                    depth -= 1
                elif token.kind not in ("number", "punct") and token.word not in (
                    "EMPTY",
                    *WKT_TYPES,
                ):
                    raise CQL2Error(f"unexpected {token.text!r} in a geometry", token.pos)
                if depth < 0:
                    raise CQL2Error("unbalanced parentheses in a geometry", token.pos)
                end = self.advance().end
                if depth == 0:
                    break
        try:
            geometry = shapely.from_wkt(self.text[start.pos : end])
        except shapely.errors.GEOSException as exc:
            raise CQL2Error(f"invalid {start.word} geometry: {exc}", start.pos) from None
        coords = shapely.get_coordinates(geometry)
        if len(coords) and not (abs(coords) < 1e9).all():
            raise CQL2Error("geometry coordinates out of range", start.pos)
        return Geom(geometry, start.pos)


def number_value(token: Token) -> int | float:
    """The value of a number token: an int when it has no point or exponent."""
    if len(token.text) > MAX_NUMBER_LENGTH:
        raise CQL2Error(f"the number {token.text[:20]}... has too many digits", token.pos)
    if re.fullmatch(r"[+-]?\d+", token.text):
        return int(token.text)
    value = float(token.text)
    if not math.isfinite(value):
        raise CQL2Error(f"the number {token.text} is out of range", token.pos)
    return value


TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:?\d\d)?")


def parse_timestamp(text: str) -> datetime | None:
    """RFC 3339 (a trailing Z, an offset, or none for +08:00); None when it is not one."""
    if not re.fullmatch(
        r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:?\d\d)?", text
    ):
        return None
    try:
        value = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=CHINA_STANDARD_TIME)


def day_start(value: date) -> datetime:
    return datetime.combine(value, time(0), tzinfo=CHINA_STANDARD_TIME)


def parse(text: str) -> Node:
    """The tree of a CQL2-text filter; raises `CQL2Error` with the position of the problem."""
    if len(text) > MAX_FILTER_LENGTH:
        raise CQL2Error(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    if "\x00" in text:
        raise CQL2Error("the filter contains a NUL character", text.index("\x00"))
    return Parser(text).parse()


# --- compiler ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queryable:
    """A name a filter may use: its SQL expression and its JSON-schema type.

    type: string, integer, number, boolean, date-time or geometry.
    """

    name: str
    column: ColumnElement[Any]
    type: str


SQL_TYPES = {
    "string": String(),
    "integer": BigInteger(),
    "number": Float(),
    "boolean": Boolean(),
    "date-time": DateTime(timezone=True),
}
LITERAL_TYPES = {
    "string": "string",
    "number": "number",
    "boolean": "boolean",
    "timestamp": "date-time",
    "date": "date-time",
}
GeometryLiteral = Callable[[shapely.Geometry], ColumnElement[Any]]


class Compiler:
    def __init__(self, queryables: Mapping[str, Queryable], geometry_literal: GeometryLiteral):
        self.queryables = queryables
        self.geometry_literal = geometry_literal
        self.used: set[str] = set()

    def queryable(self, node: Prop) -> Queryable:
        found = self.queryables.get(node.name)
        if found is None:
            names = ", ".join(sorted(self.queryables))
            raise CQL2Error(
                f"unknown property {node.name!r}; queryables: {names}", node.pos, node.name
            )
        self.used.add(found.name)
        return found

    def boolean(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(*(self.boolean(item) for item in node.items))
        if isinstance(node, Or):
            return or_(*(self.boolean(item) for item in node.items))
        if isinstance(node, Not):
            return not_(self.boolean(node.item))
        if isinstance(node, Lit) and node.kind == "boolean":
            return true() if node.value else false()
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Like):
            return self.like(node)
        if isinstance(node, Between):
            return self.between(node)
        if isinstance(node, InList):
            return self.in_list(node)
        if isinstance(node, IsNull):
            return self.is_null(node)
        if isinstance(node, Spatial):
            return self.spatial(node)
        if isinstance(node, Temporal):
            return self.temporal(node)
        raise CQL2Error("expected a predicate", getattr(node, "pos", None))

    # scalars: (expression, type); literals take the type of the other side
    def typed(self, node: Node) -> tuple[ColumnElement[Any] | None, str, Node]:
        if isinstance(node, Prop):
            q = self.queryable(node)
            return q.column, q.type, node
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Lit):
            return None, "", node
        raise CQL2Error("expected a value or a property", getattr(node, "pos", None))

    def call(self, node: Call) -> tuple[ColumnElement[Any], str, Node]:
        if node.name == "CASEI":
            if len(node.args) != 1:
                raise CQL2Error("CASEI takes one argument", node.pos)
            arg = node.args[0]
            if isinstance(arg, Lit):
                if arg.kind != "string":
                    raise CQL2Error("CASEI takes a string", arg.pos)
                return func.lower(literal(arg.value, String())), "string", node
            expr, kind, _ = self.typed(arg)
            if kind != "string":
                raise CQL2Error("CASEI takes a string property", node.pos)
            return func.lower(expr), "string", node
        raise CQL2Error(f"unknown function {node.name}; supported: CASEI", node.pos)

    def bind(self, lit: Lit, kind: str, against: str) -> ColumnElement[Any]:
        """A literal as a bound parameter of the type of the property it is compared with."""
        value = lit.value
        if kind == "string":
            if lit.kind != "string":
                raise CQL2Error(f"{against} is a string: quote the value", lit.pos, against or None)
        elif kind in ("integer", "number"):
            if lit.kind != "number":
                raise CQL2Error(f"{against} is a number: compare it with a number", lit.pos)
            if kind == "number" or isinstance(value, float) or abs(value) >= 2**63:
                return literal(float(value), Float())
        elif kind == "boolean":
            if lit.kind != "boolean":
                raise CQL2Error(f"{against} is a boolean: use TRUE or FALSE", lit.pos)
        elif kind == "date-time":
            value = self.instant_value(lit, against)
        elif kind == "geometry":
            raise CQL2Error(f"{against} is a geometry: use an S_* function", lit.pos)
        return literal(value, SQL_TYPES[kind])

    @staticmethod
    def instant_value(lit: Lit, against: str) -> datetime:
        if lit.kind == "timestamp":
            return lit.value
        if lit.kind == "date":
            return day_start(lit.value)
        if lit.kind == "string":
            parsed = parse_timestamp(lit.value)
            if parsed is None and re.fullmatch(r"\d{4}-\d\d-\d\d", lit.value):
                parsed = day_start(date.fromisoformat(lit.value))
            if parsed is not None:
                return parsed
        raise CQL2Error(
            f"{against} is a date-time: use TIMESTAMP('...') or DATE('...')", lit.pos, against
        )

    def pair(self, left: Node, right: Node) -> tuple[ColumnElement[Any], ColumnElement[Any], str]:
        lexpr, lkind, _ = self.typed(left)
        rexpr, rkind, _ = self.typed(right)
        if lexpr is None and rexpr is None:
            assert isinstance(left, Lit) and isinstance(right, Lit)
            kinds = {LITERAL_TYPES[left.kind], LITERAL_TYPES[right.kind]}
            if len(kinds) != 1:
                raise CQL2Error("cannot compare values of different types", left.pos)
            kind = kinds.pop()
            return self.bind(left, kind, "value"), self.bind(right, kind, "value"), kind
        if lexpr is None:
            assert isinstance(left, Lit)
            lexpr = self.bind(left, rkind, self.name_of(right))
            lkind = rkind
        if rexpr is None:
            assert isinstance(right, Lit)
            rexpr = self.bind(right, lkind, self.name_of(left))
            rkind = lkind
        numeric = {"integer", "number"}
        if lkind != rkind and not ({lkind, rkind} <= numeric):
            raise CQL2Error(
                f"cannot compare {self.name_of(left)} ({lkind}) with {self.name_of(right)} "
                f"({rkind})",
                getattr(left, "pos", None),
            )
        if lkind == "geometry":
            raise CQL2Error("compare geometries with S_* functions", getattr(left, "pos", None))
        return lexpr, rexpr, lkind

    @staticmethod
    def name_of(node: Node) -> str:
        if isinstance(node, Prop):
            return node.name
        if isinstance(node, Call):
            return f"{node.name}(...)"
        return "value"

    def compare(self, node: Compare) -> ColumnElement[bool]:
        implicit = isinstance(node.right, Lit) and node.right.pos == node.pos
        if implicit:  # a bare property or function stands for `... = TRUE`
            _, kind, _ = self.typed(node.left)
            if kind != "boolean":
                raise CQL2Error(
                    f"{self.name_of(node.left)} is not a boolean: compare it with a value",
                    node.pos,
                    node.left.name if isinstance(node.left, Prop) else None,
                )
        left, right, kind = self.pair(node.left, node.right)
        if kind == "boolean" and node.op not in ("=", "<>"):
            raise CQL2Error("booleans compare with = or <> only", node.pos)
        ops = {
            "=": left.__eq__,
            "<>": left.__ne__,
            "<": left.__lt__,
            "<=": left.__le__,
            ">": left.__gt__,
            ">=": left.__ge__,
        }
        return ops[node.op](right)

    def like(self, node: Like) -> ColumnElement[bool]:
        left, right, kind = self.pair(node.expr, node.pattern)
        if kind != "string":
            raise CQL2Error("LIKE compares strings", node.pos)
        if node.insensitive:
            left, right = func.lower(left), func.lower(right)
        expr = left.like(right, escape="\\")
        return not_(expr) if node.negate else expr

    def between(self, node: Between) -> ColumnElement[bool]:
        expr, low, kind = self.pair(node.expr, node.low)
        _, high, _ = self.pair(node.expr, node.high)
        if kind not in ("integer", "number", "date-time", "string"):
            raise CQL2Error("BETWEEN compares numbers, strings or times", node.pos)
        result = expr.between(low, high)
        return not_(result) if node.negate else result

    def in_list(self, node: InList) -> ColumnElement[bool]:
        expr, kind = None, ""
        values = []
        for item in node.items:
            if not isinstance(item, Lit):
                raise CQL2Error("IN takes a list of literal values", getattr(item, "pos", None))
            expr, value, kind = self.pair(node.expr, item)
            values.append(value)
        assert expr is not None
        if kind == "boolean":
            raise CQL2Error("IN does not take booleans", node.pos)
        result = expr.in_(values)
        return not_(result) if node.negate else result

    def is_null(self, node: IsNull) -> ColumnElement[bool]:
        expr, _, _ = self.typed(node.expr)
        if expr is None:
            raise CQL2Error("IS NULL applies to a property", node.pos)
        return expr.is_not(None) if node.negate else expr.is_(None)

    def geometry(self, node: Node) -> ColumnElement[Any]:
        if isinstance(node, Geom):
            return self.geometry_literal(node.geometry)
        if isinstance(node, Prop):
            q = self.queryable(node)
            if q.type != "geometry":
                raise CQL2Error(f"{q.name} is not a geometry", node.pos, q.name)
            return q.column
        raise CQL2Error(
            "an S_* function takes a geometry property or a WKT/BBOX geometry",
            getattr(node, "pos", None),
        )

    def spatial(self, node: Spatial) -> ColumnElement[bool]:
        a, b = self.geometry(node.a), self.geometry(node.b)
        if node.op == "S_DISJOINT":
            return not_(func.ST_Intersects(a, b))
        name = {
            "S_INTERSECTS": "ST_Intersects",
            "S_EQUALS": "ST_Equals",
            "S_TOUCHES": "ST_Touches",
            "S_WITHIN": "ST_Within",
            "S_OVERLAPS": "ST_Overlaps",
            "S_CROSSES": "ST_Crosses",
            "S_CONTAINS": "ST_Contains",
        }[node.op]
        return getattr(func, name)(a, b)

    def bound(self, node: Prop | Lit | None, open_end: str) -> ColumnElement[Any]:
        if node is None:
            return cast(literal(open_end, String()), DateTime(timezone=True))
        if isinstance(node, Prop):
            q = self.queryable(node)
            if q.type != "date-time":
                raise CQL2Error(f"{q.name} is not a date-time", node.pos, q.name)
            return func.coalesce(q.column, cast(literal(open_end, String()), DateTime(True)))
        return literal(self.instant_value(node, "an interval bound"), DateTime(timezone=True))

    def period(self, node: Node) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """(start, end) of a temporal operand; an instant starts and ends at once."""
        if isinstance(node, Interval):
            return self.bound(node.start, "-infinity"), self.bound(node.end, "infinity")
        if isinstance(node, Prop):
            q = self.queryable(node)
            if q.type != "date-time":
                raise CQL2Error(f"{q.name} is not a date-time", node.pos, q.name)
            return q.column, q.column
        if isinstance(node, Lit) and node.kind in ("timestamp", "date"):
            value = literal(self.instant_value(node, "value"), DateTime(timezone=True))
            return value, value
        raise CQL2Error(
            "a T_* function takes a date-time property, DATE(), TIMESTAMP() or INTERVAL()",
            getattr(node, "pos", None),
        )

    def temporal(self, node: Temporal) -> ColumnElement[bool]:
        (s1, e1), (s2, e2) = self.period(node.a), self.period(node.b)
        relations: dict[str, Callable[[], ColumnElement[bool]]] = {
            "T_AFTER": lambda: s1 > e2,
            "T_BEFORE": lambda: e1 < s2,
            "T_CONTAINS": lambda: and_(s1 < s2, e1 > e2),
            "T_DISJOINT": lambda: or_(e1 < s2, s1 > e2),
            "T_DURING": lambda: and_(s1 > s2, e1 < e2),
            "T_EQUALS": lambda: and_(s1 == s2, e1 == e2),
            "T_FINISHEDBY": lambda: and_(s1 < s2, e1 == e2),
            "T_FINISHES": lambda: and_(s1 > s2, e1 == e2),
            "T_INTERSECTS": lambda: and_(s1 <= e2, e1 >= s2),
            "T_MEETS": lambda: e1 == s2,
            "T_METBY": lambda: s1 == e2,
            "T_OVERLAPPEDBY": lambda: and_(s1 > s2, s1 < e2, e1 > e2),
            "T_OVERLAPS": lambda: and_(s1 < s2, e1 > s2, e1 < e2),
            "T_STARTEDBY": lambda: and_(s1 == s2, e1 > e2),
            "T_STARTS": lambda: and_(s1 == s2, e1 < e2),
        }
        return relations[node.op]()


def compile_filter(
    tree: Node, queryables: Mapping[str, Queryable], geometry_literal: GeometryLiteral
) -> tuple[ColumnElement[bool], frozenset[str]]:
    """The SQL condition of `tree` and the names of the queryables it uses."""
    compiler = Compiler(queryables, geometry_literal)
    condition = compiler.boolean(tree)
    return condition, frozenset(compiler.used)
