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

Incremental updates (:meth:`geo.assign.GridIndex.updated`, also in a fresh
process): random edits of 1 grid (grown 2 % about its centroid, overlapping its
neighbours) and of 10 grids (shared vertices moved in every neighbour holding them,
one grid removed, one added), each timed against a full build of the edited set on
an index whose distance structures are built (as in the service) and on a cold one;
the answers of the last edit's index are checked against a fresh build: ``locate``
on all the points, candidates, nearest grid and distances on a sample.
"""

from __future__ import annotations

import argparse
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

from memory import rss_mib, settle

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
    rss = settle()
    t = time.perf_counter()
    index = GridIndex.build(codes, geoms, **({} if cell_deg is None else {"cell_deg": cell_deg}))
    build_s = time.perf_counter() - t
    build_peak = rss_mib("VmHWM:") - rss
    rss = settle()
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
        "peak": rss_mib("VmHWM:") - rss,
        "stats": index.stats(),
        "cell_deg": index.cell_deg,
        "answer": res,
    }


def _move_vertex(g: Any, x: float, y: float, nx: float, ny: float) -> Any:
    """``g`` with every vertex exactly at (x, y) moved to (nx, ny)."""

    def f(c: np.ndarray) -> np.ndarray:
        c = c.copy()
        c[(c[:, 0] == x) & (c[:, 1] == y)] = (nx, ny)
        return c

    return shapely.transform(g, f)


def _edit(
    codes: np.ndarray, geoms: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[list[str], list[Any]]:
    """A random edit of ``k`` grids, as the service would pass it to ``updated``.

    k = 1: one grid grown by 2 % about its centroid. k >= 4: shared vertices moved
    (a fraction of the adjacent edge) in every grid holding them, so neighbours
    change together as when an edge between them is redrawn (a grid grown 2 % if
    one place is left); plus one grid removed and one added (a small square inside
    an existing grid).
    """
    if k == 1:
        g = int(rng.integers(codes.size))
        return [str(codes[g])], [shapely.affinity.scale(geoms[g], 1.02, 1.02)]
    xy, owner = shapely.get_coordinates(geoms, return_index=True)
    edit: dict[str, Any] = {}
    while len(edit) < k - 2:
        if len(edit) == k - 3:  # room for one grid only: grow one
            g = int(rng.integers(codes.size))
            edit.setdefault(str(codes[g]), shapely.affinity.scale(geoms[g], 1.02, 1.02))
            continue
        v = int(rng.integers(xy.shape[0] - 1))
        if owner[v + 1] != owner[v]:
            continue
        (vx, vy), step = xy[v], 0.3 * float(np.hypot(*(xy[v + 1] - xy[v])))
        holders = np.unique(owner[(xy[:, 0] == vx) & (xy[:, 1] == vy)])
        if holders.size < 2 or len(edit) + holders.size > k - 2:
            continue
        if any(str(codes[h]) in edit for h in holders):
            continue
        dx, dy = rng.uniform(-1, 1, 2) * step
        moved = [_move_vertex(geoms[h], vx, vy, vx + dx, vy + dy) for h in holders]
        if all(shapely.is_valid(moved)):
            edit.update(zip([str(codes[h]) for h in holders], moved, strict=True))
    gone = next(str(c) for c in rng.permutation(codes) if str(c) not in edit)
    edit[gone] = None
    c = shapely.point_on_surface(geoms[int(rng.integers(codes.size))])
    edit[f"433199{int(rng.integers(10**9)):09d}"] = shapely.box(c.x, c.y, c.x + 2e-4, c.y + 2e-4)
    return list(edit), list(edit.values())


def _apply(
    codes: np.ndarray, geoms: np.ndarray, edit_codes: list[str], edit_geoms: list[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The grid set ``updated`` documents: codes replaced in place, removed ones
    (None) dropped, added ones appended in the given order."""
    grids = dict(zip(codes.tolist(), geoms.tolist(), strict=True))
    edit = dict(zip(edit_codes, edit_geoms, strict=True))
    out = [c for c in codes.tolist() if edit.get(c, grids[c]) is not None]
    out += [c for c, g in edit.items() if c not in grids and g is not None]
    grids.update(edit)
    return np.array(out, dtype=str), np.array([grids[c] for c in out], dtype=object)


