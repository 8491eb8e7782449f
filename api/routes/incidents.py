"""Incidents over HTTP: intake with grid assignment, lists, the lifecycle, statistics.

Dispatchers (and grid workers' apps, role dispatcher) report and move incidents; only
admins delete (soft). Incidents are never visible anonymously. The work is in
api.services.incidents and api.services.incident_stats; routes parse, authorise, call
and serialise.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Principal, require, show_worker
from api.errors import Problem
from api.responses import FastJSONResponse, problems
from api.routes.bodies import Latitude, OptionalAddress, OptionalPlainText, PlainText
from api.routes.params import CHINA_STANDARD_TIME, PRINTABLE, CoordSys, bbox_param
from api.services.incident_stats import incident_stats_json
from api.services.incidents import (
    ACTIONS,
    INTAKE_CHANNELS,
    MAX_PHOTOS,
    STATES,
    Change,
    Event,
    IncidentFilter,
    Intake,
    IntakeContext,
    apply_event,
    calendar_of,
    create_incident,
    delete_incident,
    list_incidents,
    read_categories,
    read_incident,
    update_incident,
)

router = APIRouter(tags=["incidents"], responses=problems(401, 503))
Reader = Annotated[Principal, Depends(require("read:incidents"))]
Writer = Annotated[Principal, Depends(require("write:incidents"))]
Deleter = Annotated[Principal, Depends(require("delete:incidents"))]
Anyone = Annotated[Principal, Depends(require("read:public"))]
# A report time may run ahead of the server's clock by this much (device clocks).
CLOCK_SKEW = timedelta(minutes=5)


class Reporter(BaseModel):
    """Who reported it, when they want an answer (personal data: dispatchers only)."""

    model_config = ConfigDict(extra="forbid")
    name: OptionalPlainText = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=40, pattern=r"^[0-9+\-() ]*$")
    email: OptionalPlainText = Field(default=None, max_length=200)


class IncidentIn(BaseModel):
    """A reported incident: `lon`/`lat` (in `coord_sys`, with `accuracy_m` metres) or an
    `address`, or both (the point then locates it)."""

    model_config = ConfigDict(extra="forbid")
    category: str = Field(min_length=1, max_length=64, description="a catalogue code")
    lon: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    lat: Latitude = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    coord_sys: CoordSys = "wgs84"
    accuracy_m: float = Field(default=0.0, ge=0, le=10_000, allow_inf_nan=False)
    address: OptionalAddress = Field(default=None, min_length=1, max_length=300)
    description: PlainText = Field(default="", max_length=4000)
    channel: Literal[INTAKE_CHANNELS] = "hotline"  # type: ignore[valid-type]
    photos: list[str] = Field(default_factory=list, max_length=MAX_PHOTOS)
    reported_at: datetime | None = Field(
        default=None, description="default now; without an offset, +08:00"
    )
    reporter: Reporter | None = None


class IncidentPatch(BaseModel):
    """Only what is given changes. A new point or address, or a new category, re-assigns
    (grid, department, due time) and is recorded as a `reassign` event."""

    model_config = ConfigDict(extra="forbid")
    lon: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    lat: Latitude = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    coord_sys: CoordSys = "wgs84"
    accuracy_m: float = Field(default=0.0, ge=0, le=10_000, allow_inf_nan=False)
    address: OptionalAddress = Field(default=None, min_length=1, max_length=300)
    category: str | None = Field(default=None, min_length=1, max_length=64)
    description: OptionalPlainText = Field(default=None, max_length=4000)
    photos: list[str] | None = Field(default=None, max_length=MAX_PHOTOS)
    note: OptionalPlainText = Field(default=None, max_length=2000)


class EventIn(BaseModel):
    """An action on an incident; `score` (1-5) and `comment` go with `evaluate`,
    `assignee` with `dispatch`; `reject` and `return` need a `note` saying why."""

    model_config = ConfigDict(extra="forbid")
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    note: OptionalPlainText = Field(default=None, max_length=2000)
    score: int | None = Field(default=None, ge=1, le=5)
    comment: OptionalPlainText = Field(default=None, max_length=2000)
    assignee: OptionalPlainText = Field(default=None, max_length=200)


def _pair(lon: float | None, lat: float | None) -> None:
    if (lon is None) != (lat is None):
        missing = "lat" if lat is None else "lon"
        raise Problem(
            422,
            f"invalid {missing}: give lon and lat together",
            errors=[{"field": missing, "reason": "required with the other coordinate"}],
        )


def worker_shown(principal: Principal, incident: dict[str, Any]) -> dict[str, Any]:
    """An incident with its grid worker's details as `principal` may see them."""
    if incident["grid"] is not None:
        show_worker(principal, incident["grid"])
    return incident


