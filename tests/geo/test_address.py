"""geo.address: Chinese address normalisation, parsing and matching.

Most tests run against the small demo world (county 433101, 吉首市): its gazetteer
(~7,700 entries: town houses, street middles, rural houses, village centres) and
its division polygons. The accuracy test rewrites gazetteer entries the ways people
write addresses (:mod:`geo.address.noise`) and prints the rate per kind of noise.
"""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.address import (
    COMPONENT_KEYS,
    AddressMatch,
    AddressMatcher,
    chinese_numeral_to_int,
    normalize_address,
    parse_address,
)
from geo.address.lexicon import county_forms, name_core, township_forms, village_forms
from geo.address.noise import NOISE_KINDS, noisy_addresses
from geo.address.normalize import chinese_numeral
from geo.demo import build_world

SEED = 7
HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def world():
    return build_world("small", seed=SEED)


@pytest.fixture(scope="module")
def divisions(world) -> gpd.GeoDataFrame:
    return pd.concat([world.counties, world.townships, world.villages], ignore_index=True)


@pytest.fixture(scope="module")
def matcher(world, divisions) -> AddressMatcher:
    return AddressMatcher.build(world.addresses, divisions)


@pytest.fixture(scope="module")
def gazetteer(world) -> pd.DataFrame:
    """The demo gazetteer with lon/lat and the components as columns."""
    frame = world.addresses
    parts = pd.DataFrame(list(frame["components"]), index=frame.index)
    return pd.concat(
        [
            frame[["full_text", "village_code", "precision"]],
            parts,
            pd.DataFrame({"lon": frame.geometry.x, "lat": frame.geometry.y}, index=frame.index),
        ],
        axis=1,
    )


def _same_place(a: AddressMatch | None, b: AddressMatch | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.village_code, a.township_code, a.precision, a.lon, a.lat) == (
        b.village_code,
        b.township_code,
        b.precision,
        b.lon,
        b.lat,
    )


# --- normalisation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("numeral", "value"),
    [
        ("三", 3),
        ("十", 10),
        ("十五", 15),
        ("二十", 20),
        ("二十三", 23),
        ("一百零五", 105),
        ("两百", 200),
        ("三〇五", 305),
        ("一二", 12),
        ("两千零一十", 2010),
    ],
)
def test_chinese_numerals(numeral: str, value: int) -> None:
    assert chinese_numeral_to_int(numeral) == value


@pytest.mark.parametrize("text", ["", "十百", "五a", "村"])
def test_not_chinese_numerals(text: str) -> None:
    assert chinese_numeral_to_int(text) is None


@given(st.integers(min_value=0, max_value=9999))
def test_chinese_numeral_round_trip(n: int) -> None:
    assert chinese_numeral_to_int(chinese_numeral(n)) == n


def test_normalize_numbers_width_and_punctuation() -> None:
    norm = normalize_address("湖南省 湘西州，吉首市（乾州街道）世纪大道１２３号　3栋2单元501室")
    assert norm.text == "湖南省湘西州吉首市乾州街道世纪大道||||"
    assert norm.house_number == 123
    assert norm.group is None
    assert norm.detail == ("3栋", "2单元", "501室")

    rural = normalize_address("矮寨镇坪朗村第三组十五号")
    assert (rural.text, rural.group, rural.house_number) == ("矮寨镇坪朗村||", 3, 15)
    assert normalize_address("坪朗村3小组").group == 3
    assert normalize_address("坪朗村5村民小组2号").group == 5
    assert normalize_address("世纪大道88").house_number == 88  # a bare trailing number
    assert normalize_address("世纪大道12-3号").house_number == 12


def test_normalize_keeps_numerals_in_names() -> None:
    norm = normalize_address("花垣县双龙镇十八洞村二组")
    assert norm.text == "花垣县双龙镇十八洞村|"
    assert norm.group == 2


# --- name forms --------------------------------------------------------------------


def test_name_forms() -> None:
    assert {"吉首市", "吉首"} <= {form for form, _ in county_forms("吉首市")}
    assert {"乾州街道", "乾州", "乾州街道办事处"} <= {f for f, _ in township_forms("乾州街道")}
    assert {"石牌镇", "石牌", "石牌乡"} <= {f for f, _ in township_forms("石牌镇")}
    community = {f for f, _ in village_forms("峒河社区居委会")}
    assert {"峒河社区居委会", "峒河社区", "峒河居委会", "峒河"} <= community
    village = {f for f, _ in village_forms("贺喜村委会")}
    assert {"贺喜村", "贺喜村委会", "贺喜村村委会", "贺喜"} <= village
    assert name_core("世纪大道") == "世纪"
    assert name_core("大坝村") == "大坝"


