"""The vocabulary of addresses: name forms, exact and fuzzy lookup, segmentation.

A :class:`Lexicon` maps every *form* under which a place may be written to *refs*:
``(level, entity, quality)`` triples, where level is one of :data:`COUNTY`,
:data:`TOWNSHIP`, :data:`VILLAGE`, :data:`ROAD` (a road name within one township)
or :data:`FILLER` (province and prefecture words, which name nothing to resolve),
entity is an index into the caller's table of that level, and quality in (0, 1]
says how sure the form is of its place (the official name 1.0, a bare base name
``坪朗`` for ``坪朗村`` much less). One form may name several places, of several
levels (``太平`` is 太平镇 and the base of 太平村; ``团结村`` is eight villages).

The suffix rules (:func:`county_forms`, :func:`township_forms`,
:func:`village_forms`) generate the short forms and suffix variants people write.

:meth:`Lexicon.segment` cuts a normalised address into tokens by dynamic
programming: exact forms score their length times their quality, an unknown
character costs 1. Only where exact forms leave characters unexplained, a second
pass also tries spans within one edit (insert, delete, substitute or swap one
character) of a form, scoring their length times the form's quality minus 2.05,
and a known form followed by a road word it does not make a known road with
(``向阳`` + ``路``: a road the vocabulary lacks), at 0.3 per character. The
best-scoring cut explains the most text with the fewest, most certain tokens: a
typo'd name (``世记大道``) becomes one fuzzy token instead of unknown characters or
stray short forms (``太平材`` is 太平村, not 太平 + 材). Two guards keep fuzzy spans
honest: a county or township keeps its level word (``禾库丁`` is 禾库 + 丁, the
start of 补丁村, not a mistyped 禾库镇), and a span may not cut short an unknown run
that ends like a name (``乾州世`` must not take the 世 of an unknown ``世纪大道``),
nor end inside unknown text unless it ends with its form's last character
(``人民医院`` holds no typo of 人民路).

:meth:`Lexicon.merge_unknown` and :meth:`Lexicon.add_neighbours` widen the readings
of exactly matched village and road tokens when the matcher doubts them (a typo
that produced another existing name: ``坪年村`` for 坪朗村).

Fuzzy lookup is a symmetric-deletion index (every form and each of its
one-character deletions point to the form), so finding all forms within one edit of
a span costs ``len(span) + 1`` dictionary lookups, independent of the vocabulary
size.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from geo.address.normalize import SEPARATOR

__all__ = [
    "COUNTY",
    "FILLER",
    "LEVELS",
    "LEVEL_WEIGHT",
    "PREFECTURE_FORMS",
    "PROVINCE_FORMS",
    "ROAD",
    "TOWNSHIP",
    "VILLAGE",
    "Lexicon",
    "Token",
    "county_forms",
    "name_core",
    "road_kind",
    "township_forms",
    "village_base",
    "village_forms",
]

COUNTY, TOWNSHIP, VILLAGE, ROAD, FILLER = 0, 1, 2, 3, 4
LEVELS = (COUNTY, TOWNSHIP, VILLAGE, ROAD)
"""The levels a hypothesis resolves (FILLER is consistent with everything)."""
LEVEL_WEIGHT = (1.0, 1.0, 2.0, 2.0)
"""How much naming a place of each level weighs as evidence: a village or road name
carries more information than a county or township name (it is rarer and says
more), so it counts double."""

Ref = tuple[int, int, float]

# Province and prefecture words: they name the one prefecture every place is in.
FILLER_FORMS: tuple[str, ...] = (
    "中华人民共和国",
    "中国",
    "湖南省",
    "湖南",
    "湘西土家族苗族自治州",
    "湘西土家族苗族自治区",
    "湘西自治州",
    "湘西州",
    "湘西",
)
PROVINCE_FORMS = frozenset({"湖南省", "湖南"})
PREFECTURE_FORMS = frozenset(form for form in FILLER_FORMS if form.startswith("湘西"))

_COUNTY_SUFFIXES = ("市", "县", "区")
_TOWNSHIP_SUFFIXES = ("街道办事处", "街道办", "街道", "办事处", "林场", "镇", "乡")
# Committee suffixes of village-level names, longest first, with the kind of unit
# they mark: "社区居民委员会" must win over "居民委员会", and "村委会" over "会".
_VILLAGE_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("社区居民委员会", "社区"),
    ("社区居委会", "社区"),
    ("居民委员会", "社区"),
    ("居委会", "社区"),
    ("村民委员会", "村"),
    ("村委会", "村"),
    ("社区", "社区"),
    ("村", "村"),
)
_ROAD_SUFFIXES = ("大道", "大街", "路", "街", "巷", "道", "弄")
_VILLAGE_ENDINGS = ("村", "社区", "会", "区", "组")

# Quality of each kind of form (see the module docstring).
Q_OFFICIAL = 1.0
Q_SHORT = 0.9  # 吉首 for 吉首市, 乾州 for 乾州街道
Q_SUFFIX_VARIANT = 0.85  # 石牌乡 for 石牌镇, 吉首县 for 吉首市
Q_COMMITTEE = 0.95  # 坪朗村委会 / 坪朗村村委会 for 坪朗村
Q_OTHER_KIND = 0.6  # 坪朗社区 for 坪朗村 (villages became communities and back)
Q_VILLAGE_BASE = 0.4  # 坪朗 for 坪朗村: often also a township or a county name
FUZZY_FACTOR = 0.7
"""Quality multiplier of a ref reached through a one-edit (fuzzy) match."""
NEIGHBOUR_FACTOR = 0.5
"""Quality multiplier of a place one edit away from an exactly matched name: lower
than :data:`FUZZY_FACTOR`, since the text did name an existing place."""

# Segmentation scores (per character unless said otherwise).
_UNKNOWN_CHAR = -1.0
_FUZZY_COST = 2.05  # a fuzzy span of length L scores L - 2.05: below an exact tie
_TOKEN_COST = 0.01  # fewer, longer tokens win ties
_UNKNOWN_ROAD_QUALITY = 0.3  # a known form + 路 the vocabulary lacks (see _unknown_road)
_DIRECTIONS = frozenset("东西南北中")
_MIN_FUZZY_FORM = 3  # one edit away from a 2-character name is half the alphabet
_FUZZY_CACHE_SIZE = 200_000


def _strip_suffix(name: str, suffixes: Iterable[str], min_base: int = 2) -> tuple[str, str]:
    """``(base, suffix)`` for the first suffix of ``suffixes`` that ``name`` ends with
    and that leaves at least ``min_base`` characters, else ``(name, "")``."""
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) - len(suffix) >= min_base:
            return name[: -len(suffix)], suffix
    return name, ""


def county_forms(name: str) -> list[tuple[str, float]]:
    """Forms of a county-level name: ``吉首市`` -> 吉首市, 吉首, 吉首县, 吉首区."""
    base, suffix = _strip_suffix(name, _COUNTY_SUFFIXES)
    forms = [(name, Q_OFFICIAL)]
    if suffix:
        forms.append((base, Q_SHORT))
        forms += [(base + other, Q_SUFFIX_VARIANT) for other in _COUNTY_SUFFIXES if other != suffix]
    return forms


def township_forms(name: str) -> list[tuple[str, float]]:
    """Forms of a township-level name.

    ``乾州街道`` -> 乾州街道, 乾州, 乾州街道办事处, 乾州街道办, 乾州办事处 (the same
    office), 乾州镇, 乾州乡; ``石牌镇`` -> 石牌镇, 石牌, and at lower quality 石牌乡,
    石牌街道, 石牌街道办事处 ... (towns and townships are often upgraded or renamed,
    so people mix the suffixes);
    ``军亭界林场`` -> 军亭界林场, 军亭界.
    """
    base, suffix = _strip_suffix(name, _TOWNSHIP_SUFFIXES)
    forms = [(name, Q_OFFICIAL)]
    if not suffix:
        return forms
    forms.append((base, Q_SHORT))
    if suffix in ("街道", "街道办事处", "街道办", "办事处"):
        forms += [(base + s, Q_OFFICIAL) for s in ("街道办事处", "街道办", "街道", "办事处")]
    if suffix != "林场":
        variants = ("镇", "乡", "街道", "街道办事处", "街道办", "办事处")
        # A variant equal to an official form adds nothing: the lexicon keeps the
        # highest quality of a form.
        forms += [(base + s, Q_SUFFIX_VARIANT) for s in variants]
    return forms


def village_base(name: str) -> tuple[str, str]:
    """``(base, kind)`` of a village-level name: kind ``村`` or ``社区``, or ``""``.

    ``峒河社区居委会`` -> (峒河, 社区); ``默戎居委会`` -> (默戎, 社区); ``贺喜村委会`` ->
    (贺喜, 村); ``坪朗村`` -> (坪朗, 村); ``军亭界林场虚拟生活区`` -> (itself, "").
    """
    for suffix, kind in _VILLAGE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], kind
    return name, ""


def village_forms(name: str) -> list[tuple[str, float]]:
    """Forms of a village-level name (official or customary short form).

    ``坪朗村`` / ``坪朗村委会`` -> 坪朗村, 坪朗村委会, 坪朗村民委员会, 坪朗村村委会,
    坪朗村村民委员会 (the committee), 坪朗社区 (other kind), 坪朗 (bare base).
    ``峒河社区居委会`` -> 峒河社区, 峒河社区居委会, 峒河社区居民委员会, 峒河居委会,
    峒河居民委员会, 峒河村, 峒河. Names without a committee suffix only match as
    written.
    """
    base, kind = village_base(name)
    forms = [(name, Q_OFFICIAL)]
    if not kind:
        return forms
    short = base + kind
    forms.append((short, Q_OFFICIAL))
    if kind == "村":
        committees = ("村委会", "村民委员会", "村村委会", "村村民委员会")
        other = "社区"
    else:
        committees = ("社区居委会", "社区居民委员会", "居委会", "居民委员会")
        other = "村"
    forms += [(base + c, Q_COMMITTEE) for c in committees]
    forms.append((base + other, Q_OTHER_KIND))
    if len(base) >= 2:
        forms.append((base, Q_VILLAGE_BASE))
    return forms


def name_core(text: str) -> str:
    """``text`` without its kind word: ``大坝村`` -> 大坝, ``峒河社区居委会`` -> 峒河,
    ``人民东路`` -> 人民东, ``世纪大道`` -> 世纪; unchanged when nothing would remain."""
    base, kind = village_base(text)
    if kind:
        return base
    for suffix in _ROAD_SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


def road_kind(text: str) -> bool:
    """Whether ``text`` reads as a road name (ends with 路, 街, 大道, 巷 ..., but not
    with the township word 街道)."""
    return len(text) >= 2 and text.endswith(_ROAD_SUFFIXES) and not text.endswith("街道")


def _deletions(text: str) -> list[str]:
    return [text[:i] + text[i + 1 :] for i in range(len(text))]


def _within_one_edit(a: str, b: str) -> bool:
    """Levenshtein distance of ``a`` and ``b`` is at most 1 (a swap of two adjacent
    characters also passes: the deletion index finds it and it is a one-slip typo)."""
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        return len(diff) <= 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


def _suffix_clash(span: str, form: str) -> bool:
    """A road-looking span must not fuzzily become a village or vice versa
    (``湘泉路`` is no typo of ``湘泉村``)."""
    span_road, form_road = road_kind(span), road_kind(form)
    if span_road and not form_road:
        return form.endswith(_VILLAGE_ENDINGS)
    if form_road and not span_road:
        return span.endswith(_VILLAGE_ENDINGS)
    return False


@dataclass(slots=True)
class Token:
    """A piece of a normalised address and what it may name.

    ``start``/``end``: character span in the normalised text; ``fuzzy``: the text is
    one edit away from the forms it was matched to; ``refs``: per level
    (:data:`COUNTY` .. :data:`ROAD`), entity -> weight (quality x fuzzy factor x
    :data:`LEVEL_WEIGHT`); ``filler``: weight as a province/prefecture word (0 if
    not one); ``forms``: the lexicon forms the token was matched to. A token with
    no refs and no filler weight is text the vocabulary does not know.
    """

    text: str
    start: int
    end: int
    fuzzy: bool
    refs: tuple[dict[int, float], dict[int, float], dict[int, float], dict[int, float]] = field(
        default_factory=lambda: ({}, {}, {}, {})
    )
    filler: float = 0.0
    forms: tuple[str, ...] = ()

    @property
    def length(self) -> int:
        return self.end - self.start

    def add(self, refs: Iterable[Ref], factor: float = 1.0) -> None:
        """Merge refs as weights quality x ``factor`` x :data:`LEVEL_WEIGHT` (keeping
        the highest weight per entity)."""
        for level, entity, quality in refs:
            if level == FILLER:
                self.filler = max(self.filler, quality * factor)
                continue
            weight = quality * factor * LEVEL_WEIGHT[level]
            bucket = self.refs[level]
            if weight > bucket.get(entity, 0.0):
                bucket[entity] = weight


class Lexicon:
    """Forms -> refs, with exact and one-edit lookup and segmentation (module doc)."""

    def __init__(self) -> None:
        self._refs: defaultdict[str, dict[tuple[int, int], float]] = defaultdict(dict)
        self._frozen: dict[str, tuple[Ref, ...]] = {}
        self._best_quality: dict[str, float] = {}
        self._deletes: dict[str, tuple[str, ...]] = {}
        self._lengths_from: dict[str, tuple[int, ...]] = {}
        self._fuzzy_cache: dict[str, list[str]] = {}
        self._admin_forms: frozenset[str] = frozenset()
        self._filler_re: re.Pattern[str] | None = None
        self.max_length = 0

    def add(self, form: str, level: int, entity: int, quality: float) -> None:
        """Register ``form`` as naming ``entity`` of ``level`` with ``quality``."""
        if not form:
            return
        current = self._refs[form]
        key = (level, entity)
        if quality > current.get(key, 0.0):
            current[key] = quality

    def freeze(self) -> None:
        """Build the lookup structures; call once after the last :meth:`add`."""
        self._frozen = {
            form: tuple((level, entity, q) for (level, entity), q in refs.items())
            for form, refs in self._refs.items()
        }
        self._best_quality = {
            form: max(q for _, _, q in refs) for form, refs in self._frozen.items()
        }
        deletes: defaultdict[str, set[str]] = defaultdict(set)
        for form, refs in self._frozen.items():
            # Fillers are never typo targets: "湘西" is 2 characters, the long ones
            # rarely get mistyped and would only add noise.
            if len(form) < _MIN_FUZZY_FORM or all(level == FILLER for level, _, _ in refs):
                continue
            deletes[form].add(form)
            for variant in _deletions(form):
                deletes[variant].add(form)
        self._deletes = {key: tuple(sorted(forms)) for key, forms in deletes.items()}
        self.max_length = max(map(len, self._frozen), default=0)
        # Form lengths by first character: the segmentation tries only those.
        lengths_from: defaultdict[str, set[int]] = defaultdict(set)
        for form in self._frozen:
            lengths_from[form[0]].add(len(form))
        self._lengths_from = {ch: tuple(sorted(ls)) for ch, ls in lengths_from.items()}
        self._fuzzy_cache = {}
        # Filler words that occur inside no other form can split the text up front.
        fillers = {
            form
            for form, refs in self._frozen.items()
            if all(level == FILLER for level, _, _ in refs)
        }
        others = [form for form in self._frozen if form not in fillers]
        safe = [f for f in fillers if not any(f in other for other in others)]
        self._filler_re = (
            re.compile("|".join(map(re.escape, sorted(safe, key=len, reverse=True))))
            if safe
            else None
        )
        self._admin_forms = frozenset(
            form
            for form, refs in self._frozen.items()
            if all(level in (COUNTY, TOWNSHIP, FILLER) for level, _, _ in refs)
        )

    def exact(self, text: str) -> tuple[Ref, ...]:
        """Refs of ``text`` as a form, empty if it is none."""
        return self._frozen.get(text, ())

    def fuzzy(self, text: str) -> list[str]:
        """Forms exactly one edit away from ``text`` (not ``text`` itself), sorted."""
        cached = self._fuzzy_cache.get(text)
        if cached is not None:
            return cached
        found: set[str] = set()
        if len(text) >= 2:
            for key in [text, *_deletions(text)]:
                found.update(self._deletes.get(key, ()))
            found.discard(text)
        forms = sorted(
            form
            for form in found
            if _within_one_edit(text, form)
            and not _suffix_clash(text, form)
            # A county or township keeps its level word: "禾库丁" is 禾库 and a
            # stray character (the start of 补丁村), not a mistyped 禾库镇.
            and not (form in self._admin_forms and text[-1] != form[-1])
        )
        # Bounded: queries bring new strings; the lexicon's own forms recur.
        if len(self._fuzzy_cache) < _FUZZY_CACHE_SIZE:
            self._fuzzy_cache[text] = forms
        return forms

    def segment(self, text: str) -> list[Token]:
        """Tokens of a normalised address (see the module docstring).

        Unknown characters are returned as tokens with no refs (one per run), so
        that callers see what was not understood. Separators are dropped.
        """
        tokens: list[Token] = []
        for offset, chunk in _chunks(text):
            for piece_offset, piece in self._split_fillers(chunk, offset, tokens):
                cut = self._cut(piece, None, None)
                if any(token is None for _, _, token in cut):
                    unknown, name_end = _unknown_runs(piece, cut)
                    cut = self._cut(piece, unknown, name_end)
                tokens += _with_unknown_runs(piece, piece_offset, cut)
        tokens.sort(key=lambda token: token.start)
        return tokens

    def _split_fillers(self, chunk: str, offset: int, tokens: list[Token]) -> list[tuple[int, str]]:
        """Pieces of ``chunk`` between province/prefecture words, which are
        appended to ``tokens`` directly: they are the long, fixed head of most
        addresses, and the dynamic programme need not walk through them."""
        if self._filler_re is None:
            return [(offset, chunk)]
        pieces = []
        start = 0
        for found in self._filler_re.finditer(chunk):
            if found.start() > start:
                pieces.append((offset + start, chunk[start : found.start()]))
            token = Token(found.group(0), offset + found.start(), offset + found.end(), False)
            token.forms = (found.group(0),)
            token.add(self._frozen[found.group(0)])
            tokens.append(token)
            start = found.end()
        if start < len(chunk):
            pieces.append((offset + start, chunk[start:]))
        return pieces

    def merge_unknown(self, tokens: list[Token]) -> list[Token]:
        """Tokens with each unknown run of at most 2 characters merged into the
        adjacent exact village or road token when the merged text is one edit from
        a form: ``技`` + ``土溪村`` (a village elsewhere) reads as 红土溪村 too. The
        merged token keeps the exact token's places and adds the fuzzy ones."""
        out = list(tokens)
        i = 0
        while i < len(out):
            token = out[i]
            if token.fuzzy or not (token.refs[VILLAGE] or token.refs[ROAD]):
                i += 1
                continue
            merged = None
            for j in (i - 1, i + 1):
                if not 0 <= j < len(out):
                    continue
                other = out[j]
                if any(other.refs) or other.filler or other.length > 2:
                    continue
                first, second = (other, token) if j < i else (token, other)
                if first.end != second.start:
                    continue
                text = first.text + second.text
                forms = self.fuzzy(text)
                if not forms:
                    continue
                merged = Token(text, first.start, second.end, fuzzy=True, forms=tuple(forms))
                for level in LEVELS:
                    merged.refs[level].update(token.refs[level])
                for form in forms:
                    merged.add(self._frozen[form], FUZZY_FACTOR)
                out[min(i, j)] = merged
                del out[max(i, j)]
                break
            i += 1 if merged is None else 0
            if merged is not None:
                i = out.index(merged) + 1
        return out

    def add_neighbours(self, tokens: list[Token]) -> bool:
        """Give each exactly matched village or road token the villages and roads one
        edit away, at :data:`NEIGHBOUR_FACTOR`: a name typed as another existing
        name (人民西路 for 人民东路, 坪年村 for 坪朗村) must still reach the intended
        place when the context (township, house number) points there. Returns
        whether any token gained a place."""
        added = False
        for token in tokens:
            if token.fuzzy or not (token.refs[VILLAGE] or token.refs[ROAD]):
                continue
            for form in self.fuzzy(token.text):
                refs = [r for r in self._frozen[form] if r[0] in (VILLAGE, ROAD)]
                added = added or bool(refs)
                token.add(refs, NEIGHBOUR_FACTOR)
        return added

    def _cut(
        self, chunk: str, fuzzy_mask: list[bool] | None, name_end: list[int] | None
    ) -> list[tuple[int, int, Token | None]]:
        """Best segmentation of one separator-free chunk as (start, end, token|None)
        spans. Fuzzy spans are tried only where they cover a masked character, and
        must not end inside a name-like run (``name_end[p]``: end of the run holding
        p when that run ends like a name, else -1; see :func:`_unknown_runs`)."""
        n = len(chunk)
        best = [float("-inf")] * (n + 1)
        # back[j] = (start, forms, fuzzy): the last span of the best cut of chunk[:j];
        # forms None for an unknown character. Tokens are built only for the winner.
        back: list[tuple[int, list[str] | None, bool]] = [(0, None, False)] * (n + 1)
        best[0] = 0.0
        masked_before = [0] * (n + 1)
        if fuzzy_mask is not None:
            for i, flag in enumerate(fuzzy_mask):
                masked_before[i + 1] = masked_before[i] + flag
        for i in range(n):
            base = best[i]
            if base + _UNKNOWN_CHAR > best[i + 1]:
                best[i + 1] = base + _UNKNOWN_CHAR
                back[i + 1] = (i, None, False)
            for length in self._lengths_from.get(chunk[i], ()):
                j = i + length
                if j > n:
                    break
                form = chunk[i:j]
                quality = self._best_quality.get(form)
                if quality is None:
                    continue
                score = base + length * quality - _TOKEN_COST
                if score > best[j]:
                    best[j] = score
                    back[j] = (i, [form], False)
                if fuzzy_mask is not None:
                    self._unknown_road(chunk, i, j, base, best, back, masked_before)
            if fuzzy_mask is None:
                continue
            for j in range(i + 2, min(n, i + self.max_length + 1) + 1):
                if masked_before[j] == masked_before[i]:
                    continue
                if name_end is not None and name_end[j - 1] not in (-1, j):
                    continue
                # Upper bound first (quality <= 1), then the forms' own quality:
                # a span one edit from a suffix variant (清水坪乡 + 坝) must not beat
                # the variant itself plus an unknown character.
                if base + (j - i) - _FUZZY_COST - _TOKEN_COST <= best[j]:
                    continue
                forms = self.fuzzy(chunk[i:j])
                if forms and j < n and fuzzy_mask[j]:
                    # More unknown text follows: the span must end where its name
                    # ends, with the name's last character ("人民医|院" is no typo
                    # of 人民路; it is the start of something unknown).
                    forms = [form for form in forms if form[-1] == chunk[j - 1]]
                if not forms:
                    continue
                quality = max(self._best_quality[form] for form in forms)
                score = base + (j - i) * quality - _FUZZY_COST - _TOKEN_COST
                if score > best[j]:
                    best[j] = score
                    back[j] = (i, forms, True)
        spans: list[tuple[int, int, Token | None]] = []
        j = n
        while j > 0:
            i, forms, fuzzy = back[j]
            token = None
            if forms is not None:
                # No forms: a road the vocabulary lacks (see _unknown_road).
                token = Token(chunk[i:j], i, j, fuzzy=fuzzy, forms=tuple(forms))
                for form in forms:
                    token.add(self._frozen[form], FUZZY_FACTOR if fuzzy else 1.0)
            spans.append((i, j, token))
            j = i
        spans.reverse()
        return spans

    @staticmethod
    def _unknown_road(
        chunk: str,
        i: int,
        j: int,
        base: float,
        best: list[float],
        back: list[tuple[int, list[str] | None, bool]],
        masked_before: list[int],
    ) -> None:
        """Relax the span of form ``chunk[i:j]`` plus an unknown road word after it
        as one road the vocabulary lacks: ``向阳路`` (or ``向阳西路``) where only
        向阳社区 (base 向阳) is known must not read as that community plus a stray
        ``路``. It scores
        :data:`_UNKNOWN_ROAD_QUALITY` per character: above the form and an unknown
        character, below a one-edit match of a known road (向阳东路)."""
        # A direction may come between: 新华 + 西 + 路.
        start = j + 1 if j < len(chunk) and chunk[j] in _DIRECTIONS else j
        for suffix in _ROAD_SUFFIXES:
            if chunk.startswith(suffix, start):
                k = start + len(suffix)
                if masked_before[k] == masked_before[j]:
                    return  # the road word was explained by something else
                score = base + (k - i) * _UNKNOWN_ROAD_QUALITY - _TOKEN_COST
                if score > best[k]:
                    best[k] = score
                    back[k] = (i, [], False)
                return


