"""The JobStore contract: one suite, run against every implementation.

Each test names the invariant of `voxtrace.store.base` it holds the store to.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from voxtrace import errors
from voxtrace.domain import JobOptions, JobStatus, NewJob
from voxtrace.logs import redact_url
from voxtrace.payloads import completed_payload, failed_payload, progress_payload
from voxtrace.store import MemoryJobStore, SqliteJobStore, open_store
from voxtrace.store.base import WORKER_RETENTION_S, JobStore
from voxtrace.store.sqlite import SCHEMA_VERSION

BASE = "http://backend.test"
LEASE_S = 60.0

# A real PostgreSQL (CI runs one); each test gets a schema of its own, dropped afterwards.
POSTGRES_URL = os.environ.get(
    "VOXTRACE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@functools.cache
def _postgres_missing() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        return (
            f"PostgreSQL at {redact_url(POSTGRES_URL)} is unreachable ({type(exc).__name__});"
            " set VOXTRACE_TEST_POSTGRES_URL to run the PostgreSQL store tests"
        )
    return None


def _in_schema(schema: str, *options: str) -> str:
    """POSTGRES_URL with its search_path (and `-c` options) set; named after the schema,
    so a test can find its own sessions in pg_stat_activity."""
    settings = " ".join(f"-c{option}" for option in (f"search_path={schema}", *options))
    joiner = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{joiner}options={quote(settings)}&application_name={schema}"


def _admin(statement: sql.Composable, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def pg_schema() -> Iterator[str]:
    missing = _postgres_missing()
    if missing:
        pytest.skip(missing)
    schema = f"vt_test_{uuid.uuid4().hex[:12]}"
    _admin(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield schema
    _admin(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    impl: JobStore
    if request.param == "memory":
        impl = MemoryJobStore()
    elif request.param == "sqlite":
        impl = SqliteJobStore(tmp_path / "jobs.db")
    else:
        impl = open_store(_in_schema(request.getfixturevalue("pg_schema")))
    yield impl
    impl.close()


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


# ------------------------------------------------------------------------ submission


def test_submit_stores_an_accepted_job(store: JobStore) -> None:
    job, created = store.submit(new_job("a", language="ko", num_speakers=2), 10, now=5.0)
    assert created
    assert job.status is JobStatus.ACCEPTED
    assert (job.progress, job.attempts, job.created_at) == (0, 0, 5.0)
    fetched = store.get("a")
    assert fetched == job
    assert fetched.options == JobOptions(language="ko", num_speakers=2)
    assert fetched.callback_base_url == BASE
    assert store.get("missing") is None


def test_submit_is_idempotent_per_job_id(store: JobStore) -> None:
    first, created = store.submit(new_job("a"), 10, now=1.0)
    again, created_again = store.submit(new_job("a"), 10, now=2.0)
    assert created and not created_again
    assert again == first  # the original, untouched
    assert store.stats().accepted == 1


def test_same_job_id_with_another_video_is_a_conflict(store: JobStore) -> None:
    store.submit(new_job("a"), 10, now=1.0)
    with pytest.raises(errors.JobConflict):
        store.submit(new_job("a", video_url="https://bucket.test/other.mp4"), 10, now=2.0)
    assert store.get("a").video_url == "https://bucket.test/a.mp4"  # type: ignore[union-attr]


def test_capacity_counts_unfinished_jobs_only(store: JobStore) -> None:
    store.submit(new_job("a"), 2, now=1.0)
    store.submit(new_job("b"), 2, now=2.0)
    with pytest.raises(errors.CapacityExceeded):
        store.submit(new_job("c"), 2, now=3.0)
    assert store.get("c") is None
    # A repeat of an existing job is still answered at capacity.
    assert store.submit(new_job("a"), 2, now=3.0)[1] is False
    job_id, attempt = claim(store)
    assert complete(store, job_id, attempt)
    _, created = store.submit(new_job("c"), 2, now=4.0)
    assert created


# ------------------------------------------------------------------------ dispatch


def test_claim_takes_the_oldest_accepted_job_and_leases_it(store: JobStore) -> None:
    store.submit(new_job("late"), 10, now=3.0)
    store.submit(new_job("early"), 10, now=1.0)
    store.submit(new_job("tie-1"), 10, now=2.0)
    store.submit(new_job("tie-2"), 10, now=2.0)
    job = store.claim("w1", 30.0, now=10.0)
    assert job is not None
    assert job.job_id == "early"
    assert job.status is JobStatus.PROCESSING
    assert (job.attempts, job.worker_id, job.lease_expires_at, job.started_at) == (
        1,
        "w1",
        40.0,
        10.0,
    )
    order = [claim(store, now=11.0)[0] for _ in range(3)]
    assert order == ["tie-1", "tie-2", "late"]
    assert store.claim("w1", 30.0, now=12.0) is None


def test_requeue_returns_the_job_and_the_next_claim_is_a_new_attempt(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store, "w1")
    assert store.requeue(job_id, "w1", attempt, now=12.0)
    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.worker_id, job.attempts) == (JobStatus.ACCEPTED, None, 1)
    assert not store.requeue(job_id, "w1", attempt, now=13.0)  # no longer processing
    assert claim(store, "w2") == ("a", 2)


def test_a_requeued_job_waits_until_its_not_before(store: JobStore) -> None:
    """A retry that must wait (a full disk, a memory squeeze) is queued, not claimable."""
    submit(store, "a")
    job_id, attempt = claim(store, "w1", now=10.0)
    assert store.requeue(job_id, "w1", attempt, now=12.0, not_before=50.0)
    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.worker_id, job.attempts, job.not_before) == (
        JobStatus.ACCEPTED,
        None,
        1,
        50.0,
    )
    assert store.claim("w2", LEASE_S, now=49.9) is None
    assert store.stats().accepted == 1  # still queued, still counted against capacity
    claimed = store.claim("w2", LEASE_S, now=50.0)
    assert claimed is not None
    assert (claimed.job_id, claimed.attempts, claimed.not_before) == ("a", 2, None)
    assert store.get(job_id) == claimed


def test_a_waiting_retry_does_not_hold_up_younger_jobs(store: JobStore) -> None:
    submit(store, "old", "young")
    old, attempt = claim(store, "w1", now=10.0)
    assert store.requeue(old, "w1", attempt, now=11.0, not_before=100.0)
    assert claim(store, "w2", now=20.0) == ("young", 1)
    assert store.claim("w3", LEASE_S, now=30.0) is None
    assert claim(store, "w3", now=100.0) == ("old", 2)


def test_a_lapsed_lease_or_a_plain_requeue_is_claimable_at_once(store: JobStore) -> None:
    submit(store, "a", "b")
    a, attempt_a = claim(store, "w1", now=10.0)
    b, attempt_b = claim(store, "w2", now=10.0)
    assert store.requeue(a, "w1", attempt_a, now=11.0)
    assert store.release_lapsed(b, attempt_b, now=10.0 + LEASE_S + 1)
    assert store.get(a).not_before is None  # type: ignore[union-attr]
    assert store.get(b).not_before is None  # type: ignore[union-attr]
    assert sorted(claim(store, "w3", now=80.0)[0] for _ in range(2)) == ["a", "b"]


def test_a_waiting_retry_can_still_be_failed(store: JobStore) -> None:
    """The supervisor (attempts spent, time limit) may end a job that waits to retry."""
    submit(store, "a")
    job_id, attempt = claim(store, "w1", now=10.0)
    assert store.requeue(job_id, "w1", attempt, now=11.0, not_before=100.0)
    assert fail(store, job_id, None, worker=None, now=20.0)
    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.not_before) == (JobStatus.FAILED, None)
    assert store.claim("w2", LEASE_S, now=200.0) is None


def test_a_stale_attempt_can_change_nothing(store: JobStore) -> None:
    """Fencing: after a lease lapses and the job is re-claimed, the old owner is out."""
    submit(store, "a")
    job_id, first = claim(store, "w1", now=10.0)
    assert store.release_lapsed(job_id, first, now=10.0 + LEASE_S + 1)
    _, second = claim(store, "w2", now=80.0)
    assert second == first + 1

    assert not store.heartbeat(job_id, "w1", first, LEASE_S, now=81.0)
    assert not progress(store, job_id, first, 50, worker="w1")
    assert not store.requeue(job_id, "w1", first, now=81.0)
    assert not complete(store, job_id, first, worker="w1")
    assert not fail(store, job_id, first, worker="w1")
    # Right attempt number, wrong worker; right worker, wrong attempt.
    assert not complete(store, job_id, second, worker="w1")
    assert not complete(store, job_id, first, worker="w2")

    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.worker_id, job.progress) == (JobStatus.PROCESSING, "w2", 0)
    assert store.callback_log(job_id) == []
    assert complete(store, job_id, second, worker="w2")


def test_heartbeat_extends_the_lease_and_lapsed_leases_are_released(store: JobStore) -> None:
    submit(store, "a", "b")
    a, attempt_a = claim(store, "w1", now=0.0)  # lease until 60
    b, attempt_b = claim(store, "w2", now=0.0)
    assert store.heartbeat(a, "w1", attempt_a, LEASE_S, now=30.0)  # lease until 90
    assert store.get(a).lease_expires_at == 90.0  # type: ignore[union-attr]

    assert store.expired_leases(now=59.0) == []
    assert [j.job_id for j in store.expired_leases(now=61.0)] == [b]
    assert not store.release_lapsed(a, attempt_a, now=61.0)  # still leased
    assert not store.release_lapsed(b, attempt_b + 1, now=61.0)  # another attempt
    assert store.release_lapsed(b, attempt_b, now=61.0)
    assert not store.release_lapsed(b, attempt_b, now=62.0)  # already released
    job = store.get(b)
    assert job is not None
    assert (job.status, job.worker_id, job.lease_expires_at) == (JobStatus.ACCEPTED, None, None)
    assert [j.job_id for j in store.expired_leases(now=91.0)] == [a]


def test_jobs_owned_by_matches_a_literal_prefix(store: JobStore) -> None:
    submit(store, "a", "b", "c", "d")
    claim(store, "node1/w0")
    claim(store, "node1/w1")
    claim(store, "node2/w0")
    assert sorted(j.job_id for j in store.jobs_owned_by("node1/")) == ["a", "b"]
    assert [j.job_id for j in store.jobs_owned_by("node2/w0")] == ["c"]
    assert store.jobs_owned_by("node1%") == []  # no LIKE wildcards
    assert store.jobs_owned_by("node3/") == []
    complete(store, "a", 1, worker="node1/w0")
    assert [j.job_id for j in store.jobs_owned_by("node1/")] == ["b"]


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


# ------------------------------------------------------------------------ outbox


def test_due_callbacks_hands_out_one_callback_per_job_in_order(store: JobStore) -> None:
    submit(store, "a", "b")
    a, attempt_a = claim(store, "w1")
    b, attempt_b = claim(store, "w2")
    progress(store, a, attempt_a, 10, now=11.0)
    progress(store, b, attempt_b, 10, worker="w2", now=12.0)
    heads = store.due_callbacks(now=20.0, limit=10)
    assert [(h.job_id, h.seq) for h in heads] == [(a, 1), (b, 1)]
    assert store.due_callbacks(now=20.0, limit=1) == heads[:1]
    assert store.due_callbacks(now=11.5, limit=10) == heads[:1]  # b's not due yet

    # a's progress is in flight when a finishes: the terminal waits its turn...
    complete(store, a, attempt_a, now=21.0)
    store.mark_delivered(heads[0].id, now=22.0)
    # ...and the one in flight is recorded as delivered, because it was.
    assert states(store, a) == [("processing", "delivered"), ("completed", "pending")]
    due = {h.job_id: h for h in store.due_callbacks(now=30.0, limit=10)}
    assert (due[a].seq, due[a].terminal, due[a].base_url) == (2, True, BASE)
    store.mark_delivered(due[a].id, now=31.0)
    assert [h.job_id for h in store.due_callbacks(now=40.0, limit=10)] == [b]


def test_delivery_bookkeeping(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    fail(store, job_id, attempt, now=20.0)
    (item,) = store.due_callbacks(now=20.0, limit=10)
    assert (item.attempts, item.created_at, item.next_attempt_at) == (0, 20.0, 20.0)

    store.schedule_retry(item.id, next_attempt_at=25.0, error="HTTP 500", now=21.0)
    assert store.due_callbacks(now=24.0, limit=10) == []
    (again,) = store.due_callbacks(now=25.0, limit=10)
    assert (again.id, again.attempts) == (item.id, 1)
    store.mark_dead(item.id, "HTTP 404", now=26.0)
    assert store.due_callbacks(now=100.0, limit=10) == []
    (entry,) = store.callback_log(job_id)
    assert entry["seq"] == 1
    assert (entry["status"], entry["state"], entry["attempts"]) == ("failed", "dead", 2)
    assert (entry["last_error"], entry["created_at"], entry["delivered_at"]) == (
        "HTTP 404",
        20.0,
        None,
    )
    store.mark_delivered(item.id, now=27.0)  # too late: a dead callback stays dead
    assert store.callback_log(job_id)[0]["state"] == "dead"
    assert store.stats().callbacks_pending == 0


def test_a_delivered_callback_is_logged_with_its_time(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    complete(store, job_id, attempt, now=20.0)
    (item,) = store.due_callbacks(now=20.0, limit=10)
    store.mark_delivered(item.id, now=21.5)
    (entry,) = store.callback_log(job_id)
    assert (entry["state"], entry["attempts"], entry["delivered_at"]) == ("delivered", 1, 21.5)
    assert entry["progress"] == 100


# ------------------------------------------------------------------------ monitoring


def test_stats_count_jobs_by_status(store: JobStore) -> None:
    submit(store, "a", "b", "c", "d")
    a, attempt_a = claim(store)
    b, attempt_b = claim(store)
    claim(store)
    complete(store, a, attempt_a)
    fail(store, b, attempt_b)
    stats = store.stats()
    assert (stats.accepted, stats.processing, stats.completed, stats.failed) == (1, 1, 1, 1)
    assert stats.unfinished == 2
    assert stats.callbacks_pending == 2


def test_mean_processing_time_of_recent_completed_jobs(store: JobStore) -> None:
    assert store.mean_processing_s() is None
    submit(store, "a", "b", "c")
    for job_id, took_s, done_at in (("a", 10.0, 100.0), ("b", 30.0, 200.0)):
        claimed = store.claim("w1", LEASE_S, now=done_at - took_s)
        assert claimed is not None and claimed.job_id == job_id
        complete(store, job_id, claimed.attempts, now=done_at)
    c, attempt_c = claim(store, now=300.0)
    fail(store, c, attempt_c, now=900.0)  # failures do not count
    assert store.mean_processing_s() == pytest.approx(20.0)
    assert store.mean_processing_s(last_n=1) == pytest.approx(30.0)


def test_live_workers(store: JobStore) -> None:
    store.worker_seen("w1", {"pid": 11, "state": "idle"}, now=100.0)
    store.worker_seen("w2", {"pid": 12, "state": "idle"}, now=200.0)
    assert [w["worker_id"] for w in store.live_workers(since=150.0)] == ["w2"]
    store.worker_seen("w1", {"pid": 11, "state": "busy"}, now=300.0)
    (w1,) = [w for w in store.live_workers(since=150.0) if w["worker_id"] == "w1"]
    assert (w1["state"], w1["pid"], w1["last_seen"]) == ("busy", 11, 300.0)


def test_workers_unseen_for_longer_than_the_retention_are_forgotten(store: JobStore) -> None:
    """Worker ids carry a pid and a generation: without pruning, every restart of every
    machine would leave a row behind for ever."""
    store.worker_seen("gone", {"pid": 1}, now=1000.0)
    store.worker_seen("quiet", {"pid": 2}, now=5000.0)
    store.worker_seen("w1", {"pid": 3}, now=5000.0 + WORKER_RETENTION_S)  # "quiet": exactly
    assert [w["worker_id"] for w in store.live_workers(since=0)] == ["quiet", "w1"]
    store.worker_seen("w1", {"pid": 3}, now=5000.5 + WORKER_RETENTION_S)
    (w1,) = store.live_workers(since=0)
    assert (w1["worker_id"], w1["last_seen"]) == ("w1", 5000.5 + WORKER_RETENTION_S)


def test_check_writable(store: JobStore) -> None:
    assert store.check_writable()


# ------------------------------------------------------------------------ sqlite only


def test_sqlite_keeps_jobs_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jobs.db"
    first = SqliteJobStore(path)
    submit(first, "a")
    job_id, attempt = claim(first)
    progress(first, job_id, attempt, 30)
    first.close()

    second = SqliteJobStore(path)  # schema creation is idempotent
    job = second.get("a")
    assert job is not None
    assert (job.status, job.progress, job.worker_id) == (JobStatus.PROCESSING, 30, "w1")
    assert states(second, "a") == [("processing", "pending")]
    second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_reports_a_store_it_cannot_write_as_not_writable(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    assert store.check_writable()
    # query_only stands in for a full disk or a read-only mount (root ignores chmod).
    store._conn().execute("PRAGMA query_only = ON")
    assert not store.check_writable()
    assert store.get("a") is None  # reads still work
    store.close()


def test_the_database_refuses_a_second_terminal_callback(tmp_path: Path) -> None:
    """Belt and braces: even a buggy code path cannot queue two terminal callbacks."""
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(path)
    submit(store, "a")
    job_id, attempt = claim(store)
    complete(store, job_id, attempt)
    store.close()
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO outbox (job_id, seq, base_url, payload, terminal, state, attempts,"
            " created_at, next_attempt_at) VALUES ('a', 9, 'x', '{}', 1, 'pending', 0, 0, 0)"
        )


def test_sqlite_migrates_a_version_1_database(tmp_path: Path) -> None:
    """A job database written before `not_before` existed opens, keeps its jobs, and
    learns to hold a retry back."""
    from voxtrace.store.sqlite import _SCHEMA_V1

    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA_V1)
        conn.execute(
            "INSERT INTO jobs (job_id, video_url, callback_base_url, options, status,"
            " created_at, updated_at) VALUES ('old', 'https://x/v.mp4', ?, '{}', 'accepted',"
            " 1.0, 1.0)",
            (BASE,),
        )
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = SqliteJobStore(path)
    job_id, attempt = claim(store)
    assert job_id == "old"
    assert store.requeue(job_id, "w1", attempt, now=12.0, not_before=30.0)
    assert store.claim("w1", LEASE_S, now=29.0) is None
    assert claim(store, now=30.0) == ("old", 2)
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def _claim_all(path: str, worker_id: str, start: Any, out: str) -> None:
    """Runs in a child process: claim and finish jobs until none is left."""
    store = SqliteJobStore(Path(path), busy_timeout_s=30.0)
    start.wait()  # a barrier: both processes go at once
    claimed = []
    while (job := store.claim(worker_id, LEASE_S, now=10.0)) is not None:
        claimed.append(job.job_id)
        progress(store, job.job_id, job.attempts, 50, worker=worker_id)
        complete(store, job.job_id, job.attempts, worker=worker_id)
    store.close()
    Path(out).write_text("\n".join(claimed))


def test_two_processes_never_claim_the_same_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(path)
    job_ids = [f"job-{i:03d}" for i in range(80)]
    submit(store, *job_ids)

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    outs = [tmp_path / f"claimed-{n}.txt" for n in range(2)]
    procs = [
        ctx.Process(target=_claim_all, args=(str(path), f"p{n}", start, str(outs[n])))
        for n in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0

    per_process = [out.read_text().splitlines() for out in outs]
    claimed = [job_id for mine in per_process for job_id in mine]
    assert sorted(claimed) == job_ids  # every job once, none twice
    stats = store.stats()
    assert (stats.completed, stats.callbacks_pending) == (80, 80)
    assert all(
        states(store, job_id) == [("processing", "superseded"), ("completed", "pending")]
        for job_id in job_ids
    )
    store.close()


# ------------------------------------------------------------------------ postgres only


def _pg_store(schema: str, *options: str) -> Any:
    from voxtrace.store.postgres import PostgresJobStore

    return PostgresJobStore(_in_schema(schema, *options))


def test_postgres_keeps_jobs_across_reopening(pg_schema: str) -> None:
    from voxtrace.store.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION

    first = _pg_store(pg_schema)
    assert first.schema == pg_schema
    submit(first, "a")
    job_id, attempt = claim(first)
    progress(first, job_id, attempt, 30)
    first.close()

    second = _pg_store(pg_schema)  # schema creation is idempotent
    job = second.get("a")
    assert job is not None
    assert (job.status, job.progress, job.worker_id) == (JobStatus.PROCESSING, 30, "w1")
    assert states(second, "a") == [("processing", "pending")]
    second.close()
    version = _admin(
        sql.SQL("SELECT value FROM {}.voxtrace_meta WHERE key = 'schema_version'").format(
            sql.Identifier(pg_schema)
        )
    )
    assert version == [(str(PG_SCHEMA_VERSION),)]


def test_postgres_keeps_the_results_key_order(pg_schema: str) -> None:
    """JSON, not JSONB: the stored result reads back in the order it was written."""
    store = _pg_store(pg_schema)
    submit(store, "a")
    job_id, attempt = claim(store)
    result = {"segments": [], "metadata": {"zeta": 1, "alpha": 2}}
    assert store.complete(job_id, "w1", attempt, result, completed_payload(job_id, result), 20.0)
    stored = store.get(job_id)
    assert stored is not None and stored.result is not None
    assert list(stored.result) == ["segments", "metadata"]
    assert list(stored.result["metadata"]) == ["zeta", "alpha"]
    store.close()


def test_postgres_needs_an_existing_schema(pg_schema: str) -> None:
    with pytest.raises(ValueError, match="no schema"):
        _pg_store(pg_schema + "_missing")


def test_postgres_the_database_refuses_a_second_terminal_callback(pg_schema: str) -> None:
    store = _pg_store(pg_schema)
    submit(store, "a")
    job_id, attempt = claim(store)
    complete(store, job_id, attempt)
    store.close()
    with pytest.raises(psycopg.errors.UniqueViolation):
        _admin(
            sql.SQL(
                "INSERT INTO {}.voxtrace_outbox (job_id, seq, base_url, payload, terminal,"
                " state, attempts, created_at, next_attempt_at)"
                " VALUES ('a', 9, 'x', '{{}}', true, 'pending', 0, 0, 0)"
            ).format(sql.Identifier(pg_schema))
        )


def test_postgres_two_machines_never_claim_the_same_job(pg_schema: str) -> None:
    """Two stores (two machines' connections), two threads each, race for 120 jobs."""
    import threading

    stores = [_pg_store(pg_schema), _pg_store(pg_schema)]
    job_ids = [f"job-{i:03d}" for i in range(120)]
    for n, job_id in enumerate(job_ids):
        stores[n % 2].submit(new_job(job_id), max_unfinished=1000, now=1.0 + n)
    start = threading.Barrier(4)
    claimed: dict[str, list[str]] = {}

    def run(store: JobStore, worker_id: str) -> None:
        mine = claimed.setdefault(worker_id, [])
        start.wait()
        while (job := store.claim(worker_id, LEASE_S, now=10.0)) is not None:
            mine.append(job.job_id)
            assert progress(store, job.job_id, job.attempts, 50, worker=worker_id)
            assert complete(store, job.job_id, job.attempts, worker=worker_id)

    threads = [
        threading.Thread(target=run, args=(stores[n % 2], f"m{n % 2}/w{n}")) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    all_claimed = [job_id for mine in claimed.values() for job_id in mine]
    assert sorted(all_claimed) == job_ids  # every job once, none twice
    assert all(claimed.values())  # every worker got some: nobody waited on a row lock
    stats = stores[1].stats()
    assert (stats.completed, stats.callbacks_pending) == (120, 120)
    for store in stores:
        store.close()


def test_postgres_claim_skips_a_row_another_session_holds(pg_schema: str) -> None:
    """SKIP LOCKED: a claim does not wait for (or take) a job another claim has locked."""
    store = _pg_store(pg_schema)
    submit(store, "first", "second")
    with psycopg.connect(_in_schema(pg_schema)) as other:  # a transaction left open
        other.execute("SELECT 1 FROM voxtrace_jobs WHERE job_id = 'first' FOR UPDATE")
        assert claim(store, "w1") == ("second", 1)
        assert store.claim("w2", LEASE_S, now=10.0) is None
        other.rollback()
    assert claim(store, "w2") == ("first", 1)
    store.close()


def _finished_job(store: JobStore, job_id: str) -> None:
    submit(store, job_id)
    claimed, attempt = claim(store)
    assert complete(store, claimed, attempt)


def test_postgres_one_dispatcher_delivers_the_others_stand_by(pg_schema: str) -> None:
    first, second = _pg_store(pg_schema), _pg_store(pg_schema)
    _finished_job(first, "a")
    (item,) = first.due_callbacks(now=100.0, limit=10)
    assert second.due_callbacks(now=100.0, limit=10) == []  # first delivers
    assert first.due_callbacks(now=100.0, limit=10) == [item]  # and still does
    first.close()  # its session ends: a stand-by takes over
    assert second.due_callbacks(now=100.0, limit=10) == [item]
    assert first.due_callbacks(now=100.0, limit=10) == []
    second.mark_delivered(item.id, now=101.0)
    assert states(first, "a") == [("completed", "delivered")]
    second.close()


def test_postgres_racing_dispatchers_elect_one(pg_schema: str) -> None:
    import threading

    stores = [_pg_store(pg_schema) for _ in range(4)]
    _finished_job(stores[0], "a")
    start = threading.Barrier(len(stores))
    got: list[int] = [0] * len(stores)

    def poll(n: int) -> None:
        start.wait()
        got[n] = len(stores[n].due_callbacks(now=100.0, limit=10))

    threads = [threading.Thread(target=poll, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(got) == [0, 0, 0, 1]
    for store in stores:
        store.close()


def _terminate_sessions(application_name: str, only_pid: int | None = None) -> int:
    """Kill a test's sessions as a server restart would; return once they are gone."""
    import time

    rows = _admin(
        sql.SQL(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND (%s::int IS NULL OR pid = %s::int)"
        ),
        application_name,
        only_pid,
        only_pid,
    )
    pids = [pid for pid, _ in rows]
    deadline = time.monotonic() + 10
    alive = sql.SQL("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)")
    while pids and _admin(alive, pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(pids)


def _poll(call: Any, timeout_s: float = 10.0) -> Any:
    """`call()` until it returns something: the server ends a killed session's locks
    a moment after the session itself is gone."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (result := call()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_postgres_a_dispatcher_whose_session_dies_is_replaced(pg_schema: str) -> None:
    first, second = _pg_store(pg_schema), _pg_store(pg_schema)
    _finished_job(first, "a")
    (item,) = first.due_callbacks(now=100.0, limit=10)
    backend_pid = first._dispatch_conn.info.backend_pid
    assert _terminate_sessions(pg_schema, backend_pid) == 1  # its machine vanished
    assert _poll(lambda: second.due_callbacks(now=100.0, limit=10)) == [item]
    # The old dispatcher comes back on a new session and finds the place taken.
    assert first.due_callbacks(now=100.0, limit=10) == []
    first.close()
    second.close()


def test_postgres_reconnects_after_the_server_drops_its_sessions(
    pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server restart or failover: idle pooled connections die; the next call works."""
    store = _pg_store(pg_schema)
    submit(store, "a")
    assert store.get("a") is not None
    assert _terminate_sessions(pg_schema) >= 1
    with caplog.at_level("INFO", logger="voxtrace.store.postgres"):
        job_id, attempt = claim(store)  # a dead idle connection is replaced, once
    assert (job_id, attempt) == ("a", 1)
    assert "connection was lost while idle" in caplog.text
    assert store.check_writable()
    store.close()


def test_postgres_an_unreachable_store_never_logs_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from voxtrace.store.postgres import PostgresJobStore

    url = "postgresql://voxtrace:hunter2-secret@127.0.0.1:1/jobs?connect_timeout=2"
    with pytest.raises(errors.StoreUnavailable) as raised:
        PostgresJobStore(url)
    assert raised.value.message == "Job store unavailable; retry later"
    assert "hunter2" not in str(raised.value)
    assert "postgresql://127.0.0.1:1/jobs" in caplog.text
    assert "hunter2" not in caplog.text


def test_postgres_a_read_only_store_reads_but_is_not_writable(pg_schema: str) -> None:
    """A read-only server (a standby, a full disk's emergency mode) shows up in /health,
    and a submission is refused with the project's 503 error, not a library error."""
    _pg_store(pg_schema).close()  # the tables exist
    store = _pg_store(pg_schema, "default_transaction_read_only=on")
    assert store.get("a") is None
    assert not store.check_writable()
    with pytest.raises(errors.StoreUnavailable):
        store.submit(new_job("a"), max_unfinished=10, now=1.0)
    store.close()


def _setting(store: Any, name: str, dispatcher: bool = False) -> str:
    if dispatcher:
        store.due_callbacks(now=0.0, limit=1)
        row = store._dispatch_conn.execute(f"SHOW {name}").fetchone()
    else:
        row = store._read(lambda conn: conn.execute(f"SHOW {name}").fetchone())
    return str(row[name])


def test_postgres_sessions_get_a_statement_and_lock_timeout_unless_the_url_sets_them(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _pg_store(pg_schema)
    assert store.schema == pg_schema  # the URL's own options are kept
    for dispatcher in (False, True):
        assert _setting(store, "statement_timeout", dispatcher) == "30s"
        assert _setting(store, "lock_timeout", dispatcher) == "10s"
        assert _setting(store, "idle_in_transaction_session_timeout", dispatcher) == "1min"
    store.close()
    store = _pg_store(pg_schema, "statement_timeout=0", "lock_timeout=2500")  # the URL wins
    assert (_setting(store, "statement_timeout"), _setting(store, "lock_timeout")) == (
        "0",
        "2500ms",
    )
    store.close()
    # Without `options` in the URL, libpq would read PGOPTIONS: so does the merge.
    from voxtrace.store.postgres import PostgresJobStore

    monkeypatch.setenv("PGOPTIONS", f"-csearch_path={pg_schema} --statement-timeout=7s")
    store = PostgresJobStore(
        f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}application_name=x"
    )
    assert store.schema == pg_schema
    assert (_setting(store, "statement_timeout"), _setting(store, "lock_timeout")) == ("7s", "10s")
    store.close()


def _holding(schema: str, *statements: str) -> psycopg.Connection[Any]:
    """Another session, its transaction left open after `statements` (it holds their locks)."""
    other = psycopg.connect(_in_schema(schema))
    for statement in statements:
        other.execute(statement)
    return other


def test_postgres_a_statement_stuck_behind_a_lock_is_cut_off(
    pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends it; callers see the store's usual "unavailable" error, which they
    wait out; the session goes back to the pool and works once the lock is gone."""
    import time

    store = _pg_store(pg_schema, "statement_timeout=400", "lock_timeout=0")
    submit(store, "a")
    job_id, attempt = claim(store)
    other = _holding(pg_schema, "SELECT 1 FROM voxtrace_jobs WHERE job_id = 'a' FOR UPDATE")
    started = time.monotonic()
    with pytest.raises(errors.StoreUnavailable, match="Job store unavailable"):
        store.heartbeat(job_id, "w1", attempt, LEASE_S, now=11.0)
    assert 0.3 < time.monotonic() - started < 5
    assert "QueryCanceled" in caplog.text
    other.rollback()
    assert store.heartbeat(job_id, "w1", attempt, LEASE_S, now=12.0)
    other.close()
    store.close()


def test_postgres_submit_waits_for_its_lock_only_so_long(pg_schema: str) -> None:
    """`submit`'s advisory lock is a lock wait: `lock_timeout` ends it, as "unavailable"
    (the API's 503, which the backend retries)."""
    import time

    store = _pg_store(pg_schema, "lock_timeout=300")
    other = _holding(pg_schema, f"SELECT pg_advisory_xact_lock({store._submit_key})")
    started = time.monotonic()
    with pytest.raises(errors.StoreUnavailable, match="Job store unavailable"):
        submit(store, "a")
    assert time.monotonic() - started < 5
    other.rollback()
    submit(store, "a")
    assert store.get("a") is not None
    other.close()
    store.close()


def test_postgres_a_dispatcher_keeps_its_lock_through_a_timed_out_poll(pg_schema: str) -> None:
    first = _pg_store(pg_schema, "lock_timeout=300")
    second = _pg_store(pg_schema, "lock_timeout=300")
    _finished_job(first, "a")
    (item,) = first.due_callbacks(now=100.0, limit=10)
    other = _holding(pg_schema, "LOCK TABLE voxtrace_outbox IN ACCESS EXCLUSIVE MODE")
    with pytest.raises(errors.StoreUnavailable):
        first.due_callbacks(now=100.0, limit=10)
    assert second.due_callbacks(now=100.0, limit=10) == []  # no hand-over: first still delivers
    other.rollback()
    assert first.due_callbacks(now=100.0, limit=10) == [item]
    assert second.due_callbacks(now=100.0, limit=10) == []
    other.close()
    first.close()
    second.close()


def _claim_in_child(store: Any, out: str) -> None:
    """Runs in a forked child: use the inherited store, then drop it."""
    import gc

    job = store.claim("child", LEASE_S, now=10.0)
    store.close()
    del store
    gc.collect()  # the parent's connection objects die here, too
    Path(out).write_text(job.job_id if job else "")


def test_postgres_a_forked_child_leaves_the_parents_connections_alone(
    pg_schema: str, tmp_path: Path
) -> None:
    store = _pg_store(pg_schema)
    submit(store, "a", "b")
    parent_backend = store._read(lambda conn: conn.info.backend_pid)
    out = tmp_path / "child.txt"
    child = multiprocessing.get_context("fork").Process(
        target=_claim_in_child, args=(store, str(out))
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert out.read_text() == "a"
    # The same session as before the fork, alive: the child opened its own.
    assert store._read(lambda conn: conn.info.backend_pid) == parent_backend
    assert claim(store, "parent") == ("b", 1)
    store.close()


def test_open_store_by_postgres_url(pg_schema: str) -> None:
    from voxtrace.store import PostgresJobStore

    for scheme in ("postgresql", "postgres"):
        url = _in_schema(pg_schema).replace("postgresql://", f"{scheme}://", 1)
        opened = open_store(url)
        assert isinstance(opened, PostgresJobStore)
        assert opened.schema == pg_schema
        opened.close()


# ------------------------------------------------------------------------ factory


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryJobStore)
    for location in (tmp_path / "a.db", str(tmp_path / "b.db"), f"sqlite://{tmp_path}/c.db"):
        opened = open_store(location)
        assert isinstance(opened, SqliteJobStore)
        opened.close()
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["a.db", "b.db", "c.db"]
    with pytest.raises(ValueError, match="no Redis job store"):
        open_store("redis://localhost:6379/0")
    with pytest.raises(ValueError, match="unknown job store"):
        open_store("mysql://db/jobs")


def test_sqlite_closes_connections_of_finished_threads(tmp_path: Path) -> None:
    """Each job's heartbeat thread touches the store; its connection must not outlive it."""
    import os
    import threading

    store = SqliteJobStore(tmp_path / "jobs.db")
    store.get("warm-up")

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for _ in range(30):
        thread = threading.Thread(target=store.get, args=("x",))
        thread.start()
        thread.join()
    store.get("again")  # a new connection prunes those of finished threads
    assert open_fds() - before <= 4
    store.close()


# ------------------------------------------------------------------------ outages


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def breakable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, Any]]:
    """A store and a way to make it unwritable for real, each backend its own way:
    memory its outage switch, SQLite another connection holding the write lock past a
    short busy timeout, PostgreSQL a session holding its tables locked past a short
    lock_timeout."""
    impl: JobStore
    if request.param == "memory":
        memory = MemoryJobStore()

        @contextlib.contextmanager
        def broken() -> Iterator[None]:
            memory.outage = True
            yield
            memory.outage = False

        impl = memory
    elif request.param == "sqlite":
        path = tmp_path / "jobs.db"
        impl = SqliteJobStore(path, busy_timeout_s=0.2)

        @contextlib.contextmanager
        def broken() -> Iterator[None]:
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            yield
            other.execute("COMMIT")
            other.close()

    else:
        schema = request.getfixturevalue("pg_schema")
        impl = _pg_store(schema, "lock_timeout=200")

        @contextlib.contextmanager
        def broken() -> Iterator[None]:
            other = _holding(
                schema, "LOCK TABLE voxtrace_jobs, voxtrace_meta IN ACCESS EXCLUSIVE MODE"
            )
            yield
            other.rollback()
            other.close()

    yield impl, broken
    impl.close()


def test_an_unwritable_store_raises_store_unavailable_and_writes_nothing(
    breakable: tuple[JobStore, Any],
) -> None:
    store, broken = breakable
    submit(store, "before")
    with broken():
        with pytest.raises(errors.StoreUnavailable) as raised:
            store.submit(new_job("during"), max_unfinished=100, now=2.0)
        assert not store.check_writable()
    error = raised.value
    assert (error.code, error.http_status, error.retryable) == ("INSUFFICIENT_RESOURCES", 503, True)
    assert error.retry_after_s and error.retry_after_s > 0  # the API sends it as Retry-After
    assert "database" not in error.message.lower()  # generic: no backend text for clients
    assert store.get("during") is None
    submit(store, "after", now=3.0)  # back as soon as the outage ends
    assert store.check_writable()
    assert {store.get(j) is not None for j in ("before", "after")} == {True}


def test_a_worker_write_during_an_outage_is_store_unavailable_and_changes_nothing(
    breakable: tuple[JobStore, Any],
) -> None:
    store, broken = breakable
    submit(store, "j")
    job_id, attempt = claim(store)
    with broken(), pytest.raises(errors.StoreUnavailable):
        complete(store, job_id, attempt)
    stored = store.get(job_id)
    assert stored is not None and stored.status is JobStatus.PROCESSING
    assert store.callback_log(job_id) == []
    assert complete(store, job_id, attempt)  # the same write, retried after the outage
