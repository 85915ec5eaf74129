"""The JobStore contract, run against every backend: counts, timings, workers."""

from __future__ import annotations

import pytest

from tests.store.kit import LEASE_S, claim, complete, fail, submit
from voxtrace.store.base import WORKER_RETENTION_S, JobStore

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
