"""Tests for geo.codes: division/grid codes and GB/T 28181 ids (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo import codes, reference


@pytest.mark.parametrize(
    ("code", "level"),
    [
        ("433100", "prefecture"),
        ("433101", "county"),
        ("433130", "county"),
        ("433101002", "township"),
        ("433122400", "township"),
        ("433101002001", "village"),
        ("433101002001007", "grid"),
    ],
)
def test_admin_level(code, level):
    assert codes.admin_level(code) == level


@pytest.mark.parametrize(
    "bad", ["", "4331", "4331011", "43310100200", "43310a", "430000", 433101, None, "４３３１０１"]
)
def test_admin_level_rejects(bad):
    with pytest.raises(ValueError):
        codes.admin_level(bad)


def test_parent_code():
    assert codes.parent_code("433101002001007") == "433101002001"
    assert codes.parent_code("433101002001") == "433101002"
    assert codes.parent_code("433101002") == "433101"
    assert codes.parent_code("433101") == "433100"
    assert codes.parent_code("433100") == "430000"


def test_parent_codes_match_division_tables():
    counties, townships, villages = reference.load_divisions()
    for df in (counties, townships, villages):
        assert [codes.parent_code(c) for c in df["code"]] == list(df["parent_code"])


def test_is_urban_village():
    assert codes.is_urban_village("433101002001")
    assert codes.is_urban_village("433101002199")
    assert not codes.is_urban_village("433101002200")
    assert not codes.is_urban_village("433101002399")
    assert codes.is_urban_village("433101002001005")  # a grid: judged by its village
    with pytest.raises(ValueError):
        codes.is_urban_village("433101002")
    _, _, villages = reference.load_divisions()
    urban = [codes.is_urban_village(c) for c in villages["code"]]
    assert 0 < sum(urban) < len(urban)
    # urban units are 社区/居委会 by name
    names = villages["name"][urban]
    assert names.str.contains("社区|居委会").mean() > 0.9


def test_grid_code_and_validation():
    village = "433101002001"
    assert codes.grid_code(village, 7) == "433101002001007"
    assert codes.grid_code(village, 999) == "433101002001999"
    for bad_seq in (0, 1000, -1, True, 1.0):
        with pytest.raises(ValueError):
            codes.grid_code(village, bad_seq)
    with pytest.raises(ValueError):
        codes.grid_code("43310100200", 1)
    assert codes.validate_grid_code("433101002001007") is None
    assert codes.validate_grid_code("433101002001007", village) is None
    reason = codes.validate_grid_code("433101002002007", village)
    assert reason is not None and "433101002002007" in reason and village in reason
    assert "15" in codes.validate_grid_code("43310100200100")
    assert "string" in codes.validate_grid_code(433101002001007)
    assert "000" in codes.validate_grid_code("433101002001000")
    assert "000" in codes.validate_grid_code("433101002000001")
    assert "000" in codes.validate_grid_code("433101000001001")
    assert codes.validate_grid_code("43310100200100７") is not None


@given(seq=st.integers(1, 999))
def test_grid_code_round_trip(seq):
    code = codes.grid_code("433125101201", seq)
    assert codes.validate_grid_code(code, "433125101201") is None
    assert codes.admin_level(code) == "grid"
    assert codes.parent_code(code) == "433125101201"


CAMERA_ID = "43310100001310000001"


def test_parse_gb28181():
    parts = codes.parse_gb28181("43310100011325123456")
    assert parts == codes.GBDeviceId(
        center_code="43310100",
        region_code="433101",
        industry="01",
        type_code="132",
        network="5",
        serial="123456",
    )
    assert parts.device_id == "43310100011325123456"
    assert str(parts) == parts.device_id and parts.is_camera
    for bad in ("4331010000131000000", "433101000013100000011", "4331010000131000000x", ""):
        with pytest.raises(ValueError):
            codes.parse_gb28181(bad)


def test_validate_camera_gb_id():
    assert codes.validate_camera_gb_id(CAMERA_ID) == []
    assert codes.validate_camera_gb_id(CAMERA_ID, "433101") == []
    reasons = codes.validate_camera_gb_id(CAMERA_ID, "433122")
    assert len(reasons) == 1 and "433101" in reasons[0] and "433122" in reasons[0]
    nvr = "43310100001180000001"
    reasons = codes.validate_camera_gb_id(nvr, "433122")
    assert len(reasons) == 2 and "118" in reasons[0]
    assert "20 ASCII digits" in codes.validate_camera_gb_id("4331010000131000000")[0]
    assert "20 ASCII digits" in codes.validate_camera_gb_id("4331010000131000000１")[0]
    assert "20 ASCII digits" in codes.validate_camera_gb_id(CAMERA_ID + "\n")[0]
    assert "string" in codes.validate_camera_gb_id(43310100001310000001)[0]


def test_make_gb28181():
    assert codes.make_gb28181("433101", 131, 1) == CAMERA_ID
    assert codes.make_gb28181("43310105", "132", "000042", "01", "5") == "43310105011325000042"
    assert codes.validate_camera_gb_id(codes.make_gb28181("433130", 132, 999999), "433130") == []
    for args in (
        ("43310", 131, 1),
        ("433101", 1310, 1),
        ("433101", 131, 1_000_000),
        ("433101", 131, -1),
        ("433101", "13a", 1),
    ):
        with pytest.raises(ValueError):
            codes.make_gb28181(*args)
    with pytest.raises(ValueError):
        codes.make_gb28181("433101", 131, 1, industry="1")
    with pytest.raises(ValueError):
        codes.make_gb28181("433101", 131, 1, network="10")


@given(
    county=st.sampled_from(reference.COUNTY_CODES),
    type_code=st.sampled_from([131, 132]),
    serial=st.integers(0, 999_999),
)
def test_make_parse_round_trip(county, type_code, serial):
    gb = codes.make_gb28181(county, type_code, serial)
    parts = codes.parse_gb28181(gb)
    assert parts.region_code == county
    assert parts.type_code == str(type_code)
    assert int(parts.serial) == serial
    assert codes.validate_camera_gb_id(gb, county) == []
