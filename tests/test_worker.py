"""The worker's progress reporting and the settings that route callbacks (pure logic,
on the real in-memory store), and how a job rides out a store outage (a real SQLite
store whose write lock another connection holds)."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from voxtrace.config import get_settings
from voxtrace.domain import JobStatus, NewJob
from voxtrace.models import ModelBundle
from voxtrace.store import MemoryJobStore, SqliteJobStore
from voxtrace.worker import (
    JobRunner,
    LostOwnership,
    job_of_work_dir,
    job_work_dir,
    remove_job_dirs,
)
from voxtrace.worker.hooks import JobHooks


def _claimed(store: MemoryJobStore) -> tuple[str, int]:
    store.submit(
        NewJob("j1", "https://h/v.mp4", "http://backend"), max_unfinished=10, now=time.time()
    )
    job = store.claim("w1", lease_s=30, now=time.time())
    assert job is not None
    return job.job_id, job.attempts


def test_a_silent_stage_still_sends_progress_every_heartbeat() -> None:
    store = MemoryJobStore()
    _claimed(store)
    job = store.get("j1")
    assert job is not None
    settings = get_settings(heartbeat_s=0.3, lease_s=5)
    with JobHooks(store, job, "w1", settings) as report:
        report(61, "Generating transcript...")
        time.sleep(1.5)  # one long stage, no report from the pipeline
    log = store.callback_log("j1")
    assert len(log) >= 4  # the first report plus keep-alives
    assert {entry["progress"] for entry in log} == {61}
    stored = store.get("j1")
    assert stored is not None and stored.lease_expires_at is not None
    assert stored.lease_expires_at > time.time() + 3  # the lease was extended too


def test_progress_is_monotonic_and_deduplicated() -> None:
    store = MemoryJobStore()
    _claimed(store)
    job = store.get("j1")
    assert job is not None
    settings = get_settings(heartbeat_s=10)
    with JobHooks(store, job, "w1", settings) as report:
        report(30, "Detecting speech regions...")
        report(30, "Detecting speech regions...")
        report(20, "late report")
        report(45, "Identifying speakers...")
    assert [e["progress"] for e in store.callback_log("j1")] == [30, 30, 45]


def test_a_worker_that_lost_its_job_stops() -> None:
    store = MemoryJobStore()
    _claimed(store)
    job = store.get("j1")
    assert job is not None
    store.fail(
        "j1",
        None,
        None,
        "PROCESSING_TIMEOUT",
        "Processing took too long",
        {"job_id": "j1"},
        time.time(),
    )
    with (
        JobHooks(store, job, "w1", get_settings(heartbeat_s=10)) as report,
        pytest.raises(LostOwnership),
    ):
        report(70, "Generating transcript...")


def test_callback_base_url_honours_only_allowlisted_requests() -> None:
    settings = get_settings(
        backend_url="http://backend:8000/",
        callback_allowlist="http://10.0.0.5:8000, https://ecg.example.com/",
    )
    assert settings.backend_url == "http://backend:8000"
    assert settings.callback_base_for(None) == "http://backend:8000"
    assert settings.callback_base_for("https://ecg.example.com") == "https://ecg.example.com"
    assert settings.callback_base_for("http://10.0.0.5:8000/") == "http://10.0.0.5:8000"
    assert settings.callback_base_for("http://evil.example.com") == "http://backend:8000"


def test_a_retryable_failure_waits_longer_before_each_attempt(tmp_path: Path) -> None:
    """INSUFFICIENT_RESOURCES (here the free-disk floor) is retried, not at once: the
    job stays queued until base * 2**(attempt - 1), less up to 20 % jitter."""
    store = MemoryJobStore()
    settings = get_settings(
        data_dir=tmp_path,
        min_free_disk_mb=2**40,  # more than any disk: every attempt stops at the check
        max_attempts=3,
        job_retry_backoff_base_s=5,
        job_retry_backoff_cap_s=60,
    )
    runner = JobRunner(settings, store, ModelBundle(whisper=None), "w1")  # type: ignore[arg-type]
    store.submit(NewJob("j1", "https://h/v.mp4", "http://backend"), 10, now=time.time())
    now = time.time()
    for attempt, longest_s in ((1, 5.0), (2, 10.0)):
        job = store.claim("w1", lease_s=30, now=now)
        assert job is not None and job.attempts == attempt
        failed_at = time.time()
        runner.run(job)
        queued = store.get("j1")
        assert queued is not None and queued.not_before is not None
        assert (queued.status, queued.attempts) == (JobStatus.ACCEPTED, attempt)
        assert 0.8 * longest_s - 0.5 <= queued.not_before - failed_at <= longest_s + 0.5
        assert store.claim("w1", lease_s=30, now=queued.not_before - 0.01) is None
        now = queued.not_before
    job = store.claim("w1", lease_s=30, now=now)
    assert job is not None and job.attempts == 3
    runner.run(job)  # the last attempt: no more waiting, the job fails
    done = store.get("j1")
    assert done is not None
    assert (done.status, done.error_code) == (JobStatus.FAILED, "INSUFFICIENT_RESOURCES")


# ------------------------------------------------------------------ store outages


class _Locked:
    """A real SQLite outage for writers: another connection holds the write lock, and
    the store's writes fail with sqlite3.OperationalError once its busy timeout ends."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> _Locked:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.conn.close()


