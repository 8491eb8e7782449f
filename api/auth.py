"""API keys, roles and the one dependency every route declares.

Roles are cumulative (each adds to the one below it), as DESIGN.md describes. What each
role may do is written once, in `PERMISSIONS`; routes name a permission, never a role.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine, text

from api.audit import record_write
from api.errors import GridcoverError, Problem

KEY_PREFIX = "gck_"


class Role(IntEnum):
    anonymous = 0
    viewer = 1
    dispatcher = 2
    planner = 3
    admin = 4


# The access matrix: the weakest role that holds each permission.
PERMISSIONS: dict[str, Role] = {
    "read:public": Role.anonymous,  # health, landing, admin areas, grid outlines, county coverage
    "read:coverage": Role.viewer,
    "lookup": Role.dispatcher,
    "read:incidents": Role.dispatcher,
    "write:incidents": Role.dispatcher,
    "read:cameras_visible": Role.dispatcher,
    "read:worker_name": Role.viewer,  # and the worker's phone masked (show_worker)
    "read:worker_phone": Role.dispatcher,  # the whole phone
    "read:cameras": Role.planner,
    "read:fov": Role.planner,
    "read:gaps": Role.planner,
    "plan": Role.planner,
    "write:grids": Role.admin,
    "write:cameras": Role.admin,
    "delete:incidents": Role.admin,
    "manage:keys": Role.admin,
    "read:audit": Role.admin,
}
ASSIGNABLE_ROLES = tuple(r.name for r in Role if r is not Role.anonymous)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and role, or the anonymous public."""

    role: Role
    name: str = "anonymous"
    key_id: int | None = None

    @property
    def actor(self) -> str:
        """Who the audit log names: the key's name and id (names need not be unique)."""
        return self.name if self.key_id is None else f"{self.name} (key {self.key_id})"

    def can(self, permission: str) -> bool:
        return self.role >= PERMISSIONS[permission]


ANONYMOUS = Principal(Role.anonymous)


def hash_key(key: str) -> str:
    """Keys are 256-bit random, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_role(value: str) -> Role:
    if value not in ASSIGNABLE_ROLES:
        raise GridcoverError(f"unknown role {value!r}: use one of {', '.join(ASSIGNABLE_ROLES)}")
    return Role[value]


def create_api_key(
    conn: Connection,
    role: str,
    name: str,
    expires_at: datetime | None = None,
    *,
    actor: str | None = None,
) -> tuple[int, str]:
    """Store a new key (hashed) and return `(id, key)`; the key is not recoverable later.
    With `actor`, the creation is written to the audit log too."""
    parse_role(role)
    if not name.strip():
        raise GridcoverError("a key needs a non-empty --name saying who or what uses it")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = conn.execute(
        text(
            "INSERT INTO api_key (name, role, key_prefix, key_hash, expires_at) "
            "VALUES (:name, :role, :prefix, :hash, :expires_at) RETURNING id"
        ),
        {
            "name": name.strip(),
            "role": role,
            "prefix": key[:10],
            "hash": hash_key(key),
            "expires_at": expires_at,
        },
    ).scalar_one()
    if actor is not None:
        after = {"name": name.strip(), "role": role, "expires_at": expires_at}
        record_write(conn, actor, "create", "api_key", key_id, after=after)
    return key_id, key


def revoke_api_key(conn: Connection, key_id: int, *, actor: str | None = None) -> bool:
    """Mark a key revoked (audited with `actor`); False when no live key has that id."""
    row = conn.execute(
        text(
            "UPDATE api_key SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL "
            "RETURNING name, role, expires_at, revoked_at"
        ),
        {"id": key_id},
    ).first()
    if row is not None and actor is not None:
        after = dict(row._mapping)
        before = after | {"revoked_at": None}
        record_write(conn, actor, "revoke", "api_key", key_id, before=before, after=after)
    return row is not None


def list_api_keys(conn: Connection) -> list[dict[str, object]]:
    """Every key's id, name, role, prefix and dates; never the key or its hash."""
    rows = conn.execute(
        text(
            "SELECT id, name, role, key_prefix, created_at, expires_at, revoked_at "
            "FROM api_key ORDER BY id"
        )
    ).mappings()
    return [dict(row) for row in rows]


LIVE_KEY_SQL = (
    "SELECT id, name, role, expires_at FROM api_key WHERE key_hash = :hash "
    "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
)
# Revocation is one-way and keys are never deleted, so this pair changes with every
# create and every revoke, whichever process or transaction made it.
KEYS_MARKER_SQL = "SELECT count(*), count(revoked_at) FROM api_key"


