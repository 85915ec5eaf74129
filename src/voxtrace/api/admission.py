"""Admission: whether a job may join the queue, and how long it will wait there.

The deployed backend marks a job failed for good on any answer but 200, so refusing work
loses it: jobs are accepted into the durable queue up to `max_queued_jobs` unfinished,
and run `max_concurrent_jobs` at a time (never more than the live workers). Submit
answers 503 only when that bound or the free-disk floor is reached.

`estimated_time` is read from the queue ahead: with `slots` jobs running at once and
`ahead` jobs before this one (running or waiting), it starts after `ahead // slots`
rounds of a typical job, and then takes one itself.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass

from voxtrace.config import Settings
from voxtrace.domain import QueueStats
from voxtrace.errors import CapacityExceeded
from voxtrace.store.base import JobStore
from voxtrace.store.rows import WorkerStatus

__all__ = [
    "DEFAULT_JOB_S",
    "DISK_RETRY_AFTER_S",
    "QueueSnapshot",
    "check_disk_floor",
    "estimate_s",
    "retry_after_s",
    "snapshot",
]

DEFAULT_JOB_S = 60.0  # before any job has completed: a few minutes of video
DISK_RETRY_AFTER_S = 60.0  # a full disk takes a while to clear (jobs end, files go)
STORE_RETRY_AFTER_S = 5.0  # a store outage: the store itself says nothing


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue as the store holds it now, read once per request."""

    stats: QueueStats
    workers: list[WorkerStatus]  # seen within `worker_stale_s`
    slots: int  # jobs that run at once
    per_job_s: float  # typical wall time of one job

    def estimate_s(self, ahead: int) -> int:
        return estimate_s(ahead, self.slots, self.per_job_s)

    def wait_s(self, ahead: int) -> int:
        """Seconds before a job with `ahead` jobs before it starts."""
        return math.ceil(self.per_job_s * (max(0, ahead) // self.slots))

    def retry_after_s(self) -> float:
        """When a full queue has probably room again: one slot frees every job / slots."""
        return max(1.0, self.per_job_s / self.slots)


def estimate_s(ahead: int, slots: int, per_job_s: float) -> int:
    """Seconds until a job with `ahead` jobs before it is done: the rounds it waits for
    a free slot, plus its own run."""
    rounds = max(0, ahead) // max(1, slots)
    return max(1, math.ceil(per_job_s * (rounds + 1)))


def snapshot(store: JobStore, settings: Settings, now: float | None = None) -> QueueSnapshot:
    """Counts, live workers and the typical job time; `slots` is the live workers (each
    runs one job), or this node's configured processes while none has reported yet."""
    now = time.time() if now is None else now
    workers = store.live_workers(since=now - settings.worker_stale_s)
    slots = len(workers) or settings.worker_processes
    return QueueSnapshot(
        stats=store.stats(),
        workers=workers,
        slots=max(1, slots),
        per_job_s=store.mean_processing_s() or DEFAULT_JOB_S,
    )


def retry_after_s(store: JobStore, settings: Settings) -> float:
    """Retry-After for a refused submission: when a slot has probably freed; a short
    fixed wait when the store cannot say (it is the store that is out)."""
    try:
        return snapshot(store, settings).retry_after_s()
    except Exception:
        return STORE_RETRY_AFTER_S


def check_disk_floor(settings: Settings) -> None:
    """Refuse new work (503, retryable) while the data disk is below its floor: a job
    accepted now could only fail there, and the backend would not retry it."""
    if settings.min_free_disk_mb <= 0:
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
    if free_mb < settings.min_free_disk_mb:
        raise CapacityExceeded(
            "Not enough free disk space; retry later", retry_after_s=DISK_RETRY_AFTER_S
        )
