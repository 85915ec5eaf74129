"""A slow, dead or hostile callback endpoint cannot hold up anyone else's callbacks.

Real HTTP endpoints on 127.0.0.1 (testing/hostile_servers.HostileBackend), a real SQLite
store and the dispatcher's own background loop, as `voxtrace serve` runs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.hostile_servers import HostileBackend
from voxtrace.callbacks import CallbackDispatcher, new_callback_client
from voxtrace.domain import JobOptions, NewJob
from voxtrace.payloads import completed_payload
from voxtrace.store import SqliteJobStore
from voxtrace.store.base import JobStore

PATH = "/api/upload-video/result"
DEADLINE_S = 2.0  # the attempt deadline; the trickles never pause that long


def _finished_job(store: JobStore, job_id: str, base: str) -> None:
    """A completed job whose terminal callback waits in the outbox for `base`."""
    now = time.time()
    store.submit(NewJob(job_id, f"https://bucket.test/{job_id}.mp4", base, JobOptions()), 50, now)
    job = store.claim("w1", 60.0, now=now)
    assert job is not None and job.job_id == job_id
    result = {"metadata": {"filename": "v.mp4", "duration": 1.0}, "segments": []}
    assert store.complete(
        job_id, "w1", job.attempts, result, completed_payload(job_id, result), now
    )


def _entry(store: JobStore, job_id: str) -> dict[str, Any]:
    (entry,) = store.callback_log(job_id)
    return entry


def _until(store: JobStore, job_id: str, done: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        entry = _entry(store, job_id)
        if done(entry):
            return entry
        time.sleep(0.05)
    raise AssertionError(f"{job_id}: {_entry(store, job_id)}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def slow() -> Iterator[HostileBackend]:
    with HostileBackend(interval_s=0.3) as backend:
        yield backend


@pytest.fixture
def healthy() -> Iterator[HostileBackend]:
    with HostileBackend() as backend:
        yield backend


@pytest.fixture
def running(store: SqliteJobStore, healthy: HostileBackend) -> Iterator[CallbackDispatcher]:
    http = new_callback_client()
    dispatcher = CallbackDispatcher(
        store,
        http,
        PATH,
        None,
        retry_window_s=3600.0,
        timeout_s=DEADLINE_S,
        backoff_base_s=30.0,  # a failed attempt is not retried within the test
        backoff_cap_s=60.0,
        redirect_destinations=[healthy.url],
    )
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), kwargs={"poll_s": 0.05})
    thread.start()
    yield dispatcher
    stop.set()
    thread.join(timeout=15)
    http.close()
    assert not thread.is_alive()


def _delivered(entry: dict[str, Any]) -> bool:
    return bool(entry["state"] == "delivered")


def _tried(entry: dict[str, Any]) -> bool:
    return int(entry["attempts"]) >= 1


@pytest.mark.parametrize("kind", ["trickle-body", "trickle-head"])
def test_a_trickling_endpoint_neither_hangs_its_attempt_nor_delays_other_jobs(
    store: SqliteJobStore,
    slow: HostileBackend,
    healthy: HostileBackend,
    running: CallbackDispatcher,
    kind: str,
) -> None:
    # The slow job's callback is queued first: a single delivery loop would sit on it.
    _finished_job(store, "slow-job", f"{slow.url}/{kind}")
    _finished_job(store, "ok-1", f"{healthy.url}/ok")
    _finished_job(store, "ok-2", f"{healthy.url}/ok")
    for job_id in ("ok-1", "ok-2"):
        _until(store, job_id, _delivered)
    assert sorted(k for k, key, _ in healthy.received) == ["ok", "ok"]
    # The trickle never pauses for a read timeout; only the total deadline ends it.
    entry = _until(store, "slow-job", _tried)
    assert (entry["state"], entry["last_error"]) == ("pending", "deadline exceeded")
    assert slow.kinds() == [kind]


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_200_mb_answer_is_not_read_into_memory(
    store: SqliteJobStore, healthy: HostileBackend, running: CallbackDispatcher
) -> None:
    if not _peak_rss_reset():
        pytest.skip("cannot reset the peak RSS counter here")
    before_mb = _peak_rss_mb()
    _finished_job(store, "huge-answer", f"{healthy.url}/huge")
    entry = _until(store, "huge-answer", _tried)
    assert entry["state"] == "delivered"  # the status line is all that counts
    assert _peak_rss_mb() - before_mb < 50, (before_mb, _peak_rss_mb())


def test_a_307_within_the_allowed_destinations_is_followed_with_the_same_body(
    store: SqliteJobStore, healthy: HostileBackend, running: CallbackDispatcher
) -> None:
    _finished_job(store, "moved", f"{healthy.url}/redirect/moved-here")
    _until(store, "moved", _delivered)
    (first, second) = healthy.received
    assert (first[0], second[0]) == ("redirect", "moved-here")
    assert first[1:] == second[1:]  # same Idempotency-Key, same bytes


def test_a_redirect_elsewhere_is_not_followed_but_retried_later(
    store: SqliteJobStore,
    slow: HostileBackend,
    healthy: HostileBackend,
    running: CallbackDispatcher,
) -> None:
    # `slow` is not an allowed destination: the callback must not go there.
    _finished_job(store, "moved-away", f"{healthy.url}/redirect/{slow.url}/ok")
    entry = _until(store, "moved-away", _tried)
    assert (entry["state"], entry["last_error"]) == ("pending", "HTTP 307 redirect not followed")
    assert healthy.kinds() == ["redirect"]
    assert slow.kinds() == []
