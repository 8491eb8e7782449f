"""Address -> place: parse, resolve against the divisions and the gazetteer, rank.

How :meth:`AddressMatcher.match` works
--------------------------------------
1. **Normalise** (:func:`geo.address.normalize.normalize_address`): width, Chinese
   numerals before 组/号, punctuation and spaces; group, house number and details
   are taken out.
2. **Segment** (:meth:`geo.address.lexicon.Lexicon.segment`): the rest is cut into
   tokens by dynamic programming over the lexicon: every form of every county,
   township and village (official, customary, short, committee, suffix variants,
   bare base) and of every gazetteer road (per township), plus province and
   prefecture words; where exact forms leave characters unexplained, spans one
   edit away from a form (typos) are tried. A token keeps *all* places its text
   may name, at every level, each with a weight: form quality x 0.7 if fuzzy x 2
   for villages and roads (they say more than a county or township name).
3. **Hypotheses**: every place any token may name, as (county, township, village,
   road) with its ancestors filled in: each village, each road-in-township, each
   (village, road) pair of the same township, each township, each county.
4. **Score** each hypothesis (:meth:`AddressMatcher._score`): each level it names
   takes the one token naming its place most strongly, finest level first (a
   village or road no token reads as rules the hypothesis out; a place written
   twice counts once); other tokens agreeing at some level cost nothing; tokens
   naming only *other* places at levels it fixes cost 0.8 x their weight
   (``矮寨镇`` in an address of a 乾州街道 village). The numbers add a bonus when
   the gazetteer has them: the house number on that road, or the group and house
   number in that village (+1.5), the house number alone in that village when
   unique (+1.0), the group alone (+0.5). Tokens reach places through
   dictionaries; nothing loops over the gazetteer.
5. **Doubt**: when the best reading contradicts a token, lacks the house number,
   has a rival, or leaves text unused, the tokens are widened and everything is
   scored again: an unknown character or two next to a village or road name is
   merged into it when that makes a one-edit match (``技`` + ``土溪村`` ->
   红土溪村); village and road names gain the places one edit away (``坪年村`` for
   坪朗村, at half weight); unexplained text gains, within the townships named, the
   villages and roads sharing characters with it (``坝`` -> 大坝村), at low weight,
   so that the house number decides.
6. **Rank**: the best hypothesis, then greedily each next-best one that disagrees
   with all kept ones at some level (a different village, township, road ...).
   Softmax of the scores (temperature 0.5) over that list gives each its
   probability; readings with probability >= 0.1, or at least half the best's,
   make the match ambiguous, and the list (up to 5, best first) becomes
   ``candidates``.
7. **Resolve** the hypothesis to a point, finest first: the house (road + number,
   or village + group + number; precision ``house_number``); for a road, the house
   with the nearest number of the same parity (same side of the street) when the
   number is unknown, else the road's middle (``road``); for a village, the middle
   of the group's houses when the group is known, else the village centre
   (``village``); else the representative point of the township or county
   polygon, or the mean of its gazetteer points when no polygon was given
   (``township``/``county``).
8. **Confidence** = probability x evidence, where evidence is the share of the
   normalised characters explained by the hypothesis (numbers included when they
   were found, half when not), times 0.85 per fuzzy token used, 0.6 per
   contradicting token, 0.5 per unknown run that looks like a division of
   elsewhere (``北京市``), and 0.85 when a house number was given but not found.
   Matches whose evidence is below ``min_evidence`` (default 0.35) are ``None``:
   too little of the text was understood (``北京市海淀区中关村大街27号``).

Codes of a result are those of the resolved village and its ancestors (for a house
on a street, the village whose polygon holds it).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import shapely

from geo.address.lexicon import (
    COUNTY,
    FILLER,
    FILLER_FORMS,
    PREFECTURE_FORMS,
    PROVINCE_FORMS,
    ROAD,
    TOWNSHIP,
    VILLAGE,
    Lexicon,
    Token,
    county_forms,
    name_core,
    road_kind,
    township_forms,
    village_base,
    village_forms,
)
from geo.address.normalize import SEPARATOR, NormalizedAddress, normalize_address

__all__ = [
    "COMPONENT_KEYS",
    "PRECISIONS",
    "AddressCandidate",
    "AddressMatch",
    "AddressMatcher",
    "ParsedAddress",
    "parse_address",
]

Precision = Literal["house_number", "road", "village", "township", "county"]
PRECISIONS: tuple[str, ...] = ("house_number", "road", "village", "township", "county")
"""Result precisions, finest first."""
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
PROVINCE = "湖南省"
PREFECTURE = "湘西土家族苗族自治州"

# Scoring (see the module docstring).
_LEVELS_FINEST_FIRST = (ROAD, VILLAGE, TOWNSHIP, COUNTY)
_CONFLICT = 0.8
_FILLER_WEIGHT = 0.1
_SCOPED_QUALITY = 0.5
_SCOPED_MAX_LENGTH = 4
_SCOPED_MIN_SHARE = 0.5
_SCOPED_ROAD_FACTOR = 0.8
_BONUS_HOUSE = 1.5
_BONUS_NUMBER_ONLY = 1.0
_BONUS_GROUP = 0.5
_TEMPERATURE = 0.5
_MIN_CANDIDATE_P = 0.1
_MAX_CANDIDATES = 5
_RANK_WINDOW = 4.0
_MAX_RANKED = 40
# Confidence factors.
_FUZZY_EVIDENCE = 0.85
_CONFLICT_EVIDENCE = 0.6
_FOREIGN_EVIDENCE = 0.5
_NUMBER_MISSED = 0.85
DEFAULT_MIN_EVIDENCE = 0.35
# An unknown run naming a division we do not know: "北京市", "海淀区", "长沙县".
_FOREIGN_DIVISION = re.compile(r"[\u4e00-\u9fff]{2,6}(?:省|市|区|县|自治州|州|盟|旗)")
# Such divisions heading a run, each with at least 2 characters before its level
# word (so that road names like 新区路 or 市府路 keep their first characters).
_FOREIGN_HEAD = re.compile(r"(?:[^省市区县州镇乡]{2,6}(?:省|自治州|市|州|区|县|镇|乡|街道))+")

Hypothesis = tuple[int, int, int, int]
"""(county, township, village, road) entity indices, -1 where unset."""
_UNSET_LAST = 1 << 62


@dataclass(frozen=True)
class ParsedAddress:
    """An address cut into components, names normalised to their canonical form.

    ``county``/``township`` are official names (``吉首市``, ``乾州街道``), ``village``
    the customary short form (``坪朗村``, ``峒河社区``), ``road`` as in the gazetteer
    (or as written, for a road the vocabulary does not know), ``group``/
    ``house_number`` as ``"3组"``/``"15号"``. ``inferred`` lists the components not
    written but implied by the hierarchy (``乾州街道`` implies 吉首市, 湘西州,
    湖南省). ``detail``: building/unit/room parts; ``unparsed``: runs of the
    normalised text that no component accounts for. ``normalized`` is the
    normalised text with numbers taken out (:data:`SEPARATOR` where they were).
    """

    text: str
    normalized: str
    province: str | None = None
    prefecture: str | None = None
    county: str | None = None
    township: str | None = None
    village: str | None = None
    road: str | None = None
    house_number: str | None = None
    group: str | None = None
    detail: tuple[str, ...] = ()
    unparsed: tuple[str, ...] = ()
    inferred: tuple[str, ...] = ()

    @property
    def components(self) -> dict[str, str | None]:
        """The components as the gazetteer holds them (:data:`COMPONENT_KEYS`)."""
        return {key: getattr(self, key) for key in COMPONENT_KEYS}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "normalized": self.normalized}
        out.update(self.components)
        out.update(
            detail=list(self.detail), unparsed=list(self.unparsed), inferred=list(self.inferred)
        )
        return out


@dataclass(frozen=True)
class AddressCandidate:
    """One place an address may mean.

    ``lon``/``lat``: WGS 84 degrees (None only when neither a polygon nor a
    gazetteer point of the place is known); ``precision``: the finest level
    matched (:data:`PRECISIONS`); ``confidence`` in [0, 1]; codes of the village
    (None above village precision), township and county; ``matched_text``: the
    gazetteer entry's full text, or the division names.
    """

    lon: float | None
    lat: float | None
    precision: Precision
    confidence: float
    village_code: str | None
    township_code: str | None
    county_code: str | None
    matched_text: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        return {
            "lon": self.lon,
            "lat": self.lat,
            "precision": self.precision,
            "confidence": self.confidence,
            "village_code": self.village_code,
            "township_code": self.township_code,
            "county_code": self.county_code,
            "matched_text": self.matched_text,
        }


@dataclass(frozen=True)
class AddressMatch(AddressCandidate):
    """The best reading of an address, and the ranked alternatives when ambiguous.

    ``candidates`` is empty for an unambiguous match; otherwise it lists up to 5
    readings, best first (the match itself first), each with its own confidence.
    """

    candidates: tuple[AddressCandidate, ...] = field(default=())

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["ambiguous"] = self.ambiguous
        out["candidates"] = [candidate.to_dict() for candidate in self.candidates]
        return out


@dataclass
class _Scored:
    """A scored hypothesis and what the confidence needs to know about it:
    ``used_mask`` has a bit per token of ``evidence.named`` that agrees with it."""

    hyp: Hypothesis
    score: float
    evidence: _TokenEvidence
    used_mask: int
    conflicts: int
    number_found: bool

    @property
    def used(self) -> list[Token]:
        """The tokens that agree with the hypothesis (fillers included)."""
        return self.evidence.tokens(self.used_mask)

    def sort_key(self) -> tuple[float, int, Hypothesis]:
        """Best score first; among equals the finer place, then the lower codes
        (entity indices follow code order; unset levels last), so that answers
        are deterministic."""
        hyp = self.hyp
        return (-self.score, hyp.count(-1), tuple(x if x >= 0 else _UNSET_LAST for x in hyp))


class _Place(NamedTuple):
    """What a hypothesis resolves to: point, precision, entity indices (-1 where
    unknown) and the matched text."""

    lon: float | None
    lat: float | None
    precision: Precision
    village: int
    township: int
    county: int
    text: str


@dataclass
class _Analysis:
    norm: NormalizedAddress
    tokens: list[Token]
    ranked: list[_Scored]  # the best, then the greedy list of disagreeing ones
    probabilities: list[float]


class _TokenEvidence:
    """The tokens of one address arranged for scoring many hypotheses.

    ``named``: the tokens that name places; ``by_level[level]``: (position in
    ``named``, entity -> weight) of the tokens naming places of that level;
    ``levels_of[k]``: (level, entity -> weight, strongest weight) of the levels
    token k names; province/prefecture words apart (``fillers``,
    ``filler_weight``): they agree with every hypothesis.
    """

    def __init__(self, tokens: list[Token]) -> None:
        self.named: list[Token] = []
        self.by_level: tuple[list[tuple[int, dict[int, float]]], ...] = ([], [], [], [])
        self.levels_of: list[list[tuple[int, dict[int, float], float]]] = []
        self.fillers: list[Token] = []
        self.filler_weight = 0.0
        for token in tokens:
            levels = [
                (level, refs, max(refs.values())) for level, refs in enumerate(token.refs) if refs
            ]
            if levels:
                # A token that is also a filler word competes as its places only.
                k = len(self.named)
                self.named.append(token)
                self.levels_of.append(levels)
                for level, refs, _ in levels:
                    self.by_level[level].append((k, refs))
            elif token.filler:
                self.fillers.append(token)
                self.filler_weight += _FILLER_WEIGHT * token.filler

    def tokens(self, mask: int) -> list[Token]:
        """The filler tokens and the named tokens whose bits are set in ``mask``."""
        return self.fillers + [t for k, t in enumerate(self.named) if mask >> k & 1]


def _representative_points(geometry: Any) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of each polygon, or a point on its surface when the centroid falls
    outside it (a crescent-shaped village); NaN for missing or empty geometry."""
    geoms = np.asarray(list(geometry), dtype=object)
    present = np.array([g is not None and not g.is_empty for g in geoms], dtype=bool)
    lon = np.full(len(geoms), np.nan)
    lat = np.full(len(geoms), np.nan)
    if present.any():
        shapes = geoms[present]
        points = shapely.centroid(shapes)
        outside = ~shapely.covers(shapes, points)
        if outside.any():
            points[outside] = shapely.point_on_surface(shapes[outside])
        lon[present] = shapely.get_x(points)
        lat[present] = shapely.get_y(points)
    return lon, lat


