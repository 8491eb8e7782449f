"""Errors users see: one-line CLI messages and RFC 7807 problem documents over HTTP."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class GridcoverError(Exception):
    """A failure the user can act on; the CLI prints its message alone, without a traceback."""


class Problem(Exception):
    """An RFC 7807 problem: raise it anywhere below a route and the app serialises it.

    `errors` lists field- or row-level details as `{"field"|"row": ..., "reason": ...}`.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type_
        self.errors = errors
        self.headers = headers
        self.extra = extra

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body