def test_progress_goes_on_through_a_store_outage_and_is_written_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db", busy_timeout_s=0.3)
    store.submit(NewJob("j1", "https://h/v.mp4", "http://backend"), 10, now=time.time())
    job = store.claim("w1", lease_s=5, now=time.time())
    assert job is not None
    settings = get_settings(heartbeat_s=0.3, lease_s=5)
    with (
        caplog.at_level("INFO", logger="voxtrace.store.outage"),
        JobHooks(store, job, "w1", settings) as report,
    ):
        with _Locked(store.path):
            report(30, "Detecting speech regions...")  # the write fails: no exception
            started = time.monotonic()
            report(45, "Identifying speakers...")  # kept for later, without waiting
            assert time.monotonic() - started < 0.2  # (a write would wait 0.3 s)
            time.sleep(0.6)  # heartbeats fail meanwhile
        deadline = time.monotonic() + 5  # the store is back: the keep-alive writes it
        while (stored := store.get("j1")) is not None and stored.progress != 45:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert stored is not None
    assert (stored.progress, stored.message) == (45, "Identifying speakers...")
    assert store.callback_log("j1")[-1]["progress"] == 45
    said = [r.getMessage() for r in caplog.records if "job store" in r.getMessage()]
    assert len(said) == 2, said  # once when it starts, once when it ends: not per try
    assert "unavailable (OperationalError: database is locked)" in said[0]
    assert "reachable again" in said[1]
    assert all(r.exc_info is None for r in caplog.records)  # no stack traces
    store.close()


def test_a_jobs_outcome_waits_for_the_store_to_come_back(tmp_path: Path) -> None:
    """The outcome is written once the store is back, not lost with the process."""
    store = SqliteJobStore(tmp_path / "jobs.db", busy_timeout_s=0.1)
    settings = get_settings(data_dir=tmp_path, min_free_disk_mb=2**40, max_attempts=2)
    runner = JobRunner(settings, store, ModelBundle(whisper=None), "w1")  # type: ignore[arg-type]
    store.submit(NewJob("j1", "https://h/v.mp4", "http://backend"), 10, now=time.time())
    job = store.claim("w1", lease_s=30, now=time.time())
    assert job is not None
    with _Locked(store.path) as lock:
        threading.Timer(1.0, lock.release).start()
        started = time.monotonic()
        runner.run(job)  # fails its disk check; the requeue waits for the lock
        assert time.monotonic() - started >= 1.0
    queued = store.get("j1")
    assert queued is not None
    assert (queued.status, queued.attempts) == (JobStatus.ACCEPTED, 1)
    assert queued.not_before is not None
    store.close()


def test_a_worker_told_to_stop_gives_up_waiting_for_the_store(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db", busy_timeout_s=0.1)
    settings = get_settings(data_dir=tmp_path, min_free_disk_mb=2**40)
    stopping = threading.Event()
    runner = JobRunner(settings, store, ModelBundle(whisper=None), "w1", stopping)  # type: ignore[arg-type]
    store.submit(NewJob("j1", "https://h/v.mp4", "http://backend"), 10, now=time.time())
    job = store.claim("w1", lease_s=30, now=time.time())
    assert job is not None
    with _Locked(store.path):
        threading.Timer(0.5, stopping.set).start()
        runner.run(job)  # returns: the job stays with its lease, which will lapse
    stored = store.get("j1")
    assert stored is not None and stored.status is JobStatus.PROCESSING
    assert not (tmp_path / "work" / "j1").exists()
    store.close()


def test_each_attempt_gets_a_private_work_dir_nobody_can_name(tmp_path: Path) -> None:
    """Media of one job must not be reachable as `../<job id>/download.mp4` from another."""
    work = tmp_path / "work"
    first = job_work_dir(work, "job-1")
    (first / "download.mp4").write_bytes(b"media")
    second = job_work_dir(work, "job-1")
    assert not first.exists()  # an earlier attempt's files are gone
    assert second.parent == work and not (work / "job-1").exists()
    assert second.name != first.name and len(second.name) > len("job-1.") + 30
    assert stat.S_IMODE(second.stat().st_mode) == 0o700
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    other = job_work_dir(work, "job-1.b")  # a job id with a dot is another job
    assert second.exists()
    assert (job_of_work_dir(second), job_of_work_dir(other)) == ("job-1", "job-1.b")
    assert job_of_work_dir(work / "job-1") == ""
    remove_job_dirs(work, "job-1")
    assert not second.exists() and other.exists()