def _unknown_runs(
    chunk: str, cut: list[tuple[int, int, Token | None]]
) -> tuple[list[bool], list[int]]:
    """Where an exact-only cut left characters unexplained: a mask, and for each
    character of a run that ends like a name (``世纪大道``, ``坪郎村``) the run's end.

    A fuzzy span may start anywhere but must not cut such a run short: ``乾州世``
    (乾州镇 with the last character changed) must not eat the first character of
    the unknown road ``世纪大道``, while ``世记大道`` and ``太平材`` (for 太平村,
    where only ``材`` was unknown) are fine.
    """
    unknown = [False] * len(chunk)
    for start, end, token in cut:
        if token is None:
            unknown[start:end] = [True] * (end - start)
    name_end = [-1] * len(chunk)
    start = 0
    while start < len(chunk):
        if not unknown[start]:
            start += 1
            continue
        end = start
        while end < len(chunk) and unknown[end]:
            end += 1
        run = chunk[start:end]
        if len(run) >= 2 and (road_kind(run) or run.endswith(_VILLAGE_ENDINGS)):
            name_end[start:end] = [end] * (end - start)
        start = end
    return unknown, name_end


def _chunks(text: str) -> list[tuple[int, str]]:
    """Separator-free pieces of ``text`` with their offsets."""
    out = []
    offset = 0
    for piece in text.split(SEPARATOR):
        if piece:
            out.append((offset, piece))
        offset += len(piece) + 1
    return out


def _with_unknown_runs(
    chunk: str, offset: int, cut: list[tuple[int, int, Token | None]]
) -> list[Token]:
    """Tokens of a cut, shifted by ``offset``, unknown characters merged into runs."""
    tokens: list[Token] = []
    run_start: int | None = None
    for start, end, token in [*cut, (len(chunk), len(chunk), Token("", 0, 0, False))]:
        if token is None:
            if run_start is None:
                run_start = start
            continue
        if run_start is not None:
            tokens.append(
                Token(chunk[run_start:start], offset + run_start, offset + start, fuzzy=False)
            )
            run_start = None
        if end > start:
            token.start += offset
            token.end += offset
            tokens.append(token)
    return tokens
