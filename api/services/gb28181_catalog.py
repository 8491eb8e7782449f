"""GB/T 28181 Catalog responses (设备目录查询应答) read into a frame of cameras.

A video platform answers a Catalog query with one or more XML documents

    <?xml version="1.0" encoding="GB2312"?>
    <Response>
      <CmdType>Catalog</CmdType><SN>17</SN><DeviceID>...</DeviceID><SumNum>3</SumNum>
      <DeviceList Num="3">
        <Item><DeviceID>43310100001320000001</DeviceID><Name>人民路口</Name>
              <CivilCode>433101</CivilCode><Status>ON</Status>
              <Longitude>109.73</Longitude><Latitude>28.31</Latitude>
              <Info><PTZType>3</PTZType><Resolution>6/5</Resolution>
                    <DirectionType>1</DirectionType></Info></Item>
        ...

`read_catalog` reads such a file (several documents concatenated, or wrapped in any
outer element, work too) into the frame shape `api.services.files.read_vector_file`
works on: one row per `<Item>`, index "item" = the item's 1-based number in the file,
points in the file's own coordinates (the caller converts them, honouring `coord_sys`),
columns `gb_id, name, kind, status, county_code, azimuth_deg, resolution_h_px` and
`ITEM_TYPE_COLUMN`. Per item:

- DeviceID → `gb_id`; Name → `name`.
- CivilCode → `county_code` when it names a county (its first 6 digits, not ending in
  00); a CivilCode that disagrees with the DeviceID's region is a row error naming both.
- Longitude/Latitude → the point; missing, or 0/0 as platforms write for "unknown", is a
  row error.
- Status ON/OFF (also ONLINE/OFFLINE, OK) → online/offline; other values are passed on
  for the importer to judge.
- Info/PTZType (GB/T 28181-2016 A.2.1) → `kind`, see `PTZ_TYPE_KINDS`: 1 球机 → ptz (the
  standard's 球机 is the pan-tilt-zoom speed dome; coverage treats it as a full disc),
  2 半球 → dome, 3 固定枪机 → bullet, 4 遥控枪机 → bullet (a bullet on a remote pan-tilt
  head: what it sees at any moment is a sector, in its DirectionType). Absent → no kind.
- Info/Resolution → `resolution_h_px` as written (`resolution_px` turns it into pixels).
- Info/DirectionType 1-8 → `azimuth_deg`, see `DIRECTION_TYPE_AZIMUTHS`.
- Owner, Manufacturer, Address, IP and the rest are ignored (GB Owner is a person or
  unit code, not gridcover's owner category).

Items whose DeviceID is not a camera are the catalogue's directory entries: region nodes
(a 2-8 digit CivilCode as DeviceID) and 20-digit ids of other types (118 NVR, 200
central server, 215 business group, 216 virtual organisation, ...). They stay in the
frame with their type in `ITEM_TYPE_COLUMN` (`"camera"` for cameras) so the camera
import can skip and count them; they never carry row errors.

Hostile files: the bytes are decoded here (expat knows no GB2312/GBK: the declared
encoding, read as GB18030 for the GB family, else UTF-8) and parsed with expat without
any DTD: a DOCTYPE or ENTITY declaration (billion laughs, external entities) refuses the
whole file. Size and item count are capped (`MAX_CATALOG_BYTES`, `MAX_CATALOG_ITEMS`).
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.parsers import expat

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from api.services.files import UnreadableFile, UnsupportedFormat

# Module-level so a deployment (and the tests) can change them.
MAX_CATALOG_BYTES = 64 * 1024 * 1024
MAX_CATALOG_ITEMS = 200_000

ITEM_TYPE_COLUMN = "gb28181_item"
CAMERA_ITEM = "camera"

PTZ_TYPE_KINDS = {"1": "ptz", "2": "dome", "3": "bullet", "4": "bullet"}
"""Info/PTZType (GB/T 28181-2016): 1 球机, 2 半球, 3 固定枪机, 4 遥控枪机."""

DIRECTION_TYPE_AZIMUTHS = {
    "1": 90.0,  # 东
    "2": 270.0,  # 西
    "3": 180.0,  # 南
    "4": 0.0,  # 北
    "5": 135.0,  # 东南
    "6": 45.0,  # 东北
    "7": 225.0,  # 西南
    "8": 315.0,  # 西北
}
"""Info/DirectionType (GB/T 28181-2016) → degrees clockwise from north."""

COMPASS_AZIMUTHS = {
    name: azimuth
    for names, azimuth in (
        (("北", "n", "north"), 0.0),
        (("东北", "ne", "northeast", "north-east"), 45.0),
        (("东", "e", "east"), 90.0),
        (("东南", "se", "southeast", "south-east"), 135.0),
        (("南", "s", "south"), 180.0),
        (("西南", "sw", "southwest", "south-west"), 225.0),
        (("西", "w", "west"), 270.0),
        (("西北", "nw", "northwest", "north-west"), 315.0),
    )
    for name in names
}
"""Compass words (Chinese, English, abbreviations; lower case) → azimuth in degrees."""

RESOLUTION_CODES = {"1": 176, "2": 352, "3": 704, "4": 720, "5": 1280, "6": 1920}
"""Info/Resolution codes (GB/T 28181-2016 appendix F, the SDP f field): QCIF, CIF,
4CIF, D1, 720P, 1080P/I → horizontal pixels."""

RESOLUTION_NAMES = {
    "qcif": 176,
    "cif": 352,
    "4cif": 704,
    "d1": 720,
    "720p": 1280,
    "960p": 1280,
    "1080p": 1920,
    "1080i": 1920,
    "2k": 2560,
    "1440p": 2560,
    "4k": 3840,
    "2160p": 3840,
}
# Chinese catalogues give the sensor in megapixels: 200万 (2 MP) is 1920 x 1080.
MEGAPIXEL_WIDTHS = {
    1.0: 1280,
    1.3: 1280,
    2.0: 1920,
    3.0: 2048,
    4.0: 2560,
    5.0: 2592,
    6.0: 3072,
    8.0: 3840,
}
MIN_WIDTH_PX, MAX_WIDTH_PX = 100, 20_000

# Type codes (DeviceID digits 11-13) of directory entries, for the import report.
DIRECTORY_TYPE_NAMES = {
    "111": "DVR",
    "112": "video server",
    "113": "encoder",
    "114": "decoder",
    "117": "alarm controller",
    "118": "NVR",
    "134": "alarm input",
    "135": "alarm output",
    "200": "central server",
    "215": "business group",
    "216": "virtual organisation",
}
CAMERA_TYPES = frozenset({"131", "132"})
# Status values of GB/T 28181 (ON/OFF) and of platforms' variants; others pass unchanged.
STATUS_WORDS = {
    "on": "online",
    "online": "online",
    "ok": "online",
    "off": "offline",
    "offline": "offline",
}

_GB_ENCODINGS = frozenset({"gb2312", "gbk", "gb18030", "cp936", "x-gbk", "gb_2312-80", "euc-cn"})
_PROLOG = re.compile(rb"\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_DECLARATION = re.compile(r"<\?xml\b.*?\?>", re.S)
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.I)
_ROOT = "gridcover-catalog"
# Catalog answers come as a Response to a query, or as a Notify of a catalogue subscription.
_RESPONSES = ("response", "notify")


class HostileXml(UnreadableFile):
    """The XML declares a DTD or entities, which a Catalog never needs (HTTP 400)."""


# -- values -----------------------------------------------------------------------------
def resolution_px(value: object) -> int | None:
    """Horizontal pixels of a resolution: a GB/T 28181 code 1-6, `1920x1080` (also `×`,
    `*`), a width such as `1920`, a name (`1080P`, `D1`, `4K`) or megapixels (`200万`,
    `2MP`). Several values separated by `/` (as Info/Resolution lists them), `,` or `;`:
    the best. None for an empty value; `ValueError` for anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = re.sub(r"\s*[x×X*]\s*", "x", str(value).strip())
    parts = [p for p in re.split(r"[/,;|、，；\s]+", text) if p]
    if not parts:
        return None
    return max(_one_resolution(part, str(value)) for part in parts)


