"""Users' vector files (GeoJSON, GeoPackage, Shapefile, CSV) read into WGS84 frames.

Every importer (grids, admin areas, later cameras and roads) starts here: one function,
`read_vector_file`, turns a file into a GeoDataFrame in EPSG:4326 whose index holds the
file's own row numbers, so that errors found later name the row the user can find:

- GeoJSON, GeoPackage, Shapefile: the 1-based feature index (order in the file), index
  name `"feature"`;
- CSV: the physical line number of the record (the header is line 1), index name `"line"`;
- GB/T 28181 Catalog XML (cameras): the 1-based `<Item>` number, index name `"item"`
  (`api.services.gb28181_catalog`).

Which coordinates the file holds is decided in this order: an explicit `coord_sys`
(`wgs84`, `cgcs2000`, `gcj02`, `bd09` or `EPSG:nnnn`) wins over what the file declares,
because files of Chinese web maps hold GCJ-02/BD-09 coordinates while declaring WGS84;
otherwise the file's declared CRS; otherwise WGS84. GDAL formats are read with pyogrio.
CSV is read with Python's csv module instead, which gives exact line numbers (quoted
fields may span lines), a per-row error for an unparsable WKT value where GDAL would
silently drop the geometry, and GB18030 files as Excel in China writes them.
"""

from __future__ import annotations

import csv
import io
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
import pyogrio.raw
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from api.errors import GridcoverError
from api.services.validation import swap_hint, swapped_into_xiangxi
from api.settings import DEFAULT_MAX_GEOMETRY_VERTICES
from geo.crs import DEFAULT_MAX_SEGMENT_M, UnknownCoordSys, convert_geometry, parse_coord_sys

# One CSV cell may hold a whole WKT outline (up to GRIDCOVER_MAX_GEOMETRY_VERTICES vertices,
# megabytes of text), far over the csv module's default cell limit of 128 KiB, which refused
# such files outright. The upload limit bounds the file, and so every cell, already.
csv.field_size_limit(2**31 - 1)

SUPPORTED_FORMATS = (
    "GeoJSON (.geojson, .json), GeoPackage (.gpkg), Shapefile (.shp, or a .zip holding one), "
    "CSV (.csv) with a WKT column or lon/lat columns, or (cameras) a GB/T 28181 Catalog "
    "response (.xml)"
)

# Zip archives are unpacked to disk before GDAL sees them, within these limits, so that a
# small upload cannot expand into gigabytes (a "zip bomb") or write outside its folder.
# Module-level so that tests (and a deployment) can lower or raise them.
MAX_ZIP_MEMBERS = 1000
MAX_UNZIPPED_BYTES = 1024 * 1024 * 1024
# Deflate packs at most ~1030:1 (long runs of one byte: bomb padding, never a shapefile);
# bzip2 and LZMA, which zip also allows, go far higher. Entries smaller than
# MAX_ZIP_RATIO_FROM_BYTES unpacked are harmless at any ratio.
MAX_ZIP_RATIO = 1000
MAX_ZIP_RATIO_FROM_BYTES = 1024 * 1024

# CSV column names (case-insensitive) holding the geometry, in order of preference.
WKT_COLUMNS = ("wkt", "geometry", "geom", "the_geom", "shape")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "x", "经度")
LAT_COLUMNS = ("lat", "latitude", "y", "纬度")

_WGS84_LIKE = frozenset({"wgs84", "cgcs2000", "EPSG:4326", "EPSG:4490"})
_ZIP_JUNK = ("__MACOSX/", "._")


class UnreadableFile(GridcoverError):
    """The file exists in a known format but cannot be read (HTTP 400)."""


class UnsupportedFormat(GridcoverError):
    """The file is of a format gridcover does not read (HTTP 415)."""


class LayerChoice(UnreadableFile):
    """The file holds several layers and none, or an unknown one, was chosen."""

    def __init__(self, message: str, layers: list[str]) -> None:
        super().__init__(message)
        self.layers = layers


class ArchiveTooLarge(UnreadableFile):
    """A zip that would unpack to too much (a zip bomb): HTTP 413, naming the entry."""


