"""GET /v1/audit: the audit log of every write, newest first, for admins.

There is deliberately no route that changes the log (PUT, PATCH or DELETE answer 405);
the database refuses UPDATE, DELETE and TRUNCATE on it too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, StringConstraints

from api.audit import AuditFilter, read_audit
from api.auth import Principal, require
from api.errors import Problem
from api.responses import problems
from api.routes.params import CHINA_STANDARD_TIME

router = APIRouter(prefix="/v1", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("read:audit"))]
NO_CONTROL_CHARS = r"^[^\x00-\x1f]*$"
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_CONTROL_CHARS)]
MAX_LIMIT = 1000


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class Link(BaseModel):
    href: str
    rel: Literal["self", "next"]
    type: Literal["application/json"] = "application/json"


class AuditPage(BaseModel):
    numberReturned: int  # the OGC API spelling, as on the feature pages
    entries: list[AuditEntry]
    links: list[Link]


def _cst(moment: datetime | None) -> datetime | None:
    """Naive times are China Standard Time (+08:00), as everywhere in the API."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=CHINA_STANDARD_TIME)
    return moment


@router.get(
    "/audit",
    summary="The audit log, newest first (admins)",
    responses=problems(400, 401, 403, 503),
)
def get_audit(
    request: Request,
    response: Response,
    _: Auditor,
    entity: Annotated[
        Text | None, Query(description="e.g. grid, camera, api_key, incident")
    ] = None,
    entity_id: Annotated[Text | None, Query(description="the record's id or code")] = None,
    actor: Annotated[
        Text | None, Query(description="who: the whole actor, or a key's name (any of its keys)")
    ] = None,
    action: Annotated[Text | None, Query(description="e.g. create, update, delete, import")] = None,
    at_from: Annotated[
        datetime | None, Query(alias="from", description="at or after; without offset +08:00")
    ] = None,
    at_to: Annotated[
        datetime | None, Query(alias="to", description="before; without offset +08:00")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> AuditPage:
    """Each entry: `id`, `at` (+08:00), `actor` ("key name (key id)", or "cli" for the
    command line), `action`, `entity`, `entity_id` (null for a whole import), `before`
    and `after` (the record's state, null where there is none). Filters combine with AND;
    the `next` link pages on."""
    where = AuditFilter(entity, entity_id, actor, action, _cst(at_from), _cst(at_to))
    if where.at_from is not None and where.at_to is not None and where.at_from >= where.at_to:
        raise Problem(
            400,
            "invalid from: it must be before to",
            errors=[{"field": "from", "in": "query", "reason": "must be before to"}],
        )
    with request.app.state.engine.connect() as conn:
        entries, more = read_audit(conn, where, limit, offset)
    for entry in entries:
        entry["at"] = entry["at"].astimezone(CHINA_STANDARD_TIME)
    links = [Link(href=str(request.url), rel="self")]
    if more:
        next_url = request.url.include_query_params(offset=offset + len(entries), limit=limit)
        links.append(Link(href=str(next_url), rel="next"))
    response.headers["Cache-Control"] = "private, no-store"
    return AuditPage(
        numberReturned=len(entries),
        entries=[AuditEntry(**entry) for entry in entries],
        links=links,
    )
