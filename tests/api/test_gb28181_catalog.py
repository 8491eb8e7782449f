"""Reading GB/T 28181 Catalog responses (no database): items, directory entries, encodings,
hostile XML, the reader's row errors, and the value parsers (with hypothesis)."""

from __future__ import annotations

import math

import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from api.services import gb28181_catalog as catalog_module
from api.services.files import UnreadableFile, UnsupportedFormat, detect_format, read_vector_file
from api.services.gb28181_catalog import (
    COMPASS_AZIMUTHS,
    DIRECTION_TYPE_AZIMUTHS,
    ITEM_TYPE_COLUMN,
    RESOLUTION_CODES,
    HostileXml,
    direction_type_azimuth,
    item_type,
    parse_catalog,
    read_catalog,
    resolution_px,
)
from geo.crs import convert

# Points inside Jishou (吉首市, 433101).
JISHOU = (109.73, 28.31)


def item(
    device_id: str,
    name: str = "摄像机",
    *,
    civil: str | None = None,
    lon: float | str | None = JISHOU[0],
    lat: float | str | None = JISHOU[1],
    status: str | None = "ON",
    ptz: str | None = None,
    resolution: str | None = None,
    direction: str | None = None,
) -> str:
    """One `<Item>` of a Catalog response; None leaves an element out."""
    parts = [f"<DeviceID>{device_id}</DeviceID>", f"<Name>{name}</Name>"]
    parts += ["<Manufacturer>Hikvision</Manufacturer>", "<Owner>Owner</Owner>"]
    for tag, value in (
        ("CivilCode", civil),
        ("Status", status),
        ("Longitude", lon),
        ("Latitude", lat),
    ):
        if value is not None:
            parts.append(f"<{tag}>{value}</{tag}>")
    info = [
        f"<{tag}>{value}</{tag}>"
        for tag, value in (
            ("PTZType", ptz),
            ("Resolution", resolution),
            ("DirectionType", direction),
        )
        if value is not None
    ]
    if info:
        parts.append("<Info>" + "".join(info) + "</Info>")
    return "<Item>" + "".join(parts) + "</Item>"


def directory_item(device_id: str, name: str) -> str:
    """A directory entry: no position, no camera type."""
    return f"<Item><DeviceID>{device_id}</DeviceID><Name>{name}</Name><Parental>1</Parental></Item>"


def catalog(items: list[str], encoding: str = "GB2312", cmd_type: str = "Catalog") -> str:
    """A Catalog response document (text; encode it as `encoding` says)."""
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<Response>\n'
        f"<CmdType>{cmd_type}</CmdType>\n<SN>17</SN>\n"
        f"<DeviceID>43310100002000000001</DeviceID>\n<SumNum>{len(items)}</SumNum>\n"
        f'<DeviceList Num="{len(items)}">\n' + "\n".join(items) + "\n</DeviceList>\n</Response>\n"
    )


CAMERA_1 = "43310100001320000001"  # 132 IP camera in 433101
CAMERA_2 = "43310100001310000002"  # 131 camera in 433101


def sample() -> str:
    return catalog(
        [
            directory_item("433101", "吉首市"),
            directory_item("43310100002160000001", "城区派出所"),
            item(
                CAMERA_1,
                "人民路口枪机",
                civil="433101",
                ptz="3",
                resolution="6/5/4",
                direction="5",
            ),
            directory_item("43310100001180000001", "NVR-1"),
            item(CAMERA_2, "广场球机", civil="43310100", status="OFF", ptz="1", resolution="4"),
        ]
    )