def _one_resolution(part: str, whole: str) -> int:
    key = part.lower()
    if key in RESOLUTION_CODES:
        return RESOLUTION_CODES[key]
    if key in RESOLUTION_NAMES:
        return RESOLUTION_NAMES[key]
    size = re.fullmatch(r"(\d{2,5})x(\d{2,5})", key)
    width = int(size.group(1)) if size else int(key) if re.fullmatch(r"\d{3,5}", key) else None
    if width is not None and MIN_WIDTH_PX <= width <= MAX_WIDTH_PX:
        return width
    megapixels = re.fullmatch(r"(\d+(?:\.\d+)?)(万|万像素|mp)", key)
    if megapixels:
        unit = 100 if megapixels.group(2).startswith("万") else 1
        width = MEGAPIXEL_WIDTHS.get(float(megapixels.group(1)) / unit)
        if width is not None:
            return width
    raise ValueError(
        f"not a resolution: {whole!r} (use a width in pixels such as 1920, 1920x1080, 1080P, "
        "or a GB/T 28181 code 1-6)"
    )


def direction_type_azimuth(value: object) -> float | None:
    """Azimuth (degrees) of an Info/DirectionType code 1-8 or a compass word (东, NE);
    None for an empty value; `ValueError` otherwise."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if text in DIRECTION_TYPE_AZIMUTHS:
        return DIRECTION_TYPE_AZIMUTHS[text]
    azimuth = compass_azimuth(text)
    if azimuth is None:
        raise ValueError(
            f"DirectionType {text!r} is not 1-8 (1 东, 2 西, 3 南, 4 北, 5 东南, 6 东北, "
            "7 西南, 8 西北)"
        )
    return azimuth


def compass_azimuth(text: str) -> float | None:
    """Azimuth of a compass word (`东南`, `正北`, `朝东`, `SE`, `south-west`), else None."""
    key = re.sub(r"^(正|朝|向)|(向|方|方向)$", "", text.strip().lower())
    return COMPASS_AZIMUTHS.get(key)


def item_type(device_id: str | None) -> str:
    """`"camera"` for an item to import as a camera (a camera type, or an id too malformed
    to tell: the import reports it); else the directory entry's type, e.g. `"type 118
    (NVR)"` or `"region"` for an administrative-division node."""
    if device_id is None:
        return CAMERA_ITEM
    if re.fullmatch(r"[0-9]{2}|[0-9]{4}|[0-9]{6}|[0-9]{8}", device_id):
        return "region"
    if re.fullmatch(r"[0-9]{20}", device_id) and device_id[10:13] not in CAMERA_TYPES:
        code = device_id[10:13]
        name = DIRECTORY_TYPE_NAMES.get(code)
        return f"type {code} ({name})" if name else f"type {code}"
    return CAMERA_ITEM