def _cst(moment: datetime | None) -> datetime | None:
    """Naive times are China Standard Time (+08:00)."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=CHINA_STANDARD_TIME)
    return moment


def intake_context(request: Request) -> IntakeContext:
    """The grids valid now (the process's in-memory index), the address matcher, the
    working-hour calendar and the limits from the settings."""
    state = request.app.state
    settings = state.settings
    return IntakeContext(
        state.grid_locator.current(),
        state.address_book.matcher,
        calendar_of(settings),
        settings.lookup_max_distance_m,
        settings.incident_duplicate_radius_m,
        settings.incident_duplicate_window_h,
    )


def intake_from(body: IncidentIn) -> Intake:
    """The service's intake of a JSON body (422 problems for what the model cannot say)."""
    _pair(body.lon, body.lat)
    if body.lon is None and body.address is None:
        raise Problem(
            422,
            "give the location: lon and lat, or an address",
            errors=[{"field": "lon", "reason": "lon/lat or address required"}],
        )
    reported_at = _cst(body.reported_at)
    if reported_at is not None and reported_at > datetime.now(CHINA_STANDARD_TIME) + CLOCK_SKEW:
        raise Problem(
            422,
            "invalid reported_at: it is in the future",
            errors=[{"field": "reported_at", "reason": "must not be in the future"}],
        )
    reporter = body.reporter.model_dump(exclude_none=True) if body.reporter else None
    return Intake(
        category=body.category,
        lon=body.lon,
        lat=body.lat,
        coord_sys=body.coord_sys,
        accuracy_m=body.accuracy_m,
        address=body.address,
        description=body.description,
        channel=body.channel,
        photos=body.photos,
        reported_at=reported_at,
        reporter=reporter or None,
    )


@router.post(
    "/v1/incidents",
    status_code=201,
    summary="Report an incident; it is assigned to a grid at once",
    response_class=FastJSONResponse,
    responses=problems(403, 413, 422),
)
def post_incident(request: Request, principal: Writer, body: IncidentIn) -> Response:
    """Answers the stored incident (grid, chain, worker, department, `assignment`,
    `due_at`) plus `possible_duplicates`: open incidents of the same category within
    `GRIDCOVER_INCIDENT_DUPLICATE_RADIUS_M` metres reported within
    `GRIDCOVER_INCIDENT_DUPLICATE_WINDOW_H` hours. An unresolvable location is stored
    without a grid (`GET /v1/incidents?unassigned=true`)."""
    intake = intake_from(body)
    context = intake_context(request)
    incident = create_incident(
        request.app.state.engine,
        context,
        intake,
        principal.actor,
        with_phone=True,
    )
    return FastJSONResponse(
        worker_shown(principal, incident),
        status_code=201,
        headers={"Location": f"/v1/incidents/{incident['id']}"},
    )


def _choices(value: str | None, allowed: tuple[str, ...] | None, name: str) -> tuple[str, ...]:
    if not value:
        return ()
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if allowed is not None and v not in allowed]
    if bad:
        raise Problem(
            400,
            f"invalid {name}: {', '.join(bad)}; use one of {', '.join(allowed or ())}",
            errors=[{"field": name, "in": "query", "reason": "unknown value"}],
        )
    return items


def _area(codes: dict[str, str | None]) -> str | None:
    """The most specific of the area codes given; they must nest."""
    given = sorted((c for c in codes.values() if c), key=len)
    for shorter, longer in pairwise(given):
        if not longer.startswith(shorter):
            raise Problem(
                400,
                f"the area codes {shorter} and {longer} do not nest; give one of them",
                errors=[{"field": "grid_code", "in": "query", "reason": "areas do not nest"}],
            )
    return given[-1] if given else None