class BadCoordSys(GridcoverError):
    """The `coord_sys` option is not one gridcover knows (HTTP 400)."""


@dataclass
class VectorFile:
    """A file read into WGS84, with what was learnt on the way.

    `frame` is in EPSG:4326, 2-D, with a `geometry` column; its index holds the source
    row numbers (see the module docstring) and is named after `row_kind`. Rows whose
    geometry could not be read have a missing geometry and an entry in `errors`
    (`{"row", "field", "reason"}`), so an importer can report them with the rest.
    """

    frame: gpd.GeoDataFrame
    name: str
    format: str
    layer: str | None
    coords: str  # what the coordinates were taken to be, e.g. "gcj02 (coord_sys)"
    row_kind: str  # "feature" or "line"
    errors: list[dict[str, Any]] = field(default_factory=list)


def normalise_coord_sys(value: str | None) -> str | None:
    """`parse_coord_sys` with EPSG codes allowed, raising a `GridcoverError` when unknown."""
    if value is None or not str(value).strip():
        return None
    try:
        return parse_coord_sys(value, allow_epsg=True)
    except UnknownCoordSys as exc:
        raise BadCoordSys(str(exc)) from None


def read_vector_file(
    path: str | Path,
    *,
    coord_sys: str | None = None,
    layer: str | None = None,
    name: str | None = None,
    encoding: str | None = None,
    max_vertices: int = DEFAULT_MAX_GEOMETRY_VERTICES,
) -> VectorFile:
    """Read `path` (GeoJSON, GeoPackage, .shp, .zip holding a .shp, CSV) into WGS84.

    `coord_sys` says what the coordinates are; it overrides the file's declared CRS (see
    the module docstring). `layer` picks a layer of a GeoPackage, or a shapefile of a zip
    holding several. `name` is the name to show in messages (an upload's original name).
    `encoding` overrides the text encoding of CSV and of shapefiles without a .cpg.
    A geometry of more than `max_vertices` positions is a row error.

    Raises `UnsupportedFormat`, `UnreadableFile` (incl. `LayerChoice`) or `BadCoordSys`.
    """
    path = Path(path)
    shown = name or path.name
    explicit = normalise_coord_sys(coord_sys)
    if not path.is_file():
        raise UnreadableFile(f"no file at {path}")
    kind = detect_format(path, shown)
    if kind == "zip":
        with unpacked_zip(path, shown) as folder:
            member, layer = _pick_zip_member(folder, shown, layer)
            return read_vector_file(
                member,
                coord_sys=coord_sys,
                layer=layer,
                name=shown,
                encoding=encoding,
                max_vertices=max_vertices,
            )
    if kind == "csv":
        frame, declared, errors = _read_csv(path, shown, encoding)
        fmt, row_kind, chosen_layer = "CSV", "line", None
    elif kind == "xml":
        # imported here: the catalogue reader builds on this module's errors
        from api.services.gb28181_catalog import read_catalog

        frame, errors = read_catalog(path, shown)
        declared, fmt, row_kind, chosen_layer = None, _FORMAT_NAMES[kind], "item", None
    else:
        chosen_layer = _pick_layer(path, shown, layer) if kind == "gpkg" else None
        frame, errors = _read_with_gdal(path, shown, kind, chosen_layer, encoding)
        declared = frame.crs
        fmt, row_kind = _FORMAT_NAMES[kind], "feature"
        frame.index = pd.RangeIndex(1, len(frame) + 1)
    frame.index.name = row_kind
    frame, coords = _to_wgs84(frame, declared, explicit, shown, errors, max_vertices)
    return VectorFile(frame, shown, fmt, chosen_layer, coords, row_kind, errors)


_FORMAT_NAMES = {
    "geojson": "GeoJSON",
    "gpkg": "GeoPackage",
    "shp": "Shapefile",
    "csv": "CSV",
    "xml": "GB/T 28181 Catalog",
}
_EXTENSIONS = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".gpkg": "gpkg",
    ".shp": "shp",
    ".zip": "zip",
    ".csv": "csv",
    ".txt": "csv",
    ".xml": "xml",
}


