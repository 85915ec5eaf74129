"""The HTTP API: accepts jobs into the store and answers status queries.

It touches only the job store: no model, no pipeline, no download on the request
path, so a submission is answered in milliseconds whatever the workers are doing.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxtrace import __version__, metrics
from voxtrace.api import admission
from voxtrace.api.limits import BodySizeLimit, TokenBucketLimiter
from voxtrace.api.schemas import (
    ErrorEnvelope,
    HealthPublic,
    JobPublic,
    ProcessVideoAccepted,
    ProcessVideoRequest,
    QueuePublic,
)
from voxtrace.config import Settings
from voxtrace.domain import JobOptions, JobStatus, NewJob
from voxtrace.errors import (
    JobNotFound,
    RateLimited,
    RequestError,
    StoreUnavailable,
    Unauthorized,
    VoxtraceError,
)
from voxtrace.logs import LogRateLimit, redact_url
from voxtrace.netpolicy import host_matches
from voxtrace.store.base import JobStore

__all__ = ["create_app"]

log = logging.getLogger(__name__)
# Store outages seen by the API: worth a warning, not one per request of a burst.
outage_log = logging.getLogger(f"{__name__}.outage")
outage_log.addFilter(LogRateLimit(burst=3, window_s=60.0))

SUBMIT_PATH = "/api/upload-video/process-video"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope},
    401: {"model": ErrorEnvelope},
    404: {"model": ErrorEnvelope},
    409: {"model": ErrorEnvelope},
    413: {"model": ErrorEnvelope},
    429: {"model": ErrorEnvelope},
    500: {"model": ErrorEnvelope},
    503: {"model": ErrorEnvelope},
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


def _envelope(
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


def _validation_message(exc: RequestValidationError) -> str:
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


class DataDirGuard:
    """Notices the data dir being deleted or replaced under a running server (the
    SQLite file and the jobs' work files live there): from then on the server is not
    ready and refuses submissions, instead of writing into files nobody can see."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._identity = self._stat()  # None: there was none at start; nothing to watch

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.data_dir)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def ok(self) -> bool:
        return self._identity is None or self._stat() == self._identity


def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


Store = Annotated[JobStore, Depends(get_store)]