def test_items_become_rows_numbered_as_in_the_file(tmp_path):
    path = tmp_path / "catalog.xml"
    path.write_bytes(sample().encode("gb2312"))
    frame, errors = read_catalog(path, path.name)
    assert errors == []
    assert frame.index.name == "item" and list(frame.index) == [1, 2, 3, 4, 5]
    assert list(frame[ITEM_TYPE_COLUMN]) == [
        "region",
        "type 216 (virtual organisation)",
        "camera",
        "type 118 (NVR)",
        "camera",
    ]
    first, second = frame.loc[3], frame.loc[5]
    assert (first["gb_id"], first["name"], first["kind"]) == (CAMERA_1, "人民路口枪机", "bullet")
    assert (first["status"], first["county_code"], first["azimuth_deg"]) == (
        "online",
        "433101",
        135,
    )
    assert first["resolution_h_px"] == "6/5/4"  # parsed by the importer: 1920
    assert (second["kind"], second["status"], second["county_code"]) == ("ptz", "offline", "433101")
    assert second["azimuth_deg"] is None
    assert first.geometry.equals(shapely.Point(JISHOU))
    assert frame.loc[1].geometry is None  # directory entries have no position, and no error


def test_gb2312_catalogue_in_gcj02_lands_about_550_m_away_in_wgs84(tmp_path):
    path = tmp_path / "catalog.xml"
    path.write_bytes(sample().encode("gb2312"))
    assert detect_format(path) == "xml"
    raw = read_vector_file(path)
    shifted = read_vector_file(path, coord_sys="gcj02")
    assert raw.format == "GB/T 28181 Catalog" and raw.row_kind == "item"
    assert raw.coords == "wgs84 (default)" and shifted.coords == "gcj02 (coord_sys)"
    assert shifted.frame.loc[3, "name"] == "人民路口枪机"  # decoded from GB2312
    point = shifted.frame.loc[3].geometry
    expected = convert(*JISHOU, "gcj02", "wgs84")
    assert math.dist((point.x, point.y), expected) < 1e-9
    metres = math.dist(
        convert(point.x, point.y, "wgs84", "EPSG:4546"), convert(*JISHOU, "wgs84", "EPSG:4546")
    )
    assert 500 < metres < 650


def test_concatenated_and_wrapped_documents_read_as_one_catalogue():
    first = catalog([item(CAMERA_1)], encoding="UTF-8")
    second = catalog([directory_item("433101", "吉首市"), item(CAMERA_2)], encoding="UTF-8")
    for text in (first + "\n" + second, f"<Catalogs>{first}{second}</Catalogs>"):
        items = parse_catalog(text.encode(), "catalog.xml")
        assert [i["deviceid"] for i in items] == [CAMERA_1, "433101", CAMERA_2]


@pytest.mark.parametrize(
    ("declared", "written"),
    [
        ("GB2312", "gb2312"),
        ("GBK", "gbk"),
        ("gb18030", "gb18030"),
        ("UTF-8", "utf-8"),
        ("UTF-8", "gbk"),  # the declaration lies: GB18030 is the fallback
        (None, "utf-8"),
    ],
)
def test_encodings_are_decoded_before_parsing(declared, written):
    text = catalog([item(CAMERA_1, "乾州古城东门 𠀀")], encoding=declared or "")
    if declared is None:
        text = text.split("\n", 1)[1]  # no prolog at all
    name = "乾州古城东门" if written in ("gb2312", "gbk") else "乾州古城东门 𠀀"
    text = text.replace("乾州古城东门 𠀀", name)
    items = parse_catalog(text.encode(written), "catalog.xml")
    assert items[0]["name"] == name


