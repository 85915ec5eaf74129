"""The job store interface: job state, work dispatch and the callback outbox.

One interface so the API, the worker and the callback dispatcher never know which
backend holds the jobs (SQLite for one machine, PostgreSQL for several, memory for tests).
A shared test suite (tests/store/) runs against every implementation.

Invariants every implementation keeps:
- `progress` never decreases within a job.
- A job leaves `processing` only through its current owner (`worker_id` + `attempt`
  fencing), through `release_lapsed` once its lease has lapsed, or through `fail`
  without an owner (the supervisor's time limit).
- Reaching `completed`/`failed` and queueing the terminal callback is one atomic step;
  it happens at most once per job, so exactly one terminal callback exists per job.
- Once a terminal callback is queued, no other callback of that job is sent: pending
  progress callbacks are dropped, and later progress reports are ignored.
- Callbacks of one job are delivered in order: `due_callbacks` returns only the oldest
  undelivered callback of each job; a newer progress callback supersedes an older
  undelivered one (the backend only needs the latest progress).
- Stored results and callback bodies are strict JSON: a NaN or Infinity raises
  ValueError before anything is written (the backend's PostgreSQL JSONB refuses them).
- One callback dispatcher delivers per store: a job's next callback is handed out only
  once the previous one is settled, which holds order only if one process delivers.
  SQLite and memory rely on the deployment running one; PostgreSQL elects one itself
  (the others' `due_callbacks` return nothing until it is gone).
- A job requeued with `not_before` stays `accepted` but is not claimed before then.
- `worker_seen` forgets workers not seen for more than WORKER_RETENTION_S: worker ids
  carry a supervisor pid and a generation, so without this every restart would leave a
  row behind for ever.
"""

from __future__ import annotations

import abc
from typing import Any

from voxtrace.domain import Job, NewJob, OutboxItem, QueueStats
from voxtrace.store.rows import CallbackLogEntry, WorkerStatus

__all__ = ["WORKER_RETENTION_S", "JobStore", "Payload", "WorkerInfo"]


WorkerInfo = dict[str, Any]
Payload = dict[str, Any]  # a callback body, as JSON-ready data

# A worker row unseen this long is deleted (live workers report every few seconds; a day
# keeps yesterday's crashed workers visible to `live_workers(since=0)` for a post-mortem).
WORKER_RETENTION_S = 24 * 3600.0


def check_owner_args(worker_id: str | None, attempt: int | None) -> None:
    """`fail` is fenced on its owner (both given) or on the job being unfinished (neither)."""
    if (worker_id is None) != (attempt is None):
        raise ValueError("pass both worker_id and attempt, or neither")


class JobStore(abc.ABC):
    # ------------------------------------------------------------------ submission
    @abc.abstractmethod
    def submit(self, job: NewJob, max_unfinished: int, now: float) -> tuple[Job, bool]:
        """Insert a job in `accepted` state; return (job, created).

        Same job_id and same video_url: returns the existing job, created=False.
        Same job_id, other video_url: raises errors.JobConflict.
        When `max_unfinished` jobs are already accepted or processing: raises
        errors.CapacityExceeded. The check and the insert are one atomic step.
        """

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    # ------------------------------------------------------------------ dispatch
    @abc.abstractmethod
    def claim(self, worker_id: str, lease_s: float, now: float) -> Job | None:
        """Take the oldest due `accepted` job: status processing, attempts += 1, leased.

        A job requeued with a `not_before` later than `now` is skipped (it stays queued).

        Returns the claimed job (with its new `attempts`), or None when none waits.
        """

    @abc.abstractmethod
    def heartbeat(
        self, job_id: str, worker_id: str, attempt: int, lease_s: float, now: float
    ) -> bool:
        """Extend the lease; False when this worker no longer owns the job."""

    @abc.abstractmethod
    def report_progress(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        progress: int,
        message: str,
        callback: Payload | None,
        now: float,
    ) -> bool:
        """Record progress (kept monotonic) and queue `callback` if given.

        The callback's payload `progress` is rewritten to the stored (monotonic) value.
        False (and nothing written) when the worker no longer owns the job.
        """

    @abc.abstractmethod
    def complete(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        result: dict[str, Any],
        callback: Payload,
        now: float,
    ) -> bool:
        """processing -> completed, store the result, queue the terminal callback."""

    @abc.abstractmethod
    def fail(
        self,
        job_id: str,
        worker_id: str | None,
        attempt: int | None,
        code: str,
        message: str,
        callback: Payload,
        now: float,
    ) -> bool:
        """-> failed and queue the terminal callback.

        With worker_id/attempt: only if that worker still owns the job.
        With None/None: only if the job is not terminal yet (used by the supervisor
        for time limits and exhausted attempts, and by the API for jobs it rejects).
        The callback's payload `progress` is set to the job's stored progress.
        """

    @abc.abstractmethod
    def requeue(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        now: float,
        not_before: float | None = None,
    ) -> bool:
        """Give a job back to the queue (e.g. a retryable error): processing -> accepted.

        With `not_before`, `claim` leaves it alone until then (a retry that waits for a
        full disk or a memory squeeze to pass); without, it may run again at once.
        """

    @abc.abstractmethod
    def expired_leases(self, now: float) -> list[Job]:
        """Jobs in `processing` whose lease has lapsed (their worker is gone)."""

    @abc.abstractmethod
    def release_lapsed(self, job_id: str, attempt: int, now: float) -> bool:
        """processing -> accepted for a job whose lease lapsed at `attempt`."""

    @abc.abstractmethod
    def jobs_owned_by(self, worker_prefix: str) -> list[Job]:
        """Jobs in `processing` whose worker_id starts with `worker_prefix`."""

    # ------------------------------------------------------------------ outbox
    @abc.abstractmethod
    def due_callbacks(self, now: float, limit: int) -> list[OutboxItem]:
        """The oldest undelivered callback of each job, if its next attempt is due."""

    @abc.abstractmethod
    def mark_delivered(self, item_id: int, now: float) -> None: ...

    @abc.abstractmethod
    def schedule_retry(
        self, item_id: int, next_attempt_at: float, error: str, now: float
    ) -> None: ...

    @abc.abstractmethod
    def mark_dead(self, item_id: int, error: str, now: float) -> None:
        """Give up on a callback (not retryable, or out of its retry window)."""

    @abc.abstractmethod
    def callback_log(self, job_id: str) -> list[CallbackLogEntry]:
        """Delivery state of a job's callbacks, oldest first (for GET /api/jobs/{id})."""

    # ------------------------------------------------------------------ monitoring
    @abc.abstractmethod
    def stats(self) -> QueueStats: ...

    @abc.abstractmethod
    def mean_processing_s(self, last_n: int = 50) -> float | None:
        """Mean wall time of recently completed jobs, for estimated_time."""

    @abc.abstractmethod
    def worker_seen(self, worker_id: str, info: WorkerInfo, now: float) -> None:
        """Record that `worker_id` is alive (with `info`) at `now`; in the same step,
        delete the workers last seen before `now - WORKER_RETENTION_S`."""

    @abc.abstractmethod
    def live_workers(self, since: float) -> list[WorkerStatus]: ...

    @abc.abstractmethod
    def check_writable(self) -> bool: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
