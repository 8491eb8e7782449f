"""Text normalisation for Chinese addresses: width, numerals, punctuation, numbers.

:func:`normalize_address` turns what people type into the canonical character string
the lexicon is matched against, and pulls out the numeric parts (group 组, house
number 号, building/unit/room details) which no lexicon can list:

1. NFKC: full-width digits, letters, spaces and punctuation become ASCII
   (``１２３`` -> ``123``, ``（`` -> ``(``, ideographic space -> space);
2. Chinese numerals directly before a number word become digits (``三组`` -> ``3组``,
   ``第十五号`` -> ``15号``, ``一百零五号`` -> ``105号``, ``三〇五室`` -> ``305室``);
   numerals elsewhere are part of names (``十八洞村``, ``五里坪``) and stay;
3. everything but CJK ideographs, ASCII letters/digits and ``-``/``#`` is dropped:
   spaces and punctuation separate nothing in Chinese addresses, and people put
   them anywhere, even inside names;
4. ``<n>栋/幢/单元/楼/层/室/号楼`` become the detail, ``[第]<n>组/小组/村民小组`` the
   group, ``<n>号/号院/#`` (``12-3号`` counts as 12) the house number, and a bare
   digit run the house number if none was given (``世纪大道88``), else detail.
   Each extracted number is replaced by :data:`SEPARATOR`, so that no name is
   matched across it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_INPUT_CHARS",
    "SEPARATOR",
    "NormalizedAddress",
    "chinese_numeral",
    "chinese_numeral_to_int",
    "normalize_address",
]

SEPARATOR = "|"
"""Stands where a number was taken out of the text; names never span it."""
MAX_INPUT_CHARS = 300
"""Characters of an input that are read (demo gazetteer texts have at most 37)."""

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "○": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUMERAL_CHARS = "".join(_CN_DIGITS) + "".join(_CN_UNITS)

# Words that follow a number in an address. Longest first within the alternation
# so that "号楼" (a building) is not read as "号" (a house number).
_NUMBER_WORDS = "村民小组|小组|组|号楼|号院|号|栋|幢|单元|楼|层|室"
_CN_NUMBER = re.compile(f"([{_CN_NUMERAL_CHARS}]+)(?=(?:{_NUMBER_WORDS}))")
# After NFKC: keep ideographs (basic block and extension A), ASCII alphanumerics, and
# the two marks that belong to numbers ("12-3号", "3#").
_DROP = re.compile(r"[^0-9A-Za-z#\-\u3400-\u4dbf\u4e00-\u9fff]+")
_DETAIL = re.compile(r"\d+(?:-\d+)?(?:号楼|栋|幢|单元|楼|层|室)")
_GROUP = re.compile(r"第?(\d+)(?:村民小组|小组|组)")
_HOUSE = re.compile(r"第?(\d+)(?:-\d+)?(?:号院|号|#)")
_BARE_NUMBER = re.compile(r"\d+(?:-\d+)*")


def chinese_numeral_to_int(numeral: str) -> int | None:
    """Value of a Chinese numeral, ``None`` when it is not one.

    Positional (``十五`` = 15, ``二十`` = 20, ``一百零五`` = 105, ``两千`` = 2000) and
    digit-by-digit forms (``三〇五`` = 305, ``一二`` = 12) are both understood.
    """
    if not numeral or any(ch not in _CN_DIGITS and ch not in _CN_UNITS for ch in numeral):
        return None
    if all(ch in _CN_DIGITS for ch in numeral):
        return int("".join(str(_CN_DIGITS[ch]) for ch in numeral))
    total = 0
    digit: int | None = None
    last_unit = 10_000
    for ch in numeral:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
            continue
        unit = _CN_UNITS[ch]
        if unit >= last_unit:  # "十百": not a numeral
            return None
        # A unit with no digit before it counts once: "十五" is 15.
        total += (1 if digit is None else digit) * unit
        digit = None
        last_unit = unit
    return total + (digit or 0)


def chinese_numeral(n: int) -> str:
    """``n`` (0 <= n < 10,000) as a Chinese numeral, as addresses write it:
    ``15`` -> 十五, ``20`` -> 二十, ``105`` -> 一百零五, ``1010`` -> 一千零一十."""
    if not 0 <= n < 10_000:
        raise ValueError(f"only 0..9999 are supported, got {n}")
    if n == 0:
        return "零"
    digits = "零一二三四五六七八九"
    out: list[str] = []
    rest = n
    gap = False  # a zero digit since the last written one
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit, rest = divmod(rest, value)
        if not digit:
            gap = gap or bool(out)
            continue
        if gap:
            out.append("零")
            gap = False
        # "十五", not "一十五", when the tens lead.
        out.append(("" if value == 10 and digit == 1 and not out else digits[digit]) + unit)
    return "".join(out)


def _numeral_to_digits(match: re.Match[str]) -> str:
    value = chinese_numeral_to_int(match.group(1))
    return match.group(0) if value is None else str(value)


@dataclass(frozen=True)
class NormalizedAddress:
    """An address reduced to matchable text plus its numeric parts.

    ``text``: the normalised characters with each extracted number replaced by
    :data:`SEPARATOR`; ``group``/``house_number``: the numbers of ``<n>组`` and
    ``<n>号`` (None when absent; the first one wins when repeated); ``detail``: the
    building/unit/room and other surplus numbers as written (normalised), in order.
    ``number_chars``: how many characters of the normalised input the numbers took
    (so that confidence can count them as explained).
    """

    text: str
    group: int | None
    house_number: int | None
    detail: tuple[str, ...]
    number_chars: int


def normalize_address(raw: str) -> NormalizedAddress:
    """Normalise ``raw`` as described in the module docstring.

    Only the first :data:`MAX_INPUT_CHARS` characters are read: an address is
    short, and matching time grows with the length of the text."""
    text = unicodedata.normalize("NFKC", raw[:MAX_INPUT_CHARS])
    text = _CN_NUMBER.sub(_numeral_to_digits, text)
    text = _DROP.sub("", text).lower()
    detail: list[str] = []
    found: dict[str, int] = {}
    number_chars = 0

    def taker(kind: str) -> Callable[[re.Match[str]], str]:
        """A substitution that records a number of ``kind`` (the first one wins;
        repeats and details go to ``detail``) and leaves a separator."""

        def take(match: re.Match[str]) -> str:
            nonlocal number_chars
            number_chars += len(match.group(0))
            if kind == "detail" or kind in found:
                detail.append(match.group(0))
            else:
                found[kind] = int(match.group(1))
            return SEPARATOR

        return take

    def bare(match: re.Match[str]) -> str:
        nonlocal number_chars
        number_chars += len(match.group(0))
        digits = match.group(0)
        if "house" not in found and "-" not in digits:
            found["house"] = int(digits)
        else:
            detail.append(digits)
        return SEPARATOR

    # Details first: "3号楼" is a building, not house number 3.
    text = _DETAIL.sub(taker("detail"), text)
    text = _GROUP.sub(taker("group"), text)
    text = _HOUSE.sub(taker("house"), text)
    text = _BARE_NUMBER.sub(bare, text)
    # Stray "-"/"#" that belonged to no number carry nothing.
    text = text.replace("-", "").replace("#", "")
    return NormalizedAddress(
        text=text,
        group=found.get("group"),
        house_number=found.get("house"),
        detail=tuple(detail),
        number_chars=number_chars,
    )
