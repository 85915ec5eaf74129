"""The worker's progress reporting and the settings that route callbacks (pure logic,
on the real in-memory store)."""

from __future__ import annotations

import time

import pytest

from voxtrace.config import get_settings
from voxtrace.domain import NewJob
from voxtrace.store import MemoryJobStore
from voxtrace.worker import LostOwnership, _Progress


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
    with _Progress(store, job, "w1", settings) as report:
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
    with _Progress(store, job, "w1", settings) as report:
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
        _Progress(store, job, "w1", get_settings(heartbeat_s=10)) as report,
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
