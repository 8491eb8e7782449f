"""Which cameras see a point: the working cameras in memory, kept current by notices.

`GET /v1/cameras/visible` is asked by dispatchers looking for evidence, one point at a
time, and must answer in a few milliseconds. Each server process keeps the working
cameras (`geo.camera.SightIndex`) and answers from memory, without a query. The answer
follows the `camera` rows (position, status, lens, range), as the stored FOVs do after
an edit through the API or a recompute.

Keeping it current: every statement writing `camera` NOTIFYs the ids it changed on
commit (migration 0008), from any process or from SQL by hand. A background thread
listens and reads those cameras again, so a change reaches every process within
milliseconds; until then the process answers as before. A write made through this
process marks its cameras at once (`CameraSights.changed`), and answers wait until they
are read: in the writing process a read that follows an edit always sees it.

Reading a few cameras again does not rebuild the index of 50,000: they go into a small
second index that overrides the first (their old rows hidden there), which is merged
into a new main index once it holds `MERGE_AT_CAMERAS` cameras. After the listening
connection was lost (notices may have been missed), or after a statement changed more
than 200 cameras (`*`), everything is read again.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, text

from api.db import ChannelListener, reads_only
from geo.camera import ACTIVE_STATUSES, DORI_LEVELS, SightIndex, level_ranges_m

log = logging.getLogger("gridcover.camera_sights")

CAMERA_CHANGED_CHANNEL = "gridcover_camera_changed"
EVERY_CAMERA = "*"
MERGE_AT_CAMERAS = 500

SIGHT_COLUMNS = (
    "id, gb_id, kind, ST_X(geom_m), ST_Y(geom_m), azimuth_deg, hfov_deg, resolution_h_px, range_m"
)
SIGHT_SQL = f"SELECT {SIGHT_COLUMNS} FROM camera WHERE status = ANY(:active)"
SIGHT_BY_ID_SQL = SIGHT_SQL + " AND id = ANY(:ids)"


@dataclass(frozen=True)
class Sights:
    """Cameras with their ids and GB/T 28181 ids alongside a `SightIndex` of them."""

    camera_id: NDArray[np.int64]
    gb_id: NDArray[np.object_]
    index: SightIndex

    @classmethod
    def from_rows(cls, rows: list[Any]) -> Sights:
        """From rows of `SIGHT_SQL`: the DORI ranges come from the camera's kind, sensor,
        HFOV and range override, exactly as for its stored FOVs."""
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(SIGHT_COLUMNS.split(","))
        ids, gb_ids, kinds, x, y, azimuth, hfov, resolution, range_m = columns
        hfov_deg = np.array(hfov, dtype=np.float64)
        ranges = level_ranges_m(
            np.array(kinds, dtype=object),
            np.array(resolution, dtype=np.float64),
            hfov_deg,
            np.array([np.nan if r is None else r for r in range_m], dtype=np.float64),
        )
        index = SightIndex(
            np.array(x, dtype=np.float64),
            np.array(y, dtype=np.float64),
            np.array(azimuth, dtype=np.float64),
            hfov_deg,
            ranges.reshape(len(ids), len(DORI_LEVELS)),
        )
        return cls(np.array(ids, dtype=np.int64), np.array(gb_ids, dtype=object), index)

    def rows_of(self, camera_ids: list[int]) -> NDArray[np.intp]:
        """The rows of those of `camera_ids` that are here."""
        ids = np.asarray(camera_ids, dtype=np.int64)
        if not len(self.camera_id):
            return np.zeros(0, dtype=np.intp)
        order = self._id_order
        found = np.searchsorted(self.camera_id, ids, sorter=order)
        rows = order[np.minimum(found, len(order) - 1)]
        return rows[self.camera_id[rows] == ids]

    @functools.cached_property
    def _id_order(self) -> NDArray[np.intp]:
        return np.argsort(self.camera_id)

    def merged(self, hidden: NDArray[np.bool_], newer: Sights) -> Sights:
        """These cameras but the `hidden` ones, and `newer`'s, in one new index."""
        keep = ~hidden
        a, b = self.index, newer.index
        return Sights(
            np.concatenate([self.camera_id[keep], newer.camera_id]),
            np.concatenate([self.gb_id[keep], newer.gb_id]),
            SightIndex(
                np.concatenate([a.x_m[keep], b.x_m]),
                np.concatenate([a.y_m[keep], b.y_m]),
                np.concatenate([a.azimuth_deg[keep], b.azimuth_deg]),
                np.concatenate([a.hfov_deg[keep], b.hfov_deg]),
                np.concatenate([a.ranges_m[keep], b.ranges_m]),
            ),
        )