def _component_table(components: Iterable[Any]) -> pd.DataFrame:
    """Gazetteer components (dicts, or JSON text as a database may return them) as
    a DataFrame with the :data:`COMPONENT_KEYS` columns, missing parts None."""
    rows = [json.loads(c) if isinstance(c, str) else (c or {}) for c in components]
    table = pd.DataFrame.from_records(rows, columns=list(COMPONENT_KEYS))
    return table.astype(object).where(table.notna(), None)


def _leading_int(values: pd.Series) -> np.ndarray:
    """The first integer in each text (``"15号"`` -> 15), -1 where there is none."""
    digits = values.astype(object).where(values.notna(), "").astype(str).str.extract(r"(\d+)")[0]
    return pd.to_numeric(digits, errors="coerce").fillna(-1).astype(np.int64).to_numpy()


class AddressMatcher:
    """Parse and match Chinese addresses of the prefecture (module docstring).

    Build once with :meth:`build` (a few seconds for the full demo gazetteer);
    :meth:`match` is then pure lookup, thread-safe, and needs no database.
    """

    def __init__(self) -> None:
        # Filled by build(); declared here so that the attributes are documented.
        self.lexicon = Lexicon()
        self.county_code: list[str] = []
        self.county_name: list[str] = []
        self.township_code: list[str] = []
        self.township_name: list[str] = []
        self.township_county: list[int] = []
        self.village_code: list[str] = []
        self.village_official: list[str] = []  # as in the division table
        self.village_name: list[str] = []  # customary short form
        self.village_township: list[int] = []
        self.road_name: list[str] = []
        self.road_township: list[int] = []
        self.division_lon: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.empty(0),) * 3
        self.division_lat: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.empty(0),) * 3
        self.row_lon = np.empty(0)
        self.row_lat = np.empty(0)
        self.row_text: np.ndarray = np.empty(0, dtype=object)
        self.row_village = np.empty(0, dtype=np.int64)
        self.road_house: dict[tuple[int, int], int] = {}
        self.road_numbers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.road_middle: dict[int, int] = {}
        self.village_house: dict[tuple[int, int, int], int] = {}
        self.village_number: dict[tuple[int, int], int] = {}
        self.group_point: dict[tuple[int, int], tuple[float, float]] = {}
        self.village_centre: dict[int, int] = {}
        self._gazetteer_village_names: set[tuple[int, str]] = set()
        self._row_has_road = np.empty(0, dtype=bool)
        self.town_villages: list[list[int]] = []
        self.town_roads: list[list[int]] = []
        self.village_core: list[frozenset[str]] = []
        self.road_core: list[frozenset[str]] = []

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        gazetteer: pd.DataFrame | None = None,
        divisions: pd.DataFrame | None = None,
    ) -> AddressMatcher:
        """A matcher for ``gazetteer`` entries within ``divisions``.

        ``divisions``: rows of counties, townships and villages with ``code``,
        ``name``, ``level`` (``county``/``township``/``village``), ``parent_code``
        and optionally ``geometry`` (polygons, lon/lat; their representative points
        answer township and county matches, and village matches of villages the
        gazetteer lacks). Default: the shipped division tables
        (:func:`geo.reference.load_divisions`), no geometry.

        ``gazetteer``: rows with ``full_text``, ``components`` (dict or JSON text:
        county, township, village, road, house_number ``"15号"``, group ``"3组"``),
        ``village_code``, ``precision`` (house_number | road | village) and a point
        as ``geometry`` or ``lon``/``lat`` columns (WGS 84). Rows whose village is
        not in ``divisions`` are left out. Default: none (divisions only).
        """
        self = cls()
        if divisions is None:
            from geo.reference import load_divisions

            divisions = pd.concat(load_divisions(), ignore_index=True)
        self._index_divisions(divisions)
        if gazetteer is not None and len(gazetteer):
            self._index_gazetteer(gazetteer)
        self._fill_division_points()
        self._index_members()
        self._build_lexicon()
        return self

    def _index_divisions(self, divisions: pd.DataFrame) -> None:
        frame = divisions.sort_values("code", kind="stable")
        level = frame["level"].astype(str).to_numpy()
        has_geometry = "geometry" in frame.columns
        tables = []
        for name in ("county", "township", "village"):
            part = frame[level == name]
            lon, lat = (
                _representative_points(part["geometry"].to_numpy())
                if has_geometry
                else (np.full(len(part), np.nan), np.full(len(part), np.nan))
            )
            tables.append((part, lon, lat))
        (counties, c_lon, c_lat), (towns, t_lon, t_lat), (vills, v_lon, v_lat) = tables
        self.county_code = counties["code"].astype(str).tolist()
        self.county_name = counties["name"].astype(str).tolist()
        self.township_code = towns["code"].astype(str).tolist()
        self.township_name = towns["name"].astype(str).tolist()
        self.village_code = vills["code"].astype(str).tolist()
        self.village_official = vills["name"].astype(str).tolist()
        self.village_name = [base + kind for base, kind in map(village_base, self.village_official)]
        county_pos = {code: i for i, code in enumerate(self.county_code)}
        town_pos = {code: i for i, code in enumerate(self.township_code)}
        # A parent missing from the table leaves the level above unknown (-1).
        self.township_county = [county_pos.get(str(p), -1) for p in towns["parent_code"]]
        self.village_township = [town_pos.get(str(p), -1) for p in vills["parent_code"]]
        self.division_lon = (c_lon, t_lon, v_lon)
        self.division_lat = (c_lat, t_lat, v_lat)

    def _index_gazetteer(self, gazetteer: pd.DataFrame) -> None:
        village_pos = pd.Index(self.village_code)
        row_village = village_pos.get_indexer(gazetteer["village_code"].astype(str))
        keep = row_village >= 0
        gaz = gazetteer[keep].reset_index(drop=True)
        if "geometry" in gaz.columns:
            geometry = np.asarray(gaz["geometry"].to_numpy(), dtype=object)
            lon, lat = shapely.get_x(geometry), shapely.get_y(geometry)
        else:
            lon, lat = gaz["lon"].to_numpy(), gaz["lat"].to_numpy()
        self.row_lon = np.asarray(lon, dtype=np.float64)
        self.row_lat = np.asarray(lat, dtype=np.float64)
        self.row_text = gaz["full_text"].astype(object).to_numpy()
        self.row_village = row_village[keep].astype(np.int64)
        parts = _component_table(gaz["components"])
        precision = gaz["precision"].astype(str).to_numpy()
        number = _leading_int(parts["house_number"])
        group = _leading_int(parts["group"])
        # Customary village names as the gazetteer writes them (they may differ from
        # the division table's official names) join the vocabulary.
        self._gazetteer_village_names = set(
            zip(self.row_village.tolist(), parts["village"].tolist(), strict=True)
        )
        self._index_roads(parts, precision, number)
        self._index_villages(parts, precision, number, group)

    def _written_townships(self, parts: pd.DataFrame) -> np.ndarray:
        """Per entry, the township its text names (looked up within the county of
        the entry's village), falling back to the township of the entry's village."""
        village_town = np.asarray(self.village_township, dtype=np.int64)
        row_town = village_town[self.row_village]
        town_county = np.asarray(self.township_county, dtype=np.int64)
        by_name = {(self.township_county[t], name): t for t, name in enumerate(self.township_name)}
        return np.asarray(
            [
                by_name.get((int(town_county[t]) if t >= 0 else -1, name), int(t))
                for t, name in zip(row_town, parts["township"], strict=True)
            ],
            dtype=np.int64,
        )

    def _index_roads(self, parts: pd.DataFrame, precision: np.ndarray, number: np.ndarray) -> None:
        """Road ids per (township, road name); houses by (road, number), numbered
        houses per road sorted by number, the road middles."""
        rows = np.arange(len(parts))
        road = parts["road"].to_numpy(dtype=object)
        has_road = np.array([bool(r) for r in road], dtype=bool)
        row_town = self._written_townships(parts)
        road_keys = pd.Series(
            [f"{t}|{r}" for t, r in zip(row_town[has_road], road[has_road], strict=True)]
        )
        road_id, uniques = pd.factorize(road_keys)
        row_road = np.full(len(parts), -1, dtype=np.int64)
        row_road[has_road] = road_id
        self.road_township = [int(key.split("|", 1)[0]) for key in uniques]
        self.road_name = [key.split("|", 1)[1] for key in uniques]
        self._row_has_road = has_road

        numbered = rows[has_road & (number >= 0)]
        self.road_house = {}
        for key, row in zip(
            zip(row_road[numbered].tolist(), number[numbered].tolist(), strict=True),
            numbered.tolist(),
            strict=True,
        ):
            self.road_house.setdefault(key, row)
        numbered = numbered[np.lexsort((number[numbered], row_road[numbered]))]
        splits = np.flatnonzero(np.diff(row_road[numbered])) + 1
        self.road_numbers = {
            int(row_road[chunk[0]]): (number[chunk], chunk)
            for chunk in np.split(numbered, splits)
            if len(chunk)
        }
        middles = rows[has_road & (precision == "road")]
        self.road_middle = {}
        for r, row in zip(row_road[middles].tolist(), middles.tolist(), strict=True):
            self.road_middle.setdefault(r, row)

    def _index_villages(
        self, parts: pd.DataFrame, precision: np.ndarray, number: np.ndarray, group: np.ndarray
    ) -> None:
        """Rural houses by (village, group, number) and by (village, number) when
        unique, group middles, village centres."""
        rows = np.arange(len(parts))
        village = self.row_village
        off_road = ~self._row_has_road
        rural = rows[off_road & (number >= 0)]
        self.village_house = {}
        keys = zip(
            village[rural].tolist(), group[rural].tolist(), number[rural].tolist(), strict=True
        )
        for key, row in zip(keys, rural.tolist(), strict=True):
            self.village_house.setdefault(key, row)
        pairs = pd.DataFrame({"v": village[rural], "n": number[rural], "row": rural})
        counts = pairs.groupby(["v", "n"])["row"].agg(["first", "size"])
        self.village_number = {
            (int(v), int(n)): int(first) if size == 1 else -1
            for (v, n), first, size in zip(
                counts.index, counts["first"], counts["size"], strict=True
            )
        }
        grouped = rows[off_road & (group >= 0)]
        means = (
            pd.DataFrame(
                {
                    "v": village[grouped],
                    "g": group[grouped],
                    "lon": self.row_lon[grouped],
                    "lat": self.row_lat[grouped],
                }
            )
            .groupby(["v", "g"])[["lon", "lat"]]
            .mean()
        )
        self.group_point = {
            (int(v), int(g)): (float(x), float(y))
            for (v, g), x, y in zip(means.index, means["lon"], means["lat"], strict=True)
        }
        centres = rows[off_road & (precision == "village") & (number < 0) & (group < 0)]
        self.village_centre = {}
        for v, row in zip(village[centres].tolist(), centres.tolist(), strict=True):
            self.village_centre.setdefault(v, row)

    def _fill_division_points(self) -> None:
        """Divisions without a polygon get the mean of their gazetteer points."""
        if not len(self.row_lon):
            return
        village_town = np.asarray(self.village_township, dtype=np.int64)
        town_county = np.asarray(self.township_county, dtype=np.int64)
        row_town = village_town[self.row_village]
        row_county = np.where(row_town >= 0, town_county[row_town], -1)
        for level, owner in enumerate((row_county, row_town, self.row_village)):
            lon, lat = self.division_lon[level], self.division_lat[level]
            ok = owner >= 0
            if not len(lon) or not ok.any():
                continue
            count = np.bincount(owner[ok], minlength=len(lon))
            mean_lon = np.bincount(owner[ok], self.row_lon[ok], minlength=len(lon))
            mean_lat = np.bincount(owner[ok], self.row_lat[ok], minlength=len(lon))
            fill = np.isnan(lon) & (count > 0)
            lon[fill] = mean_lon[fill] / count[fill]
            lat[fill] = mean_lat[fill] / count[fill]

    def _index_members(self) -> None:
        """Villages and roads per township, and their name characters (for
        :meth:`_add_scoped`)."""
        self.town_villages = [[] for _ in self.township_name]
        for v, t in enumerate(self.village_township):
            if t >= 0:
                self.town_villages[t].append(v)
        self.town_roads = [[] for _ in self.township_name]
        for r, t in enumerate(self.road_township):
            self.town_roads[t].append(r)
        self.village_core = [frozenset(name_core(name)) for name in self.village_name]
        self.road_core = [frozenset(name_core(name)) for name in self.road_name]

    def _build_lexicon(self) -> None:
        lexicon = Lexicon()
        for form in FILLER_FORMS:
            lexicon.add(form, FILLER, 0, 1.0)
        for c, name in enumerate(self.county_name):
            for form, q in county_forms(name):
                lexicon.add(form, COUNTY, c, q)
        for t, name in enumerate(self.township_name):
            for form, q in township_forms(name):
                lexicon.add(form, TOWNSHIP, t, q)
        names = {(v, name) for v, name in enumerate(self.village_official)}
        names |= {(v, name) for v, name in enumerate(self.village_name)}
        names |= self._gazetteer_village_names
        for v, name in names:
            if name:
                for form, q in village_forms(name):
                    lexicon.add(form, VILLAGE, v, q)
        for r, name in enumerate(self.road_name):
            # Roads only as written: a bare base (人民 of 人民路) heads too many other
            # names (人民医院, 人民政府) to stand for the road.
            lexicon.add(name, ROAD, r, 1.0)
        lexicon.freeze()
        self.lexicon = lexicon

    # ------------------------------------------------------------- hierarchy

    def _parents(self, hyp: Hypothesis) -> Hypothesis:
        """``hyp`` with the ancestors of its finest set level filled in."""
        c, t, v, r = hyp
        if r >= 0:
            t = self.road_township[r]
        if v >= 0:
            t = self.village_township[v]
        if t >= 0:
            c = self.township_county[t]
        return (c, t, v, r)

    def _hypotheses(self, tokens: list[Token]) -> set[Hypothesis]:
        villages: set[int] = set()
        roads: set[int] = set()
        towns: set[int] = set()
        counties: set[int] = set()
        for token in tokens:
            counties.update(token.refs[COUNTY])
            towns.update(token.refs[TOWNSHIP])
            villages.update(token.refs[VILLAGE])
            roads.update(token.refs[ROAD])
        hyps = {self._parents((-1, -1, v, -1)) for v in villages}
        hyps |= {self._parents((-1, -1, -1, r)) for r in roads}
        hyps |= {self._parents((-1, t, -1, -1)) for t in towns}
        hyps |= {(c, -1, -1, -1) for c in counties}
        if villages and roads:
            roads_of_town: dict[int, list[int]] = {}
            for r in roads:
                roads_of_town.setdefault(self.road_township[r], []).append(r)
            for v in villages:
                for r in roads_of_town.get(self.village_township[v], ()):
                    hyps.add(self._parents((-1, -1, v, r)))
        return hyps

    # ----------------------------------------------------------------- score

    def _number_bonus(self, hyp: Hypothesis, norm: NormalizedAddress) -> float:
        _, _, v, r = hyp
        house, group = norm.house_number, norm.group
        if r >= 0 and house is not None and (r, house) in self.road_house:
            return _BONUS_HOUSE
        if v < 0:
            return 0.0
        if group is not None and house is not None and (v, group, house) in self.village_house:
            return _BONUS_HOUSE
        if group is None and house is not None and self.village_number.get((v, house), -1) >= 0:
            return _BONUS_NUMBER_ONLY
        if group is not None and (v, group) in self.group_point:
            return _BONUS_GROUP
        return 0.0

    def _score(
        self, hyp: Hypothesis, evidence: _TokenEvidence, norm: NormalizedAddress
    ) -> _Scored | None:
        """Score of one hypothesis (module docstring, 4).

        Each level the hypothesis names takes the one unassigned token that names
        its place most strongly, finest level first; a place named twice
        (``古丈古阳古阳``) counts once, and the second mention is free to be read at
        another level (古阳村 of 古阳镇). Tokens left over that agree with the
        hypothesis at some level cost nothing; those naming only other places at
        levels it fixes cost 0.8 x their strongest weight.
        """
        total = evidence.filler_weight
        taken = 0
        for level in _LEVELS_FINEST_FIRST:
            value = hyp[level]
            if value < 0:
                continue
            best, best_k = 0.0, -1
            for k, refs in evidence.by_level[level]:
                weight = refs.get(value)
                if weight is not None and weight > best and not taken >> k & 1:
                    best, best_k = weight, k
            if best_k < 0:
                if level >= VILLAGE:
                    # Its village or road is no token's reading (one token cannot be
                    # both the road and the village): not a reading of this text.
                    return None
                continue
            taken |= 1 << best_k
            total += best
        used = taken
        conflicts = 0
        for k, levels in enumerate(evidence.levels_of):
            if taken >> k & 1:
                continue
            penalty = 0.0
            for level, refs, strongest in levels:
                value = hyp[level]
                if value < 0:
                    continue
                if value in refs:
                    used |= 1 << k
                    penalty = 0.0
                    break
                if strongest > penalty:
                    penalty = strongest
            if penalty > 0.0:
                total -= _CONFLICT * penalty
                conflicts += 1
        bonus = self._number_bonus(hyp, norm)
        return _Scored(hyp, total + bonus, evidence, used, conflicts, bonus >= _BONUS_NUMBER_ONLY)

    def _rank(
        self, tokens: list[Token], norm: NormalizedAddress
    ) -> tuple[list[_Scored], list[float]]:
        """The best hypothesis and the greedy list of disagreeing ones, with their
        softmax probabilities (module docstring, 6)."""
        evidence = _TokenEvidence(tokens)
        scored = [
            s for s in (self._score(h, evidence, norm) for h in self._hypotheses(tokens)) if s
        ]
        scored.sort(key=_Scored.sort_key)
        if not scored:
            return [], []
        top = scored[0].score
        ranked: list[_Scored] = []
        for s in scored:
            # Far-behind readings change no probability visibly (e^-8 each).
            if s.score < top - _RANK_WINDOW or len(ranked) == _MAX_RANKED:
                break
            if not any(_compatible(s.hyp, kept.hyp) for kept in ranked):
                ranked.append(s)
        weights = [math.exp((s.score - top) / _TEMPERATURE) for s in ranked]
        total = sum(weights)
        return ranked, [w / total for w in weights]

    def _analyse(self, text: str) -> _Analysis:
        norm = normalize_address(text)
        tokens = self.lexicon.segment(norm.text)
        ranked, probabilities = self._rank(tokens, norm)
        # Readings beyond the exact ones (module docstring, 5) cost time and blur
        # sure answers: only when the exact reading leaves doubt.
        if self._doubtful(tokens, norm, ranked, probabilities):
            merged = self.lexicon.merge_unknown(tokens)
            added = len(merged) < len(tokens)
            tokens = merged
            if self.lexicon.add_neighbours(tokens):
                added = True
            if self._add_scoped(tokens):
                added = True
            if added:
                ranked, probabilities = self._rank(tokens, norm)
        return _Analysis(norm, tokens, ranked, probabilities)

    @staticmethod
    def _doubtful(
        tokens: list[Token],
        norm: NormalizedAddress,
        ranked: list[_Scored],
        probabilities: list[float],
    ) -> bool:
        """Whether the exact reading leaves doubt: nothing matched, a contradiction,
        a number it lacks, a rival, or text it does not use."""
        if not ranked:
            return True
        best = ranked[0]
        if best.conflicts or probabilities[0] < 0.9:
            return True
        if norm.house_number is not None and not best.number_found:
            return True
        used = {id(token) for token in best.used}
        return any(id(token) not in used for token in tokens)

    def _add_scoped(self, tokens: list[Token]) -> bool:
        """Last resort for names too mangled for one-edit matching (``坝`` for 大坝村
        after a dropped character, ``靛云`` for 首云): within the townships the
        address names, villages and roads sharing characters with an unexplained
        token (at most 4 characters) become its readings when they share at least
        half of the larger character set (the name without its kind word), at low
        weight (:data:`_SCOPED_QUALITY` x that share). The house number usually
        decides."""
        towns = {t for token in tokens for t in token.refs[TOWNSHIP]}
        if not towns:
            return False
        added = False
        for token in tokens:
            if token.filler or token.refs[COUNTY] or token.refs[TOWNSHIP]:
                continue
            if any(self.village_township[v] in towns for v in token.refs[VILLAGE]) or any(
                self.road_township[r] in towns for r in token.refs[ROAD]
            ):
                continue
            if len(token.text) > _SCOPED_MAX_LENGTH:
                continue
            core = set(name_core(token.text))
            # The ending says what it is; a bare name is rather a village than a road.
            kinds = [(VILLAGE, 1.0), (ROAD, _SCOPED_ROAD_FACTOR)]
            if road_kind(token.text):
                kinds = [(ROAD, 1.0)]
            elif token.text.endswith(("村", "社区")):
                kinds = [(VILLAGE, 1.0)]
            refs = []
            for t in towns:
                for level, factor in kinds:
                    members, cores = (
                        (self.town_villages[t], self.village_core)
                        if level == VILLAGE
                        else (self.town_roads[t], self.road_core)
                    )
                    for entity in members:
                        shared = len(core & cores[entity])
                        if shared:
                            share = shared / max(len(core), len(cores[entity]))
                            if share >= _SCOPED_MIN_SHARE:
                                refs.append((level, entity, _SCOPED_QUALITY * factor * share))
            if refs:
                token.add(refs)
                added = True
        return added

    # --------------------------------------------------------------- resolve

    def _division_text(self, c: int, t: int, v: int = -1) -> str:
        parts = [self.county_name[c] if c >= 0 else "", self.township_name[t] if t >= 0 else ""]
        if v >= 0:
            parts.append(self.village_name[v])
        return "".join(parts)

    def _point(self, level: int, entity: int) -> tuple[float | None, float | None]:
        lon = float(self.division_lon[level][entity])
        lat = float(self.division_lat[level][entity])
        return (None, None) if math.isnan(lon) else (lon, lat)

    def _row_result(self, row: int) -> tuple[float, float, int, str]:
        return (
            float(self.row_lon[row]),
            float(self.row_lat[row]),
            int(self.row_village[row]),
            str(self.row_text[row]),
        )

    def _resolve(self, hyp: Hypothesis, norm: NormalizedAddress) -> _Place:
        """The point and codes a hypothesis stands for (module docstring, 7)."""
        c, t, v, r = hyp
        house, group = norm.house_number, norm.group
        if r >= 0:
            row = self.road_house.get((r, house), -1) if house is not None else -1
            precision: Precision = "house_number" if row >= 0 else "road"
            if row < 0 and house is not None and r in self.road_numbers:
                row = _nearest_number(*self.road_numbers[r], house)
            if row < 0:
                row = self.road_middle.get(r, -1)
            if row < 0 and r in self.road_numbers:
                row = int(self.road_numbers[r][1][0])
            if row >= 0:
                lon, lat, village, text = self._row_result(row)
                if precision == "road":
                    middle = self.road_middle.get(r, -1)
                    text = (
                        str(self.row_text[middle])
                        if middle >= 0
                        else self._division_text(c, t) + self.road_name[r]
                    )
                return self._with_codes(lon, lat, precision, village, text)
        if v >= 0:
            row = -1
            if house is not None:
                row = (
                    self.village_house.get((v, group, house), -1)
                    if group is not None
                    else self.village_number.get((v, house), -1)
                )
            if row >= 0:
                lon, lat, village, text = self._row_result(row)
                return self._with_codes(lon, lat, "house_number", village, text)
            centre = self.village_centre.get(v, -1)
            text = str(self.row_text[centre]) if centre >= 0 else self._division_text(c, t, v)
            if group is not None and (v, group) in self.group_point:
                lon, lat = self.group_point[(v, group)]
            elif centre >= 0:
                lon, lat = float(self.row_lon[centre]), float(self.row_lat[centre])
            else:
                lon, lat = self._point(VILLAGE, v)  # type: ignore[assignment]
            return self._with_codes(lon, lat, "village", v, text)
        if t >= 0:
            lon_t, lat_t = self._point(TOWNSHIP, t)
            return _Place(lon_t, lat_t, "township", -1, t, c, self._division_text(c, t))
        lon_c, lat_c = self._point(COUNTY, c)
        return _Place(lon_c, lat_c, "county", -1, -1, c, self._division_text(c, -1))

    def _with_codes(
        self, lon: float | None, lat: float | None, precision: Precision, village: int, text: str
    ) -> _Place:
        """A place in ``village``, with the village's township and county."""
        town = self.village_township[village]
        county = self.township_county[town] if town >= 0 else -1
        return _Place(lon, lat, precision, village, town, county, text)

    def _evidence(self, analysis: _Analysis, scored: _Scored, precision: str) -> float:
        norm = analysis.norm
        total = len(norm.text.replace(SEPARATOR, "")) + norm.number_chars
        if total == 0:
            return 0.0
        explained = sum(token.length for token in scored.used)
        if scored.number_found or (precision == "house_number"):
            explained += norm.number_chars
        elif norm.number_chars:
            # Numbers we parsed but could not place still say what they are.
            explained += norm.number_chars / 2
        evidence = min(1.0, explained / total)
        evidence *= _FUZZY_EVIDENCE ** sum(token.fuzzy for token in scored.used)
        evidence *= _CONFLICT_EVIDENCE**scored.conflicts
        used_ids = {id(token) for token in scored.used}
        for token in analysis.tokens:
            if id(token) not in used_ids and _FOREIGN_DIVISION.search(token.text):
                evidence *= _FOREIGN_EVIDENCE
        if norm.house_number is not None and precision != "house_number":
            evidence *= _NUMBER_MISSED
        return evidence

    def _candidate(self, analysis: _Analysis, index: int) -> tuple[AddressCandidate, float]:
        """The ``index``-th ranked reading resolved, and its evidence."""
        scored = analysis.ranked[index]
        lon, lat, precision, v, t, c, text = self._resolve(scored.hyp, analysis.norm)
        evidence = self._evidence(analysis, scored, precision)
        confidence = analysis.probabilities[index] * evidence
        candidate = AddressCandidate(
            lon=lon,
            lat=lat,
            precision=precision,
            confidence=round(min(1.0, max(0.0, confidence)), 4),
            village_code=self.village_code[v] if v >= 0 else None,
            township_code=self.township_code[t] if t >= 0 else None,
            county_code=self.county_code[c] if c >= 0 else None,
            matched_text=text,
        )
        return candidate, evidence

    # ------------------------------------------------------------------- API

    def match(self, text: str, min_evidence: float = DEFAULT_MIN_EVIDENCE) -> AddressMatch | None:
        """The place ``text`` names, or None when nothing matched, or too little of
        the text (evidence below ``min_evidence``: ``北京市海淀区中关村大街27号``
        comes one edit near some names here, but explains little). An ambiguous
        match (``团结村``: eight villages) is returned, with low confidence and its
        candidates. See the module docstring."""
        analysis = self._analyse(text)
        if not analysis.ranked:
            return None
        best, evidence = self._candidate(analysis, 0)
        if evidence < min_evidence:
            return None
        # Rivals: likely enough on their own, or about as likely as the best (in a
        # tie of many, each is unlikely, yet all are candidates).
        p_best = analysis.probabilities[0]
        rivals = [
            i
            for i, p in enumerate(analysis.probabilities[1:], start=1)
            if p >= _MIN_CANDIDATE_P or p >= 0.5 * p_best
        ][: _MAX_CANDIDATES - 1]
        candidates: tuple[AddressCandidate, ...] = ()
        if rivals:
            candidates = (best, *(self._candidate(analysis, i)[0] for i in rivals))
        return AddressMatch(**best.__dict__, candidates=candidates)

    def match_many(
        self, texts: Sequence[str], min_evidence: float = DEFAULT_MIN_EVIDENCE
    ) -> list[AddressMatch | None]:
        """:meth:`match` for each text (repeated texts are matched once)."""
        done: dict[str, AddressMatch | None] = {}
        out = []
        for text in texts:
            if text not in done:
                done[text] = self.match(text, min_evidence)
            out.append(done[text])
        return out

    def parse(self, text: str) -> ParsedAddress:
        """``text`` cut into components with this matcher's vocabulary (the best
        reading's places; parts the vocabulary lacks by suffix rules)."""
        analysis = self._analyse(text)
        norm = analysis.norm
        c = t = v = r = -1
        used: list[Token] = []
        if analysis.ranked:
            c, t, v, r = analysis.ranked[0].hyp
            used = analysis.ranked[0].used
        stated: set[str] = set()
        province = prefecture = None
        for token in analysis.tokens:
            if token.filler and token.text in PROVINCE_FORMS:
                province = PROVINCE
                stated.add("province")
            elif token.filler and token.text in PREFECTURE_FORMS:
                prefecture = PREFECTURE
                stated.add("prefecture")
        for token in used:
            for level, key, value in (
                (COUNTY, "county", c),
                (TOWNSHIP, "township", t),
                (VILLAGE, "village", v),
                (ROAD, "road", r),
            ):
                if value >= 0 and value in token.refs[level]:
                    stated.add(key)
        road = self.road_name[r] if r >= 0 else None
        village = self.village_name[v] if v >= 0 else None
        # What the best reading leaves over, as maximal runs of the normalised text.
        covered = [False] * len(norm.text)
        for token in used:
            covered[token.start : token.end] = [True] * token.length
        leftovers = _uncovered_runs(norm.text, covered)
        unparsed = []
        for run in leftovers:
            # Divisions we do not know may head a run: 北京市海淀区 | 中关村大街.
            head = _FOREIGN_HEAD.match(run)
            name = run[head.end() :] if head else run
            if road is None and road_kind(name) and len(name) >= 2:
                road = name
                stated.add("road")
            elif village is None and name.endswith(("村", "社区")) and len(name) >= 2:
                village = name
                stated.add("village")
            else:
                unparsed.append(run)
                continue
            if head:
                unparsed.append(head.group(0))
        county = self.county_name[c] if c >= 0 else None
        township = self.township_name[t] if t >= 0 else None
        if c >= 0 or t >= 0:
            province, prefecture = PROVINCE, PREFECTURE
        values = {
            "province": province,
            "prefecture": prefecture,
            "county": county,
            "township": township,
            "village": village,
            "road": road,
        }
        inferred = tuple(k for k, value in values.items() if value is not None and k not in stated)
        return ParsedAddress(
            text=text,
            normalized=norm.text,
            house_number=f"{norm.house_number}号" if norm.house_number is not None else None,
            group=f"{norm.group}组" if norm.group is not None else None,
            detail=norm.detail,
            unparsed=tuple(unparsed),
            inferred=inferred,
            **values,
        )


