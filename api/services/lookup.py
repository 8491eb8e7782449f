"""Point -> grid lookup: an in-process index of the grids, kept current, and the answers.

The index (geo.assign.GridIndex) is built from the grids valid at a moment, with their
village/township/county chain alongside. A background thread notices grid edits (a
cheap fingerprint query) and swaps in a rebuilt index; writes made through this process
ask for the rebuild at once.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from api.db import ChannelListener
from geo.address import AddressMatch
from geo.assign import GridIndex
from geo.crs import convert

log = logging.getLogger("gridcover.lookup")

# Grid writers NOTIFY this channel (`api.services.grids.begin_grid_write`); PostgreSQL
# delivers the notice only on commit.
GRID_CHANGED_CHANNEL = "gridcover_grid_changed"

GRID_SELECT = """
SELECT g.id, g.code, g.version, g.name, g.worker_name, g.worker_phone,
       ST_AsBinary(g.geom) AS wkb,
       v.code AS village_code, v.name AS village_name,
       t.code AS township_code, t.name AS township_name,
       c.code AS county_code, c.name AS county_name,
       g.valid_from, g.valid_to
FROM grid g
JOIN admin_area v ON v.code = g.village_code
LEFT JOIN admin_area t ON t.code = v.parent_code
LEFT JOIN admin_area c ON c.code = t.parent_code
"""
# The grids valid at :at, with their chain, in code order (the index's tie-break order).
GRIDS_AT_SQL = (
    GRID_SELECT
    + "WHERE g.valid_from <= :at AND (g.valid_to IS NULL OR g.valid_to > :at) ORDER BY g.code"
)
# Rows written since a fingerprint: grid writers hold one lock and stamp versions with
# clock_timestamp(), so new rows have larger ids and newly closed ones later valid_to.
GRIDS_CHANGED_SQL = (
    GRID_SELECT + "WHERE g.id > :max_id OR g.valid_to > :max_valid_to ORDER BY g.code, g.id"
)
GRID_COLUMNS = [
    "id",
    "code",
    "version",
    "name",
    "worker_name",
    "worker_phone",
    "wkb",
    "village_code",
    "village_name",
    "township_code",
    "township_name",
    "county_code",
    "county_name",
]
# Changes whenever a grid is added, versioned, retired or removed.
FINGERPRINT_SQL = """
SELECT count(*) AS rows, count(*) FILTER (WHERE valid_to IS NULL) AS open_rows,
       max(id) AS max_id, max(valid_to) AS max_valid_to
