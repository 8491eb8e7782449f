"""Labelled noisy addresses for measuring a matcher: gazetteer entries written the
ways people write them.

:func:`noisy_addresses` draws gazetteer entries and rewrites each with one kind of
noise (:data:`NOISE_KINDS`), or a few at once (``mixed``), keeping the entry's
village code as the label:

- ``clean``: the full text as is;
- ``dropped_admin``: province and prefecture left out, and the county half the time;
- ``short_forms``: 湘西州/湘西/湘西自治州, 吉首 for 吉首市, 乾州 for 乾州街道, 矮寨 for
  矮寨镇, and the village as its committee (坪朗村委会, 峒河社区居委会) or bare base
  (坪朗);
- ``full_width``: digits as full-width (１５号);
- ``typo``: one character of the road or village name replaced by another
  character of the vocabulary, or dropped;
- ``reordered``: the parts (admin prefix, village, road, group/number) shuffled,
  separated by spaces or commas;
- ``spaces_punct``: spaces and punctuation inserted between and inside parts;
- ``chinese_numerals``: 3组15号 as 三组十五号 (or 第三组);
- ``suffix_variants``: township suffix changed (石牌乡 for 石牌镇, 乾州街道办事处),
  village suffix left off or swapped (坪朗 / 坪朗社区);
- ``mixed``: two or three of the above together.

Deterministic for a given seed. Pure (numpy, pandas).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from geo.address.lexicon import village_base
from geo.address.normalize import chinese_numeral

__all__ = ["NOISE_KINDS", "noisy_addresses", "rewrite"]

NOISE_KINDS: tuple[str, ...] = (
    "clean",
    "dropped_admin",
    "short_forms",
    "full_width",
    "typo",
    "reordered",
    "spaces_punct",
    "chinese_numerals",
    "suffix_variants",
    "mixed",
)
_MIXABLE = NOISE_KINDS[1:-1]
_PREFECTURE_SHORT = ("湘西州", "湘西", "湘西自治州")
_PUNCT = (" ", "  ", ",", "，", "、", "　", ";", "-", "/", "(", ")", "。")


def _short(name: str, suffixes: Sequence[str]) -> str:
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            return name[: -len(suffix)]
    return name


class _Parts:
    """The written parts of one gazetteer entry, rewritten in place by the noise."""

    def __init__(self, components: dict[str, str | None]) -> None:
        self.province = components.get("province") or ""
        self.prefecture = components.get("prefecture") or ""
        self.county = components.get("county") or ""
        self.township = components.get("township") or ""
        road = components.get("road") or ""
        # As in the gazetteer's full text: street addresses do not name the village.
        self.village = "" if road else (components.get("village") or "")
        self.road = road
        self.group = components.get("group") or ""
        self.house_number = components.get("house_number") or ""
        self.order = ["admin", "village", "road", "numbers"]
        self.joints = [""] * 8

    def chunks(self) -> dict[str, str]:
        admin = self.province + self.prefecture + self.county + self.township
        return {
            "admin": admin,
            "village": self.village,
            "road": self.road,
            "numbers": self.group + self.house_number,
        }

    def text(self) -> str:
        chunks = self.chunks()
        pieces = [chunks[name] for name in self.order if chunks[name]]
        out = []
        for i, piece in enumerate(pieces):
            out.append(piece)
            if i < len(pieces) - 1:
                out.append(self.joints[i])
        return "".join(out)


def _typo(rng: np.random.Generator, name: str, alphabet: str) -> str:
    if len(name) < 2:
        return name
    i = int(rng.integers(0, len(name)))
    if rng.random() < 0.5:
        return name[:i] + name[i + 1 :]
    replacement = name[i]
    while replacement == name[i]:
        replacement = alphabet[int(rng.integers(0, len(alphabet)))]
    return name[:i] + replacement + name[i + 1 :]


def _apply(rng: np.random.Generator, kind: str, parts: _Parts, alphabet: str) -> None:
    if kind == "dropped_admin":
        parts.province = parts.prefecture = ""
        if rng.random() < 0.5:
            parts.county = ""
    elif kind == "short_forms":
        if parts.province and rng.random() < 0.5:
            parts.province = ""
        if parts.prefecture:
            parts.prefecture = _PREFECTURE_SHORT[int(rng.integers(0, len(_PREFECTURE_SHORT)))]
        parts.county = _short(parts.county, ("市", "县"))
        parts.township = _short(parts.township, ("街道", "镇", "乡", "林场"))
        if parts.village:
            base, kind_word = village_base(parts.village)
            if kind_word == "村":
                forms = [base + "村委会", base + "村村委会", base]
            elif kind_word == "社区":
                forms = [base + "社区居委会", base + "居委会", base]
            else:
                forms = [parts.village]
            parts.village = forms[int(rng.integers(0, len(forms)))]
    elif kind == "full_width":
        table = str.maketrans("0123456789", "０１２３４５６７８９")
        parts.group = parts.group.translate(table)
        parts.house_number = parts.house_number.translate(table)
    elif kind == "typo":
        if parts.road and (not parts.village or rng.random() < 0.5):
            parts.road = _typo(rng, parts.road, alphabet)
        elif parts.village:
            parts.village = _typo(rng, parts.village, alphabet)
    elif kind == "reordered":
        order = list(parts.order)
        while order == parts.order:
            order = [order[i] for i in rng.permutation(len(order))]
        parts.order = order
        parts.joints = [str(rng.choice([" ", ",", "，", " "])) for _ in parts.joints]
        # The admin prefix itself, county and township swapped half the time.
        if rng.random() < 0.5:
            parts.county, parts.township = parts.township, parts.county
    elif kind == "spaces_punct":
        parts.joints = [str(rng.choice(_PUNCT)) for _ in parts.joints]
        for field in ("county", "township", "village", "road"):
            value = getattr(parts, field)
            if len(value) >= 3 and rng.random() < 0.3:
                i = int(rng.integers(1, len(value)))
                setattr(parts, field, value[:i] + " " + value[i:])
        if rng.random() < 0.5:
            parts.province += str(rng.choice(_PUNCT))
    elif kind == "chinese_numerals":
        if parts.group:
            group = chinese_numeral(int(parts.group[:-1])) + "组"
            parts.group = ("第" if rng.random() < 0.3 else "") + group
        if parts.house_number:
            parts.house_number = chinese_numeral(int(parts.house_number[:-1])) + "号"
    elif kind == "suffix_variants":
        base = _short(parts.township, ("街道", "镇", "乡"))
        if base != parts.township:
            choices = [
                s for s in ("镇", "乡", "街道", "街道办事处") if not parts.township.endswith(s)
            ]
            parts.township = base + choices[int(rng.integers(0, len(choices)))]
        if parts.village:
            vbase, kind_word = village_base(parts.village)
            if kind_word:
                other = "社区" if kind_word == "村" else "村"
                parts.village = vbase + (other if rng.random() < 0.5 else "")


def rewrite(
    rng: np.random.Generator, components: dict[str, str | None], kind: str, alphabet: str
) -> str:
    """One entry's components written with noise ``kind`` (see the module doc);
    ``alphabet``: characters typos draw from."""
    parts = _Parts(components)
    if kind == "mixed":
        count = int(rng.integers(2, 4))
        kinds = [_MIXABLE[i] for i in rng.choice(len(_MIXABLE), count, replace=False)]
        for sub in sorted(kinds, key=_MIXABLE.index):
            _apply(rng, sub, parts, alphabet)
    elif kind != "clean":
        _apply(rng, kind, parts, alphabet)
    return parts.text()


def noisy_addresses(
    gazetteer: pd.DataFrame,
    per_kind: int,
    seed: int = 0,
    kinds: Sequence[str] = NOISE_KINDS,
) -> pd.DataFrame:
    """``per_kind`` noisy rewrites of randomly drawn gazetteer entries per kind.

    Columns: ``kind``, ``text`` (the noisy address), ``source`` (the entry's full
    text), ``village_code`` (the label), ``precision`` (the entry's). Entries are
    drawn with equal weight per precision class (house numbers, roads, villages),
    so that the few road and village entries are exercised too.
    """
    rng = np.random.default_rng(seed)
    components = [json.loads(c) if isinstance(c, str) else c for c in gazetteer["components"]]
    names = {c.get("village") or "" for c in components} | {c.get("road") or "" for c in components}
    alphabet = "".join(sorted(set("".join(names)) - set("村社区路街道巷")))
    precision = gazetteer["precision"].astype(str).to_numpy()
    classes = sorted(set(precision))
    by_class = {p: np.flatnonzero(precision == p) for p in classes}
    rows = []
    for kind in kinds:
        picks = [int(rng.choice(by_class[classes[i % len(classes)]])) for i in range(per_kind)]
        for row in picks:
            rows.append(
                {
                    "kind": kind,
                    "text": rewrite(rng, components[row], kind, alphabet),
                    "source": str(gazetteer["full_text"].iloc[row]),
                    "village_code": str(gazetteer["village_code"].iloc[row]),
                    "precision": precision[row],
                }
            )
    return pd.DataFrame(rows, columns=["kind", "text", "source", "village_code", "precision"])