# --- parsing -----------------------------------------------------------------------


def test_parse_short_forms() -> None:
    parsed = parse_address("湘西州吉首乾州世纪大道８８号")
    assert parsed.components == {
        "province": "湖南省",
        "prefecture": "湘西土家族苗族自治州",
        "county": "吉首市",
        "township": "乾州街道",
        "village": None,
        "road": "世纪大道",
        "house_number": "88号",
        "group": None,
    }
    assert parsed.inferred == ("province",)
    assert parsed.unparsed == ()


def test_parse_village_forms_and_reordering() -> None:
    for text in (
        "吉首市矮寨镇坪朗村村委会三组十五号",
        "坪朗村委会 3组15号, 吉首市矮寨镇",
        "矮寨 坪朗村 第三组 十五号",
    ):
        parsed = parse_address(text)
        assert (parsed.county, parsed.township, parsed.village) == ("吉首市", "矮寨镇", "坪朗村")
        assert (parsed.group, parsed.house_number) == ("3组", "15号")


def test_parse_unknown_divisions_stay_unparsed() -> None:
    parsed = parse_address("北京市海淀区中关村大街27号")
    assert parsed.county is None and parsed.township is None
    assert parsed.road == "中关村大街"
    assert parsed.unparsed == ("北京市海淀区",)


def test_parse_gazetteer_full_texts(gazetteer) -> None:
    """With the division tables alone (roads by suffix), full texts parse back into
    the gazetteer's components (the village only where the text names it)."""
    sample = gazetteer.sample(400, random_state=SEED)
    for row in sample.itertuples():
        parts = {key: None if pd.isna(value) else value for key, value in row._asdict().items()}
        expected = {key: parts[key] for key in COMPONENT_KEYS}
        if parts["road"] is not None:
            expected["village"] = None
        assert parse_address(row.full_text).components == expected, row.full_text


def test_matcher_parse_knows_gazetteer_roads(gazetteer, matcher) -> None:
    row = gazetteer[gazetteer["road"].str.len() == 4].iloc[0]  # e.g. 世纪大道
    typo = row["road"][0] + "记" + row["road"][2:]  # 世记大道
    parsed = matcher.parse(row["county"] + row["township"] + typo + row["house_number"])
    assert (parsed.township, parsed.road) == (row["township"], row["road"])
    assert parsed.house_number == row["house_number"]


# --- matching: exactness, precision levels, fallbacks --------------------------------


def test_clean_addresses_resolve_exactly(world, matcher) -> None:
    """Every gazetteer entry's own text gives its precision, village and point."""
    addresses = world.addresses
    results = matcher.match_many(addresses["full_text"].tolist())
    xs, ys = addresses.geometry.x.to_numpy(), addresses.geometry.y.to_numpy()
    wrong = [
        text
        for text, code, precision, x, y, got in zip(
            addresses["full_text"],
            addresses["village_code"],
            addresses["precision"],
            xs,
            ys,
            results,
            strict=True,
        )
        if got is None
        or (got.village_code, got.precision, got.lon, got.lat) != (code, precision, x, y)
        or got.ambiguous
    ]
    assert not wrong, wrong[:10]
    houses = [
        r for r, p in zip(results, addresses["precision"], strict=True) if p == "house_number"
    ]
    assert min(r.confidence for r in houses) > 0.9


def test_house_number_match_fields(world, matcher) -> None:
    row = world.addresses[world.addresses["precision"] == "house_number"].iloc[0]
    match = matcher.match(row["full_text"])
    assert match is not None
    assert match.precision == "house_number"
    assert (match.lon, match.lat) == (row.geometry.x, row.geometry.y)
    assert match.village_code == row["village_code"]
    assert match.township_code == row["village_code"][:9]
    assert match.county_code == "433101"
    assert match.matched_text == row["full_text"]
    assert match.candidates == ()
    assert 0.9 < match.confidence <= 1.0
    assert json.loads(json.dumps(match.to_dict()))["village_code"] == row["village_code"]


