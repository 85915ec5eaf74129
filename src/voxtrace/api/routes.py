"""The API's routes: accept jobs into the store and answer status queries.

They touch only the job store: no model, no pipeline, no download on the request path,
so a submission is answered in milliseconds whatever the workers are doing.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from voxtrace import __version__, metrics
from voxtrace.api import admission
from voxtrace.api.deps import AppSettings, Authorized, DataDir, HasApiKey, Limited, Store
from voxtrace.api.handlers import ERROR_RESPONSES
from voxtrace.api.schemas import (
    HealthPublic,
    JobPublic,
    ProcessVideoAccepted,
    ProcessVideoRequest,
    QueuePublic,
)
from voxtrace.config import Settings
from voxtrace.contract import ACCEPTED_MESSAGE
from voxtrace.domain import JobOptions, JobStatus, NewJob
from voxtrace.errors import JobNotFound, RequestError, StoreUnavailable, VoxtraceError
from voxtrace.logs import redact_url
from voxtrace.netpolicy import host_matches
from voxtrace.store.base import JobStore

__all__ = ["SUBMIT_PATH", "router"]

log = logging.getLogger(__name__)

SUBMIT_PATH = "/api/upload-video/process-video"

router = APIRouter()


@router.post(
    SUBMIT_PATH,
    response_model=ProcessVideoAccepted,
    responses=ERROR_RESPONSES,
    dependencies=[Limited, Authorized],
    summary="Submit a video for processing (answers at once; results come by callback)",
)
def process_video(
    body: ProcessVideoRequest, store: Store, settings: AppSettings, data_dir: DataDir
) -> ProcessVideoAccepted:
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
            message=ACCEPTED_MESSAGE,
            estimated_time=queue.estimate_s(ahead=queue.stats.unfinished - 1),
        )
    return ProcessVideoAccepted(
        job_id=job.job_id,
        status=job.status.value,
        message=job.message or "Job already exists",
        estimated_time=0 if job.is_terminal else queue.estimate_s(ahead=0),
        progress=job.progress,
    )


@router.get(
    "/api/jobs/{job_id}",
    response_model=JobPublic,
    responses=ERROR_RESPONSES,
    dependencies=[Limited, Authorized],
    summary="Manual status query: state, progress, attempts, result or error, callbacks",
)
def get_job(job_id: str, store: Store) -> JobPublic:
    job = store.get(job_id)
    if job is None:
        raise JobNotFound(job_id=job_id)
    return JobPublic.from_job(job, store.callback_log(job_id))


@router.get("/api/queue", response_model=QueuePublic, summary="Queue depth, capacity, workers")
def get_queue(store: Store, settings: AppSettings, has_key: HasApiKey) -> QueuePublic:
    return queue_public(store, settings, show_jobs=has_key)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics: jobs, queue, workers, stage durations, callbacks",
)
def get_metrics(store: Store, settings: AppSettings) -> Response:
    body, content_type = metrics.render(lambda: admission.snapshot(store, settings), settings)
    return Response(body, media_type=content_type)


@router.get("/health", response_model=HealthPublic, summary="Liveness and readiness")
def health(
    store: Store, settings: AppSettings, data_dir: DataDir, has_key: HasApiKey
) -> JSONResponse:
    present = data_dir.ok()
    writable = present and store.check_writable()
    queue = queue_public(store, settings, show_jobs=has_key)
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


def queue_public(store: JobStore, settings: Settings, show_jobs: bool) -> QueuePublic:
    """The queue as `/api/queue` and `/health` show it: counts for anyone; which job each
    worker runs only for a caller with the API key (when one is set): a job id names the
    job's status, result and media."""
    queue = admission.snapshot(store, settings)
    stats = queue.stats
    workers = [dict(w) for w in queue.workers]
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
