"""Throughput of the in-process point -> grid index (geo.assign) against baselines.

On the same grids and the same 1,000,000 points (70 % clustered where grids are
dense: a uniformly drawn grid, then a uniform point in its bounding box; 30 %
uniform over the grids' bounding box, so some fall outside every grid) it times:

* ``GridIndex``: :meth:`geo.assign.GridIndex.locate` (index built once, timed apart);
* shapely: an STRtree over the points queried with the prepared grids
  (``predicate="intersects"``, which for a point is covers), and an STRtree over the
  grids' bounding boxes followed by prepared ``shapely.intersects_xy``;
* geopandas ``sjoin(points, grids)`` with ``predicate="within"`` (the usual one) and
  ``"intersects"`` (covers semantics).

Every method's answer is reduced to one grid per point (smallest code wins) and
checked against the others. Grids: ``geo.demo.build_world('full').grids`` when the
demo generator is available, else (or with ``--synthetic``) a ~10,000-grid exact
Voronoi tiling of the real prefecture outline with dense town centres.

    .venv/bin/python scripts/bench/assign_core.py [--n 1000000] [--synthetic]

Each method runs in a fresh process (so one's freed memory does not hide another's
peak); memory is the growth of that process's peak RSS during the timed call(s)
(Linux ``/proc/self/clear_refs``), GEOS allocations included. The GridIndex row
also gives the index's own size and its build time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geo.assign import GridIndex
from geo.crs import METRIC_EPSG, convert_geometry, segmentize_then_convert
from geo.reference import load_prefecture

METRIC = f"EPSG:{METRIC_EPSG}"

# (centre lon, lat, sigma m, grids): county seats and a few towns; the rest rural.
_TOWNS = [
    (109.739, 28.311, 1400.0, 900),  # 吉首
    (110.219, 28.216, 700.0, 250),
    (109.599, 27.948, 800.0, 300),
    (109.482, 28.572, 700.0, 250),
    (109.660, 28.699, 700.0, 250),
    (109.950, 28.617, 600.0, 200),
    (109.853, 28.998, 800.0, 300),
    (109.443, 29.457, 800.0, 300),
]
_SMALL_TOWNS = 60
_SMALL_TOWN_GRIDS = 25
_SMALL_TOWN_SIGMA_M = 400.0
_EDGE_MAX_M = 200.0


def _rss_mib(field: str) -> float:
    """A VmRSS/VmHWM line of /proc/self/status, in MiB (0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _settle() -> float:
    """Free what can be freed, reset the peak RSS; return the current RSS (MiB)."""
    gc.collect()
    with contextlib.suppress(OSError):  # hand freed heap memory back to the system
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux)
    return _rss_mib("VmRSS:")


def synthetic_grids(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """~10,000 grids exactly tiling the prefecture outline: (codes, lon/lat polygons).

    Voronoi cells of seeds (dense around towns, sparse in the countryside) in
    EPSG:4546, noded once together with the outline (so neighbours share identical
    vertices), edges densified to <= 200 m, converted to WGS 84 vertex by vertex.
    A Voronoi cell cut by the outline into several faces becomes a MultiPolygon.
    """
    rng = np.random.default_rng(seed)
    outline = segmentize_then_convert(load_prefecture(), "wgs84", METRIC, 200.0)
    shapely.prepare(outline)
    minx, miny, maxx, maxy = outline.bounds

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return shapely.contains_xy(outline, x, y)

    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    towns = list(_TOWNS)
    # small towns at random places of the prefecture
    tx = rng.uniform(minx, maxx, 4 * _SMALL_TOWNS)
    ty = rng.uniform(miny, maxy, 4 * _SMALL_TOWNS)
    ok = inside(tx, ty)
    centres = convert_geometry(shapely.points(tx[ok], ty[ok])[:_SMALL_TOWNS], METRIC, "wgs84")
    for p in centres:
        towns.append((p.x, p.y, _SMALL_TOWN_SIGMA_M, _SMALL_TOWN_GRIDS))
    town_total = 0
    for lon, lat, sigma, n in towns:
        c = convert_geometry(shapely.Point(lon, lat), "wgs84", METRIC)
        x = rng.normal(c.x, sigma, 3 * n)
        y = rng.normal(c.y, sigma, 3 * n)
        keep = inside(x, y)
        xs.append(x[keep][:n])
        ys.append(y[keep][:n])
        town_total += xs[-1].size
    rural = 10_000 - town_total
    x = rng.uniform(minx, maxx, 3 * rural)
    y = rng.uniform(miny, maxy, 3 * rural)
    keep = inside(x, y)
    xs.append(x[keep][:rural])
    ys.append(y[keep][:rural])
    sx, sy = np.concatenate(xs), np.concatenate(ys)
    seeds = shapely.points(sx, sy)

    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds)))
    lines = shapely.unary_union(
        np.concatenate([shapely.boundary(cells), [shapely.boundary(outline)]])
    )
    faces = shapely.get_parts(shapely.polygonize([shapely.segmentize(lines, _EDGE_MAX_M)]))
    rep = shapely.point_on_surface(faces)
    faces = faces[shapely.contains(outline, rep)]
    rep = shapely.point_on_surface(faces)
    _, owner = shapely.STRtree(seeds).query_nearest(rep, all_matches=False)
    order = np.argsort(owner, kind="stable")
    faces, owner = faces[order], owner[order]
    multi = shapely.multipolygons(faces, indices=owner)
    n_faces = np.bincount(owner, minlength=seeds.size)
    used = np.flatnonzero(n_faces > 0)
    first = np.cumsum(n_faces) - n_faces
    grids = np.where(n_faces[used] == 1, faces[first[used]], multi[used])
    grids = convert_geometry(grids, METRIC, "wgs84")
    # codes in random (not spatial) order, 15 digits
    seq = rng.permutation(grids.size)
    codes = np.array([f"433100{100000000 + int(s) * 7:09d}" for s in seq])
    return codes, grids


