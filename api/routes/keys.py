"""API keys over HTTP, for admins: list, create, revoke (each write audited)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from api.auth import Principal, create_api_key, list_api_keys, require, revoke_api_key
from api.errors import Problem
from api.responses import problems

router = APIRouter(prefix="/v1", tags=["keys"], responses=problems(401, 403, 503))
Admin = Annotated[Principal, Depends(require("manage:keys"))]


class KeyRequest(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=200,
        # Something visible, and no control character anywhere (\S alone admits them).
        pattern=r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$",
        description="who or what uses the key",
    )
    role: Literal["viewer", "dispatcher", "planner", "admin"]
    expires_at: datetime | None = None


@router.get("/keys", summary="List API keys (never the keys themselves)")
def list_keys(request: Request, _: Admin) -> dict[str, list[dict[str, object]]]:
    with request.app.state.engine.connect() as conn:
        return {"keys": list_api_keys(conn)}


@router.post(
    "/keys",
    status_code=201,
    summary="Create an API key; the key is shown only here",
    responses=problems(413, 422),
)
def create_key(body: KeyRequest, request: Request, admin: Admin) -> dict[str, object]:
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise Problem(
            422,
            "expires_at lies in the past: the key would never work",
            errors=[{"field": "expires_at", "reason": "must be in the future"}],
        )
    with request.app.state.engine.begin() as conn:
        key_id, key = create_api_key(conn, body.role, body.name, body.expires_at, actor=admin.actor)
    return {"id": key_id, "name": body.name, "role": body.role, "key": key}


@router.delete(
    "/keys/{key_id}", status_code=204, summary="Revoke an API key", responses=problems(400, 404)
)
def revoke_key(key_id: int, request: Request, admin: Admin) -> None:
    with request.app.state.engine.begin() as conn:
        if not revoke_api_key(conn, key_id, actor=admin.actor):
            raise Problem(404, f"no live API key with id {key_id}")
    request.app.state.key_cache.forget_all()