FROM grid
"""
CHAIN_LEVELS = ("village", "township", "county")


@dataclass(frozen=True)
class GridSnapshot:
    """The grids valid at one moment: index plus attributes aligned with `index.codes`."""

    index: GridIndex
    grids: pd.DataFrame
    at: datetime | None
    fingerprint: tuple[Any, ...]
    wkb: np.ndarray  # the geometries the index was built from, to tell what an edit changed
    _columns: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def column(self, name: str) -> np.ndarray:
        """One attribute for all grids, as an array aligned with the index (cached)."""
        if name not in self._columns:
            self._columns[name] = self.grids[name].to_numpy(dtype=object)
        return self._columns[name]


def load_snapshot(
    engine: Engine, at: datetime | None = None, previous: GridSnapshot | None = None
) -> GridSnapshot:
    """Read the grids valid at `at` (None: now) and index them.

    With a `previous` snapshot of now, only the rows written since are read; an edit of
    names or workers then reuses its index and an edit of a few geometries patches it
    (geo.assign.GridIndex.updated). Otherwise every row is read and the index built.
    """
    with engine.connect() as conn:
        fingerprint = tuple(conn.execute(text(FINGERPRINT_SQL)).one())
        moment = at or conn.execute(text("SELECT now()")).scalar_one()
        frame = None
        if at is None and previous is not None and previous.at is None:
            frame = _frame_after_changes(conn, previous, fingerprint, moment)
        if frame is None:
            rows = conn.execute(text(GRIDS_AT_SQL), {"at": moment}).mappings().all()
            frame = pd.DataFrame(rows, columns=[*GRID_COLUMNS, "valid_from", "valid_to"])
            frame = frame[GRID_COLUMNS]
    codes = frame["code"].astype(str).to_numpy()
    wkb = frame["wkb"].map(bytes).to_numpy()
    index = _reindex(previous, codes, wkb)
    index.prepare_distances()  # here, off the event loop, not in the first lookup
    if not np.array_equal(index.codes, codes):
        # an incremental update appends added grids: align the attributes with the index
        order = pd.Index(codes).get_indexer(index.codes)
        frame, wkb = frame.iloc[order].reset_index(drop=True), wkb[order]
    return GridSnapshot(index, frame.drop(columns="wkb"), at, fingerprint, wkb)


def _frame_after_changes(
    conn: Connection, previous: GridSnapshot, fingerprint: tuple[Any, ...], moment: datetime
) -> pd.DataFrame | None:
    """`previous`'s grids with the rows written since applied (code order, with wkb), or
    None when the change is not one that writers make (rows removed): then read all."""
    rows_before, _, max_id, max_valid_to = previous.fingerprint
    rows_now, open_rows_now = fingerprint[0], fingerprint[1]
    changed = pd.DataFrame(
        conn.execute(
            text(GRIDS_CHANGED_SQL),
            {
                "max_id": max_id if max_id is not None else 0,
                "max_valid_to": max_valid_to or datetime.min.replace(tzinfo=UTC),
            },
        )
        .mappings()
        .all(),
        columns=[*GRID_COLUMNS, "valid_from", "valid_to"],
    )
    added_rows = int((changed["id"] > (max_id or 0)).sum())
    if rows_now != rows_before + added_rows:
        return None
    valid_now = (changed["valid_from"] <= moment) & (
        changed["valid_to"].isna() | (changed["valid_to"] > moment)
    )
    before = previous.grids.assign(wkb=previous.wkb)
    kept = before[~before["code"].isin(changed["code"])]
    frame = pd.concat([kept, changed.loc[valid_now, GRID_COLUMNS]], ignore_index=True)
    if len(frame) != open_rows_now:  # e.g. versions that open in the future: read all
        return None
    return frame.sort_values("code", kind="stable", ignore_index=True)


# Above this many changed grids a full build is as quick as patching the index.
MAX_INCREMENTAL_CHANGES = 200


def _reindex(previous: GridSnapshot | None, codes: np.ndarray, wkb: np.ndarray) -> GridIndex:
    """The index for (codes, wkb): the previous one when nothing moved, patched when a few
    grids changed, else built anew."""
    if previous is None:
        return GridIndex.build(codes, shapely.from_wkb(wkb))
    if _same_geometries(previous, codes, wkb):
        return previous.index
    before = dict(zip(previous.index.codes, previous.wkb, strict=True))
    now = dict(zip(codes, wkb, strict=True))
    changed = [code for code, geometry in now.items() if before.get(code) != geometry]
    removed = [code for code in before if code not in now]
    if not changed and not removed:  # same grids, another order
        return previous.index
    if len(changed) + len(removed) > MAX_INCREMENTAL_CHANGES:
        return GridIndex.build(codes, shapely.from_wkb(wkb))
    polygons = [shapely.from_wkb(now[code]) for code in changed] + [None] * len(removed)
    return previous.index.updated(changed + removed, polygons)


def _same_geometries(previous: GridSnapshot, codes: np.ndarray, wkb: np.ndarray) -> bool:
    return (
        len(codes) == len(previous.wkb)
        and bool(np.array_equal(previous.index.codes, codes))
        and bool(np.all(previous.wkb == wkb))
    )


def freeze_long_lived() -> None:
    """Take what is alive now (the first index built) out of the cyclic collector's view.

    A full collection walks every tracked object: with the full demo's grid index and
    address matcher that is ~100 ms holding the GIL, a stall that every request in the
    process waits out. Frozen objects are still freed by reference counting once dropped,
    but garbage cycles frozen with them never are: so this runs once per index, at its
    first build (objects of requests in flight then are frozen too: a bounded, one-time
    cost), not at every rebuild."""
    gc.collect()
    gc.freeze()


class GridLocator:
    """Current and historical grid snapshots for one process, refreshed in the background.

    Grid writers NOTIFY `GRID_CHANGED_CHANNEL` on commit, so an edit made by any process
    reaches the index within milliseconds; a fingerprint poll every `poll_interval_s`
    also catches rows written by hand in SQL.
    """

    def __init__(self, engine: Engine, poll_interval_s: float = 2.0, history_size: int = 4):
        self._engine = engine
        self._poll_interval_s = poll_interval_s
        self._current: GridSnapshot | None = None
        self._history: OrderedDict[datetime, GridSnapshot] = OrderedDict()
        self._history_size = history_size
        self._build_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> GridSnapshot:
        """The grids valid now (built on first use)."""
        snapshot = self._current
        if snapshot is None:
            with self._build_lock:
                if self._current is None:
                    self._current = load_snapshot(self._engine)
                    freeze_long_lived()
                snapshot = self._current
        return snapshot

    def ready(self, moment: datetime | None = None) -> GridSnapshot | None:
        """The snapshot for `moment` if it is built already, without waiting."""
        if moment is None:
            return self._current
        return self._history.get(moment)

    def at(self, moment: datetime | None) -> GridSnapshot:
        """The grids valid at `moment`; None means now."""
        if moment is None:
            return self.current()
        with self._build_lock:
            if moment in self._history:
                self._history.move_to_end(moment)
                return self._history[moment]
        snapshot = load_snapshot(self._engine, moment)
        with self._build_lock:
            self._history[moment] = snapshot
            while len(self._history) > self._history_size:
                self._history.popitem(last=False)
        return snapshot

    def grids_changed(self) -> None:
        """Ask for a rebuild now (after a write made through this process)."""
        self._history.clear()
        self._wake.set()

    def refresh_if_changed(self) -> bool:
        """Rebuild when the grid table changed since the current snapshot; True if rebuilt."""
        with self._engine.connect() as conn:
            fingerprint = tuple(conn.execute(text(FINGERPRINT_SQL)).one())
        if self._current is not None and fingerprint == self._current.fingerprint:
            return False
        snapshot = load_snapshot(self._engine, previous=self._current)
        with self._build_lock:
            self._current = snapshot
            self._history.clear()
        return True

    def start(self) -> None:
        """Watch for grid edits in the background (and build the first index there)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="grid-index", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        try:
            self.current()
        except Exception:  # no database yet: the first lookup builds it
            log.warning("could not build the grid index at start-up", exc_info=True)
        listener = ChannelListener(self._engine, GRID_CHANGED_CHANNEL)
        failing = False  # an outage is logged when it starts and ends, not at every poll
        while not self._stop.is_set():
            if not listener.connected:
                listener.connect()
            self._wait_for_notice(listener)
            self._wake.clear()
            if self._stop.is_set() or self._current is None:
                continue
            try:
                self.refresh_if_changed()
            except Exception:  # the database may be away for a while; keep the old index
                if not failing:
                    log.warning(
                        "grid index refresh failed; keeping the previous one until the "
                        "database answers again",
                        exc_info=True,
                    )
                failing = True
            else:
                if failing:
                    log.warning("grid index refreshed again after the database came back")
                failing = False
        listener.close()

    def _wait_for_notice(self, listener: ChannelListener) -> None:
        """Block until a grid write is announced, `grids_changed` or `stop` is called, the
        listening connection breaks, or the poll interval passes."""
        # Short slices, so that stop() and grids_changed() are noticed quickly.
        deadline = time.monotonic() + self._poll_interval_s
        while time.monotonic() < deadline and not self._wake.is_set():
            if not listener.connected:
                self._wake.wait(0.25)
                continue
            found = listener.notices(0.25)
            if found is None or found:
                return


