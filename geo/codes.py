"""Division codes, grid codes and GB/T 28181 device ids.

Division codes (统计用区划代码) are strings of ASCII digits whose length gives the
level: 6 digits county (``433101``) or, when digits 5-6 are ``00``, the prefecture
(``433100``); 9 digits township (county + 3); 12 digits village (township + 3).
A grid code is the 12-digit village code plus a 3-digit sequence ``001``-``999``
(15 digits). Village sequences ``001``-``199`` are residents' committees (urban
社区/居委会), ``200``-``399`` villagers' committees (rural 村委会).

GB/T 28181 device ids are 20 ASCII digits: 1-8 centre code (1-6 the
administrative region, 7-8 the grassroots unit), 9-10 industry, 11-13 type
(131 camera, 132 IP camera, ...), 14 network, 15-20 serial number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CAMERA_TYPE_CODES",
    "GBDeviceId",
    "Level",
    "admin_level",
    "grid_code",
    "is_urban_village",
    "make_gb28181",
    "parent_code",
    "parse_gb28181",
    "validate_camera_gb_id",
    "validate_grid_code",
]

Level = Literal["prefecture", "county", "township", "village", "grid"]

_LEVEL_BY_LENGTH: dict[int, Level] = {6: "county", 9: "township", 12: "village", 15: "grid"}
CAMERA_TYPE_CODES: frozenset[str] = frozenset({"131", "132"})
"""GB/T 28181 type codes (digits 11-13) of cameras: 131 camera, 132 IP camera."""


def _digits(value: object, n: int | None = None) -> bool:
    # str.isdigit() also accepts e.g. full-width or superscript digits; ids must be ASCII.
    if not isinstance(value, str):
        return False
    pattern = r"[0-9]+" if n is None else rf"[0-9]{{{n}}}"
    return re.fullmatch(pattern, value) is not None


def admin_level(code: str) -> Level:
    """Level of a division or grid code, from its length.

    6 digits -> ``'county'`` (``'prefecture'`` when digits 5-6 are ``00``, e.g.
    ``433100``), 9 -> ``'township'``, 12 -> ``'village'``, 15 -> ``'grid'``.
    Raises ``ValueError`` for anything else, including province codes (``430000``).
    """
    if not _digits(code) or len(code) not in _LEVEL_BY_LENGTH:
        raise ValueError(f"not a division or grid code: {code!r} (6, 9, 12 or 15 digits)")
    if len(code) == 6 and code.endswith("00"):
        if code.endswith("0000"):
            raise ValueError(f"province codes are not supported: {code!r}")
        return "prefecture"
    return _LEVEL_BY_LENGTH[len(code)]


def parent_code(code: str) -> str:
    """Code of the unit one level up.

    grid -> its 12-digit village, village -> 9-digit township, township -> 6-digit
    county, county -> its prefecture (digits 1-4 + ``00``), prefecture -> its
    province (digits 1-2 + ``0000``). Raises ``ValueError`` for invalid codes.
    """
    level = admin_level(code)
    if level == "prefecture":
        return code[:2] + "0000"
    if level == "county":
        return code[:4] + "00"
    return code[: len(code) - 3]


def is_urban_village(code: str) -> bool:
    """True for an urban village-level unit (sequence ``001``-``199``, 社区/居委会).

    ``code`` is a 12-digit village code (a 15-digit grid code is judged by its
    village). Raises ``ValueError`` for other codes.
    """
    level = admin_level(code)
    if level == "grid":
        code = code[:12]
    elif level != "village":
        raise ValueError(f"not a village or grid code: {code!r}")
    return 1 <= int(code[9:12]) <= 199


def grid_code(village_code: str, seq: int) -> str:
    """The 15-digit grid code for sequence ``seq`` (1-999) in a 12-digit village."""
    if not _digits(village_code, 12):
        raise ValueError(f"village code must be 12 digits, got {village_code!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= 999:
        raise ValueError(f"grid sequence must be an integer 1-999, got {seq!r}")
    return f"{village_code}{seq:03d}"


def validate_grid_code(code: object, village_code: str | None = None) -> str | None:
    """Why ``code`` is not a valid grid code (of ``village_code``, when given), or None.

    A valid grid code is 15 ASCII digits whose township (digits 7-9), village
    (10-12) and grid (13-15) sequences are not ``000``, and whose first 12 digits
    equal ``village_code`` when that is given.
    """
    if not isinstance(code, str):
        return f"grid code must be a string, got {type(code).__name__}"
    if not _digits(code, 15):
        return f"grid code must be 15 ASCII digits (12-digit village code + 3), got {code!r}"
    if code[6:9] == "000":
        return f"grid code {code}: township part (digits 7-9) is 000"
    if code[9:12] == "000":
        return f"grid code {code}: village part (digits 10-12) is 000"
    if code[12:] == "000":
        return f"grid code {code}: grid sequence (digits 13-15) is 000, use 001-999"
    if village_code is not None and code[:12] != village_code:
        return f"grid code {code} does not belong to village {village_code}"
    return None


@dataclass(frozen=True, slots=True)
class GBDeviceId:
    """The parts of a 20-digit GB/T 28181 device id (all strings of ASCII digits)."""

    center_code: str  # digits 1-8: region (1-6) + grassroots unit (7-8)
    region_code: str  # digits 1-6: administrative division (the county for cameras)
    industry: str  # digits 9-10
    type_code: str  # digits 11-13: 131 camera, 132 IP camera, 118 NVR, ...
    network: str  # digit 14
    serial: str  # digits 15-20

    @property
    def device_id(self) -> str:
        """The full 20-digit id."""
        return f"{self.center_code}{self.industry}{self.type_code}{self.network}{self.serial}"

    @property
    def is_camera(self) -> bool:
        return self.type_code in CAMERA_TYPE_CODES

    def __str__(self) -> str:
        return self.device_id


def parse_gb28181(device_id: str) -> GBDeviceId:
    """Split a GB/T 28181 device id; ``ValueError`` unless it is 20 ASCII digits."""
    if not _digits(device_id, 20):
        raise ValueError(f"GB/T 28181 id must be 20 ASCII digits, got {device_id!r}")
    return GBDeviceId(
        center_code=device_id[0:8],
        region_code=device_id[0:6],
        industry=device_id[8:10],
        type_code=device_id[10:13],
        network=device_id[13],
        serial=device_id[14:20],
    )


def validate_camera_gb_id(device_id: object, county_code: str | None = None) -> list[str]:
    """Reasons why ``device_id`` is not a valid camera id (empty list when valid).

    Checks: 20 ASCII digits; type code (digits 11-13) 131 or 132; and, when the
    camera's ``county_code`` is given, region digits 1-6 equal to it.
    """
    if not isinstance(device_id, str):
        return [f"GB/T 28181 id must be a string, got {type(device_id).__name__}"]
    if not _digits(device_id, 20):
        return [
            f"GB/T 28181 id must be 20 ASCII digits, got {len(device_id)} characters {device_id!r}"
        ]
    parts = parse_gb28181(device_id)
    reasons: list[str] = []
    if not parts.is_camera:
        reasons.append(
            f"type code (digits 11-13) is {parts.type_code}, not a camera "
            "(131 camera or 132 IP camera)"
        )
    if county_code is not None and parts.region_code != county_code:
        reasons.append(
            f"region code (digits 1-6) {parts.region_code} does not match "
            f"the camera's county {county_code}"
        )
    return reasons


def make_gb28181(
    region_code: str,
    type_code: str | int,
    serial: str | int,
    industry: str = "00",
    network: str = "0",
) -> str:
    """Assemble a 20-digit GB/T 28181 id.

    ``region_code``: 6-digit division code (grassroots unit ``00`` appended) or the
    full 8-digit centre code; ``type_code``: 3 digits (e.g. 131, 132); ``serial``:
    0-999999 or a 6-digit string; ``industry``: 2 digits; ``network``: 1 digit.
    Raises ``ValueError`` for a part of the wrong shape.
    """
    if _digits(region_code, 6):
        center = region_code + "00"
    elif _digits(region_code, 8):
        center = region_code
    else:
        raise ValueError(f"region code must be 6 or 8 digits, got {region_code!r}")
    type_str = _fixed(type_code, 3, "type code")
    serial_str = _fixed(serial, 6, "serial")
    if not _digits(industry, 2):
        raise ValueError(f"industry code must be 2 digits, got {industry!r}")
    if not _digits(network, 1):
        raise ValueError(f"network code must be 1 digit, got {network!r}")
    return f"{center}{industry}{type_str}{network}{serial_str}"


def _fixed(value: str | int, width: int, what: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be {width} digits, got {value!r}")
    if isinstance(value, int):
        if not 0 <= value < 10**width:
            raise ValueError(f"{what} must be 0-{10**width - 1}, got {value}")
        return f"{value:0{width}d}"
    if not _digits(value, width):
        raise ValueError(f"{what} must be {width} digits, got {value!r}")
    return value
