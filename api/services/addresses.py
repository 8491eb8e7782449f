"""The address gazetteer: entries an address text resolves to, and the matcher over them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from api.services.bulk import copy_frame, select_columns
from api.services.lookup import freeze_long_lived
from api.services.validation import RowErrors
from geo.address import AddressMatcher

log = logging.getLogger("gridcover")

PRECISIONS = ("house_number", "road", "village", "township", "county")


def write_addresses(
    conn: Connection, addresses: gpd.GeoDataFrame, progress: Callable[[int], None] | None = None
) -> int:
    """Insert gazetteer entries (WGS84 points) after validating them; all or nothing."""
    errors = RowErrors("addresses")
    errors.require_columns(addresses, ["full_text", "precision", "geometry"])
    errors.require_values(addresses, ["full_text"])
    errors.check_choice(addresses, "precision", PRECISIONS)
    errors.check_text(addresses)
    errors.check_geometry(addresses, "geometry", ("Point",))
    errors.raise_if_any()
    frame = select_columns(addresses, ["full_text", "components", "village_code", "precision"])
    frame["components"] = frame["components"].map(lambda c: c if isinstance(c, dict) else {})
    frame["geom"] = addresses.geometry.to_numpy()
    return copy_frame(conn, "address", frame, {"geom": 4326}, progress)


GAZETTEER_SQL = """
SELECT full_text, components, village_code, precision, ST_X(geom) AS lon, ST_Y(geom) AS lat
FROM address
"""
DIVISIONS_SQL = """
SELECT code, name, level, parent_code, ST_AsBinary(geom) AS wkb
FROM admin_area WHERE level IN ('county', 'township', 'village')
"""
ADDRESS_FINGERPRINT_SQL = """
SELECT (SELECT count(*) FROM address), (SELECT max(id) FROM address),
       (SELECT count(*) FROM admin_area)
"""


def load_address_matcher(engine: Engine) -> tuple[AddressMatcher, tuple[object, ...]]:
    """A matcher over the stored gazetteer and divisions, and the fingerprint it reflects."""
    with engine.connect() as conn:
        fingerprint = tuple(conn.execute(text(ADDRESS_FINGERPRINT_SQL)).one())
        gazetteer = pd.DataFrame(conn.execute(text(GAZETTEER_SQL)).mappings().all())
        divisions = pd.DataFrame(conn.execute(text(DIVISIONS_SQL)).mappings().all())
    if divisions.empty:
        return AddressMatcher.build(None, None), fingerprint
    divisions = gpd.GeoDataFrame(
        divisions.drop(columns="wkb"),
        geometry=shapely.from_wkb(divisions["wkb"].map(bytes).to_numpy()),
        crs=4326,
    )
    return AddressMatcher.build(gazetteer if len(gazetteer) else None, divisions), fingerprint


class AddressBook:
    """The process's address matcher: built on first use, rebuilt when the gazetteer or
    the divisions change (checked at most every `check_interval_s`).

    The check (counting the gazetteer: ~10 ms on the full demo) and any rebuild run in a
    background thread that the first lookup after the interval starts; that lookup, and
    every other, answers with the matcher at hand meanwhile. Made by a lookup, the check
    was paid by one request in every 5 s of each process, and held the lookups behind it."""

    def __init__(self, engine: Engine, check_interval_s: float = 5.0) -> None:
        self._engine = engine
        self._interval = check_interval_s
        self._lock = threading.Lock()  # held while the first matcher is built
        self._checking = threading.Lock()  # held by the one check under way
        self._matcher: AddressMatcher | None = None
        self._fingerprint: tuple[object, ...] | None = None
        self._checked_at = 0.0
        self._failing = False  # an outage is logged when it starts, not at every check

    def start(self) -> None:
        """Build the matcher now, in the background: built by the first address lookup
        instead, it held that process for seconds (its requests waiting, and every other
        thread on the GIL). A database not there yet leaves it to that first lookup."""
        threading.Thread(target=self._build_quietly, name="address-matcher", daemon=True).start()

    @property
    def ready(self) -> bool:
        """Whether the matcher is built (address lookups then never wait for it)."""
        return self._matcher is not None

    def _build_quietly(self) -> None:
        try:
            self.matcher()
        except Exception:  # the first address lookup tries again, and reports
            log.warning("could not build the address matcher at start-up", exc_info=True)

    def matcher(self) -> AddressMatcher:
        """The current matcher (built now if there is none yet); a check for changes is
        started in the background when one is due."""
        matcher = self._matcher
        if matcher is None:
            return self._first()
        if time.monotonic() - self._checked_at >= self._interval and self._checking.acquire(
            blocking=False
        ):
            threading.Thread(target=self._check, name="address-matcher-check", daemon=True).start()
        return matcher

    def _first(self) -> AddressMatcher:
        with self._lock:
            if self._matcher is None:
                matcher, fingerprint = load_address_matcher(self._engine)
                self._matcher, self._fingerprint = matcher, fingerprint
                self._checked_at = time.monotonic()
                freeze_long_lived()
            return self._matcher

    def _check(self) -> None:
        """Rebuild the matcher if the gazetteer or the divisions changed (holding
        `_checking`, which it releases)."""
        try:
            self.refresh_if_changed()
            self._failing = False
        except Exception:  # the database may be away a while; keep the matcher at hand
            if not self._failing:
                log.warning("address matcher check failed; keeping the current one", exc_info=True)
            self._failing = True
        finally:
            self._checked_at = time.monotonic()
            self._checking.release()

    def refresh_if_changed(self) -> bool:
        """Rebuild when the gazetteer or the divisions changed since the current matcher
        was built; True if rebuilt."""
        with self._engine.connect() as conn:
            fingerprint = tuple(conn.execute(text(ADDRESS_FINGERPRINT_SQL)).one())
        if fingerprint == self._fingerprint:
            return False
        self._matcher, self._fingerprint = load_address_matcher(self._engine)
        return True