@router.get(
    "/v1/incidents",
    summary="Incidents, newest first",
    response_class=FastJSONResponse,
    responses=problems(400, 403),
)
def get_incidents(
    request: Request,
    principal: Reader,
    status: Annotated[
        str | None, Query(description="comma-separated states, e.g. reported,accepted")
    ] = None,
    category: Annotated[
        str | None, Query(pattern=PRINTABLE, description="comma-separated category codes")
    ] = None,
    grid_code: Annotated[
        str | None, Query(pattern=r"^\d{6,15}$", description="a grid code or a prefix of one")
    ] = None,
    village: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
    township: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    county: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    overdue: Annotated[bool | None, Query(description="past due and not finished")] = None,
    unassigned: Annotated[bool | None, Query(description="in no grid (the queue)")] = None,
    reported_from: Annotated[
        datetime | None, Query(alias="from", description="reported at or after; default +08:00")
    ] = None,
    reported_to: Annotated[
        datetime | None, Query(alias="to", description="reported before; default +08:00")
    ] = None,
    bbox: Annotated[tuple[float, float, float, float] | None, Depends(bbox_param)] = None,
    channel: Annotated[str | None, Query(pattern=r"^[a-z_0-9]{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """Filters combine with AND. `grid_code`, `village`, `township`, `county` select by
    code prefix (the grid code starts with its village, township and county codes).
    `overdue`: due_at has passed and the incident is not closed, evaluated or rejected."""
    f = IncidentFilter(
        status=_choices(status, STATES, "status"),
        category=_choices(category, None, "category"),
        area=_area(
            {"grid_code": grid_code, "village": village, "township": township, "county": county}
        ),
        overdue=overdue,
        unassigned=unassigned,
        reported_from=_cst(reported_from),
        reported_to=_cst(reported_to),
        bbox=bbox,
        channel=channel,
        limit=limit,
        offset=offset,
    )
    calendar = calendar_of(request.app.state.settings)
    with request.app.state.engine.connect() as conn:
        body = list_incidents(conn, f, True, calendar)
    for incident in body["incidents"]:
        worker_shown(principal, incident)
    return FastJSONResponse(body)


@router.get(
    "/v1/incidents/categories",
    summary="The incident category catalogue",
    response_class=FastJSONResponse,
)
def get_categories(request: Request, principal: Anyone) -> Response:
    """Code, name, department and time limit (working hours) of each category, and the
    working-hour calendar the limits count in."""
    with request.app.state.engine.connect() as conn:
        categories = [c.__dict__ for c in read_categories(conn)]
    return FastJSONResponse(
        {
            "categories": categories,
            "working_hours": calendar_of(request.app.state.settings).describe(),
        }
    )


@router.get(
    "/v1/incidents/{incident_id}",
    summary="One incident with its whole history",
    response_class=FastJSONResponse,
    responses=problems(400, 403, 404),
)
def get_incident(request: Request, principal: Reader, incident_id: int) -> Response:
    calendar = calendar_of(request.app.state.settings)
    with request.app.state.engine.connect() as conn:
        body = read_incident(conn, incident_id, True, calendar)
    return FastJSONResponse(worker_shown(principal, body))


@router.post(
    "/v1/incidents/{incident_id}/events",
    summary="Move an incident through its lifecycle",
    response_class=FastJSONResponse,
    responses=problems(400, 403, 404, 409, 413, 422),
)
def post_event(request: Request, principal: Writer, incident_id: int, body: EventIn) -> Response:
    """States: reported -accept-> accepted | -reject-> rejected; accepted -dispatch->
    dispatched -start-> in_progress -feedback-> feedback -verify-> verified | -return->
    returned -start-> in_progress; verified -close-> closed -evaluate-> evaluated.
    Another action is a 409 problem naming the allowed ones (`allowed_actions`), and
    nothing changes."""
    event = Event(body.action, body.note, body.score, body.comment, body.assignee)
    calendar = calendar_of(request.app.state.settings)
    with request.app.state.engine.begin() as conn:
        incident = apply_event(conn, incident_id, event, principal.actor, True, calendar)
    return FastJSONResponse(worker_shown(principal, incident))


@router.patch(
    "/v1/incidents/{incident_id}",
    summary="Edit, re-locate or re-categorise an open incident",
    response_class=FastJSONResponse,
    responses=problems(400, 403, 404, 409, 413, 422),
)
def patch_incident(
    request: Request, principal: Writer, incident_id: int, body: IncidentPatch
) -> Response:
    _pair(body.lon, body.lat)
    change = Change(**body.model_dump())
    context = intake_context(request)
    incident = update_incident(
        request.app.state.engine,
        incident_id,
        change,
        context,
        principal.actor,
        with_phone=True,
    )
    return FastJSONResponse(worker_shown(principal, incident))


@router.delete(
    "/v1/incidents/{incident_id}",
    status_code=204,
    summary="Delete an incident (soft; admins)",
    responses=problems(400, 403, 404),
)
def remove_incident(request: Request, principal: Deleter, incident_id: int) -> Response:
    """The incident is hidden from every read from now on; the audit log keeps who and when."""
    with request.app.state.engine.begin() as conn:
        delete_incident(conn, incident_id, principal.actor)
    return Response(status_code=204)


@router.get(
    "/v1/stats/incidents",
    summary="Incident statistics by grid, village, township or county",
    response_class=FastJSONResponse,
    responses=problems(400, 403),
)
def get_stats(
    request: Request,
    principal: Reader,
    by: Annotated[Literal["grid", "village", "township", "county"], Query()] = "county",
    reported_from: Annotated[
        datetime | None, Query(alias="from", description="reported at or after; default +08:00")
    ] = None,
    reported_to: Annotated[
        datetime | None, Query(alias="to", description="reported before; default +08:00")
    ] = None,
    category: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
) -> Response:
    """Per area: counts by state; received (all but rejected), handled (reached feedback,
    调处), handling rate = handled / received, succeeded (closed or evaluated without any
    return), success rate = succeeded / handled, median hours from report to close,
    overdue now, and incidents in coverage gaps (no detect-level camera FOV). Incidents
    without a grid are counted under `unassigned`; `total` sums everything. Answers are
    cached until the next write or due time that changes them."""
    grids = request.app.state.grid_locator.current() if by == "grid" else None
    body = incident_stats_json(
        request.app.state.engine, by, _cst(reported_from), _cst(reported_to), category, grids
    )
    return Response(body, media_type=FastJSONResponse.media_type)