def test_bare_township_resolves_at_township_precision(world, matcher) -> None:
    match = matcher.match("吉首市乾州街道")
    assert match is not None
    assert match.precision == "township"
    assert (match.township_code, match.county_code, match.village_code) == (
        "433101004",
        "433101",
        None,
    )
    township = world.townships.set_index("code").geometry["433101004"]
    assert township.covers(shapely.Point(match.lon, match.lat))
    assert match.confidence > 0.9
    # Short forms and suffix variants name the same township.
    for text in ("吉首乾州", "湘西州吉首市乾州街道办事处", "乾州街道"):
        other = matcher.match(text)
        assert other is not None and other.precision == "township", text
        assert other.township_code == "433101004", text


def test_bare_county_resolves_at_county_precision(world, matcher) -> None:
    match = matcher.match("湖南省湘西州吉首市")
    assert match is not None and match.precision == "county"
    assert match.county_code == "433101" and match.township_code is None
    assert world.counties.geometry.iloc[0].covers(shapely.Point(match.lon, match.lat))


@pytest.mark.parametrize(
    "text",
    [
        "北京市海淀区中关村大街27号",
        "上海市浦东新区世纪大道100号",
        "hello world",
        "",
        "  ，。 ",
        "湖南省湘西土家族苗族自治州",
        "12345",
    ],
)
def test_unknown_strings_give_none(matcher, text: str) -> None:
    assert matcher.match(text) is None


def test_missing_house_number_falls_back(world, matcher, gazetteer) -> None:
    street = gazetteer[gazetteer["precision"] == "house_number"].dropna(subset=["road"]).iloc[0]
    prefix = street["county"] + street["township"] + street["road"]
    match = matcher.match(prefix + "99999号")
    assert match is not None and match.precision == "road"
    assert match.township_code == street["village_code"][:9]
    assert match.confidence < 0.95
    # Rural: an unknown number in a known group gives the group's middle.
    rural = gazetteer[gazetteer["group"].notna()].iloc[0]
    text = rural["county"] + rural["township"] + rural["village"] + rural["group"] + "999号"
    match = matcher.match(text)
    assert match is not None and match.precision == "village"
    assert match.village_code == rural["village_code"]
    same_group = gazetteer[
        (gazetteer["village_code"] == rural["village_code"])
        & (gazetteer["group"] == rural["group"])
    ]
    assert match.lon == pytest.approx(same_group["lon"].mean())
    assert match.lat == pytest.approx(same_group["lat"].mean())


def test_village_without_number(world, matcher) -> None:
    centres = world.addresses[world.addresses["precision"] == "village"]
    row = centres.iloc[3]
    short = row["components"]["village"]
    match = matcher.match(row["components"]["township"] + short)
    assert match is not None and match.precision == "village"
    assert match.village_code == row["village_code"]
    assert (match.lon, match.lat) == (row.geometry.x, row.geometry.y)


# --- ambiguity ---------------------------------------------------------------------


def test_same_village_name_in_two_townships(world, matcher) -> None:
    """吉首 has a 大兴村 in 双塘街道 and in 丹青镇: without the township both are
    candidates, with it the answer is sure."""
    codes = set(world.villages.loc[world.villages["name"] == "大兴村", "code"])
    assert len(codes) == 2
    match = matcher.match("吉首市大兴村")
    assert match is not None and match.ambiguous
    assert {c.village_code for c in match.candidates} == codes
    best = match.candidates[0]
    assert (best.village_code, best.confidence, best.lon) == (
        match.village_code,
        match.confidence,
        match.lon,
    )
    assert all(0.3 < c.confidence <= 0.5 for c in match.candidates)
    sure = matcher.match("吉首市丹青镇大兴村")
    assert sure is not None and not sure.ambiguous
    assert sure.village_code in codes and sure.village_code.startswith("433101104")


def test_road_shared_by_towns(gazetteer, matcher) -> None:
    roads = gazetteer.dropna(subset=["road"]).drop_duplicates(["township", "road"])
    shared = roads.groupby("road")["township"].nunique()
    name = shared[shared >= 2].index[0]
    towns = set(roads.loc[roads["road"] == name, "village_code"].str[:9])
    match = matcher.match("吉首市" + name)
    assert match is not None and match.ambiguous and match.precision == "road"
    assert {c.township_code for c in match.candidates} <= towns
    assert len({c.township_code for c in match.candidates}) >= 2
    confidences = [c.confidence for c in match.candidates]
    assert confidences == sorted(confidences, reverse=True)


