"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import __version__
from api.auth import KeyCache
from api.db import make_engine, reads_only, resolve_database_url, warm_pool
from api.errors import GridcoverError, Problem
from api.limits import BodyLimit
from api.responses import ProblemResponse
from api.routes import (
    audit,
    camera_import,
    cameras,
    coverage,
    grid_import,
    grids,
    health,
    incidents,
    keys,
    lookup,
    ogc,
    open311,
    tiles,
    web,
)
from api.services.addresses import AddressBook
from api.services.camera_sights import CameraSights
from api.services.lookup import GridLocator
from api.services.validation import RowsRejected
from api.settings import Settings, get_settings

log = logging.getLogger("gridcover")
# FastAPI's HTTPException detail for a request body it fails to decode.
FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    return ProblemResponse(
        problem.to_dict(instance=request.url.path),
        status_code=problem.status,
        headers=problem.headers,
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    errors = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":  # loc is ("body", character offset)
            cause = error.get("ctx", {}).get("error", "")
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            errors.append({"field": "body", "in": "body", "reason": f"not JSON: {cause}{where}"})
            continue
        errors.append(
            {
                "field": ".".join(loc[1:]) or ".".join(loc),
                "in": loc[0] if loc else "",
                "reason": error.get("msg", "invalid"),
            }
        )
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves the service as an RFC 7807 problem document."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"nothing at {request.url.path}; see /api for what this service offers"
        if exc.status_code == 400 and detail == FASTAPI_UNREADABLE_BODY:
            # A body FastAPI cannot even decode (not UTF-8, say) is a bad body: 422, like
            # one that is not JSON, so a 400 always means a bad parameter.
            return problem_response(
                request,
                Problem(
                    422,
                    "the body cannot be read: send UTF-8 JSON",
                    errors=[{"field": "body", "in": "body", "reason": "not UTF-8 JSON"}],
                ),
            )
        return problem_response(request, Problem(exc.status_code, detail, headers=exc.headers))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        in_body = any(e["in"] == "body" for e in errors)
        names = ", ".join(e["field"] for e in errors)
        return problem_response(
            request,
            Problem(
                422 if in_body else 400, f"invalid {names}: {errors[0]['reason']}", errors=errors
            ),
        )

    @app.exception_handler(RowsRejected)
    async def on_rows_rejected(request: Request, exc: RowsRejected) -> JSONResponse:
        return problem_response(request, Problem(422, str(exc), errors=exc.errors[:1000]))

    @app.exception_handler(GridcoverError)
    async def on_user_error(request: Request, exc: GridcoverError) -> JSONResponse:
        return problem_response(request, Problem(400, str(exc)))

    @app.exception_handler(IntegrityError)
    async def on_conflict(request: Request, exc: IntegrityError) -> JSONResponse:
        # Checks run before writes; this is a concurrent writer winning the race.
        return problem_response(
            request,
            Problem(
                409, "a concurrent change conflicts with this one; read the data again and retry"
            ),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)  # from statements run on the driver
    async def on_database_away(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(getattr(exc, "orig", exc), psycopg.errors.QueryCanceled):
            return problem_response(
                request,
                Problem(
                    503,
                    "the request took longer than the statement timeout; narrow it or retry",
                    headers={"Retry-After": "5"},
                ),
            )
        log.warning("database unavailable: %s", exc)
        return problem_response(
            request,
            Problem(
                503,
                "the database is unavailable; retry in a few seconds",
                headers={"Retry-After": "5"},
            ),
        )

    @app.exception_handler(DBAPIError)
    async def on_database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await on_database_away(request, exc)
        log.exception("database error on %s", request.url.path)
        return problem_response(request, Problem(500, "internal database error"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(request, Problem(500, "internal error; it has been logged"))


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the service. Without `engine`, one is made for the configured database."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_engine = engine is None
        app.state.engine = engine or make_engine(resolve_database_url(settings), settings)
        app.state.reader = reads_only(app.state.engine)
        app.state.key_cache = KeyCache(app.state.reader, settings.key_recheck_s)
        app.state.grid_locator = GridLocator(app.state.engine)
        app.state.address_book = AddressBook(app.state.engine)
        app.state.camera_sights = CameraSights(app.state.engine)
        app.state.grid_locator.start()
        app.state.address_book.start()
        app.state.camera_sights.start()
        if settings.db_warm_at_start:
            threading.Thread(
                target=warm_pool,
                args=(app.state.engine, settings.db_pool_size),
                name="warm-pool",
                daemon=True,
            ).start()
        try:
            yield
        finally:
            app.state.grid_locator.stop()
            app.state.camera_sights.stop()
            if owns_engine:
                app.state.engine.dispose()

    app = FastAPI(
        title="gridcover",
        version=__version__,
        description="Grids, cameras and coverage for Xiangxi prefecture (湘西州).",
        openapi_url="/api",
        docs_url="/api.html",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimit,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    # A request is matched against the routes in this order: the busiest come first.
    app.include_router(lookup.router)
    tiles.register(app)
    ogc.OGCFeaturesFactory().register(app)
    app.include_router(health.router)
    app.include_router(incidents.router)
    app.include_router(cameras.router)
    app.include_router(grids.router)
    app.include_router(coverage.router)
    app.include_router(grid_import.router)
    app.include_router(camera_import.router)
    app.include_router(open311.router)
    app.include_router(keys.router)
    app.include_router(audit.router)
    web.register(app)
    return app