@dataclass(frozen=True)
class PointAnswers:
    """Per-point answers for a batch, as arrays (n points, WGS84 lon/lat)."""

    lon: np.ndarray
    lat: np.ndarray
    grid: np.ndarray  # row in snapshot.grids: the covering grid, or the nearest when outside
    outside: np.ndarray  # True: no grid covers the point; `grid` is the nearest one (or -1)
    distance_m: np.ndarray  # outside: metres to the nearest grid; inside: 0
    distance_to_boundary_m: np.ndarray  # inside: metres to the grid's boundary
    candidate_offsets: np.ndarray
    candidate_grid: np.ndarray
    candidate_distance_m: np.ndarray


def resolve_points(
    snapshot: GridSnapshot,
    lon: np.ndarray,
    lat: np.ndarray,
    coord_sys: str = "wgs84",
    accuracy_m: float | np.ndarray = 0.0,
    max_distance_m: float = 5000.0,
) -> PointAnswers:
    """Locate points (given in `coord_sys`) in the snapshot's grids, vectorised.

    Points in no grid get the nearest grid within `max_distance_m` (metres, EPSG:4546)
    flagged `outside`; beyond it, grid -1. Candidates are every grid within `accuracy_m`
    of the point (a point on a shared edge has both).
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if coord_sys != "wgs84":
        lon, lat = convert(lon, lat, coord_sys, "wgs84")
    # Impossible coordinates answer like missing ones: no grid.
    impossible = ~((np.abs(lon) <= 180) & (np.abs(lat) <= 90))
    if impossible.any():
        lon, lat = np.where(impossible, np.nan, lon), np.where(impossible, np.nan, lat)
    index = snapshot.index
    if lon.size == 1 and np.ndim(accuracy_m) == 0:
        return _resolve_one(index, float(lon[0]), float(lat[0]), float(accuracy_m), max_distance_m)
    candidates = index.locate_with_candidates(lon, lat, accuracy_m)
    located = candidates.index
    outside = located < 0
    grid = located.copy()
    distance = np.zeros(lon.shape)
    if outside.any():
        nearest, nearest_m = index.nearest(lon[outside], lat[outside], max_distance_m)
        grid[outside] = nearest
        distance[outside] = nearest_m
    to_boundary = np.full(lon.shape, np.nan)
    inside = ~outside
    if inside.any():
        to_boundary[inside] = index.distance_to_boundary_m(
            lon[inside], lat[inside], located[inside]
        )
    return PointAnswers(
        lon,
        lat,
        grid,
        outside,
        distance,
        to_boundary,
        candidates.offsets,
        candidates.grid,
        candidates.distance_m,
    )


def _resolve_one(
    index: GridIndex, lon: float, lat: float, accuracy_m: float, max_distance_m: float
) -> PointAnswers:
    """`resolve_points` for one WGS 84 point, through the index's scalar path."""
    place = index.place(lon, lat, accuracy_m)
    grid, distance_m = place.index, 0.0
    if grid < 0:
        nearest, nearest_m = index.nearest([lon], [lat], max_distance_m)
        grid, distance_m = int(nearest[0]), float(nearest_m[0])
    return PointAnswers(
        np.array([lon]),
        np.array([lat]),
        np.array([grid]),
        np.array([place.index < 0]),
        np.array([distance_m]),
        np.array([place.distance_to_boundary_m]),
        np.array([0, len(place.candidates)]),
        np.array([g for g, _ in place.candidates], dtype=np.int64),
        np.array([d for _, d in place.candidates], dtype=np.float64),
    )


