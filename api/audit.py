"""The audit log: one append-only row for every write, with the state before and after.

Rows are written by `record_write` inside the transaction of the write they record and
read by `read_audit` (GET /v1/audit, admins only); nothing changes or deletes them, and
the database refuses UPDATE, DELETE and TRUNCATE on the table (migration 0005).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, text

# psycopg's parameter style: the statement also goes into pipelines (`audit_statement`)
AUDIT_INSERT_SQL = (
    "INSERT INTO audit_log (actor, action, entity, entity_id, before, after) "
    "VALUES (%(actor)s, %(action)s, %(entity)s, %(entity_id)s, "
    "%(before)s::jsonb, %(after)s::jsonb)"
)


def record_write(
    conn: Connection,
    actor: str,
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Append an audit row inside the caller's transaction, so it lands only with the write."""
    conn.connection.driver_connection.execute(
        *audit_statement(actor, action, entity, entity_id, before, after)
    )


def audit_statement(
    actor: str,
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The statement `record_write` runs and its parameters, for a caller that sends it
    along with others in one round trip."""
    return AUDIT_INSERT_SQL, {
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": None if entity_id is None else str(entity_id),
        "before": _json(before),
        "after": _json(after),
    }


def _json(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str).decode()


@dataclass(frozen=True)
class AuditFilter:
    """Which audit rows to read; every field given must match (None: any)."""

    entity: str | None = None
    entity_id: str | None = None
    actor: str | None = None  # the whole actor, or a key's name (then any of its keys)
    action: str | None = None
    at_from: datetime | None = None  # at or after
    at_to: datetime | None = None  # before


# Fixed conditions with bound values only; a filter picks which of them apply.
FILTER_SQL = {
    "entity": "entity = :entity",
    "entity_id": "entity_id = :entity_id",
    "actor": "(actor = :actor OR starts_with(actor, :actor || ' (key '))",
    "action": "action = :action",
    "at_from": "at >= :at_from",
    "at_to": "at < :at_to",
}


def read_audit(
    conn: Connection, where: AuditFilter, limit: int, offset: int = 0
) -> tuple[list[dict[str, Any]], bool]:
    """Audit rows matching `where`, newest first, and whether more follow this page."""
    params = {name: value for name, value in asdict(where).items() if value is not None}
    conditions = " AND ".join(FILTER_SQL[name] for name in params) or "true"
    rows = conn.execute(
        text(
            "SELECT id, at, actor, action, entity, entity_id, before, after FROM audit_log "
            f"WHERE {conditions} ORDER BY at DESC, id DESC LIMIT :limit OFFSET :offset"
        ),
        params | {"limit": limit + 1, "offset": offset},
    ).mappings()
    entries = [dict(row) for row in rows]
    return entries[:limit], len(entries) > limit
