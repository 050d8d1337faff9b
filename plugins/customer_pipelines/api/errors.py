"""One error shape for every answer that is not a success: RFC 9457 problem details
(``application/problem+json``), with ``errors`` naming each invalid field and why."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from customer_pipelines.models import printable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    422: "Invalid request",
    428: "Precondition required",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class ApiError(Exception):
    """An answer that is not a success: its status, what went wrong, and (422) each field's reason."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}


def invalid(field: str, reason: str) -> ApiError:
    return ApiError(422, f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status}
    body["detail"] = detail
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def field_errors(exc: ValidationError | RequestValidationError, *, skip: int = 0) -> list[dict[str, str]]:
    """Each error as {field, reason}: the field's dotted path (without the first ``skip`` parts,
    e.g. FastAPI's "body"), or, for a model's own check, the field its message names."""
    out = []
    for error in exc.errors():
        parts = [str(p) for p in error.get("loc", ())][skip:]
        reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        field = ".".join(printable(p, limit=40) for p in parts)
        if not field and ": " in reason:
            field, reason = reason.split(": ", 1)
        out.append({"field": field or "body", "reason": reason})
    return out


def summary(errors: list[dict[str, str]]) -> str:
    """The first field errors as one line: a problem's ``detail``."""
    return "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:3])


def invalid_fields(exc: ValidationError) -> ApiError:
    """A model's validation error as a 422 naming each field and its reason."""
    errors = field_errors(exc)
    return ApiError(422, summary(errors), errors=errors)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc)
        for error in errors:  # "body.priority" -> "priority"; "query.limit" -> "limit"
            head, _, rest = error["field"].partition(".")
            if head in ("body", "query", "path", "header") and rest:
                error["field"] = rest
        return problem(422, summary(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return problem(500, "the request failed on the server; nothing was half-written (see the API server's log)")