def detect_format(path: Path, shown: str | None = None) -> str:
    """`geojson`, `gpkg`, `shp`, `zip`, `csv` or `xml` (a GB/T 28181 Catalog), from the
    file's first bytes, else its name."""
    with path.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(b"SQLite format 3\x00"):
        return "gpkg"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x00\x00\x27\x0a"):  # the shapefile magic number, 9994 big-endian
        return "shp"
    suffix = Path(shown or path.name).suffix.lower() or path.suffix.lower()
    # GDAL picks its driver from the content, so GeoJSON must look like JSON: a file named
    # .geojson holding, say, an OGR VRT would otherwise read other files of the server.
    text_head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text_head.startswith(b"{"):
        return "geojson"
    if text_head.startswith((b"<?xml", b"<Response")) or (
        suffix == ".xml" and text_head.startswith((b"<", b"\xff\xfe<\x00", b"\xfe\xff\x00<"))
    ):
        return "xml"  # a GB/T 28181 Catalog (UTF-8, GB18030 or, by name only, UTF-16)
    if _EXTENSIONS.get(suffix) == "csv":
        return "csv"
    if suffix in _EXTENSIONS:  # named .geojson/.gpkg/.zip/.shp without their first bytes
        raise UnreadableFile(f"{shown}: not a valid {suffix[1:]} file (its first bytes are wrong)")
    raise UnsupportedFormat(f"cannot read {shown}: use {SUPPORTED_FORMATS}")


# -- zip ----------------------------------------------------------------------------------
@contextmanager
def unpacked_zip(path: Path, shown: str) -> Iterator[Path]:
    """Unpack a zip into a temporary folder, refusing bombs and paths leaving the folder."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableFile(f"{shown}: not a readable zip archive ({exc})") from None
    folder = Path(tempfile.mkdtemp(prefix="gridcover_zip_"))
    try:
        with archive:
            members = archive.infolist()
            _refuse_bomb(members, shown)
            # The declared sizes refuse bombs before anything is unpacked; they can lie,
            # so the bytes actually written are counted too.
            written = 0
            for member in members:
                target = _zip_target(folder, member, shown)
                if target is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as source, target.open("wb") as sink:
                        while chunk := source.read(1 << 20):
                            written += len(chunk)
                            if written > MAX_UNZIPPED_BYTES:
                                raise _zip_too_big(shown, _zip_member_name(member))
                            sink.write(chunk)
                except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
                    # RuntimeError: encrypted members; BadZipFile: CRC mismatch
                    raise UnreadableFile(
                        f"{shown}: cannot unpack {member.filename}: {exc}"
                    ) from None
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _refuse_bomb(members: list[zipfile.ZipInfo], shown: str) -> None:
    """`ArchiveTooLarge` for too many entries, too many bytes declared in all, or an entry
    packed more densely than real data ever is."""
    if len(members) > MAX_ZIP_MEMBERS:
        raise ArchiveTooLarge(
            f"{shown}: the zip holds {len(members)} entries, more than the "
            f"{MAX_ZIP_MEMBERS} allowed"
        )
    declared = 0
    for member in members:
        declared += member.file_size
        if declared > MAX_UNZIPPED_BYTES:
            raise _zip_too_big(shown, _zip_member_name(member))
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > MAX_ZIP_RATIO_FROM_BYTES and ratio > MAX_ZIP_RATIO:
            raise ArchiveTooLarge(
                f"{shown}: the zip entry {_zip_member_name(member)} unpacks "
                f"{ratio:,.0f} times its packed size ({member.file_size:,} bytes); refused "
                "as a zip bomb"
            )


def _zip_too_big(shown: str, entry: str) -> ArchiveTooLarge:
    return ArchiveTooLarge(
        f"{shown}: the zip unpacks to more than {MAX_UNZIPPED_BYTES // (1024 * 1024)} MB "
        f"(at the entry {entry}); refused: split it, or send the files uncompressed"
    )


def _zip_member_name(member: zipfile.ZipInfo) -> str:
    """The member's name; zips made on Chinese Windows store GBK names without saying so."""
    name = member.filename
    if member.flag_bits & 0x800:  # the UTF-8 flag: the name was decoded correctly
        return name
    try:
        return name.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _zip_target(folder: Path, member: zipfile.ZipInfo, shown: str) -> Path | None:
    """Where to unpack `member`, or None to skip it; refuses links and escaping paths."""
    name = _zip_member_name(member).replace("\\", "/")
    if member.is_dir() or any(part in name for part in _ZIP_JUNK):
        return None
    if stat.S_ISLNK(member.external_attr >> 16):
        raise UnreadableFile(f"{shown}: the zip entry {name} is a symbolic link; refused")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or ":" in pure.parts[0]:
        raise UnreadableFile(f"{shown}: the zip entry {name} points outside its folder; refused")
    target = (folder / pure).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise UnreadableFile(f"{shown}: the zip entry {name} points outside its folder; refused")
    return target


