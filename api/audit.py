"""The audit log: one append-only row for every write, with the state before and after."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, text


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
    conn.execute(
        text(
            "INSERT INTO audit_log (actor, action, entity, entity_id, before, after) "
            "VALUES (:actor, :action, :entity, :entity_id, "
            "CAST(:before AS jsonb), CAST(:after AS jsonb))"
        ),
        {
            "actor": actor,
            "action": action,
            "entity": entity,
            "entity_id": None if entity_id is None else str(entity_id),
            "before": _json(before),
            "after": _json(after),
        },
    )


def _json(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str).decode()
