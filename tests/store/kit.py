"""What the JobStore contract tests share: a job, and the steps of its life in one call."""

from __future__ import annotations

from typing import Any

import psycopg

from testing.postgres import in_schema
from voxtrace.domain import JobOptions, NewJob
from voxtrace.payloads import completed_payload, failed_payload, progress_payload
from voxtrace.store.base import JobStore

BASE = "http://backend.test"
LEASE_S = 60.0


def new_job(job_id: str, video_url: str | None = None, **options: Any) -> NewJob:
    return NewJob(
        job_id=job_id,
        video_url=video_url or f"https://bucket.test/{job_id}.mp4",
        callback_base_url=BASE,
        options=JobOptions(**options),
    )


def submit(store: JobStore, *job_ids: str, now: float = 1.0) -> None:
    for offset, job_id in enumerate(job_ids):
        store.submit(new_job(job_id), max_unfinished=100, now=now + offset)


def claim(store: JobStore, worker_id: str = "w1", now: float = 10.0) -> tuple[str, int]:
    job = store.claim(worker_id, LEASE_S, now)
    assert job is not None
    return job.job_id, job.attempts


def progress(
    store: JobStore, job_id: str, attempt: int, value: int, worker: str = "w1", now: float = 11.0
) -> bool:
    return store.report_progress(
        job_id, worker, attempt, value, f"at {value}", progress_payload(job_id, value, "x"), now
    )


def complete(
    store: JobStore, job_id: str, attempt: int, worker: str = "w1", now: float = 20.0
) -> bool:
    result = {"metadata": {"duration": 1.5}, "segments": []}
    return store.complete(job_id, worker, attempt, result, completed_payload(job_id, result), now)


def fail(
    store: JobStore, job_id: str, attempt: int | None, worker: str | None = "w1", now: float = 20.0
) -> bool:
    payload = failed_payload(job_id, 0, "TRANSCRIPTION_ERROR", "Speech recognition failed")
    return store.fail(
        job_id, worker, attempt, "TRANSCRIPTION_ERROR", "Speech recognition failed", payload, now
    )


def states(store: JobStore, job_id: str) -> list[tuple[str, str]]:
    return [(entry["status"], entry["state"]) for entry in store.callback_log(job_id)]


def pg_store(schema: str, *options: str) -> Any:
    """A PostgreSQL store in `schema`, with `-c` options (e.g. "lock_timeout=200")."""
    from voxtrace.store.postgres import PostgresJobStore

    return PostgresJobStore(in_schema(schema, *options))


def holding(schema: str, *statements: str) -> psycopg.Connection[Any]:
    """Another session, its transaction left open after `statements` (it holds their locks)."""
    other = psycopg.connect(in_schema(schema))
    for statement in statements:
        other.execute(statement)
    return other