def test_synthetic_road_ambiguity_resolved_by_house_number() -> None:
    """Two towns with a 人民路; only one has a No. 12: the number decides."""
    divisions = pd.DataFrame(
        {
            "code": ["433101", "433101004", "433101005", "433101004001", "433101005001"],
            "name": ["吉首市", "乾州街道", "镇溪街道", "乾州社区", "镇溪社区"],
            "level": ["county", "township", "township", "village", "village"],
            "parent_code": ["433100", "433101", "433101", "433101004", "433101005"],
        }
    )

    def entry(town: str, village_code: str, number: int | None, lon: float) -> dict:
        house = None if number is None else f"{number}号"
        return {
            "full_text": f"湖南省湘西土家族苗族自治州吉首市{town}人民路{house or ''}",
            "components": json.dumps(
                {
                    "province": "湖南省",
                    "prefecture": "湘西土家族苗族自治州",
                    "county": "吉首市",
                    "township": town,
                    "village": None,
                    "road": "人民路",
                    "house_number": house,
                    "group": None,
                }
            ),
            "village_code": village_code,
            "precision": "road" if number is None else "house_number",
            "lon": lon,
            "lat": 28.3,
        }

    gazetteer = pd.DataFrame(
        [
            entry("乾州街道", "433101004001", 12, 109.70),
            entry("乾州街道", "433101004001", None, 109.701),
            entry("镇溪街道", "433101005001", 14, 109.72),
            entry("镇溪街道", "433101005001", None, 109.721),
        ]
    )
    matcher = AddressMatcher.build(gazetteer, divisions)
    sure = matcher.match("人民路12号")
    assert sure is not None and sure.precision == "house_number"
    assert (sure.village_code, sure.lon) == ("433101004001", 109.70)
    unsure = matcher.match("人民路")
    assert unsure is not None and unsure.ambiguous
    assert {c.township_code for c in unsure.candidates} == {"433101004", "433101005"}
    # Divisions without polygons: a township answer is the mean of its entries.
    town = matcher.match("镇溪街道")
    assert town is not None and town.lon == pytest.approx(109.7205)


# --- accuracy on noisy addresses -----------------------------------------------------


def test_noisy_addresses_resolve_to_the_right_village(world, matcher, capsys) -> None:
    sample = noisy_addresses(world.addresses, per_kind=150, seed=SEED)
    results = matcher.match_many(sample["text"].tolist())
    sample["ok"] = [
        r is not None and r.village_code == code
        for r, code in zip(results, sample["village_code"], strict=True)
    ]
    rate = sample.groupby("kind", sort=False)["ok"].agg(["mean", "size"])
    with capsys.disabled():
        print("\naddress matching, small demo world, share resolved to the right village:")
        for kind, row in rate.iterrows():
            print(f"  {kind:<18}{row['mean']:>8.1%}  of {int(row['size'])}")
        print(f"  {'all':<18}{sample['ok'].mean():>8.1%}  of {len(sample)}")
    assert set(rate.index) == set(NOISE_KINDS)
    assert sample["ok"].mean() >= 0.95
    # No kind of noise may be much worse than the rest.
    assert rate["mean"].min() >= 0.9
    for kind in ("clean", "dropped_admin", "full_width", "chinese_numerals", "spaces_punct"):
        assert rate.loc[kind, "mean"] == 1.0, kind


# --- properties --------------------------------------------------------------------

_FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {" ": "\u3000"})
_PUNCT = " \u3000,，。、;；:：()（）[]【】/\\\"'“”·.!！?？\t\n"


@HYPOTHESIS
@given(data=st.data())
def test_width_invariance(world, matcher, data) -> None:
    row = data.draw(st.integers(0, len(world.addresses) - 1))
    text = world.addresses["full_text"].iloc[row]
    assert _same_place(matcher.match(text.translate(_FULL_WIDTH)), matcher.match(text))


@HYPOTHESIS
@given(data=st.data())
def test_whitespace_and_punctuation_invariance(world, matcher, data) -> None:
    row = data.draw(st.integers(0, len(world.addresses) - 1))
    text = world.addresses["full_text"].iloc[row]
    inserts = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(text)), st.text(alphabet=_PUNCT, min_size=1, max_size=3)),
            max_size=6,
        )
    )
    noisy = text
    for position, junk in sorted(inserts, reverse=True):
        noisy = noisy[:position] + junk + noisy[position:]
    assert _same_place(matcher.match(noisy), matcher.match(text))