class KeyCache:
    """Live keys remembered by this process, so most requests need no database round trip.

    A remembered key is trusted until it expires; whether any key was revoked is asked of
    the database at most once per `recheck_s` (one cheap query), and the whole cache is
    dropped when so. A revocation made anywhere (CLI, another worker, SQL) therefore
    takes effect here within `recheck_s` seconds; one made through this process at once
    (`forget_all`). Unknown keys are always looked up, never remembered.
    """

    def __init__(self, engine: Engine, recheck_s: float = 1.0):
        self._engine = engine
        self._recheck_s = recheck_s
        self._live: dict[str, tuple[Principal, datetime | None]] = {}
        self._marker: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def remembered(self, key: str) -> Principal | None:
        """The principal of a remembered live key when no database check is due, else None
        (then ask `principal`). Never does I/O, so it suits the event loop."""
        if time.monotonic() - self._checked_at >= self._recheck_s:
            return None
        cached = self._live.get(hash_key(key))
        if cached is None:
            return None
        principal, expires_at = cached
        return principal if expires_at is None or expires_at > datetime.now(UTC) else None

    def principal(self, key: str) -> Principal | None:
        """The principal behind a live key, or None (unknown, revoked or expired)."""
        self._recheck()
        digest = hash_key(key)
        cached = self._live.get(digest)
        if cached is not None:
            principal, expires_at = cached
            if expires_at is None or expires_at > datetime.now(UTC):
                return principal
            self._live.pop(digest, None)
            return None
        with self._engine.connect() as conn:
            row = conn.execute(text(LIVE_KEY_SQL), {"hash": digest}).first()
        if row is None:
            return None
        principal = Principal(Role[row.role], row.name, row.id)
        self._live[digest] = (principal, row.expires_at)
        return principal

    def forget_all(self) -> None:
        """Drop every remembered key (after a revocation made through this process)."""
        with self._lock:
            self._live.clear()
            self._checked_at = float("-inf")

    def _recheck(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self._recheck_s:
            return
        with self._lock:
            if now - self._checked_at < self._recheck_s:
                return
            with self._engine.connect() as conn:
                marker = tuple(conn.execute(text(KEYS_MARKER_SQL)).one())
            if marker != self._marker:
                self._live.clear()
                self._marker = marker
            self._checked_at = now


bearer_scheme = HTTPBearer(auto_error=False, description="An API key from `gridcover keys create`")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Anonymous without a header; 401 for a header that holds no live key."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise Problem(
                401,
                "the Authorization header must be 'Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return ANONYMOUS
    cache: KeyCache = request.app.state.key_cache
    principal = cache.remembered(credentials.credentials) or await run_in_threadpool(
        cache.principal, credentials.credentials
    )
    if principal is None:
        raise Problem(
            401,
            "unknown, revoked or expired API key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


def require(permission: str) -> Callable[..., Principal]:
    """Dependency factory: the caller must hold `permission` (401 anonymous, 403 too weak)."""
    needed = PERMISSIONS[permission]

    # async: it only compares, so it runs on the event loop instead of a thread hop.
    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role >= needed:
            return principal
        if principal.role is Role.anonymous:
            raise Problem(
                401,
                f"this needs an API key with role {needed.name} or higher",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise Problem(403, f"role {principal.role.name} may not do this; it needs {needed.name}")

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    # What the route needs, for the access test that checks each route against the matrix.
    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


def mask_phone(phone: str) -> str:
    """A phone number with its middle digits starred, as Chinese services show them
    (13812345678 -> 138****5678): the first three and last four digits stay; with fewer
    than eight digits only the last two do. Other characters are kept."""
    digits = sum(c.isdigit() for c in phone)
    head, tail = (3, 4) if digits >= 8 else (0, 2)
    masked, seen = [], 0
    for c in phone:
        if c.isdigit():
            seen += 1
            masked.append(c if seen <= head or seen > digits - tail else "*")
        else:
            masked.append(c)
    return "".join(masked)


def show_worker(principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (a grid's, holding `worker_name` and `worker_phone`) with the grid worker's
    details as `principal` may see them: none anonymously, the name and a masked phone
    from viewer, the whole phone from dispatcher. Changes and returns `fields`."""
    if not principal.can("read:worker_name"):
        fields.pop("worker_name", None)
        fields.pop("worker_phone", None)
    elif not principal.can("read:worker_phone") and fields.get("worker_phone"):
        fields["worker_phone"] = mask_phone(fields["worker_phone"])
    return fields