def demo_grids() -> tuple[np.ndarray, np.ndarray] | None:
    """The full demo world's grids (codes, lon/lat polygons), or None if unavailable."""
    try:
        from geo.demo import build_world

        world = build_world("full", seed=0)
        grids = world.grids
        return grids["code"].astype(str).to_numpy(), np.asarray(grids.geometry.values)
    except Exception as exc:  # the demo generator is developed separately
        print(f"demo world unavailable ({type(exc).__name__}: {exc}); using synthetic grids")
        return None


def make_points(geoms: np.ndarray, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """70 % clustered (uniform grid choice, uniform in its bbox), 30 % uniform in bbox."""
    rng = np.random.default_rng(seed)
    b = shapely.bounds(geoms)
    n_cl = round(n * 0.7)
    g = rng.integers(0, geoms.size, n_cl)
    u = rng.random((n_cl, 2))
    cx = b[g, 0] + u[:, 0] * (b[g, 2] - b[g, 0])
    cy = b[g, 1] + u[:, 1] * (b[g, 3] - b[g, 1])
    ux = rng.uniform(b[:, 0].min(), b[:, 2].max(), n - n_cl)
    uy = rng.uniform(b[:, 1].min(), b[:, 3].max(), n - n_cl)
    x = np.concatenate([cx, ux])
    y = np.concatenate([cy, uy])
    perm = rng.permutation(n)
    return x[perm], y[perm]


def _smallest_per_point(n: int, pt: np.ndarray, rank: np.ndarray) -> np.ndarray:
    best = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(best, pt, rank)
    return np.where(best == np.iinfo(np.int64).max, -1, best)


def _load(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        blob, ends = z["wkb"].tobytes(), z["wkb_end"]
        wkb = [blob[a:b] for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)]
        return z["codes"], shapely.from_wkb(wkb), z["x"], z["y"]


def _ranks(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(codes, kind="stable")
    rank = np.empty(codes.size, dtype=np.int64)
    rank[order] = np.arange(codes.size)
    return order, rank


def _run_ours(path: str, repeat: int, cell_deg: float | None) -> dict[str, Any]:
    codes, geoms, x, y = _load(path)
    rss = _settle()
    t = time.perf_counter()
    index = GridIndex.build(codes, geoms, **({} if cell_deg is None else {"cell_deg": cell_deg}))
    build_s = time.perf_counter() - t
    build_peak = _rss_mib("VmHWM:") - rss
    rss = _settle()
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        res = index.locate(x, y)
        best = min(best, time.perf_counter() - t)
    return {
        "seconds": best,
        "build_s": build_s,
        "build_peak": build_peak,
        "index_mib": index.nbytes / 2**20,
        "peak": _rss_mib("VmHWM:") - rss,
        "stats": index.stats(),
        "cell_deg": index.cell_deg,
        "answer": res,
    }


def _run_baseline(path: str, method: str) -> dict[str, Any]:
    codes, geoms, x, y = _load(path)
    order, rank = _ranks(codes)
    n = x.size
    rss = _settle()
    t = time.perf_counter()
    if method == "strtree_points":
        # STRtree over the points, queried with the prepared grids; for a point,
        # 'intersects' is 'covers'
        tree = shapely.STRtree(shapely.points(x, y))
        shapely.prepare(geoms)
        gi, pi = tree.query(geoms, predicate="intersects")
    elif method == "strtree_grids":
        # STRtree over the grids (bounding boxes), then prepared grids' intersects_xy
        tree = shapely.STRtree(geoms)
        pi, gi = tree.query(shapely.points(x, y))
        shapely.prepare(geoms)
        hit = shapely.intersects_xy(geoms[gi], x[pi], y[pi])
        pi, gi = pi[hit], gi[hit]
    else:
        import geopandas as gpd

        grids = gpd.GeoDataFrame({"code": codes}, geometry=geoms, crs="EPSG:4326")
        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs="EPSG:4326")
        predicate = method.split("_", 1)[1]
        j = gpd.sjoin(pts, grids, predicate=predicate, how="inner")
        pi, gi = j.index.to_numpy(), j["index_right"].to_numpy()
    res = _to_index(_smallest_per_point(n, pi, rank[gi]), order)  # smallest code wins
    return {"seconds": time.perf_counter() - t, "peak": _rss_mib("VmHWM:") - rss, "answer": res}


def _in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh interpreter, so memory figures are its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


BASELINES = {
    "strtree_points": "shapely STRtree(points), prepared grids 'intersects'",
    "strtree_grids": "shapely STRtree(grids) + prepared intersects_xy",
    "sjoin_within": "geopandas sjoin(predicate='within')",
    "sjoin_intersects": "geopandas sjoin(predicate='intersects')",
}
"""The fastest formulations we found of each (covered_by/contains/within variants of
the STRtree queries are slower here). 'within' excludes points on grid boundaries, so
it is not covers semantics; it is timed because it is the usual sjoin."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="points (default 1,000,000)")
    ap.add_argument("--synthetic", action="store_true", help="skip the demo world")
    ap.add_argument("--cell-deg", type=float, default=None, help="GridIndex cell size (deg)")
    ap.add_argument("--repeat", type=int, default=5, help="GridIndex: best of N runs")
    args = ap.parse_args()

    data = None if args.synthetic else demo_grids()
    source = "build_world('full').grids"
    if data is None:
        t = time.perf_counter()
        data = synthetic_grids()
        source = f"synthetic Voronoi tiling ({time.perf_counter() - t:.1f} s to make)"
    codes, geoms = data
    n_vert = int(shapely.get_num_coordinates(geoms).sum())
    print(f"grids: {geoms.size:,} from {source}; {n_vert:,} vertices")
    x, y = make_points(geoms, args.n)
    print(f"points: {args.n:,} (70 % clustered on grids, 30 % uniform in the bbox)")

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "data.npz")
        wkb = shapely.to_wkb(geoms)
        np.savez(
            path,
            codes=codes.astype(str),
            wkb=np.frombuffer(b"".join(wkb), dtype=np.uint8),
            wkb_end=np.cumsum([len(w) for w in wkb]),
            x=x,
            y=y,
        )
        ours = _in_child(_run_ours, path, args.repeat, args.cell_deg)
        results = {k: _in_child(_run_baseline, path, k) for k in BASELINES}

    st = ours["stats"]
    print(
        f"GridIndex: cell {ours['cell_deg']} deg, {st['cells']:,} cells, "
        f"{st['boundary_cells']:,} boundary cells, {st['candidates']:,} candidates, "
        f"{st['edge_refs']:,} edge refs; build peak +{ours['build_peak']:.0f} MiB"
    )
    print()
    head = f"{'method':52s} {'points/s':>11s} {'ours is':>8s} {'build s':>8s} {'index MiB':>9s}"
    print(f"{head} {'peak MiB':>9s}")
    ours_pps = args.n / ours["seconds"]
    print(
        f"{'GridIndex.locate (geo.assign)':52s} {ours_pps:11,.0f} {'1.0x':>8s} "
        f"{ours['build_s']:8.2f} {ours['index_mib']:9.0f} {ours['peak']:9.0f}"
    )
    for key, name in BASELINES.items():
        r = results[key]
        pps = args.n / r["seconds"]
        print(
            f"{name:52s} {pps:11,.0f} {ours_pps / pps:7.1f}x {'-':>8s} {'-':>9s} {r['peak']:9.0f}"
        )
    print(
        f"GridIndex: best of {args.repeat} runs, index built once; baselines: one run, "
        "building their tree inside the timed call. peak MiB: growth of the process's "
        "peak RSS during the timed call(s), each method in a fresh process."
    )
    ref = results["sjoin_intersects"]["answer"]
    print(f"points covered by some grid: {(ref >= 0).mean():.1%}")
    answers = {"GridIndex.locate": ours["answer"]} | {
        BASELINES[k]: r["answer"] for k, r in results.items()
    }
    for name, a in answers.items():
        same = int((a == ref).sum())
        print(f"identical to sjoin 'intersects' + smallest code: {name}: {same:,}/{args.n:,}")


def _to_index(best_rank: np.ndarray, order: np.ndarray) -> np.ndarray:
    return np.where(best_rank >= 0, order[np.maximum(best_rank, 0)], -1)


if __name__ == "__main__":
    main()
