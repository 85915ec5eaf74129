"""The API under a small load from processes other than the server's: the real
`voxtrace serve` subprocess (SQLite store, no workers), concurrent client threads here,
`/health` probed from a third process. Asserts exact counts, never timings; the
full-size run with its timings is `python -m reliability.load`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from reliability.load import (
    HUGE,
    ServeProcess,
    admission,
    burst,
    lost_jobs,
    missing_from_store,
    rate_limit,
)


def test_admission_control_is_exact_under_concurrent_submitters(tmp_path: Path) -> None:
    limit = 20
    with ServeProcess(
        tmp_path,
        VOXTRACE_MAX_ACTIVE_JOBS=limit,
        VOXTRACE_RATE_LIMIT_PER_MINUTE=HUGE,
        VOXTRACE_RATE_LIMIT_BURST=HUGE,
    ) as server:
        report = admission(server, limit, submissions=80, clients=8)
        assert len(report.answers) == 80
        assert Counter(a.status for a in report.answers) == {200: limit, 503: 80 - limit}
        assert report.refused_with_retry_after == 80 - limit  # every 503 says when to retry
        assert lost_jobs(server, report.accepted) == []
        refused = [a.job_id for a in report.refused]
        assert lost_jobs(server, refused) == sorted(refused)  # refused means not stored


def test_rate_limit_allows_exactly_the_bucket(tmp_path: Path) -> None:
    bucket = 25
    with ServeProcess(
        tmp_path, VOXTRACE_RATE_LIMIT_PER_MINUTE=1, VOXTRACE_RATE_LIMIT_BURST=bucket
    ) as server:
        report = rate_limit(server, per_minute=1, bucket=bucket, requests=100, clients=4)
    lo, hi = report.allowance_range  # bucket + floor(1/60 x span): the bucket, in any sane run
    assert lo <= report.allowed <= hi
    assert report.allowed + report.limited == 100
    assert {a.status for a in report.answers} == {404, 429}  # allowed ones reach the handler
    limited = [a for a in report.answers if a.status == 429]
    assert all(a.code == "RATE_LIMITED" and int(a.retry_after or 0) >= 1 for a in limited)


def test_burst_loses_nothing_and_health_stays_up(tmp_path: Path) -> None:
    server = ServeProcess(
        tmp_path,
        VOXTRACE_MAX_ACTIVE_JOBS=HUGE,
        VOXTRACE_RATE_LIMIT_PER_MINUTE=HUGE,
        VOXTRACE_RATE_LIMIT_BURST=HUGE,
    ).start()
    try:
        report = burst(server, submissions=200, queries=1000)
        assert report.submit_statuses == {200: 200}
        assert set(report.query_statuses) <= {200, 404}  # 404: asked before it was submitted
        assert sum(report.query_statuses.values()) == 1000
        assert report.health_latencies_s  # the probe ran during the burst ...
        assert set(report.health_statuses) == {200}  # ... and health always answered
        assert lost_jobs(server, report.accepted_ids) == []
    finally:
        server.stop()
    assert missing_from_store(server.store_path, report.accepted_ids) == []
