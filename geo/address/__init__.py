"""Chinese address parsing and matching for the prefecture (Address -> grid, issue 4).

    from geo.address import AddressMatcher, parse_address

    parse_address("湘西州吉首乾州世纪大道８８号").components
    # {'province': '湖南省', 'prefecture': '湘西土家族苗族自治州', 'county': '吉首市',
    #  'township': '乾州街道', 'village': None, 'road': '世纪大道',
    #  'house_number': '88号', 'group': None}

    # gazetteer: full_text, components, village_code, precision, point geometry;
    # divisions: code, name, level, parent_code, (multi)polygon geometry.
    matcher = AddressMatcher.build(gazetteer, divisions)
    match = matcher.match("吉首市矮寨镇坪朗村三组十五号")
    match.precision, match.village_code, (match.lon, match.lat), match.confidence
    match.candidates        # ranked alternatives when ambiguous, else ()

Pure Python/numpy/pandas/shapely, no network, no segmentation library: the
vocabulary is the division names (suffix rules give their short forms and
variants) and the gazetteer's road names. Modules: :mod:`~geo.address.normalize`
(width, numerals, numbers), :mod:`~geo.address.lexicon` (name forms, exact and
one-edit lookup, segmentation), :mod:`~geo.address.matcher` (hypotheses, scoring,
resolution; its docstring explains how matching works), :mod:`~geo.address.noise`
(labelled noisy addresses for measuring accuracy).
"""

from geo.address.matcher import (
    COMPONENT_KEYS,
    PRECISIONS,
    AddressCandidate,
    AddressMatch,
    AddressMatcher,
    ParsedAddress,
    parse_address,
)
from geo.address.normalize import (
    NormalizedAddress,
    chinese_numeral,
    chinese_numeral_to_int,
    normalize_address,
)

__all__ = [
    "COMPONENT_KEYS",
    "PRECISIONS",
    "AddressCandidate",
    "AddressMatch",
    "AddressMatcher",
    "NormalizedAddress",
    "ParsedAddress",
    "chinese_numeral",
    "chinese_numeral_to_int",
    "normalize_address",
    "parse_address",
]