@HYPOTHESIS
@given(data=st.data())
def test_chinese_numeral_invariance(gazetteer, matcher, data) -> None:
    rural = gazetteer[gazetteer["group"].notna()]
    row = rural.iloc[data.draw(st.integers(0, len(rural) - 1))]
    group = int(row["group"][:-1])
    number = int(row["house_number"][:-1])
    prefix = row["full_text"][: -len(row["group"] + row["house_number"])]
    spelled = prefix + data.draw(st.sampled_from(["", "第"])) + chinese_numeral(group) + "组"
    spelled += chinese_numeral(number) + "号"
    assert _same_place(matcher.match(spelled), matcher.match(row["full_text"]))


@HYPOTHESIS
@given(text=st.text(max_size=40))
def test_any_text_is_safe(matcher, text: str) -> None:
    match = matcher.match(text)
    if match is None:
        return
    assert 0.0 <= match.confidence <= 1.0
    assert match.precision in ("house_number", "road", "village", "township", "county")
    json.dumps(match.to_dict())
    confidences = [c.confidence for c in match.candidates]
    assert confidences == sorted(confidences, reverse=True)


@HYPOTHESIS
@given(
    text=st.text(
        alphabet=st.sampled_from(
            list("吉首市乾州街道矮寨镇坪朗村大兴人民路世纪大道三组号0123456789 ，")
        ),
        max_size=30,
    )
)
def test_vocabulary_soup_is_safe(matcher, text: str) -> None:
    """Strings made of the vocabulary's own characters exercise every path."""
    match = matcher.match(text)
    if match is not None:
        assert 0.0 <= match.confidence <= 1.0
        if match.village_code is not None:
            assert match.village_code.startswith(match.township_code)
        if match.township_code is not None:
            assert match.township_code.startswith(match.county_code)
        assert math.isfinite(match.lon) and math.isfinite(match.lat)


# --- API details -------------------------------------------------------------------


def test_match_many_equals_match(world, matcher) -> None:
    texts = [*world.addresses["full_text"].iloc[:50], "吉首市大兴村", "nothing", "吉首市大兴村"]
    assert matcher.match_many(texts) == [matcher.match(t) for t in texts]


def test_build_from_plain_frame_with_json_components(world, divisions) -> None:
    """As the API reads it from PostGIS: lon/lat columns, components as JSON text."""
    addresses = world.addresses
    plain = pd.DataFrame(
        {
            "full_text": addresses["full_text"],
            "components": [json.dumps(c, ensure_ascii=False) for c in addresses["components"]],
            "village_code": addresses["village_code"],
            "precision": addresses["precision"],
            "lon": addresses.geometry.x,
            "lat": addresses.geometry.y,
        }
    )
    matcher = AddressMatcher.build(plain, divisions)
    row = addresses.iloc[len(addresses) // 2]
    match = matcher.match(row["full_text"])
    assert match is not None and (match.lon, match.lat) == (row.geometry.x, row.geometry.y)


def test_default_divisions_cover_the_prefecture() -> None:
    matcher = AddressMatcher.build()
    match = matcher.match("龙山县石牌镇")
    assert match is not None and match.precision == "township"
    assert match.county_code == "433130"
    assert match.lon is None  # no polygons, no gazetteer: nothing to place it with
    assert matcher.match("石牌") is not None


def test_gazetteer_rows_outside_divisions_are_ignored(world, divisions) -> None:
    addresses = world.addresses.copy()
    addresses.loc[addresses.index[:5], "village_code"] = "999999999999"
    matcher = AddressMatcher.build(addresses, divisions)
    assert matcher.match(world.addresses["full_text"].iloc[10]) is not None
    assert np.isfinite(matcher.row_lon).all()


def test_long_input_is_cut(matcher) -> None:
    """Only the first MAX_INPUT_CHARS characters are read: time stays bounded."""
    padded = matcher.match("吉首市乾州街道" + " " * 100_000)
    assert padded is not None and padded.township_code == "433101004"
    # Mostly not understood: too little evidence for an answer.
    assert matcher.match("吉首市乾州街道" + "附近的小卖部旁边" * 20_000) is None
