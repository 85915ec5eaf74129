"""The worker package's small parts, as pure logic: the worker id format, the
supervisor's policies (time limit, memory cap, restart backoff) and `fail_job` on the
real in-memory store."""

from __future__ import annotations

import os
import time

import pytest

from voxtrace.domain import JobStatus, NewJob
from voxtrace.errors import ProcessingTimeout
from voxtrace.store import MemoryJobStore
from voxtrace.worker import WorkerId, fail_job
from voxtrace.worker.supervisor import MemoryCap, RestartPolicy, TimeLimit


def test_a_worker_id_formats_and_parses_back() -> None:
    wid = WorkerId("m1", 4242, 3, 7)
    assert str(wid) == "m1/4242/3.7"
    assert WorkerId.parse(str(wid)) == wid
    assert str(wid).startswith(WorkerId.supervisor_prefix("m1", 4242))
    assert WorkerId.parse("m1/4242/3") == WorkerId("m1", 4242, 3, 0)  # before generations


@pytest.mark.parametrize("text", [None, "", "w1", "m1/x/0.1", "m1/1/0.1/extra", "/1/0.1"])
def test_anything_else_is_not_a_worker_id(text: str | None) -> None:
    assert WorkerId.parse(text) is None


def test_a_worker_id_knows_whether_its_supervisor_is_gone() -> None:
    assert not WorkerId("m1", os.getpid(), 0, 1).supervisor_gone()
    assert WorkerId("m1", 2**22 + 12345, 0, 1).supervisor_gone()  # past pid_max


def test_restart_backoff_doubles_for_workers_that_die_before_ready() -> None:
    policy = RestartPolicy(base_s=1.0, cap_s=30.0)
    assert [policy.delay_s(n) for n in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_the_time_limit_counts_from_the_attempt_start() -> None:
    store = MemoryJobStore()
    store.submit(NewJob("j1", "https://h/v.mp4", "http://b"), 10, now=100.0)
    job = store.claim("w1", lease_s=30, now=100.0)
    assert job is not None
    limit = TimeLimit(60)
    assert not limit.exceeded(job, 160.0)
    assert limit.exceeded(job, 160.5)


def test_the_memory_cap_applies_only_to_a_busy_worker() -> None:
    cap = MemoryCap(100, rss_mb=lambda pid: 150)
    assert cap.exceeded(1, busy=True) == 150
    assert cap.exceeded(1, busy=False) is None
    assert MemoryCap(200, rss_mb=lambda pid: 150).exceeded(1, busy=True) is None


def test_fail_job_keeps_the_progress_reached_and_respects_the_fence() -> None:
    store = MemoryJobStore()
    store.submit(NewJob("j1", "https://h/v.mp4", "http://b"), 10, now=time.time())
    job = store.claim("w1", lease_s=30, now=time.time())
    assert job is not None
    store.report_progress(
        "j1", "w1", job.attempts, 42, "Identifying speakers...", None, time.time()
    )
    assert not fail_job(store, job, ProcessingTimeout(), time.time(), "w2", job.attempts)
    assert fail_job(store, job, ProcessingTimeout(), time.time(), "w1", job.attempts)
    done = store.get("j1")
    assert done is not None
    assert (done.status, done.error_code) == (JobStatus.FAILED, "PROCESSING_TIMEOUT")
    assert store.callback_log("j1")[-1]["progress"] == 42
