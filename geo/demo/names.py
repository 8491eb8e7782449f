"""Chinese names for the demo world: short forms of real division names, synthetic
street names, and made-up (deterministic, obviously fake) grid-worker identities."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

PROVINCE = "湖南省"
PREFECTURE = "湘西土家族苗族自治州"
PREFECTURE_CODE = "433100"

# Longest suffix first: "社区居民委员会" must win over "居民委员会".
_VILLAGE_SUFFIX_SHORT_FORMS: tuple[tuple[str, str], ...] = (
    ("社区居民委员会", "社区"),
    ("社区居委会", "社区"),
    ("居民委员会", "社区"),
    ("居委会", "社区"),
    ("村民委员会", "村"),
    ("村委会", "村"),
)


def village_short_name(name: str) -> str:
    """The customary short form of a village-level name, as used in addresses.

    The statistical names sometimes carry the committee suffix: ``龙潭社区居委会`` ->
    ``龙潭社区``, ``默戎居委会`` -> ``默戎社区``, ``贺喜村委会`` -> ``贺喜村``. Names
    already in short form (``…村``, ``…社区``, ``军亭界林场虚拟生活区``) are unchanged.
    """
    for suffix, short in _VILLAGE_SUFFIX_SHORT_FORMS:
        if name.endswith(suffix):
            return name[: -len(suffix)] + short
    return name


def committee_name(short_name: str) -> str:
    """Name of the committee office of a village-level unit (its key place)."""
    if short_name.endswith("村"):
        return short_name + "村民委员会"
    if short_name.endswith("社区"):
        return short_name + "居民委员会"
    return short_name + "管理委员会"


def township_short_name(name: str) -> str:
    """Township name without its level word: ``乾州街道`` -> ``乾州``, ``矮寨镇`` -> ``矮寨``."""
    for suffix in ("街道", "林场", "镇", "乡"):
        if name.endswith(suffix) and len(name) > len(suffix) + 1:
            return name[: -len(suffix)]
    return name


def county_short_name(name: str) -> str:
    """County name without 市/县: ``吉首市`` -> ``吉首``."""
    return name[:-1] if name[-1] in "市县区" else name


# Street names common in Hunan county towns. Variants put a direction before the
# last character (人民路 -> 人民东路) when a county needs more names; the 大道 ones
# have no variants.
def _words(text: str) -> tuple[str, ...]:
    """Space-separated words of ``text`` (keeps long word lists compact)."""
    return tuple(text.split())


_STREET_BASE_NAMES = _words(
    "人民路 建设路 解放路 团结路 胜利路 世纪大道 光明路 和平路 新华路 文化路 民主路 环城路 "
    "滨江路 沿河路 迎宾大道 兴隆街 振兴路 幸福路 朝阳路 青年路 东方路 湘泉路 武陵路 峒河路 "
    "人民街 工农路 向阳路 红旗路 育才路 学府路 健康路 商贸街 金桥路 河滨路 新街路 老街巷 "
    "正街巷 民族路 富民路 锦绣大道"
)

STREET_NAMES: tuple[str, ...] = _STREET_BASE_NAMES + tuple(
    name[:-1] + direction + name[-1]
    for direction in "东西南北"
    for name in _STREET_BASE_NAMES
    if not name.endswith("大道")
)
"""188 distinct street names: the 40 plain ones first, then directional variants."""


def street_names(rng: np.random.Generator, per_town: list[int]) -> list[list[str]]:
    """Street names for several towns of one county, ``per_town[i]`` for town i.

    Names are distinct within a town and, until the 188 names run out, within the
    county; plain names (人民路) come before directional variants (人民东路).
    """
    plain = len(_STREET_BASE_NAMES)
    order = np.concatenate(
        [rng.permutation(plain), plain + rng.permutation(len(STREET_NAMES) - plain)]
    )
    out = []
    cursor = 0
    for n in per_town:
        if n > len(STREET_NAMES):
            raise ValueError(f"only {len(STREET_NAMES)} street names, {n} requested")
        picks = order[(cursor + np.arange(n)) % len(order)]
        cursor += n
        out.append([STREET_NAMES[i] for i in picks])
    return out


# Surnames frequent in Xiangxi (Tujia and Miao families use 彭 田 向 龙 石 麻 …) with
# rough relative weights; given-name characters are common ones.
_SURNAMES_WEIGHTED = _words(
    "彭6 田6 向5 龙5 石5 杨6 吴5 张6 王5 李5 刘5 陈4 黄3 周3 梁3 滕2 符2 麻2 "
    "覃2 瞿1 唐3 胡3 罗2 谭2 宋2 邓2 姚2 舒1 贾1 严1 侯1 熊1 肖1 卢1 欧1 尚1"
)
_SURNAMES = tuple(entry[0] for entry in _SURNAMES_WEIGHTED)
_SURNAME_P = np.array([float(entry[1:]) for entry in _SURNAMES_WEIGHTED])
_SURNAME_P /= _SURNAME_P.sum()
_GIVEN_CHARS = (
    "建国华明军红英玉秀兰芳丽伟强勇平志春海林云霞"
    + "敏杰涛燕琴斌浩宇思雨欣婷磊"
    + "鹏超慧娟梅文武德福生成和顺翠金银凤"
)


def person_names(rng: np.random.Generator, n: int) -> NDArray[np.object_]:
    """``n`` made-up but plausible Chinese personal names (surname + 1–2 characters)."""
    surnames = np.array(_SURNAMES, dtype=object)[rng.choice(len(_SURNAMES), n, p=_SURNAME_P)]
    chars = np.array(list(_GIVEN_CHARS), dtype=object)
    first = chars[rng.integers(0, len(chars), n)]
    second = np.where(rng.random(n) < 0.7, chars[rng.integers(0, len(chars), n)], "")
    return (pd.Series(surnames) + pd.Series(first) + pd.Series(second)).to_numpy(dtype=object)


FAKE_PHONE_PREFIX = "1990"
"""Every demo phone number starts with this: visibly fake, never a real subscriber."""


def fake_phones(county_index: int, serials: NDArray[np.int64]) -> NDArray[np.object_]:
    """11-digit made-up mobile numbers ``1990`` + county digit (1–8) + 6-digit serial.

    Unique within the prefecture as long as serials are unique within a county.
    """
    head = f"{FAKE_PHONE_PREFIX}{county_index + 1}"
    return (head + pd.Series(serials).astype(str).str.zfill(6)).to_numpy(dtype=object)
