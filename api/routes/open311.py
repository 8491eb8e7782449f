"""Open311 GeoReport v2 for existing civic apps, mapped onto the same incidents.

- `GET  /open311/v2/services.json`: the category catalogue as services (public);
- `GET  /open311/v2/services/{service_code}.json`: a service definition (no attributes);
- `POST /open311/v2/requests.json`: form-encoded per the spec (service_code, lat, long,
  address_string, description, media_url, email, first_name, last_name, phone,
  device_id, account_id, api_key, jurisdiction_id); answers
  `[{"service_request_id", "service_notice", "account_id"}]` (HTTP 200);
- `GET  /open311/v2/requests.json` (service_request_id, service_code, start_date,
  end_date, status open|closed; the last 90 days and at most 1000 by default) and
  `GET /open311/v2/requests/{id}.json`.

Keys: the `api_key` parameter (query, or form field on POST) or `Authorization: Bearer`;
reading and reporting need the dispatcher role like the native API. A service request is
open unless its incident is closed, evaluated or rejected; `status_notes` carries the
incident's own status and its last note. Errors are Open311's `[{"code", "description"}]`
with the same HTTP status (400 for bad input, 401 without a key, 403 for a bad or too weak
key, 404 for unknown ids). Only JSON is served.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams

from api.auth import PERMISSIONS, Principal, Role
from api.errors import Problem
from api.responses import FastJSONResponse, problems
from api.routes.bodies import address_text
from api.routes.incidents import CLOCK_SKEW, intake_context
from api.routes.params import CHINA_STANDARD_TIME
from api.services.incidents import (
    FINISHED_STATES,
    STATES,
    IncidentFilter,
    Intake,
    calendar_of,
    create_incident,
    last_notes,
    list_incidents,
    read_categories,
    read_incident,
)
from api.services.validation import swap_hint, swapped_into_xiangxi

OPEN311_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["code", "description"],
                        "properties": {
                            "code": {"type": "integer"},
                            "description": {"type": "string"},
                        },
                    },
                }
            }
        },
    }
    for status, description in (
        (400, "bad input (Open311 error list)"),
        (401, "no api_key where one is needed (Open311 error list)"),
        (403, "the api_key is unknown, revoked, expired or too weak (Open311 error list)"),
        (404, "unknown jurisdiction, service or request (Open311 error list)"),
    )
}
router = APIRouter(prefix="/open311/v2", tags=["open311"], responses=OPEN311_ERRORS | problems(503))

# Jurisdictions this endpoint answers for: the prefecture's division code and name.
JURISDICTIONS = ("433100", "xiangxi")
DEFAULT_DAYS = 90
MAX_REQUESTS = 1000
REPORTER_FIELDS = ("first_name", "last_name", "email", "phone", "device_id", "account_id")


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string"} | schema,
    }


# The parameters are read by hand (errors are Open311's own), so /api learns them here.
COMMON_PARAMETERS = [
    _query("jurisdiction_id", "433100 or xiangxi (optional: this endpoint serves one)"),
    _query("api_key", "an API key, instead of `Authorization: Bearer`"),
]
REQUESTS_PARAMETERS = [
    *COMMON_PARAMETERS,
    _query("service_request_id", "comma-separated ids; the other filters are then ignored"),
    _query("service_code", "comma-separated category codes"),
    _query("start_date", "reported at or after (W3C date-time)", format="date-time"),
    _query("end_date", "reported before (W3C date-time)", format="date-time"),
    _query("status", "open, closed or open,closed"),
]
REQUEST_FORM = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["service_code"],
                "properties": {
                    "service_code": {"type": "string"},
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "long": {"type": "number", "minimum": -180, "maximum": 180},
                    "address_string": {"type": "string"},
                    "address_id": {"type": "string"},
                    "description": {"type": "string"},
                    "media_url": {"type": "string"},
                    **{name: {"type": "string"} for name in ("api_key", "jurisdiction_id")},
                    **{name: {"type": "string"} for name in REPORTER_FIELDS},
                },
            }
        }
    },
}


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def error_response(status: int, description: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return FastJSONResponse(
        [{"code": status, "description": description}], status_code=status, headers=headers
    )


def _principal(request: Request, api_key: str | None, permission: str) -> Principal:
    """The caller by `api_key` or a Bearer header, holding `permission` (Open311 errors)."""
    header = request.headers.get("authorization")
    key = api_key
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Open311Error(401, "the Authorization header must be 'Bearer <key>'")
        key = value.strip()
    needed = PERMISSIONS[permission]
    if not key:
        if needed is Role.anonymous:
            return Principal(Role.anonymous)
        raise Open311Error(401, f"an api_key with role {needed.name} or higher is required")
    principal = request.app.state.key_cache.principal(key)
    if principal is None:
        raise Open311Error(403, "api_key is unknown, revoked or expired")
    if not principal.can(permission):
        raise Open311Error(
            403, f"role {principal.role.name} may not do this; it needs {needed.name}"
        )
    return principal


def _jurisdiction(value: str | None) -> None:
    if value and value.strip().lower() not in JURISDICTIONS:
        raise Open311Error(404, f"jurisdiction_id {value!r} not found; this is 433100")


def _w3c(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(CHINA_STANDARD_TIME).isoformat(timespec="seconds")


def _date_param(params: QueryParams, name: str) -> datetime | None:
    value = params.get(name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        example = "2025-05-01T08:00:00+08:00"
        raise Open311Error(400, f"{name} must be a W3C date-time, e.g. {example}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=CHINA_STANDARD_TIME)


async def _answer(work: Any, *args: Any) -> Response:
    """Run `work` off the event loop; Open311 errors for our problems (422 is a 400)."""
    try:
        return await run_in_threadpool(work, *args)
    except Open311Error as exc:
        return error_response(exc.status, exc.description)
    except Problem as exc:
        return error_response(400 if exc.status == 422 else exc.status, exc.detail)


# -- services -----------------------------------------------------------------------------
def _service(category: Any) -> dict[str, Any]:
    return {
        "service_code": category.code,
        "service_name": category.name,
        "description": f"{category.name}: handled by {category.department} within "
        f"{category.time_limit_hours:g} working hours",
        "metadata": False,
        "type": "realtime",
        "keywords": category.code,
        "group": category.department,
    }


def _services(request: Request, params: QueryParams) -> Response:
    _jurisdiction(params.get("jurisdiction_id"))
    _principal(request, params.get("api_key"), "read:public")
    with request.app.state.engine.connect() as conn:
        categories = read_categories(conn)
    return FastJSONResponse([_service(c) for c in categories])


@router.get(
    "/services.json",
    summary="Open311: the incident categories as services",
    openapi_extra={"parameters": COMMON_PARAMETERS},
)
async def services(request: Request) -> Response:
    return await _answer(_services, request, request.query_params)


def _definition(request: Request, params: QueryParams, code: str) -> Response:
    _jurisdiction(params.get("jurisdiction_id"))
    _principal(request, params.get("api_key"), "read:public")
    with request.app.state.engine.connect() as conn:
        known = {c.code for c in read_categories(conn)}
    if code not in known:
        raise Open311Error(404, f"service_code {code!r} not found")
    return FastJSONResponse({"service_code": code, "attributes": []})


@router.get(
    "/services/{service_code}.json",
    summary="Open311: a service definition",
    openapi_extra={"parameters": COMMON_PARAMETERS},
)
async def service_definition(request: Request, service_code: str) -> Response:
    return await _answer(_definition, request, request.query_params, service_code)


# -- requests -----------------------------------------------------------------------------
def _request_dict(incident: dict[str, Any], note: str | None) -> dict[str, Any]:
    point = incident["point"]
    status = incident["status"]
    photos = incident["photos"] or []
    return {
        "service_request_id": str(incident["id"]),
        "status": "closed" if status in FINISHED_STATES else "open",
        "status_notes": status + (f": {note}" if note else ""),
        "service_name": incident["category_name"],
        "service_code": incident["category"],
        "description": incident["description"],
        "agency_responsible": incident["department"],
        "service_notice": None,
        "requested_datetime": _w3c(incident["reported_at"]),
        "updated_datetime": _w3c(incident["updated_at"]),
        "expected_datetime": _w3c(incident["due_at"]),
        "address": incident["address"],
        "address_id": None,
        "zipcode": None,
        "lat": None if point is None else point[1],
        "long": None if point is None else point[0],
        "media_url": photos[0] if photos else None,
    }


def _number(form: FormData, name: str, low: float, high: float) -> float | None:
    value = form.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(str(value))
    except ValueError:
        number = float("nan")
    if not low <= number <= high:
        raise Open311Error(400, f"{name} must be a number from {low:g} to {high:g}")
    return number


def _text(form: FormData, name: str, max_length: int) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Open311Error(400, f"{name} must be text")
    value = value.strip()
    if len(value) > max_length:
        raise Open311Error(400, f"{name} is longer than {max_length} characters")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise Open311Error(400, f"{name} holds control characters")
    return value or None


def _refuse_swapped(form: FormData) -> None:
    """400 saying so when lat/long lie in Xiangxi only when swapped."""
    try:
        lat, lon = float(str(form.get("lat"))), float(str(form.get("long")))
    except ValueError:
        return  # not numbers: `_number` says so
    if abs(lat) > 90 and swapped_into_xiangxi(lon, lat)[0]:
        raise Open311Error(400, "lat: " + swap_hint(lon, lat))


def intake_of_form(form: FormData) -> Intake:
    """The incident an Open311 POST describes (WGS84 lat/long; Open311 has no coord_sys)."""
    code = _text(form, "service_code", 64)
    if not code:
        raise Open311Error(400, "service_code is required")
    _refuse_swapped(form)
    lat = _number(form, "lat", -90, 90)
    lon = _number(form, "long", -180, 180)
    if (lat is None) != (lon is None):
        raise Open311Error(400, "lat and long go together")
    address = _text(form, "address_string", 300)
    if address is not None:
        try:
            address = address_text(address)
        except ValueError as exc:
            raise Open311Error(400, f"address_string {exc}") from None
    if lat is None and address is None:
        if form.get("address_id"):
            raise Open311Error(400, "address_id is not supported; send address_string or lat/long")
        raise Open311Error(400, "a location is required: lat and long, or address_string")
    media = _text(form, "media_url", 2000)
    reporter = {name: _text(form, name, 200) for name in REPORTER_FIELDS}
    return Intake(
        category=code,
        lon=lon,
        lat=lat,
        address=address,
        description=_text(form, "description", 4000) or "",
        channel="open311",
        photos=[media] if media else [],
        reporter={k: v for k, v in reporter.items() if v} or None,
    )


def _post(request: Request, form: FormData) -> Response:
    _jurisdiction(_text(form, "jurisdiction_id", 64))
    principal = _principal(request, _text(form, "api_key", 200), "write:incidents")
    intake = intake_of_form(form)
    context = intake_context(request)
    incident = create_incident(request.app.state.engine, context, intake, principal.actor)
    notice = f"assigned to {incident['department']}"
    if incident["grid"] is not None:
        notice += f", grid {incident['grid']['code']}"
    if incident["due_at"] is not None:
        notice += f"; expected by {_w3c(incident['due_at'])}"
    return FastJSONResponse(
        [
            {
                "service_request_id": str(incident["id"]),
                "service_notice": notice,
                "account_id": (intake.reporter or {}).get("account_id"),
            }
        ]
    )


@router.post(
    "/requests.json",
    summary="Open311: report a service request (form-encoded)",
    responses=problems(413),
    openapi_extra={"requestBody": REQUEST_FORM},
)
async def post_request(request: Request) -> Response:
    try:
        form = await request.form()
    except Exception:  # a body that is not a form at all
        return error_response(
            400, "send the request form-encoded (application/x-www-form-urlencoded)"
        )
    return await _answer(_post, request, form)


def _get_requests(request: Request, params: QueryParams) -> Response:
    _jurisdiction(params.get("jurisdiction_id"))
    _principal(request, params.get("api_key"), "read:incidents")
    ids: tuple[int, ...] = ()
    raw_ids = params.get("service_request_id")
    if raw_ids:
        try:
            ids = tuple(int(v) for v in raw_ids.split(",") if v.strip())
        except ValueError:
            raise Open311Error(400, "service_request_id must be comma-separated numbers") from None
    status: tuple[str, ...] = ()
    wanted = params.get("status")
    if wanted:
        kinds = {v.strip() for v in wanted.split(",") if v.strip()}
        if not kinds <= {"open", "closed"}:
            raise Open311Error(400, "status must be open, closed or open,closed")
        if kinds == {"open"}:
            status = tuple(s for s in STATES if s not in FINISHED_STATES)
        elif kinds == {"closed"}:
            status = FINISHED_STATES
    raw_codes = params.get("service_code") or ""
    if any(ord(c) < 32 for c in raw_codes):  # no code holds one; PostgreSQL refuses NUL
        raise Open311Error(400, "service_code holds control characters")
    codes = tuple(v.strip() for v in raw_codes.split(",") if v.strip())
    start, end = _date_param(params, "start_date"), _date_param(params, "end_date")
    if not ids and start is None:
        latest = end or datetime.now(CHINA_STANDARD_TIME) + CLOCK_SKEW
        # An end_date in the first days of year 1 has no earlier bound to default to.
        with contextlib.suppress(OverflowError):
            start = latest - timedelta(days=DEFAULT_DAYS)
    f = IncidentFilter(
        ids=ids,
        # Per the spec, ids given make the other parameters ignored.
        status=() if ids else status,
        category=() if ids else codes,
        reported_from=None if ids else start,
        reported_to=None if ids else end,
        limit=MAX_REQUESTS,
    )
    calendar = calendar_of(request.app.state.settings)
    with request.app.state.engine.connect() as conn:
        incidents = list_incidents(conn, f, False, calendar)["incidents"]
        notes = last_notes(conn, [i["id"] for i in incidents])
    return FastJSONResponse([_request_dict(i, notes.get(i["id"])) for i in incidents])


@router.get(
    "/requests.json",
    summary="Open311: service requests",
    openapi_extra={"parameters": REQUESTS_PARAMETERS},
)
async def get_requests(request: Request) -> Response:
    return await _answer(_get_requests, request, request.query_params)


def _get_request(request: Request, params: QueryParams, request_id: str) -> Response:
    _jurisdiction(params.get("jurisdiction_id"))
    _principal(request, params.get("api_key"), "read:incidents")
    if not (request_id.isdigit() and len(request_id) <= 18):
        raise Open311Error(404, f"service_request_id {request_id!r} not found")
    incident_id = int(request_id)
    calendar = calendar_of(request.app.state.settings)
    with request.app.state.engine.connect() as conn:
        try:
            incident = read_incident(conn, incident_id, False, calendar, with_events=False)
        except Problem:
            raise Open311Error(404, f"service_request_id {request_id} not found") from None
        note = last_notes(conn, [incident_id]).get(incident_id)
    return FastJSONResponse([_request_dict(incident, note)])


@router.get(
    "/requests/{service_request_id}.json",
    summary="Open311: one service request",
    openapi_extra={"parameters": COMMON_PARAMETERS},
)
async def get_request(request: Request, service_request_id: str) -> Response:
    return await _answer(_get_request, request, request.query_params, service_request_id)
