"""Request body limits for every endpoint, enforced before and while a route reads the body.

`BodyLimit` is a pure ASGI middleware. A declared `Content-Length` over the limit is
answered with a 413 problem at once, without reading the body or running the route. A body
without one (chunked transfer) is counted as it streams: the read that passes the limit
fails, and whatever the route would have answered is replaced by the same 413 problem, so
no route can store part of an oversized body. File uploads (`POST .../import`) have a
limit of their own, larger than that of JSON and form bodies.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import Problem

# The file uploads: only a POST to one of these takes the larger limit (a JSON body sent
# to any other path or method must not make a worker parse 100 MB).
UPLOAD_PATHS = frozenset(("/v1/grids/import", "/v1/admin-areas/import", "/v1/cameras/import"))


class BodyTooLarge(Exception):
    """Raised into the route by the body stream once it passes the limit."""


class BodyLimit:
    """413 for request bodies above `max_body_bytes` (uploads: `max_upload_bytes`)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        """The byte limit of this request and the setting that configures it."""
        if scope["method"] == "POST" and scope["path"].rstrip("/") in UPLOAD_PATHS:
            return self.max_upload_bytes, "GRIDCOVER_MAX_UPLOAD_BYTES"
        return self.max_body_bytes, "GRIDCOVER_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_problem(send, scope, _too_large(limit, setting, declared))
            return
        received = 0
        exceeded = False
        started = False
        replaced = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the rest of the route's own answer
            if exceeded and not started:
                replaced = True
                await _send_problem(send, scope, _too_large(limit, setting, None))
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            # Past the limit, whatever escapes the route (BodyTooLarge itself, or wrapped
            # in an ExceptionGroup by a task group) is answered with the 413.
            if not exceeded or started:
                raise
            if not replaced:
                await _send_problem(send, scope, _too_large(limit, setting, None))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _too_large(limit: int, setting: str, declared: int | None) -> Problem:
    size = f"{declared:,} bytes" if declared is not None else f"more than {limit:,} bytes"
    hint = (
        "split the file, or import it with `gridcover import` on the server"
        if setting == "GRIDCOVER_MAX_UPLOAD_BYTES"
        else "send less per request"
    )
    return Problem(
        413,
        f"the request body is {size}; this endpoint takes at most {limit:,} bytes "
        f"({setting}): {hint}",
    )


async def _send_problem(send: Send, scope: Scope, problem: Problem) -> None:
    body = orjson.dumps(problem.to_dict(instance=scope["path"]))
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                # The unread rest of the body makes the connection unusable for another request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