def _pick_zip_member(folder: Path, shown: str, layer: str | None) -> tuple[Path, str | None]:
    """The shapefile (or other supported file) in an unpacked zip; `layer` picks one by name.

    Returns the file and the layer option left for it (a GeoPackage's layer).
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    shapefiles = [p for p in files if p.suffix.lower() == ".shp"]
    if shapefiles:
        if len(shapefiles) == 1 and layer in (None, shapefiles[0].stem):
            return shapefiles[0], None
        stems = [p.stem for p in shapefiles]
        chosen = [p for p in shapefiles if p.stem == layer]
        if not chosen:
            what = f"no shapefile named {layer!r}" if layer else "several shapefiles"
            raise LayerChoice(
                f"{shown}: the zip holds {what}; choose one with layer: {', '.join(stems)}",
                stems,
            )
        return chosen[0], None
    others = [
        p for p in files if _EXTENSIONS.get(p.suffix.lower()) in ("geojson", "gpkg", "csv", "xml")
    ]
    if len(others) == 1:
        return others[0], layer
    if not others:
        raise UnsupportedFormat(f"{shown}: the zip holds no shapefile (.shp) or other vector file")
    raise UnreadableFile(
        f"{shown}: the zip holds several files ({', '.join(p.name for p in others)}); "
        "send one at a time"
    )


# -- GDAL formats -------------------------------------------------------------------------
def _gdal_message(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_GDAL_ERRORS = (
    pyogrio.errors.DataSourceError,
    pyogrio.errors.DataLayerError,
    pyogrio.errors.FieldError,
    pyogrio.errors.FeatureError,
    pyogrio.errors.GeometryError,
    pyogrio.errors.CRSError,
    OSError,
)


def _pick_layer(path: Path, shown: str, layer: str | None) -> str | None:
    """The GeoPackage layer to read: the one named, or the only one holding geometry."""
    try:
        listed = pyogrio.list_layers(path)
    except _GDAL_ERRORS as exc:
        raise UnreadableFile(f"cannot read {shown} as GeoPackage: {_gdal_message(exc)}") from None
    names = [str(n) for n, _ in listed]
    spatial = [str(n) for n, geometry_type in listed if geometry_type]
    if layer is not None:
        if layer not in names:
            raise LayerChoice(
                f"{shown} has no layer {layer!r}; its layers: {', '.join(names) or 'none'}",
                names,
            )
        return layer
    if len(spatial) == 1:
        return spatial[0]
    if not spatial:
        raise UnreadableFile(f"{shown} holds no layer with geometry")
    raise LayerChoice(
        f"{shown} holds several layers; choose one with layer: {', '.join(spatial)}", spatial
    )


def _read_with_gdal(
    path: Path, shown: str, kind: str, layer: str | None, encoding: str | None
) -> tuple[gpd.GeoDataFrame, list[dict[str, Any]]]:
    """The frame and the row errors of geometries that GDAL reads but GEOS refuses."""
    errors: list[dict[str, Any]] = []
    try:
        try:
            frame = pyogrio.read_dataframe(path, layer=layer, encoding=encoding)
        except shapely.errors.GEOSException:
            frame, errors = _read_refused_geometries(path, layer, encoding)
    except _GDAL_ERRORS as exc:
        hint = (
            " (a shapefile needs its .shx and .dbf beside it: send a .zip holding all of them)"
            if kind == "shp"
            else ""
        )
        raise UnreadableFile(
            f"cannot read {shown} as {_FORMAT_NAMES[kind]}: {_gdal_message(exc)}{hint}"
        ) from None
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name is None:
        raise UnreadableFile(f"{shown} has no geometry column")
    if frame.geometry.name != "geometry":
        frame = frame.rename_geometry("geometry")
    return frame, errors


def _read_refused_geometries(
    path: Path, layer: str | None, encoding: str | None
) -> tuple[gpd.GeoDataFrame, list[dict[str, Any]]]:
    """Read a file holding geometries GEOS refuses (an unclosed ring, a ring of two
    points): those are left missing, each with a row error saying why."""
    meta, _, wkb, _ = pyogrio.raw.read(path, layer=layer, encoding=encoding, columns=[])
    attributes = pyogrio.read_dataframe(path, layer=layer, encoding=encoding, read_geometry=False)
    geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    errors = []
    for position in np.flatnonzero(pd.notna(wkb) & shapely.is_missing(geoms)):
        try:
            shapely.from_wkb(wkb[position])
        except shapely.errors.GEOSException as exc:
            reason = str(exc).split(": ", 1)[-1]  # without GEOS's exception class name
            errors.append({"row": int(position) + 1, "field": "geometry", "reason": reason})
    return gpd.GeoDataFrame(attributes, geometry=geoms, crs=meta["crs"]), errors


# -- CSV ----------------------------------------------------------------------------------
def _decode(raw: bytes, shown: str, encoding: str | None) -> str:
    """UTF-8 (with or without Excel's BOM), else GB18030, the superset of GBK."""
    for candidate in [encoding] if encoding else ["utf-8-sig", "gb18030"]:
        try:
            return raw.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    raise UnreadableFile(
        f"{shown}: cannot decode the text as {encoding or 'UTF-8 or GB18030'}; save it as UTF-8"
    )


def _delimiter(header_line: str) -> str:
    """The delimiter of a CSV, judged on the header alone: WKT values are full of commas."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _find_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in reversed(columns)}
    for candidate in names:
        if candidate in lowered:
            return lowered[candidate]
    return None


def _read_csv(
    path: Path, shown: str, encoding: str | None
) -> tuple[gpd.GeoDataFrame, CRS | None, list[dict[str, Any]]]:
    text = _decode(path.read_bytes(), shown, encoding)
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    if not first_line:
        raise UnreadableFile(f"{shown} is empty")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    header: list[str] | None = None
    lines: list[int] = []
    records: list[list[str]] = []
    errors: list[dict[str, Any]] = []
    try:
        while True:
            start = reader.line_num + 1  # the record's first physical line
            try:
                record = next(reader)
            except StopIteration:
                break
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                continue
            if len(record) > len(header):
                errors.append(
                    {
                        "row": start,
                        "field": "fields",
                        "reason": f"has {len(record)} fields, the header {len(header)}",
                    }
                )
                record = record[: len(header)]
            lines.append(start)
            records.append(record + [""] * (len(header) - len(record)))
    except csv.Error as exc:
        raise UnreadableFile(f"{shown}: line {reader.line_num}: {exc}") from None
    assert header is not None  # the first non-blank line exists
    frame = pd.DataFrame(records, columns=header, dtype=object).replace({"": None})
    frame = frame.map(lambda v: (v.strip() or None) if isinstance(v, str) else v)
    frame.index = pd.Index(lines)
    declared: CRS | None = None
    wkt_column = _find_column(header, WKT_COLUMNS)
    if wkt_column is not None:
        geoms, declared = _parse_wkt(frame[wkt_column], shown, errors)
        frame = frame.drop(columns=[wkt_column])
    else:
        lon_column = _find_column(header, LON_COLUMNS)
        lat_column = _find_column(header, LAT_COLUMNS)
        if lon_column is None or lat_column is None:
            raise UnreadableFile(
                f"{shown} has no geometry: a CSV needs a WKT column ({', '.join(WKT_COLUMNS)}) "
                f"or lon and lat columns; its columns: {', '.join(header)}"
            )
        geoms = _parse_points(frame, lon_column, lat_column, errors)
        frame = frame.drop(columns=[lon_column, lat_column])
    return gpd.GeoDataFrame(frame, geometry=geoms), declared, errors


def _parse_wkt(
    values: pd.Series, shown: str, errors: list[dict[str, Any]]
) -> tuple[np.ndarray, CRS | None]:
    """Geometries from WKT or EWKT (`SRID=4490;POLYGON(...)`); bad values become row errors."""
    texts = values.to_numpy(dtype=object)
    srids: set[str] = set()
    for i, value in enumerate(texts):
        if isinstance(value, str) and value[:5].upper() == "SRID=" and ";" in value:
            srid, texts[i] = value[5:].split(";", 1)
            srids.add(srid.strip())
    geoms = shapely.from_wkt(texts, on_invalid="ignore")
    for row, value, geom in zip(values.index, texts, geoms, strict=True):
        if value is not None and geom is None:
            snippet = value if len(value) <= 40 else value[:37] + "..."
            errors.append(
                {"row": int(row), "field": "geometry", "reason": f"not valid WKT: {snippet!r}"}
            )
    declared = None
    if len(srids) == 1:
        try:
            declared = CRS.from_epsg(int(srids.pop()))
        except (CRSError, ValueError):
            raise UnreadableFile(f"{shown}: the EWKT SRID is not a known EPSG code") from None
    elif len(srids) > 1:
        raise UnreadableFile(f"{shown}: rows declare different SRIDs ({', '.join(sorted(srids))})")
    return geoms, declared


def _parse_points(
    frame: pd.DataFrame, lon_column: str, lat_column: str, errors: list[dict[str, Any]]
) -> np.ndarray:
    lon = pd.to_numeric(frame[lon_column], errors="coerce").to_numpy(float)
    lat = pd.to_numeric(frame[lat_column], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(lon) & np.isfinite(lat))
    for row in frame.index[bad]:
        errors.append(
            {"row": int(row), "field": "geometry", "reason": "lon and lat must both be numbers"}
        )
    geoms = shapely.points(lon, lat)
    geoms[bad] = None
    return geoms


# -- coordinates --------------------------------------------------------------------------
def _declared_coord_sys(crs: CRS | None) -> str | None:
    """`EPSG:nnnn` for a declared CRS PROJ can name, None for none."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    if (
        epsg is None
        and crs.is_geographic
        and crs.equals(CRS.from_epsg(4326), ignore_axis_order=True)
    ):
        epsg = 4326  # OGC:CRS84, what GDAL reports for GeoJSON
    return f"EPSG:{epsg}" if epsg is not None else None


