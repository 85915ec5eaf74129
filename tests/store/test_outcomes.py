"""The JobStore contract, run against every backend: progress and the terminal outcome
(exactly one, fenced on worker and attempt).
"""

from __future__ import annotations

import math

import pytest

from tests.store.kit import LEASE_S, claim, complete, fail, progress, states, submit
from voxtrace.domain import JobStatus
from voxtrace.payloads import completed_payload
from voxtrace.store.base import JobStore

# ------------------------------------------------------------------------ progress


def test_progress_never_decreases_and_the_callback_carries_the_stored_value(
    store: JobStore,
) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    assert progress(store, job_id, attempt, 40)
    assert progress(store, job_id, attempt, 25)  # accepted, but not as a step back
    job = store.get(job_id)
    assert job is not None
    assert (job.progress, job.message) == (40, "at 25")
    (head,) = store.due_callbacks(now=100.0, limit=10)
    assert head.payload["progress"] == 40
    assert isinstance(head.payload["progress"], int)


def test_progress_without_a_callback_queues_nothing(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    assert store.report_progress(job_id, "w1", attempt, 30, "working", None, now=11.0)
    assert store.get(job_id).progress == 30  # type: ignore[union-attr]
    assert store.callback_log(job_id) == []


def test_a_newer_progress_callback_supersedes_an_undelivered_one(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    for value in (10, 25, 40):
        progress(store, job_id, attempt, value)
    assert states(store, job_id) == [
        ("processing", "superseded"),
        ("processing", "superseded"),
        ("processing", "pending"),
    ]
    (head,) = store.due_callbacks(now=100.0, limit=10)
    assert (head.seq, head.payload["progress"]) == (3, 40)
    assert store.stats().callbacks_pending == 1


def test_a_replacement_keeps_the_backoff_of_the_callback_it_replaces(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    progress(store, job_id, attempt, 10, now=11.0)
    (first,) = store.due_callbacks(now=11.0, limit=10)
    store.schedule_retry(first.id, next_attempt_at=50.0, error="HTTP 503", now=12.0)
    progress(store, job_id, attempt, 20, now=13.0)
    assert store.due_callbacks(now=49.0, limit=10) == []
    (second,) = store.due_callbacks(now=50.0, limit=10)
    assert second.payload["progress"] == 20


# ------------------------------------------------------------------------ terminal


def test_complete_queues_exactly_one_terminal_callback(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    progress(store, job_id, attempt, 60)
    assert complete(store, job_id, attempt, now=20.0)
    job = store.get(job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert (job.progress, job.finished_at, job.lease_expires_at) == (100, 20.0, None)
    assert job.result == {"metadata": {"duration": 1.5}, "segments": []}

    assert not fail(store, job_id, attempt)  # the owner cannot fail it afterwards
    assert not fail(store, job_id, None, worker=None)  # nor can the supervisor
    assert not complete(store, job_id, attempt)
    assert store.get(job_id).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    # The pending progress callback is dropped in favour of the terminal one.
    assert states(store, job_id) == [("processing", "superseded"), ("completed", "pending")]
    (head,) = store.due_callbacks(now=100.0, limit=10)
    assert head.terminal and head.payload["status"] == "completed"


def test_fail_then_complete_is_refused(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    assert fail(store, job_id, attempt)
    assert not complete(store, job_id, attempt)
    assert not fail(store, job_id, None, worker=None)
    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.error_code, job.result) == (
        JobStatus.FAILED,
        "TRANSCRIPTION_ERROR",
        None,
    )
    assert [e["terminal"] for e in store.callback_log(job_id)] == [True]


def test_supervisor_fail_ends_the_job_and_silences_its_worker(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    progress(store, job_id, attempt, 45)
    assert fail(store, job_id, None, worker=None, now=30.0)  # e.g. the time limit
    # The worker, unaware, keeps reporting: nothing more is written or queued.
    assert not progress(store, job_id, attempt, 80, now=31.0)
    assert not complete(store, job_id, attempt, now=32.0)
    assert states(store, job_id) == [("processing", "superseded"), ("failed", "pending")]
    (terminal,) = store.due_callbacks(now=100.0, limit=10)
    # The failed callback says where the job stopped, whatever the caller put in.
    assert terminal.payload["progress"] == 45
    assert terminal.payload["error_code"] == "TRANSCRIPTION_ERROR"
    assert store.get(job_id).progress == 45  # type: ignore[union-attr]


def test_a_job_can_be_failed_before_any_worker_claims_it(store: JobStore) -> None:
    submit(store, "a")
    assert fail(store, "a", None, worker=None)
    assert store.claim("w1", LEASE_S, now=10.0) is None
    assert store.get("a").status is JobStatus.FAILED  # type: ignore[union-attr]
    assert not fail(store, "missing", None, worker=None)


def test_fail_needs_both_owner_fields_or_neither(store: JobStore) -> None:
    submit(store, "a")
    with pytest.raises(ValueError):
        fail(store, "a", None, worker="w1")


def test_a_result_that_is_not_strict_json_is_refused_whole(store: JobStore) -> None:
    """NaN cannot reach the backend (PostgreSQL JSONB): refuse it before any write."""
    submit(store, "a")
    job_id, attempt = claim(store)
    bad = {"segments": [{"volume_db": math.nan}]}
    with pytest.raises(ValueError):
        store.complete(job_id, "w1", attempt, bad, completed_payload(job_id, bad), now=20.0)
    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.result) == (JobStatus.PROCESSING, None)
    assert store.callback_log(job_id) == []
    assert complete(store, job_id, attempt)  # the owner may still finish properly
