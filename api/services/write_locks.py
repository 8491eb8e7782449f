"""The advisory locks that serialise writers of one kind (grids, cameras), and what a
writer that waited too long for one is told."""

from __future__ import annotations

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from api.errors import Problem


def wait_for_write_lock(conn: Connection, key: int, kind: str) -> None:
    """Take the transaction-scoped advisory lock `key`, waiting for the writer holding it.

    A wait cut off by the statement timeout means another writer (a long import, usually)
    still holds the lock: a 409 problem saying so (`write_lock_busy`), not "database
    unavailable". `kind` names the writers for the message ("grid")."""
    try:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    except OperationalError as exc:
        if not isinstance(exc.orig, psycopg.errors.QueryCanceled):
            raise
        raise write_lock_busy(kind) from None


def write_lock_busy(kind: str) -> Problem:
    """The problem of a `kind` write that waited for the lock past the statement timeout."""
    return Problem(
        409,
        f"another {kind} write (an import, say) has held the {kind} write lock for longer "
        "than the statement timeout; nothing was changed: retry when it has finished",
        headers={"Retry-After": "10"},
    )