def _round(value: float, digits: int = 2) -> float | None:
    return None if not np.isfinite(value) else round(float(value), digits)


def answer_dict(
    snapshot: GridSnapshot, answers: PointAnswers, i: int, with_phone: bool = False
) -> dict[str, Any]:
    """The JSON answer for point `i` (the shape of GET /v1/lookup)."""
    g = int(answers.grid[i])
    column = snapshot.column
    body: dict[str, Any] = {"point": [_round(answers.lon[i], 7), _round(answers.lat[i], 7)]}
    if g < 0:
        body.update(grid=None, village=None, township=None, county=None)
    else:
        body["grid"] = {
            "code": column("code")[g],
            "name": column("name")[g],
            "worker_name": column("worker_name")[g],
            "version": int(column("version")[g]),
        }
        if with_phone:
            body["grid"]["worker_phone"] = column("worker_phone")[g]
        for level in CHAIN_LEVELS:
            code = column(f"{level}_code")[g]
            body[level] = (
                None if pd.isna(code) else {"code": code, "name": column(f"{level}_name")[g]}
            )
    start, stop = answers.candidate_offsets[i], answers.candidate_offsets[i + 1]
    codes, names = column("code"), column("name")
    body["candidates"] = [
        {"code": codes[c], "name": names[c], "distance_m": _round(d)}
        for c, d in zip(
            answers.candidate_grid[start:stop],
            answers.candidate_distance_m[start:stop],
            strict=True,
        )
    ]
    body["ambiguous"] = len(body["candidates"]) > 1
    body["outside"] = bool(answers.outside[i])
    body["distance_m"] = _round(answers.distance_m[i])
    body["distance_to_boundary_m"] = _round(answers.distance_to_boundary_m[i])
    return body


ANSWER_COLUMNS = (
    "grid_code",
    "grid_name",
    "worker_name",
    "village_code",
    "village_name",
    "township_code",
    "township_name",
    "county_code",
    "county_name",
)


def answers_table(snapshot: GridSnapshot, answers: PointAnswers) -> pd.DataFrame:
    """Flat per-point answers (for CSV), built by array indexing: no per-point Python."""
    grid = answers.grid
    found = grid >= 0
    table = pd.DataFrame(index=np.arange(grid.size))
    sources = {"grid_code": "code", "grid_name": "name"}
    for name in ANSWER_COLUMNS:
        values = np.full(grid.size, None, dtype=object)
        values[found] = snapshot.column(sources.get(name, name))[grid[found]]
        table[name] = values
    table["outside"] = answers.outside
    table["distance_m"] = np.round(answers.distance_m, 2)
    table["distance_to_boundary_m"] = np.round(answers.distance_to_boundary_m, 2)
    table["ambiguous"] = np.diff(answers.candidate_offsets) > 1
    return table


def address_answer(
    snapshot: GridSnapshot,
    match: AddressMatch,
    address: str,
    max_distance_m: float = 5000.0,
    with_phone: bool = False,
) -> dict[str, Any]:
    """The lookup answer for a matched address: its point's answer plus the match's
    `precision`, `confidence` and the address candidates."""
    answers = resolve_points(
        snapshot, np.array([match.lon]), np.array([match.lat]), max_distance_m=max_distance_m
    )
    body = answer_dict(snapshot, answers, 0, with_phone)
    matched = match.to_dict()
    body["precision"] = matched["precision"]
    body["confidence"] = round(matched["confidence"], 3)
    body["ambiguous"] = body["ambiguous"] or matched["ambiguous"]
    body["address"] = {
        "text": address,
        "matched_text": matched["matched_text"],
        "candidates": matched["candidates"],
    }
    return body