def create_app(settings: Settings, store: JobStore) -> FastAPI:
    app = FastAPI(
        title="voxtrace",
        version=__version__,
        description=(
            "ML server: turns a video into a speaker-attributed, word-timed transcript "
            "with loudness, pitch and emotion, delivered by HTTP callbacks."
        ),
    )
    app.state.settings = settings
    app.state.store = store
    limiter = TokenBucketLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        route_limits={SUBMIT_PATH: min(settings.submit_max_body_bytes, settings.max_body_bytes)},
        body_timeout_s=settings.body_timeout_s,
    )
    data_dir = DataDirGuard(settings.data_dir)

    def rate_limit(request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        allowed, wait_s = limiter.allow(client)
        if not allowed:
            raise RateLimited(retry_after_s=wait_s)

    def has_api_key(request: Request) -> bool:
        """Constant-time check of `X-API-Key` (or `Authorization: Bearer`); True when
        no key is configured."""
        if settings.api_key is None:
            return True
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        expected = settings.api_key.get_secret_value()
        return hmac.compare_digest(given.encode(), expected.encode())

    def require_api_key(request: Request) -> None:
        if not has_api_key(request):
            raise Unauthorized()

    Limited = Depends(rate_limit)
    Authorized = Depends(require_api_key)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(VoxtraceError)
    async def _voxtrace_error(request: Request, exc: VoxtraceError) -> JSONResponse:
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
        return _envelope(exc.http_status, exc.code, exc.message, job_id, **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _envelope(
            400, "INVALID_REQUEST", _validation_message(exc), await _job_id_of(request)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(
            exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "INVALID_REQUEST"
        )
        message = _HTTP_MESSAGES.get(exc.status_code, "Request failed")
        return _envelope(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _envelope(500, "INTERNAL_ERROR", "Internal server error")

    # ------------------------------------------------------------------ routes
    @app.post(
        SUBMIT_PATH,
        response_model=ProcessVideoAccepted,
        responses=_ERRORS,
        dependencies=[Limited, Authorized],
        summary="Submit a video for processing (answers at once; results come by callback)",
    )
    def process_video(body: ProcessVideoRequest, store: Store) -> ProcessVideoAccepted:
        url = urlsplit(body.video_url)
        if url.scheme == "http" and not host_matches(url.hostname or "", settings.allow_http_hosts):
            # Refused now rather than failing later: plain http only for named hosts.
            raise RequestError("video_url must be an https URL", job_id=body.job_id)
        base = settings.callback_base_for(body.fastapi_base_url)
        if body.fastapi_base_url and base != body.fastapi_base_url.rstrip("/"):
            log.info(
                "job %s: fastapi_base_url %s is not allowlisted; calling back %s",
                body.job_id,
                redact_url(body.fastapi_base_url),
                base,
            )
        options = JobOptions(
            language=body.language,
            num_speakers=body.num_speakers,
            min_speakers=body.min_speakers,
            max_speakers=body.max_speakers,
            max_chars_per_line=body.max_chars_per_line,
            max_lines=body.max_lines,
            max_caption_s=body.max_caption_s,
            max_chars_per_s=body.max_chars_per_s,
        )
        try:
            if not data_dir.ok():
                gone = FileNotFoundError(f"the data dir {settings.data_dir} is gone or replaced")
                raise StoreUnavailable() from gone
            existing = store.get(body.job_id)
            if existing is None:  # a resubmission is answered even on a full disk
                admission.check_disk_floor(settings)
            job, created = store.submit(
                NewJob(body.job_id, body.video_url, base, options),
                max_unfinished=settings.max_queued_jobs,
                now=time.time(),
            )
        except VoxtraceError as exc:
            exc.job_id = body.job_id
            if exc.http_status == 503 and exc.retry_after_s is None:
                exc.retry_after_s = admission.retry_after_s(store, settings)
            raise
        queue = admission.snapshot(store, settings)
        if created:
            log.info("job %s accepted (%s)", job.job_id, redact_url(job.video_url))
            return ProcessVideoAccepted(
                job_id=job.job_id,
                status=JobStatus.ACCEPTED.value,
                message="Processing started",
                estimated_time=queue.estimate_s(ahead=queue.stats.unfinished - 1),
            )
        return ProcessVideoAccepted(
            job_id=job.job_id,
            status=job.status.value,
            message=job.message or "Job already exists",
            estimated_time=0 if job.is_terminal else queue.estimate_s(ahead=0),
            progress=job.progress,
        )

    @app.get(
        "/api/jobs/{job_id}",
        response_model=JobPublic,
        responses=_ERRORS,
        dependencies=[Limited, Authorized],
        summary="Manual status query: state, progress, attempts, result or error, callbacks",
    )
    def get_job(job_id: str, store: Store) -> JobPublic:
        job = store.get(job_id)
        if job is None:
            raise JobNotFound(job_id=job_id)
        return JobPublic.from_job(job, store.callback_log(job_id))

    @app.get("/api/queue", response_model=QueuePublic, summary="Queue depth, capacity, workers")
    def get_queue(request: Request, store: Store) -> QueuePublic:
        return _queue(store, show_jobs=has_api_key(request))

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
        summary="Prometheus metrics: jobs, queue, workers, stage durations, callbacks",
    )
    def get_metrics(store: Store) -> Response:
        body, content_type = metrics.render(lambda: admission.snapshot(store, settings), settings)
        return Response(body, media_type=content_type)

    @app.get("/health", response_model=HealthPublic, summary="Liveness and readiness")
    def health(request: Request, store: Store) -> JSONResponse:
        present = data_dir.ok()
        writable = present and store.check_writable()
        queue = _queue(store, show_jobs=has_api_key(request))
        # Ready means this node's own workers have their models: on a shared PostgreSQL
        # store the queue also lists other machines' workers, which say nothing about us.
        workers_ok = settings.worker_processes == 0 or any(
            w.get("models_loaded") and str(w.get("worker_id", "")).startswith(settings.node_prefix)
            for w in queue.workers
        )
        checks = {
            "data_dir_present": present,
            "store_writable": writable,
            "workers_alive": workers_ok,
            "models_loaded": workers_ok,
        }
        ready = all(checks.values())
        body = HealthPublic(
            status="ok" if ready else "degraded",
            ready=ready,
            checks=checks,
            queue=queue,
            version=__version__,
        )
        return JSONResponse(body.model_dump(), status_code=200 if writable else 503)

    def _queue(store: JobStore, show_jobs: bool) -> QueuePublic:
        """Counts for anyone; which job each worker runs only for a caller with the API
        key (when one is set): a job id names the job's status, result and media."""
        queue = admission.snapshot(store, settings)
        stats = queue.stats
        workers = queue.workers
        if not show_jobs:
            workers = [{k: v for k, v in w.items() if k != "job_id"} for w in workers]
        return QueuePublic(
            accepted=stats.accepted,
            processing=stats.processing,
            completed=stats.completed,
            failed=stats.failed,
            unfinished=stats.unfinished,
            capacity=settings.max_queued_jobs,
            max_concurrent=settings.max_concurrent_jobs,
            running_slots=queue.slots,
            estimated_wait_s=queue.wait_s(ahead=stats.unfinished),
            callbacks_pending=stats.callbacks_pending,
            workers=workers,
        )

    return app
