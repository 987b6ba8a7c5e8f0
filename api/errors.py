"""One error body for every failure: `{"error": {"code", "message", "request_id"}}`.

Clients branch on `code` (stable, snake_case), show `message` (for people), and quote
`request_id` when they report a problem: it is in every log line of that request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from leadflow.logs import request_id_var

log = logging.getLogger("leadflow.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["No lead 01JF8Q2D6TX3V5N4K7C9M2B1ZA."])
    request_id: str | None = Field(examples=["5f0c6f3e9a4b4d2c8e1f7a6b3c2d1e0f"])
    details: list[dict[str, Any]] | None = Field(
        None, description="Per-field problems of an invalid request."
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error with its HTTP status, stable code and message (and optional headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorDetail(
            code=code, message=message, request_id=request_id_var.get(), details=details
        )
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


# Responses every protected route may give, for the OpenAPI schema.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A cursor this API did not issue."},
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "The key lacks the route's scope."},
    422: {"model": ErrorBody, "description": "Invalid parameters or body."},
    429: {"model": ErrorBody, "description": "Rate limited; see Retry-After."},
}


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (routes nest, so ask each method)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route {request.method} {request.url.path}."
        if exc.status_code == 405:
            # Starlette names only the first route matching the path; a path served by
            # several routes (GET and POST /runs) must list all their methods.
            headers["Allow"] = ", ".join(allowed_methods(request))
            message = f"{request.method} is not allowed here; allowed: {headers['Allow']}."
        return error_response(
            exc.status_code, _CODES.get(exc.status_code, "error"), message, headers=headers
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"location": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg")}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{d['location']}: {d['message']}" for d in details[:5])
        return error_response(
            422, "invalid_request", f"Invalid request: {summary}", details=details
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