def test_utf16_and_bom(tmp_path):
    text = catalog([item(CAMERA_1, "峒河")], encoding="UTF-16")
    path = tmp_path / "catalog.xml"
    path.write_bytes(text.encode("utf-16"))
    assert detect_format(path) == "xml"
    assert read_vector_file(path).frame.loc[1, "name"] == "峒河"
    bom = b"\xef\xbb\xbf" + catalog([item(CAMERA_1, "峒河")], encoding="UTF-8").encode()
    assert parse_catalog(bom, "bom.xml")[0]["name"] == "峒河"


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Response><CmdType>Catalog</CmdType><DeviceList Num="1"><Item><Name>&lol3;</Name></Item>
</DeviceList></Response>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Response><CmdType>Catalog</CmdType><DeviceList Num="1"><Item><Name>&xxe;</Name></Item>
</DeviceList></Response>"""


@pytest.mark.parametrize(
    "text",
    [
        BILLION_LAUGHS,
        XXE,
        '<?xml version="1.0"?><!doctype Response SYSTEM "http://example.org/x.dtd"><Response/>',
        catalog([item(CAMERA_1)]) + '<!ENTITY x "y">',  # in a later document
    ],
)
def test_dtds_and_entities_are_refused(text):
    with pytest.raises(HostileXml, match="declares a DTD or entities; refused"):
        parse_catalog(text.encode(), "evil.xml")


def test_entity_references_without_a_dtd_are_malformed():
    text = catalog([item(CAMERA_1, "&xxe;")])
    with pytest.raises(UnreadableFile, match="undefined entity"):
        parse_catalog(text.encode("gb2312"), "catalog.xml")


def test_size_and_item_caps(monkeypatch, tmp_path):
    text = catalog([item(CAMERA_1), item(CAMERA_2)]).encode("gb2312")
    monkeypatch.setattr(catalog_module, "MAX_CATALOG_ITEMS", 1)
    with pytest.raises(UnreadableFile, match="more than 1 items"):
        parse_catalog(text, "catalog.xml")
    monkeypatch.setattr(catalog_module, "MAX_CATALOG_ITEMS", 2)
    assert len(parse_catalog(text, "catalog.xml")) == 2
    monkeypatch.setattr(catalog_module, "MAX_CATALOG_BYTES", 100)
    path = tmp_path / "catalog.xml"
    path.write_bytes(text)
    with pytest.raises(UnreadableFile, match="larger than"):
        read_catalog(path, path.name)


def test_xml_that_is_no_catalogue(tmp_path):
    kml = tmp_path / "cameras.kml"
    kml.write_text('<?xml version="1.0"?><kml><Document/></kml>')
    with pytest.raises(UnsupportedFormat, match=r"not a GB/T 28181 Catalog response.*<kml>"):
        read_vector_file(kml)
    info = catalog([], cmd_type="DeviceInfo")
    with pytest.raises(UnreadableFile, match="DeviceInfo response, not a Catalog"):
        parse_catalog(info.encode("gb2312"), "info.xml")
    broken = catalog([item(CAMERA_1)]).replace("</DeviceList>", "")
    with pytest.raises(UnreadableFile, match="not well-formed XML: mismatched tag at line"):
        parse_catalog(broken.encode("gb2312"), "broken.xml")
    named = tmp_path / "catalog.xml"
    named.write_text("<Notify><CmdType>Catalog</CmdType></Notify>")  # a subscription notice
    assert detect_format(named) == "xml" and len(read_vector_file(named).frame) == 0


def test_reader_row_errors_name_the_item():
    text = catalog(
        [
            item(CAMERA_1, civil="433122"),  # another county
            item(CAMERA_2, civil="4330"),  # another prefecture
            item(CAMERA_1, civil="433100", lon=0, lat=0),  # the prefecture itself: fine
            item(CAMERA_1, lon=None),
            item(CAMERA_1, lon="东经109", ptz="7", direction="9"),
            item(CAMERA_1, civil="湘西"),
            directory_item("43310100001180000009", "NVR"),  # never an error
        ]
    )
    frame, errors = catalog_module.catalog_frame(parse_catalog(text.encode("gb2312"), "c.xml"))
    found = {(e["row"], e["field"]): e["reason"] for e in errors}
    assert found[(1, "county_code")] == (
        f"CivilCode 433122 does not match the DeviceID {CAMERA_1}: the CivilCode names county "
        "433122, the DeviceID's digits 1-6 are 433101"
    )
    assert "names region 4330, the DeviceID's digits 1-6 are 433101" in found[(2, "county_code")]
    assert frame.loc[1, "county_code"] is None  # the id's county stands, the row is rejected
    assert (3, "county_code") not in found and frame.loc[3, "county_code"] is None
    assert found[(3, "geometry")].startswith("Longitude and Latitude are 0")
    assert found[(4, "geometry")] == "Longitude and Latitude missing"
    assert "must both be numbers" in found[(5, "geometry")]
    assert found[(5, "kind")].startswith("Info/PTZType '7' is not 1-4")
    assert found[(5, "azimuth_deg")].startswith("Info/DirectionType '9' is not 1-8")
    assert found[(6, "county_code")] == "CivilCode '湘西' is not a division code"
    assert {row for row, _ in found} == {1, 2, 3, 4, 5, 6}


@pytest.mark.parametrize(
    ("device_id", "expected"),
    [
        (CAMERA_1, "camera"),
        (CAMERA_2, "camera"),
        ("43", "region"),
        ("43310100", "region"),
        ("43310100002000000001", "type 200 (central server)"),
        ("43310100002150000001", "type 215 (business group)"),
        ("43310100009990000001", "type 999"),
        ("4331010000132000000", "camera"),  # 19 digits: imported, and rejected as a bad id
        (None, "camera"),
    ],
)
def test_item_types(device_id, expected):
    assert item_type(device_id) == expected


# -- value parsers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "pixels"),
    [
        ("6", 1920),
        ("1", 176),
        ("4", 720),
        ("6/5/4", 1920),
        ("3/2/1", 704),
        ("1920x1080", 1920),
        ("2560 × 1440", 2560),
        ("1280*720", 1280),
        ("1920", 1920),
        ("1080P", 1920),
        ("D1", 720),
        ("4K", 3840),
        ("200万", 1920),
        ("400万像素", 2560),
        ("2MP", 1920),
        ("720P/1080P", 1920),
        ("", None),
        (None, None),
    ],
)
def test_resolutions(value, pixels):
    assert resolution_px(value) == pixels


@pytest.mark.parametrize("value", ["7", "0", "high", "99999x1", "1080Q", "12万", "50"])
def test_bad_resolutions_say_what_is_accepted(value):
    with pytest.raises(ValueError, match="not a resolution"):
        resolution_px(value)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(sorted(RESOLUTION_CODES)),
            st.builds(
                lambda w, h, sep: f"{w}{sep}{h}",
                st.integers(100, 20_000),
                st.integers(10, 20_000),
                st.sampled_from(["x", "X", "×", "*", " x "]),
            ),
            st.integers(100, 20_000).map(str),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_resolution_lists_give_their_best_width(values):
    def width(value: str) -> int:
        if value in RESOLUTION_CODES:
            return RESOLUTION_CODES[value]
        return int(value.replace(" ", "").replace("×", "x").replace("*", "x").lower().split("x")[0])

    assert resolution_px("/".join(values)) == max(width(v) for v in values)


@given(st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=6))
def test_resolution_words_are_known_or_refused(word):
    try:
        pixels = resolution_px(word)
    except ValueError:
        return
    assert pixels is None or 176 <= pixels <= 3840


@given(st.sampled_from(sorted(DIRECTION_TYPE_AZIMUTHS)))
def test_direction_types_match_their_compass_words(code):
    words = dict(
        zip("12345678", ["东", "西", "南", "北", "东南", "东北", "西南", "西北"], strict=True)
    )
    assert direction_type_azimuth(code) == COMPASS_AZIMUTHS[words[code]]
    assert direction_type_azimuth(f"正{words[code]}") == direction_type_azimuth(code)
    assert direction_type_azimuth(f" {code} ") == direction_type_azimuth(code)


@given(st.text(max_size=4))
def test_direction_types_are_1_to_8_or_refused(value):
    try:
        azimuth = direction_type_azimuth(value)
    except ValueError as exc:
        assert "is not 1-8" in str(exc)
        return
    assert azimuth is None or azimuth in set(DIRECTION_TYPE_AZIMUTHS.values())
