"""Throughput of geo.crs conversions on 1,000,000 points over Xiangxi.

Compares our vectorised conversions with (a) the common scalar GCJ-02/BD-09 formula
in a plain Python loop, timed on a 100,000-point subset and scaled, and (b) a bare
pyproj Transformer for the metric transform. Prints a table of points per second.

    .venv/bin/python scripts/bench/crs.py [--n 1000000] [--subset 100000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pyproj import Transformer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geo import crs

_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = math.pi * 3000.0 / 180.0


def _scalar_delta(lon: float, lat: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    d = 20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)
    t_lat = d + 20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)
    t_lat += 160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)
    t_lat = t_lat * 2.0 / 3.0 - 100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y
    t_lat += 0.2 * math.sqrt(abs(x))
    t_lon = d + 20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)
    t_lon += 150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)
    t_lon = t_lon * 2.0 / 3.0 + 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y
    t_lon += 0.1 * math.sqrt(abs(x))
    rad = lat / 180.0 * math.pi
    magic = 1.0 - _EE * math.sin(rad) ** 2
    sq = math.sqrt(magic)
    dlat = (t_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sq) * math.pi)
    dlon = (t_lon * 180.0) / (_A / sq * math.cos(rad) * math.pi)
    return dlon, dlat


def _scalar_wgs_to_gcj(lon: float, lat: float) -> tuple[float, float]:
    if not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271):
        return lon, lat
    dlon, dlat = _scalar_delta(lon, lat)
    return lon + dlon, lat + dlat


def _scalar_gcj_to_wgs(lon: float, lat: float) -> tuple[float, float]:
    wlon, wlat = lon, lat
    for _ in range(30):
        glon, glat = _scalar_wgs_to_gcj(wlon, wlat)
        rlon, rlat = glon - lon, glat - lat
        wlon, wlat = wlon - rlon, wlat - rlat
        if abs(rlon) < 1e-9 and abs(rlat) < 1e-9:
            break
    return wlon, wlat


def _scalar_gcj_to_bd(lon: float, lat: float) -> tuple[float, float]:
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * _X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _X_PI)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def _scalar_bd_to_gcj(lon: float, lat: float) -> tuple[float, float]:
    # the common closed form (not exact: ~1 m)
    x, y = lon - 0.0065, lat - 0.006
    z = math.sqrt(x * x + y * y) - 0.00002 * math.sin(y * _X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _X_PI)
    return z * math.cos(theta), z * math.sin(theta)


def _loop(fn: Callable[[float, float], tuple[float, float]]) -> Callable:
    def run(lon: np.ndarray, lat: np.ndarray) -> list[tuple[float, float]]:
        return [fn(a, b) for a, b in zip(lon.tolist(), lat.tolist(), strict=True)]

    return run


def _best(fn: Callable, *args: object, repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--subset", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    lon = rng.uniform(109.1, 110.5, args.n)
    lat = rng.uniform(27.6, 29.7, args.n)
    glon, glat = crs.convert(lon, lat, "wgs84", "gcj02")
    blon, blat = crs.convert(lon, lat, "wgs84", "bd09")
    k = min(args.subset, args.n)
    metric = Transformer.from_crs("EPSG:4326", "EPSG:4546", always_xy=True)

    rows: list[tuple[str, Callable, tuple, Callable | None, tuple, str]] = [
        (
            "wgs84 -> gcj02",
            lambda a, b: crs.convert(a, b, "wgs84", "gcj02"),
            (lon, lat),
            _loop(_scalar_wgs_to_gcj),
            (lon[:k], lat[:k]),
            "python loop",
        ),
        (
            "gcj02 -> wgs84 (exact)",
            lambda a, b: crs.convert(a, b, "gcj02", "wgs84"),
            (glon, glat),
            _loop(_scalar_gcj_to_wgs),
            (glon[:k], glat[:k]),
            "python loop, iterated",
        ),
        (
            "wgs84 -> gcj02 -> wgs84",
            lambda a, b: crs.convert(*crs.convert(a, b, "wgs84", "gcj02"), "gcj02", "wgs84"),
            (lon, lat),
            _loop(lambda a, b: _scalar_gcj_to_wgs(*_scalar_wgs_to_gcj(a, b))),
            (lon[:k], lat[:k]),
            "python loop",
        ),
        (
            "gcj02 -> bd09",
            lambda a, b: crs.convert(a, b, "gcj02", "bd09"),
            (glon, glat),
            _loop(_scalar_gcj_to_bd),
            (glon[:k], glat[:k]),
            "python loop",
        ),
        (
            "bd09 -> gcj02 (exact)",
            lambda a, b: crs.convert(a, b, "bd09", "gcj02"),
            (blon, blat),
            _loop(_scalar_bd_to_gcj),
            (blon[:k], blat[:k]),
            "python loop, closed form",
        ),
        (
            "bd09 -> wgs84 (exact)",
            lambda a, b: crs.convert(a, b, "bd09", "wgs84"),
            (blon, blat),
            _loop(lambda a, b: _scalar_gcj_to_wgs(*_scalar_bd_to_gcj(a, b))),
            (blon[:k], blat[:k]),
            "python loop",
        ),
        (
            "to_metric (EPSG:4546)",
            crs.to_metric,
            (lon, lat),
            metric.transform,
            (lon, lat),
            "pyproj Transformer",
        ),
    ]

    # sanity: ours agrees with the scalar formula
    ref = np.array(_loop(_scalar_wgs_to_gcj)(lon[:1000], lat[:1000]))
    assert np.abs(ref[:, 0] - glon[:1000]).max() < 1e-11

    print(f"{args.n:,} points over Xiangxi; baselines in Python loops timed on {k:,} and scaled")
    header = (
        f"{'conversion':<26} {'ours pts/s':>13} {'baseline pts/s':>15} {'speed-up':>9}  baseline"
    )
    print(header)
    print("-" * (len(header) + 16))
    for name, ours, ours_args, base, base_args, base_name in rows:
        t_ours = _best(ours, *ours_args)
        n_base = len(base_args[0])
        t_base = _best(base, *base_args, repeat=1 if n_base < args.n else 3)
        ours_rate = args.n / t_ours
        base_rate = n_base / t_base
        print(
            f"{name:<26} {ours_rate:>13,.0f} {base_rate:>15,.0f} {ours_rate / base_rate:>8.1f}x"
            f"  {base_name}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
