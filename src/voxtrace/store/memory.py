"""The job store in process memory: for unit tests and one-off runs.

Same behaviour as the SQLite store (the shared contract suite checks it), held in
dicts behind one lock. Payloads go through strict JSON on the way in, exactly as
they would on disk, so a NaN is refused here too and no caller can mutate what is
stored through a reference it kept.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any

from voxtrace import errors
from voxtrace.contract import COMPLETED_MESSAGE, strict_json
from voxtrace.domain import (
    TERMINAL_STATUSES,
    Job,
    JobStatus,
    NewJob,
    OutboxItem,
    QueueStats,
)
from voxtrace.store.base import (
    WORKER_RETENTION_S,
    JobStore,
    Payload,
    WorkerInfo,
    check_owner_args,
)
from voxtrace.store.rows import CallbackLogEntry, OutboxState, WorkerStatus, worker_status

__all__ = ["MemoryJobStore"]

_UNFINISHED = frozenset({JobStatus.ACCEPTED, JobStatus.PROCESSING})


def _json_copy(data: Any) -> Any:
    return json.loads(strict_json(data))


@dataclass
class _Callback:
    id: int
    job_id: str
    seq: int
    base_url: str
    payload: dict[str, Any]
    terminal: bool
    state: OutboxState
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str | None = None
    delivered_at: float | None = None

    def item(self) -> OutboxItem:
        return OutboxItem(
            id=self.id,
            job_id=self.job_id,
            seq=self.seq,
            base_url=self.base_url,
            payload=_json_copy(self.payload),
            terminal=self.terminal,
            attempts=self.attempts,
            created_at=self.created_at,
            next_attempt_at=self.next_attempt_at,
        )


class _OutageLock:
    """The store's one lock; taking it is where the memory store's "I/O" happens."""

    def __init__(self, store: MemoryJobStore) -> None:
        self._store = store
        self._lock = threading.RLock()

    def __enter__(self) -> None:
        if self._store.outage:
            raise errors.StoreUnavailable()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class MemoryJobStore(JobStore):
    """`JobStore` in dicts; thread-safe, not shared between processes.

    `outage` stands in for the I/O the other backends do: while it is set, every call
    raises `StoreUnavailable` before touching anything, as a dead disk or database
    would (the contract suite breaks each backend its own way).
    """

    def __init__(self) -> None:
        self._lock = _OutageLock(self)
        self.outage = False
        self._jobs: dict[str, Job] = {}  # insertion order breaks created_at ties
        self._outbox: dict[int, _Callback] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ helpers
    def _owned(self, job_id: str, worker_id: str, attempt: int) -> Job | None:
        job = self._jobs.get(job_id)
        if (
            job is None
            or job.status is not JobStatus.PROCESSING
            or job.worker_id != worker_id
            or job.attempts != attempt
        ):
            return None
        return job

    def _job_callbacks(self, job_id: str) -> list[_Callback]:
        return sorted((c for c in self._outbox.values() if c.job_id == job_id), key=lambda c: c.seq)

    def _enqueue(self, job: Job, payload: Payload, terminal: bool, now: float) -> None:
        """Queue a callback; it supersedes (and inherits the backoff of) pending progress."""
        callbacks = self._job_callbacks(job.job_id)
        held_until = now
        for cb in callbacks:
            if cb.state == OutboxState.PENDING and not cb.terminal:
                cb.state = OutboxState.SUPERSEDED
                held_until = max(held_until, cb.next_attempt_at)
        item_id = next(self._ids)
        self._outbox[item_id] = _Callback(
            id=item_id,
            job_id=job.job_id,
            seq=(callbacks[-1].seq if callbacks else 0) + 1,
            base_url=job.callback_base_url,
            payload=payload,
            terminal=terminal,
            state=OutboxState.PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=held_until,
        )

    # ------------------------------------------------------------------ submission
    def submit(self, job: NewJob, max_unfinished: int, now: float) -> tuple[Job, bool]:
        with self._lock:
            existing = self._jobs.get(job.job_id)
            if existing is not None:
                if existing.video_url != job.video_url:
                    raise errors.JobConflict()
                return existing, False
            if sum(1 for j in self._jobs.values() if j.status in _UNFINISHED) >= max_unfinished:
                raise errors.CapacityExceeded()
            created = Job(
                job_id=job.job_id,
                video_url=job.video_url,
                callback_base_url=job.callback_base_url,
                options=job.options,
                status=JobStatus.ACCEPTED,
                progress=0,
                message="Waiting in queue",
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            self._jobs[job.job_id] = created
            return created, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    # ------------------------------------------------------------------ dispatch
    def claim(self, worker_id: str, lease_s: float, now: float) -> Job | None:
        with self._lock:
            waiting = [
                j
                for j in self._jobs.values()
                if j.status is JobStatus.ACCEPTED and (j.not_before is None or j.not_before <= now)
            ]
            if not waiting:
                return None
            oldest = min(waiting, key=lambda j: j.created_at)  # min is stable: first wins
            claimed = dataclasses.replace(
                oldest,
                status=JobStatus.PROCESSING,
                attempts=oldest.attempts + 1,
                worker_id=worker_id,
                lease_expires_at=now + lease_s,
                started_at=now,
                updated_at=now,
                not_before=None,
            )
            self._jobs[oldest.job_id] = claimed
            return claimed

    def heartbeat(
        self, job_id: str, worker_id: str, attempt: int, lease_s: float, now: float
    ) -> bool:
        with self._lock:
            job = self._owned(job_id, worker_id, attempt)
            if job is None:
                return False
            self._jobs[job_id] = dataclasses.replace(
                job, lease_expires_at=now + lease_s, updated_at=now
            )
            return True

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
        progress = max(0, min(100, int(progress)))
        with self._lock:
            job = self._owned(job_id, worker_id, attempt)
            if job is None:
                return False
            stored = max(job.progress, progress)
            payload = _json_copy({**callback, "progress": stored}) if callback is not None else None
            job = dataclasses.replace(job, progress=stored, message=message, updated_at=now)
            self._jobs[job_id] = job
            terminal_queued = any(c.terminal for c in self._job_callbacks(job_id))
            if payload is not None and not terminal_queued:
                self._enqueue(job, payload, terminal=False, now=now)
            return True

    def complete(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        result: dict[str, Any],
        callback: Payload,
        now: float,
    ) -> bool:
        stored_result, payload = _json_copy(result), _json_copy(callback)
        with self._lock:
            job = self._owned(job_id, worker_id, attempt)
            if job is None:
                return False
            job = dataclasses.replace(
                job,
                status=JobStatus.COMPLETED,
                progress=100,
                message=COMPLETED_MESSAGE,
                result=stored_result,
                finished_at=now,
                updated_at=now,
                lease_expires_at=None,
            )
            self._jobs[job_id] = job
            self._enqueue(job, payload, terminal=True, now=now)
            return True

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
        check_owner_args(worker_id, attempt)
        payload = _json_copy(callback)
        with self._lock:
            if worker_id is None or attempt is None:
                job = self._jobs.get(job_id)
                if job is None or job.status in TERMINAL_STATUSES:
                    return False
            else:
                job = self._owned(job_id, worker_id, attempt)
                if job is None:
                    return False
            job = dataclasses.replace(
                job,
                status=JobStatus.FAILED,
                message=message,
                error_code=code,
                error_message=message,
                finished_at=now,
                updated_at=now,
                lease_expires_at=None,
                not_before=None,
            )
            self._jobs[job_id] = job
            payload["progress"] = job.progress
            self._enqueue(job, payload, terminal=True, now=now)
            return True

    def _to_queue(self, job: Job, now: float, not_before: float | None = None) -> None:
        self._jobs[job.job_id] = dataclasses.replace(
            job,
            status=JobStatus.ACCEPTED,
            worker_id=None,
            lease_expires_at=None,
            updated_at=now,
            not_before=not_before,
        )

    def requeue(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        now: float,
        not_before: float | None = None,
    ) -> bool:
        with self._lock:
            job = self._owned(job_id, worker_id, attempt)
            if job is None:
                return False
            self._to_queue(job, now, not_before)
            return True

    def expired_leases(self, now: float) -> list[Job]:
        with self._lock:
            lapsed = [
                j
                for j in self._jobs.values()
                if j.status is JobStatus.PROCESSING
                and j.lease_expires_at is not None
                and j.lease_expires_at < now
            ]
        return sorted(lapsed, key=lambda j: j.lease_expires_at or 0.0)

    def release_lapsed(self, job_id: str, attempt: int, now: float) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if (
                job is None
                or job.status is not JobStatus.PROCESSING
                or job.attempts != attempt
                or job.lease_expires_at is None
                or job.lease_expires_at >= now
            ):
                return False
            self._to_queue(job, now)
            return True

    def jobs_owned_by(self, worker_prefix: str) -> list[Job]:
        with self._lock:
            owned = [
                j
                for j in self._jobs.values()
                if j.status is JobStatus.PROCESSING
                and j.worker_id is not None
                and j.worker_id.startswith(worker_prefix)
            ]
        return sorted(owned, key=lambda j: j.created_at)

    # ------------------------------------------------------------------ outbox
    def due_callbacks(self, now: float, limit: int) -> list[OutboxItem]:
        with self._lock:
            heads: dict[str, _Callback] = {}
            for cb in self._outbox.values():
                if cb.state == OutboxState.PENDING and (
                    cb.job_id not in heads or cb.seq < heads[cb.job_id].seq
                ):
                    heads[cb.job_id] = cb
            due = sorted(
                (cb for cb in heads.values() if cb.next_attempt_at <= now),
                key=lambda cb: (cb.next_attempt_at, cb.id),
            )
            return [cb.item() for cb in due[:limit]]

    def mark_delivered(self, item_id: int, now: float) -> None:
        with self._lock:
            cb = self._outbox.get(item_id)
            if cb is not None and cb.state in (OutboxState.PENDING, OutboxState.SUPERSEDED):
                cb.state, cb.delivered_at, cb.last_error = OutboxState.DELIVERED, now, None
                cb.attempts += 1

    def schedule_retry(self, item_id: int, next_attempt_at: float, error: str, now: float) -> None:
        with self._lock:
            cb = self._outbox.get(item_id)
            if cb is not None and cb.state == OutboxState.PENDING:
                cb.next_attempt_at, cb.last_error = next_attempt_at, error
                cb.attempts += 1

    def mark_dead(self, item_id: int, error: str, now: float) -> None:
        with self._lock:
            cb = self._outbox.get(item_id)
            if cb is not None and cb.state == OutboxState.PENDING:
                cb.state, cb.last_error = OutboxState.DEAD, error
                cb.attempts += 1

    def callback_log(self, job_id: str) -> list[CallbackLogEntry]:
        with self._lock:
            return [
                CallbackLogEntry(
                    seq=cb.seq,
                    status=cb.payload.get("status"),
                    progress=cb.payload.get("progress"),
                    terminal=cb.terminal,
                    state=cb.state.value,
                    attempts=cb.attempts,
                    last_error=cb.last_error,
                    created_at=cb.created_at,
                    delivered_at=cb.delivered_at,
                )
                for cb in self._job_callbacks(job_id)
            ]

    # ------------------------------------------------------------------ monitoring
    def stats(self) -> QueueStats:
        with self._lock:
            counts = {status: 0 for status in JobStatus}
            for job in self._jobs.values():
                counts[job.status] += 1
            pending = sum(1 for cb in self._outbox.values() if cb.state == OutboxState.PENDING)
        return QueueStats(
            accepted=counts[JobStatus.ACCEPTED],
            processing=counts[JobStatus.PROCESSING],
            completed=counts[JobStatus.COMPLETED],
            failed=counts[JobStatus.FAILED],
            callbacks_pending=pending,
        )

    def mean_processing_s(self, last_n: int = 50) -> float | None:
        with self._lock:
            done = [
                (j.finished_at, j.finished_at - j.started_at)
                for j in self._jobs.values()
                if j.status is JobStatus.COMPLETED
                and j.finished_at is not None
                and j.started_at is not None
            ]
        recent = sorted(done, reverse=True)[:last_n]
        return sum(d for _, d in recent) / len(recent) if recent else None

    def worker_seen(self, worker_id: str, info: WorkerInfo, now: float) -> None:
        stored = _json_copy(info)
        with self._lock:
            self._workers[worker_id] = (stored, now)
            forgotten = now - WORKER_RETENTION_S
            for gone in [w for w, (_, seen) in self._workers.items() if seen < forgotten]:
                del self._workers[gone]

    def live_workers(self, since: float) -> list[WorkerStatus]:
        with self._lock:
            return [
                worker_status(worker_id, _json_copy(info), seen)
                for worker_id, (info, seen) in sorted(self._workers.items())
                if seen >= since
            ]

    def check_writable(self) -> bool:
        return not self.outage