def _compatible(a: Hypothesis, b: Hypothesis) -> bool:
    """No level where both hypotheses name a place and the places differ."""
    # Unrolled: this runs for every pair of ranked readings.
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    return (
        (a0 == b0 or a0 < 0 or b0 < 0)
        and (a1 == b1 or a1 < 0 or b1 < 0)
        and (a2 == b2 or a2 < 0 or b2 < 0)
        and (a3 == b3 or a3 < 0 or b3 < 0)
    )


def _nearest_number(numbers: np.ndarray, rows: np.ndarray, house: int) -> int:
    """Row of the house with the number nearest ``house``, preferring the same
    parity (odd and even numbers are on opposite sides of a street)."""
    same_side = (numbers % 2) == (house % 2)
    pool = same_side if same_side.any() else np.ones(len(numbers), dtype=bool)
    candidates = np.flatnonzero(pool)
    best = candidates[np.argmin(np.abs(numbers[candidates] - house))]
    return int(rows[best])


def _uncovered_runs(text: str, covered: list[bool]) -> list[str]:
    runs: list[str] = []
    current: list[str] = []
    for ch, done in zip(text, covered, strict=True):
        if done or ch == SEPARATOR:
            if current:
                runs.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        runs.append("".join(current))
    return runs


@functools.cache
def _default_matcher() -> AddressMatcher:
    return AddressMatcher.build()


def parse_address(text: str) -> ParsedAddress:
    """Components of ``text``, normalised, with the shipped division tables as the
    vocabulary (roads by their suffix: ``…路``, ``…街``, ``…大道``, ``…巷``).

    For roads known to a gazetteer, use :meth:`AddressMatcher.parse`.
    """
    return _default_matcher().parse(text)
