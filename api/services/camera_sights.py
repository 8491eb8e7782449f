"""Which cameras see a point: the working cameras in memory, kept current by notices.

`GET /v1/cameras/visible` is asked by dispatchers looking for evidence, one point at a
time, and must answer in a few milliseconds. Each server process keeps the working
cameras (`geo.camera.SightIndex`) and answers from memory, without a query.

Keeping it current: every statement writing `camera` NOTIFYs the ids it changed on
commit (migration 0008), from any process or from SQL by hand. A background thread
listens and reads those cameras again, so a change reaches every process within
milliseconds. A write made through this process also marks its cameras at once
(`CameraSights.changed`), and an answer is never given while marked cameras are unread:
in the writing process a read that follows an edit always sees it.

Reading a few cameras again does not rebuild the index of 50,000: they go into a small
second index that overrides the first (their old rows hidden there), which is merged
into a new main index once it holds `MERGE_AT` cameras. After the listening connection
was lost (notices may have been missed), or after a statement changed more than 200
cameras (`*`), everything is read again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, text

from api.db import ChannelListener
from geo.camera import ACTIVE_STATUSES, DORI_LEVELS, SightIndex, level_ranges_m

log = logging.getLogger("gridcover.camera_sights")

CAMERA_CHANGED_CHANNEL = "gridcover_camera_changed"
EVERY_CAMERA = "*"
MERGE_AT = 500

SIGHT_SQL = """
SELECT id, gb_id, kind, ST_X(geom_m), ST_Y(geom_m), azimuth_deg, hfov_deg,
       resolution_h_px, range_m
FROM camera WHERE status = ANY(:active)
"""
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
        columns = list(zip(*rows, strict=True)) if rows else [()] * 9
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

    def __init__(self, engine: Engine):
        self._engine = engine
        self._state: _State | None = None
        # What is still to be read: camera id -> the number of the mark that asked for
        # it, and the number of the last mark asking for everything (0: none). Marks are
        # cleared only once what was read after them is in place, and only if no newer
        # mark came meanwhile, so no answer is given from cameras being read.
        self._pending: dict[int, int] = {}
        self._pending_all = 1
        self._marks = 1
        self._pending_lock = threading.Lock()  # guards the three above, never held over I/O
        self._read_lock = threading.Lock()  # one reader of the database at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- answers -------------------------------------------------------------------------
    def visible(self, x_m: float, y_m: float) -> list[dict[str, Any]] | None:
        """The cameras that see the EPSG:4546 point, best level first, then nearest; None
        when changed cameras are still to be read (`catch_up`, which does I/O, first)."""
        state = self._state
        if state is None or self._pending_all or self._pending:
            return None
        rows, distance, bearing, level = state.main.index.sees(x_m, y_m)
        shown = ~state.hidden[rows]
        found = [(state.main, rows[shown], distance[shown], bearing[shown], level[shown])]
        if len(state.recent.camera_id):
            found.append((state.recent, *state.recent.index.sees(x_m, y_m)))
        camera_id = np.concatenate([sights.camera_id[r] for sights, r, *_ in found])
        gb_id = np.concatenate([sights.gb_id[r] for sights, r, *_ in found])
        distance, bearing, level = (np.concatenate([f[k] for f in found]) for k in (2, 3, 4))
        return [
            {
                "camera_id": int(camera_id[i]),
                "gb_id": str(gb_id[i]),
                "distance_m": round(float(distance[i]), 1),
                "bearing_deg": round(float(bearing[i]), 1),
                "level": DORI_LEVELS[level[i]],
            }
            for i in np.lexsort((distance, -level)).tolist()
        ]

    def visible_now(self, x_m: float, y_m: float) -> list[dict[str, Any]]:
        """`visible` after reading what changed (blocking; run it off the event loop)."""
        while (answer := self.visible(x_m, y_m)) is None:
            self.catch_up()
        return answer

    # -- keeping current -----------------------------------------------------------------
    def changed(self, camera_ids: Iterable[int] | None) -> None:
        """Mark cameras as changed (None: all of them); answers wait until they are read."""
        with self._pending_lock:
            self._marks += 1
            if camera_ids is None:
                self._pending_all = self._marks
            else:
                self._pending.update(dict.fromkeys((int(i) for i in camera_ids), self._marks))

    def catch_up(self) -> None:
        """Read the cameras marked as changed from the database and index them."""
        with self._read_lock:
            with self._pending_lock:
                everything, marked = self._pending_all, dict(self._pending)
            if not everything and not marked:
                return
            if everything or self._state is None:
                state = self._read_all()
            else:
                state = self._read_again(sorted(marked))
            with self._pending_lock:
                self._state = state
                if self._pending_all == everything:
                    self._pending_all = 0
                for camera_id, mark in marked.items():
                    if self._pending.get(camera_id) == mark:
                        del self._pending[camera_id]

    def _read_all(self) -> _State:
        with self._engine.connect() as conn:
            rows = conn.execute(text(SIGHT_SQL), {"active": sorted(ACTIVE_STATUSES)}).all()
        return _fresh(Sights.from_rows(rows))

    def _read_again(self, ids: list[int]) -> _State:
        params = {"active": sorted(ACTIVE_STATUSES), "ids": ids}
        with self._engine.connect() as conn:
            rows = conn.execute(text(SIGHT_BY_ID_SQL), params).all()
        state = self._state
        assert state is not None
        recent_rows = state.recent_rows | dict.fromkeys(ids) | {row[0]: row for row in rows}
        hidden = np.isin(state.main.camera_id, list(recent_rows))
        recent = Sights.from_rows([row for row in recent_rows.values() if row is not None])
        if len(recent_rows) >= MERGE_AT:
            return _fresh(state.main.merged(hidden, recent))
        return _State(state.main, hidden, recent_rows, recent)

    def start(self) -> None:
        """Listen for camera writes in the background (and read the cameras there)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="camera-sights", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        listener = ChannelListener(self._engine, CAMERA_CHANGED_CHANNEL)
        failing = False  # an outage is logged when it starts and ends, not at every try
        while not self._stop.is_set():
            if not listener.connected:
                if not listener.connect():
                    self._stop.wait(1.0)
                    continue
                self.changed(None)  # notices sent while away are lost
            for payload in listener.notices(0.25) or ():
                self.changed(None if payload == EVERY_CAMERA else _ids(payload))
            try:
                self.catch_up()
            except Exception:
                if not failing:
                    log.warning("could not read changed cameras; retrying", exc_info=True)
                failing = True
            else:
                failing = False
        listener.close()


def _fresh(main: Sights) -> _State:
    empty = Sights.from_rows([])
    return _State(main, np.zeros(len(main.camera_id), dtype=bool), {}, empty)


def _ids(payload: str) -> list[int]:
    return [int(part) for part in payload.split(",") if part]