def _to_wgs84(
    frame: gpd.GeoDataFrame,
    declared: CRS | None,
    explicit: str | None,
    shown: str,
    errors: list[dict[str, Any]],
    max_vertices: int,
) -> tuple[gpd.GeoDataFrame, str]:
    """Convert `frame` to EPSG:4326 (2-D); returns it and what the coordinates were."""
    given = frame.geometry.to_numpy()
    with_heights = int(np.count_nonzero(shapely.has_z(given)))
    geoms = _drop_huge(shapely.force_2d(given), frame.index, errors, max_vertices)
    declared_name = _declared_coord_sys(declared)
    if explicit is not None:
        source = explicit
        coords = f"{explicit} (coord_sys)"
        if declared is not None and (declared_name or declared.name) not in _WGS84_LIKE | {source}:
            coords += f", overriding the declared {declared_name or declared.name}"
    elif declared_name is not None:
        source, coords = declared_name, f"{declared_name} (declared by the file)"
    elif declared is not None:
        source, coords = "", f"{declared.name} (declared by the file)"
    else:
        source, coords = "wgs84", "wgs84 (default)"
    if with_heights:
        rows = "1 row" if with_heights == 1 else f"{with_heights} rows"
        coords += f"; heights (z) dropped from {rows}: only lon/lat are kept"
    if source in _WGS84_LIKE:
        converted = geoms
    elif source:
        # A straight edge in the source is a curve in WGS84 (GCJ-02 and projections are
        # non-linear): densify first so the converted edge follows it (DESIGN.md).
        converted = convert_geometry(geoms, source, "wgs84", max_segment_m=DEFAULT_MAX_SEGMENT_M)
    else:
        # A CRS without an EPSG code (a custom .prj): PROJ converts it directly.
        series = gpd.GeoSeries(geoms, crs=declared)
        if declared.is_projected:
            series = series.segmentize(DEFAULT_MAX_SEGMENT_M)
        converted = series.to_crs(4326).to_numpy()
    converted = _drop_impossible(converted, geoms, frame.index, errors)
    if len(converted) and _all_off_the_globe(errors, len(converted)):
        raise UnreadableFile(
            f"{shown}: no coordinate is a longitude/latitude; they look projected: say which "
            "CRS with coord_sys (e.g. EPSG:4546)"
        )
    out = gpd.GeoDataFrame(frame.drop(columns=[frame.geometry.name]), geometry=converted, crs=4326)
    out.index = frame.index
    return out, coords


