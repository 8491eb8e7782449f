"""The web map: `/map`, and `/` for browsers (the landing page answers JSON to the rest).

The page and its assets (MapLibre GL JS from npm among them) are built from web/ into
api/static/ by `make web` (which `make run` and `make test` do first) and served from
/static; nothing is loaded from another host at run time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from api.errors import Problem
from api.responses import problems, success

STATIC = Path(__file__).resolve().parent.parent / "static"
MAP_PAGE = STATIC / "index.html"

router = APIRouter(tags=["Web map"])


def register(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.include_router(router)


def wants_html(request: Request) -> bool:
    """Whether the caller prefers HTML to JSON: `?f=html|json`, else the Accept header
    (browsers list text/html first; GDAL, curl and httpx do not ask for it)."""
    requested = request.query_params.get("f")
    if requested in ("html", "json"):
        return requested == "html"
    html = json = 0.0
    for item in request.headers.get("accept", "").split(","):
        media, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.strip().lower()
        if media == "text/html":
            html = max(html, quality)
        elif media in ("application/json", "application/*", "*/*"):
            json = max(json, quality)
    return html > 0 and html >= json


def map_page() -> Response:
    if not MAP_PAGE.is_file():
        raise Problem(503, "the web map is not built on this server: run `make web` (npm)")
    return FileResponse(
        MAP_PAGE, media_type="text/html", headers={"Cache-Control": "no-cache", "Vary": "Accept"}
    )


@router.get(
    "/map",
    summary="The web map (HTML)",
    response_class=Response,
    responses=success("text/html", "the web map page") | problems(503),
)
def web_map() -> Response:
    return map_page()
