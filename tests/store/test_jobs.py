"""The JobStore contract, run against every backend: submission, dispatch and leases.

Each test names the invariant of `voxtrace.store.base` it holds the store to.
"""

from __future__ import annotations

import pytest

from tests.store.kit import BASE, LEASE_S, claim, complete, fail, new_job, progress, submit
from voxtrace import errors
from voxtrace.domain import JobOptions, JobStatus
from voxtrace.store.base import JobStore

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
