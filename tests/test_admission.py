"""estimated_time from the queue ahead: pure arithmetic over the slots and a job's time."""

from __future__ import annotations

from voxtrace.api.admission import QueueSnapshot, estimate_s
from voxtrace.config import get_settings
from voxtrace.domain import QueueStats


def test_a_job_with_free_slots_ahead_takes_one_job_time() -> None:
    assert estimate_s(ahead=0, slots=10, per_job_s=60) == 60
    assert estimate_s(ahead=9, slots=10, per_job_s=60) == 60


def test_each_full_round_of_slots_ahead_adds_one_job_time() -> None:
    assert estimate_s(ahead=10, slots=10, per_job_s=60) == 120
    assert estimate_s(ahead=15, slots=2, per_job_s=30) == 8 * 30
    assert estimate_s(ahead=3, slots=1, per_job_s=2.5) == 10


def test_estimates_are_whole_seconds_and_never_zero() -> None:
    assert estimate_s(ahead=0, slots=1, per_job_s=0.01) == 1
    assert estimate_s(ahead=-3, slots=0, per_job_s=1.2) == 2


def test_a_full_queue_says_when_a_slot_frees() -> None:
    queue = QueueSnapshot(
        stats=QueueStats(accepted=5, processing=4, completed=0, failed=0, callbacks_pending=0),
        workers=[],
        slots=4,
        per_job_s=100,
    )
    assert queue.retry_after_s() == 25
    assert queue.wait_s(ahead=queue.stats.unfinished) == 200


def test_a_node_runs_no_more_workers_than_jobs_may_run_at_once() -> None:
    assert get_settings(workers=12).worker_processes == 10
    assert get_settings(workers=12, max_concurrent_jobs=4).worker_processes == 4
    assert get_settings(workers=2).worker_processes == 2