@dataclass(frozen=True)
class _State:
    """What answers read, swapped whole: `main` with the rows of `hidden` superseded by
    `recent`, the cameras read again since `main` was built (`recent_rows`, None for a
    camera that no longer sees anything)."""

    main: Sights
    hidden: NDArray[np.bool_]
    recent_rows: dict[int, Any]
    recent: Sights


class CameraSights:
    """The working cameras of one server process, for `cameras/visible` (module doc)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = reads_only(engine)  # no BEGIN/ROLLBACK round trips around a read
        self._state: _State | None = None
        # Marks are numbered. What is still to be read: camera id -> the number of the mark
        # that asked for it, and the number of the last mark asking for everything (0:
        # none); they are cleared only once what was read after them is in place, and only
        # if no newer mark came meanwhile. `_read_upto`: every mark up to it is read.
        # `_own_upto`: the last mark of a write made through this process, which answers
        # wait for (the writer reads its own writes); marks from notices only start a read.
        self._pending: dict[int, int] = {}
        self._pending_all = 1
        self._marks = 1
        self._read_upto = 0
        self._own_upto = 1
        self._pending_lock = threading.Lock()  # guards the marks, never held over I/O
        self._read_lock = threading.Lock()  # one reader of the database at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """Whether the cameras have been read once."""
        return self._state is not None

    # -- answers -------------------------------------------------------------------------
    def visible(self, x_m: float, y_m: float) -> list[dict[str, Any]] | None:
        """The cameras that see the EPSG:4546 point, best level first, then nearest (then by
        id); None while a write made through this process is still to be read
        (`visible_now` reads it, off the event loop)."""
        # The marks before the state: `catch_up` puts the state in place before it moves
        # `_read_upto`, so a state read after a current `_read_upto` holds those marks.
        if self._own_upto > self._read_upto:
            return None
        state = self._state
        return None if state is None else _answer(state, x_m, y_m)

    def visible_now(self, x_m: float, y_m: float) -> list[dict[str, Any]]:
        """`visible` once this process's writes made before the call are read (blocking)."""
        wanted = self._own_upto
        while self._read_upto < wanted or self._state is None:
            self.catch_up()
        return _answer(self._state, x_m, y_m)

    # -- keeping current -----------------------------------------------------------------
    def changed(self, camera_ids: Iterable[int] | None, *, here: bool = True) -> None:
        """Mark cameras as changed (None: all of them) after a committed write. `here`: the
        write was made through this process, and answers wait until it is read; else
        (another process's, learnt from a notice) the old answers stand meanwhile."""
        with self._pending_lock:
            self._marks += 1
            if camera_ids is None:
                self._pending_all = self._marks
            else:
                self._pending.update(dict.fromkeys((int(i) for i in camera_ids), self._marks))
            if here:
                self._own_upto = self._marks

    def catch_up(self) -> None:
        """Read the cameras marked as changed from the database and index them."""
        with self._read_lock:
            with self._pending_lock:
                everything, marked, upto = self._pending_all, dict(self._pending), self._marks
            state = self._state
            if everything or state is None:
                state = self._read_all()
            elif marked:
                state = self._read_again(state, sorted(marked))
            with self._pending_lock:
                self._state = state
                self._read_upto = upto
                if self._pending_all == everything:
                    self._pending_all = 0
                for camera_id, mark in marked.items():
                    if self._pending.get(camera_id) == mark:
                        del self._pending[camera_id]

    def _read_all(self) -> _State:
        with self._reader.connect() as conn:
            rows = conn.execute(text(SIGHT_SQL), {"active": sorted(ACTIVE_STATUSES)}).all()
        return _fresh(Sights.from_rows(rows))

    def _read_again(self, state: _State, ids: list[int]) -> _State:
        params = {"active": sorted(ACTIVE_STATUSES), "ids": ids}
        with self._reader.connect() as conn:
            rows = conn.execute(text(SIGHT_BY_ID_SQL), params).all()
        recent_rows = state.recent_rows | dict.fromkeys(ids) | {row[0]: row for row in rows}
        hidden = state.hidden.copy()
        hidden[state.main.rows_of(ids)] = True
        recent = Sights.from_rows([row for row in recent_rows.values() if row is not None])
        if len(recent_rows) >= MERGE_AT_CAMERAS:
            return _fresh(state.main.merged(hidden, recent))
        return _State(state.main, hidden, recent_rows, recent)

    def start(self) -> None:
        """Listen for camera writes in the background (and read the cameras there)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="camera-sights", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop listening (within about a second)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        listener = ChannelListener(self._engine, CAMERA_CHANGED_CHANNEL)
        failing = False  # an outage is logged when it starts and ends, not at every try
        while not self._stop.is_set():
            try:
                if not listener.connected:
                    if not listener.connect():
                        self._stop.wait(1.0)
                        continue
                    self.changed(None, here=False)  # notices sent while away are lost
                for payload in listener.notices(0.25) or ():
                    self.changed(_ids(payload), here=False)
                self.catch_up()
            except Exception:
                if not failing:
                    log.warning("could not read changed cameras; retrying", exc_info=True)
                failing = True
                self._stop.wait(0.25)
            else:
                failing = False
        listener.close()


def _answer(state: _State, x_m: float, y_m: float) -> list[dict[str, Any]]:
    """`CameraSights.visible` from `state`: the main index's cameras but those read again
    since, and those read again."""
    main = state.main
    rows, distance, bearing, level = main.index.sees(x_m, y_m)
    shown = ~state.hidden[rows]
    rows, distance, bearing, level = rows[shown], distance[shown], bearing[shown], level[shown]
    camera_id, gb_id = main.camera_id[rows], main.gb_id[rows]
    if len(state.recent.camera_id):
        more, more_distance, more_bearing, more_level = state.recent.index.sees(x_m, y_m)
        camera_id = np.concatenate([camera_id, state.recent.camera_id[more]])
        gb_id = np.concatenate([gb_id, state.recent.gb_id[more]])
        distance = np.concatenate([distance, more_distance])
        bearing = np.concatenate([bearing, more_bearing])
        level = np.concatenate([level, more_level])
    return [
        {
            "camera_id": int(camera_id[i]),
            "gb_id": str(gb_id[i]),
            "distance_m": round(float(distance[i]), 1),
            "bearing_deg": round(float(bearing[i]), 1),
            "level": DORI_LEVELS[level[i]],
        }
        for i in np.lexsort((camera_id, distance, -level)).tolist()
    ]


def _fresh(main: Sights) -> _State:
    empty = Sights.from_rows([])
    return _State(main, np.zeros(len(main.camera_id), dtype=bool), {}, empty)


def _ids(payload: str) -> list[int] | None:
    """The camera ids of a notice; None (read everything) for `*` or what is not a list
    of ids (someone's NOTIFY by hand)."""
    parts = payload.split(",")
    if payload == EVERY_CAMERA or not all(part.isdigit() for part in parts):
        return None
    return [int(part) for part in parts]