# -- decoding and parsing -------------------------------------------------------------------
def decode_catalog(raw: bytes, shown: str) -> str:
    """The text of a catalogue: a BOM wins, then the prolog's encoding (the GB family read
    as GB18030, their superset), else UTF-8; GB18030 is the fallback for files whose
    declaration lies (UTF-8 declared, GBK written)."""
    if raw.startswith(codecs.BOM_UTF8):
        candidates, raw = ["utf-8", "gb18030"], raw[len(codecs.BOM_UTF8) :]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        match = _PROLOG.match(raw[:512])
        declared = match.group(1).decode("ascii").lower() if match else "utf-8"
        declared = "gb18030" if declared in _GB_ENCODINGS else declared
        candidates = list(dict.fromkeys([declared, "utf-8", "gb18030"]))
    for candidate in candidates:
        try:
            return raw.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    raise UnreadableFile(f"{shown}: cannot decode the XML as {' or '.join(candidates)}")


class _CatalogParser:
    """Streams Items out of expat events: `items` holds `{path: text}` per Item, paths
    relative to the Item in lower case (`deviceid`, `info/ptztype`)."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.stack: list[str] = []
        self.text: list[str] = []
        self.item: dict[str, str] | None = None
        self.item_depth = 0
        self.items: list[dict[str, str]] = []
        self.responses = 0
        self.cmd_types: set[str] = set()
        self.root: str | None = None

    def refuse(self, *_: Any) -> None:
        raise HostileXml(
            f"{self.shown}: the XML declares a DTD or entities; refused (a GB/T 28181 "
            "catalogue needs neither)"
        )

    def start(self, name: str, _attributes: dict[str, str]) -> None:
        name = name.rsplit(":", 1)[-1].lower()
        if self.root is None and self.stack:  # the first element inside our wrapper
            self.root = name
        self.stack.append(name)
        self.text = []
        if name in _RESPONSES:
            self.responses += 1
        elif (
            name == "item"
            and self.item is None
            and len(self.stack) >= 2
            and self.stack[-2] == "devicelist"
        ):
            if len(self.items) >= MAX_CATALOG_ITEMS:
                raise UnreadableFile(
                    f"{self.shown}: more than {MAX_CATALOG_ITEMS} items; split the catalogue"
                )
            self.item, self.item_depth = {}, len(self.stack)

    def end(self, _name: str) -> None:
        value = "".join(self.text).strip()
        self.text = []
        if self.item is not None and len(self.stack) > self.item_depth:
            path = "/".join(self.stack[self.item_depth :])
            if value:
                self.item.setdefault(path, value)
        elif self.item is not None and len(self.stack) == self.item_depth:
            self.items.append(self.item)
            self.item = None
        elif self.stack[-1] == "cmdtype" and len(self.stack) >= 2 and self.stack[-2] in _RESPONSES:
            self.cmd_types.add(value)
        self.stack.pop()

    def data(self, text: str) -> None:
        self.text.append(text)


def parse_catalog(raw: bytes, shown: str) -> list[dict[str, str]]:
    """The Items of a Catalog response (or several), as `{path: text}` (see `_CatalogParser`).

    Raises `HostileXml` for a DTD or entity declaration, `UnsupportedFormat` for XML that
    is no GB/T 28181 Response, `UnreadableFile` for malformed XML, a non-Catalog response
    or a file over the limits."""
    if len(raw) > MAX_CATALOG_BYTES:
        raise UnreadableFile(
            f"{shown}: larger than {MAX_CATALOG_BYTES // 2**20} MB; split the catalogue"
        )
    text = decode_catalog(raw, shown)
    handler = _CatalogParser(shown)
    if _DTD.search(text):
        handler.refuse()
    # The text is decoded already: drop the declarations (expat would act on their
    # encoding), and wrap everything so that concatenated documents parse as one.
    text = f"<{_ROOT}>{_DECLARATION.sub('', text)}</{_ROOT}>"
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = handler.refuse
    parser.EntityDeclHandler = handler.refuse
    parser.ExternalEntityRefHandler = handler.refuse
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    parser.CharacterDataHandler = handler.data
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        if handler.responses == 0:
            raise UnsupportedFormat(
                f"cannot read {shown}: not well-formed XML ({expat.errors.messages[exc.code]})"
            ) from None
        raise UnreadableFile(
            f"{shown}: not well-formed XML: {expat.errors.messages[exc.code]} at line {exc.lineno}"
        ) from None
    if handler.responses == 0:
        root = f"<{handler.root}>" if handler.root else "no element"
        raise UnsupportedFormat(
            f"cannot read {shown}: XML, but not a GB/T 28181 Catalog response (its root is "
            f"{root}, expected <Response> with <CmdType>Catalog</CmdType>)"
        )
    others = sorted(handler.cmd_types - {"Catalog"})
    if others:
        raise UnreadableFile(
            f"{shown}: a GB/T 28181 {others[0]} response, not a Catalog one; export the "
            "device catalogue (CmdType Catalog)"
        )
    return handler.items


# -- items into a frame -----------------------------------------------------------------------
def read_catalog(path: str | Path, shown: str) -> tuple[gpd.GeoDataFrame, list[dict[str, Any]]]:
    """The file's Items as a frame (see the module docstring) in the file's coordinates,
    and the row errors found (`{row, field, reason}`, row = item number)."""
    path = Path(path)
    if path.stat().st_size > MAX_CATALOG_BYTES:
        raise UnreadableFile(
            f"{shown}: larger than {MAX_CATALOG_BYTES // 2**20} MB; split the catalogue"
        )
    return catalog_frame(parse_catalog(path.read_bytes(), shown))


def catalog_frame(items: list[dict[str, str]]) -> tuple[gpd.GeoDataFrame, list[dict[str, Any]]]:
    """Items (as `parse_catalog` returns them) into the frame `read_catalog` returns."""
    errors: list[dict[str, Any]] = []
    rows = []
    points = []
    for number, item in enumerate(items, start=1):
        device_id = item.get("deviceid")
        kind_of_item = item_type(device_id)
        row, point = _item_row(item, number, errors if kind_of_item == CAMERA_ITEM else [])
        rows.append(row | {ITEM_TYPE_COLUMN: kind_of_item})
        points.append(point)
    columns = [
        "gb_id",
        "name",
        "kind",
        "status",
        "county_code",
        "azimuth_deg",
        "resolution_h_px",
        ITEM_TYPE_COLUMN,
    ]
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    frame.index = pd.RangeIndex(1, len(items) + 1, name="item")
    geometry = np.empty(len(points), dtype=object)
    geometry[:] = points
    return gpd.GeoDataFrame(frame, geometry=geometry), errors


_ErrorSink = Callable[[str, str], None]


def _item_row(
    item: dict[str, str], number: int, errors: list[dict[str, Any]]
) -> tuple[dict[str, Any], shapely.Point | None]:
    def error(field: str, reason: str) -> None:
        errors.append({"row": number, "field": field, "reason": reason})

    def info(name: str) -> str | None:
        return item.get(f"info/{name}", item.get(name))

    device_id = item.get("deviceid")
    kind = info("ptztype")
    if kind is not None:
        if kind not in PTZ_TYPE_KINDS:
            error(
                "kind", f"Info/PTZType {kind!r} is not 1-4 (1 球机, 2 半球, 3 固定枪机, 4 遥控枪机)"
            )
        kind = PTZ_TYPE_KINDS.get(kind)
    try:
        azimuth = direction_type_azimuth(info("directiontype"))
    except ValueError as exc:
        error("azimuth_deg", f"Info/{exc}")
        azimuth = None
    status = item.get("status")
    status = STATUS_WORDS.get(status.lower(), status) if status is not None else None
    row = {
        "gb_id": device_id,
        "name": item.get("name"),
        "kind": kind,
        "status": status,
        "county_code": _county(item.get("civilcode"), device_id, error),
        "azimuth_deg": azimuth,
        "resolution_h_px": info("resolution"),
    }
    return row, _point(item, error)


def _county(civil: str | None, device_id: str | None, error: _ErrorSink) -> str | None:
    """The county a CivilCode names (None when it names a wider region, or is absent);
    a CivilCode disagreeing with the DeviceID's region is an error naming both."""
    if civil is None or not re.fullmatch(r"[0-9]{2,12}", civil):
        if civil is not None:
            error("county_code", f"CivilCode {civil!r} is not a division code")
        return None
    county = civil[:6] if len(civil) >= 6 and not civil[:6].endswith("00") else None
    # the CivilCode's own region, without the 00 pairs of wider ones (433100 -> 4331)
    region = county or re.sub(r"(00)+$", "", civil[:6])
    if device_id is None or not re.fullmatch(r"[0-9]{20}", device_id):
        return county
    if not device_id.startswith(region):
        error(
            "county_code",
            f"CivilCode {civil} does not match the DeviceID {device_id}: the CivilCode names "
            f"{'county' if county else 'region'} {region}, the DeviceID's digits 1-6 are "
            f"{device_id[:6]}",
        )
        return None  # the id's county stands; the error rejects the row
    return county


def _point(item: dict[str, str], error: _ErrorSink) -> shapely.Point | None:
    lon, lat = item.get("longitude"), item.get("latitude")
    if lon is None or lat is None:
        error("geometry", "Longitude and Latitude missing")
        return None
    try:
        x, y = float(lon), float(lat)
    except ValueError:
        error("geometry", f"Longitude {lon!r} and Latitude {lat!r} must both be numbers")
        return None
    if not (math.isfinite(x) and math.isfinite(y)):
        error("geometry", f"Longitude {lon!r} and Latitude {lat!r} must both be numbers")
        return None
    if x == 0 and y == 0:
        error("geometry", "Longitude and Latitude are 0 (the platform has no position for it)")
        return None
    return shapely.Point(x, y)