_OFF_GLOBE = "coordinates are not longitude/latitude (projected? say which CRS with coord_sys)"


def _drop_huge(
    geoms: np.ndarray, rows: pd.Index, errors: list[dict[str, Any]], max_vertices: int
) -> np.ndarray:
    """Blank out geometries of more than `max_vertices` positions (before any conversion
    densifies them further)."""
    counts = shapely.get_num_coordinates(geoms)
    huge = np.flatnonzero(counts > max_vertices)
    if not huge.size:
        return geoms
    for position in huge:
        errors.append(
            {
                "row": int(rows[position]),
                "field": "geometry",
                "reason": f"{counts[position]} positions; at most {max_vertices} per geometry "
                "(GRIDCOVER_MAX_GEOMETRY_VERTICES): simplify it",
            }
        )
    geoms = np.asarray(geoms, dtype=object).copy()
    geoms[huge] = None
    return geoms


def _drop_impossible(
    geoms: np.ndarray, original: np.ndarray, rows: pd.Index, errors: list[dict[str, Any]]
) -> np.ndarray:
    """Blank out geometries whose converted coordinates are not on the globe; say so when
    the file's own coordinates lie in Xiangxi with lon and lat swapped."""
    geoms = np.asarray(geoms, dtype=object)
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    if not present.any():
        return geoms
    bounds = shapely.bounds(geoms[present])
    with np.errstate(invalid="ignore"):
        ok = (
            np.isfinite(bounds).all(axis=1)
            & (bounds[:, 0] >= -180)
            & (bounds[:, 2] <= 180)
            & (bounds[:, 1] >= -90)
            & (bounds[:, 3] <= 90)
        )
    # A NaN vertex need not show in the bounds.
    coords, owner = shapely.get_coordinates(geoms[present], return_index=True)
    ok[np.unique(owner[~np.isfinite(coords).all(axis=1)])] = False
    if ok.all():
        return geoms
    positions = np.flatnonzero(present)[~ok]
    for position in positions:
        given = shapely.get_coordinates(original[position])
        if not np.isfinite(given).all():
            reason = "coordinates are not finite numbers"
        elif swapped_into_xiangxi(given[:, 0], given[:, 1]).all():
            reason = swap_hint(*given[0])
        else:
            reason = _OFF_GLOBE
        errors.append({"row": int(rows[position]), "field": "geometry", "reason": reason})
    geoms = geoms.copy()
    geoms[positions] = None
    return geoms


def _all_off_the_globe(errors: list[dict[str, Any]], rows: int) -> bool:
    return sum(e["reason"] == _OFF_GLOBE for e in errors) == rows
