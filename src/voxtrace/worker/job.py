"""One job attempt inside a worker process: claim's result -> pipeline -> outcome.

`JobRunner` runs a claimed job with the worker's models and writes its outcome
(complete, requeue for a retryable error, fail); `fail_job` is the one way a job's
terminal failure is written, by the runner and by the supervisor alike. A job's outcome
waits out a store outage rather than being lost with the process; `stopping` ends that
wait.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from voxtrace import metrics
from voxtrace.config import Settings
from voxtrace.contract import completed_payload, failed_payload, result_to_contract
from voxtrace.domain import Job
from voxtrace.errors import InsufficientResources, JobError, classify_exception
from voxtrace.logs import job_context
from voxtrace.models import ModelBundle
from voxtrace.pipeline.runner import STAGES, PipelineOptions, run_pipeline
from voxtrace.retry import compute_backoff
from voxtrace.store.base import JobStore
from voxtrace.store.outage import StoreOutage, WorkerStopping
from voxtrace.wiring import pipeline_options
from voxtrace.worker.hooks import JobHooks, LostOwnership
from voxtrace.worker.workdir import job_work_dir, remove_job_dirs

__all__ = ["JobRunner", "check_free_disk", "fail_job"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def fail_job(
    store: JobStore,
    job: Job,
    error: JobError,
    now: float,
    worker_id: str | None = None,
    attempt: int | None = None,
) -> bool:
    """End `job` as failed with `error`, queueing its `failed` callback at the progress
    the job reached. With `worker_id`/`attempt` only while that attempt still owns it
    (a worker's own failure); without, whoever holds it (the supervisor's verdict)."""
    current = store.get(job.job_id)
    progress = current.progress if current else job.progress
    payload = failed_payload(job.job_id, progress, error.code, error.message)
    return store.fail(job.job_id, worker_id, attempt, error.code, error.message, payload, now)


def check_free_disk(settings: Settings) -> None:
    """Refuse to start a job below the free-disk floor (retried: the disk may clear)."""
    settings.work_path.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(settings.work_path).free / 2**20
    if free_mb < settings.min_free_disk_mb:
        raise InsufficientResources("Not enough free disk space to process the job")


@dataclass
class JobRunner:
    """Runs claimed jobs inside a worker process, with the models it was handed."""

    settings: Settings
    store: JobStore
    models: ModelBundle
    worker_id: str
    stopping: threading.Event = field(default_factory=threading.Event)
    outage: StoreOutage = field(default_factory=lambda: StoreOutage("worker"))
    _options: PipelineOptions | None = field(default=None, init=False)

    def run(self, job: Job) -> None:
        with job_context(job.job_id):
            self._run_logged(job)

    def _run_logged(self, job: Job) -> None:
        log.info("job %s: attempt %d started on %s", job.job_id, job.attempts, self.worker_id)
        try:
            self._run(job)
        except WorkerStopping:
            log.warning(
                "job %s: stopped before its outcome could be stored; it runs again once"
                " its lease lapses",
                job.job_id,
            )
        finally:
            remove_job_dirs(self.settings.work_path, job.job_id)

    def _stored(self, call: Callable[[], _T]) -> _T:
        return self.outage.retry(call, self.stopping)

    def _run(self, job: Job) -> None:
        try:
            with JobHooks(self.store, job, self.worker_id, self.settings, self.outage) as report:
                report(max(job.progress, 1), STAGES["init"][2])
                check_free_disk(self.settings)
                work_dir = job_work_dir(self.settings.work_path, job.job_id)
                result = run_pipeline(
                    job.video_url,
                    work_dir,
                    self.models,
                    self.pipeline_options(),
                    job.options,
                    report,
                    metrics.observe_stage,
                )
                report(99, STAGES["assemble"][2])
                contract = result_to_contract(result)
            payload = completed_payload(job.job_id, contract)
            done = self._stored(
                lambda: self.store.complete(
                    job.job_id, self.worker_id, job.attempts, contract, payload, time.time()
                )
            )
            log.info(
                "job %s: %s", job.job_id, "completed" if done else "result dropped (lost ownership)"
            )
        except LostOwnership:
            log.warning("job %s: ownership lost; leaving it to its new owner", job.job_id)
        except WorkerStopping:
            raise
        except Exception as exc:
            self._fail(job, exc)

    def pipeline_options(self) -> PipelineOptions:
        if self._options is None:
            self._options = pipeline_options(self.settings)
        return self._options

    def _fail(self, job: Job, exc: Exception) -> None:
        error = classify_exception(exc)
        if error.code == "INTERNAL_ERROR":
            log.exception("job %s: unexpected error", job.job_id)
        else:
            log.warning("job %s: %s (%s)", job.job_id, error.code, error.message)
        now = time.time()
        if error.retryable and job.attempts < self.settings.max_attempts:
            # Wait before the next attempt: a full disk or a memory squeeze takes a while
            # to pass, and a fleet of jobs failing together should not retry in lockstep.
            delay_s = compute_backoff(
                job.attempts,
                self.settings.job_retry_backoff_base_s,
                self.settings.job_retry_backoff_cap_s,
                jitter=0.2,
            )
            if self._stored(
                lambda: self.store.requeue(
                    job.job_id, self.worker_id, job.attempts, now, not_before=now + delay_s
                )
            ):
                log.info(
                    "job %s: requeued after a retryable error; next attempt in %.1f s",
                    job.job_id,
                    delay_s,
                )
                return
        self._stored(lambda: fail_job(self.store, job, error, now, self.worker_id, job.attempts))