def _run_update(path: str, repeat: int, cell_deg: float | None) -> dict[str, Any]:
    codes, geoms, x, y = _load(path)
    kw = {} if cell_deg is None else {"cell_deg": cell_deg}
    index = GridIndex.build(codes, geoms, **kw)
    rng = np.random.default_rng(7)
    times: dict[str, list[float]] = {}
    for warm in (True, False):
        base = index if warm else GridIndex.build(codes, geoms, **kw)
        if warm:
            base.nearest(x[:1000], y[:1000])  # EPSG:4546 copies and STRtrees made
        for k in (1, 10):
            for _ in range(repeat):
                edit_codes, edit_geoms = _edit(codes, geoms, k, rng)
                gc.collect()
                t = time.perf_counter()
                new = base.updated(edit_codes, edit_geoms)
                times.setdefault(f"{k} {'warm' if warm else 'cold'}", []).append(
                    time.perf_counter() - t
                )
    # the full build of the last edited set, and its answers against the update's
    new_codes, new_geoms = _apply(codes, geoms, edit_codes, edit_geoms)
    assert np.array_equal(new.codes, new_codes)
    build_s = []
    for _ in range(min(repeat, 3)):
        gc.collect()
        t = time.perf_counter()
        fresh = GridIndex.build(new.codes, new_geoms, **kw)
        build_s.append(time.perf_counter() - t)
    same = int((new.locate(x, y) == fresh.locate(x, y)).sum())
    changed = [g for g in edit_geoms if g is not None]
    b = shapely.total_bounds(np.array(changed, dtype=object))
    sx = np.r_[x[:10_000], rng.uniform(b[0] - 0.01, b[2] + 0.01, 10_000)]
    sy = np.r_[y[:10_000], rng.uniform(b[1] - 0.01, b[3] + 0.01, 10_000)]
    acc = np.resize([0.0, 10.0, 100.0], sx.size)
    ca, cb = new.locate_with_candidates(sx, sy, acc), fresh.locate_with_candidates(sx, sy, acc)
    (na, da), (nb, db) = new.nearest(sx, sy, 5000.0), fresh.nearest(sx, sy, 5000.0)
    loc = ca.index
    metric_same = (
        all(
            np.array_equal(getattr(ca, f), getattr(cb, f))
            for f in ("index", "offsets", "grid", "distance_m")
        )
        and np.array_equal(na, nb)
        and np.array_equal(da, db, equal_nan=True)
        and np.array_equal(
            new.distance_to_boundary_m(sx, sy, loc),
            fresh.distance_to_boundary_m(sx, sy, loc),
            equal_nan=True,
        )
    )
    return {
        "times": times,
        "build_s": build_s,
        "same": same,
        "n": int(x.size),
        "metric_same": metric_same,
        "metric_n": int(sx.size),
    }


def _run_baseline(path: str, method: str) -> dict[str, Any]:
    codes, geoms, x, y = _load(path)
    order, rank = _ranks(codes)
    n = x.size
    rss = settle()
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
    return {"seconds": time.perf_counter() - t, "peak": rss_mib("VmHWM:") - rss, "answer": res}


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
        upd = _in_child(_run_update, path, args.repeat, args.cell_deg)
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
    print()
    ms = 1000.0
    build_ms = np.median(upd["build_s"]) * ms
    print(f"{'incremental update (GridIndex.updated)':52s} {'median ms':>11s} {'max ms':>8s} "
          f"{'vs build':>8s}")  # fmt: skip
    for k, label in ((1, "update 1 grid"), (10, "update 10 grids")):
        for mode in ("warm", "cold"):
            t = np.asarray(upd["times"][f"{k} {mode}"]) * ms
            name = f"{label} ({mode} distance structures)"
            print(f"{name:52s} {np.median(t):11.0f} {t.max():8.0f} {build_ms / np.median(t):7.1f}x")
    print(f"{'full build of the edited set':52s} {build_ms:11.0f} {max(upd['build_s']) * ms:8.0f}")
    print(
        f"updated vs fresh build, identical answers: locate {upd['same']:,}/{upd['n']:,} "
        f"points; candidates, nearest, distances on {upd['metric_n']:,} points: "
        f"{'identical' if upd['metric_same'] else 'DIFFERENT'}"
    )
    print(f"(median and max of {args.repeat} random edits each; 'warm': the index's EPSG:4546 "
          "copies and STRtrees were built before the update, as in the service)")  # fmt: skip
    print()
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
