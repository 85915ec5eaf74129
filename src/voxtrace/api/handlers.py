"""Every error the API answers, in the contract's envelope:
`{"error": {"code", "message", "job_id"}}` with a generic message, never a traceback."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxtrace.api.schemas import ErrorEnvelope
from voxtrace.errors import StoreUnavailable, VoxtraceError
from voxtrace.logs import LogRateLimit

__all__ = ["ERROR_RESPONSES", "install_error_handlers"]

log = logging.getLogger(__name__)
# Store outages seen by the API: worth a warning, not one per request of a burst.
outage_log = logging.getLogger(f"{__name__}.outage")
outage_log.addFilter(LogRateLimit(burst=3, window_s=60.0))

# The error answers of a route, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope} for status in (400, 401, 404, 409, 413, 429, 500, 503)
}
_HTTP_CODES = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "INVALID_REQUEST",
    429: "RATE_LIMITED",
}
_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    429: "Too many requests",
}


def envelope(
    status: int, code: str, message: str, job_id: str | None = None, **headers: str
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "job_id": job_id}},
        status_code=status,
        headers=headers or None,
    )


async def _job_id_of(request: Request) -> str | None:
    """Best effort: the job_id of a rejected body, so the error can name it."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return job_id if isinstance(job_id, str) and len(job_id) <= 128 else None


def validation_message(exc: RequestValidationError) -> str:
    """A short, generic description of what is wrong: field names, never values."""
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        field = ".".join(loc)
        if error.get("type") == "missing" and field:
            return f"{field} is required"
        if error.get("type") == "json_invalid":
            return "Request body is not valid JSON"
        if field:
            msg = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
            if error.get("type") == "string_pattern_mismatch":
                msg = "has an invalid format"
            return f"{field}: {msg}" if not msg.startswith(field) else msg
        if error.get("type") == "value_error":
            return str(error.get("msg", "")).removeprefix("Value error, ")
    return "Invalid request body"


async def _voxtrace_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VoxtraceError)
    if isinstance(exc, StoreUnavailable):
        outage_log.warning(
            "%s %s answered 503: job store unavailable (%s)",
            request.method,
            request.url.path,
            exc.__cause__ or exc.message,
        )
    headers: dict[str, str] = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    job_id = exc.job_id or await _job_id_of(request)
    if job_id is None and isinstance(exc, StoreUnavailable):  # GET /api/jobs/{job_id}
        job_id = request.path_params.get("job_id")
    return envelope(exc.http_status, exc.code, exc.message, job_id, **headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return envelope(400, "INVALID_REQUEST", validation_message(exc), await _job_id_of(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(
        exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "INVALID_REQUEST"
    )
    message = _HTTP_MESSAGES.get(exc.status_code, "Request failed")
    return envelope(exc.status_code, code, message)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return envelope(500, "INTERNAL_ERROR", "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(VoxtraceError, _voxtrace_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
