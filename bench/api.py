"""Accept latency of the real API: 200 sequential submissions against uvicorn + SQLite,
on an empty queue and a deep one; and the /metrics scrape beside it."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from voxtrace.api import create_app
from voxtrace.config import get_settings
from voxtrace.devbackend import ServerThread
from voxtrace.domain import NewJob
from voxtrace.store import SqliteJobStore

SUBMISSIONS = 200
DEEP_QUEUE = 1000  # VOXTRACE_MAX_QUEUED_JOBS' default
VIDEO = "https://bucket.s3.ap-northeast-2.amazonaws.com/videos/user/talk.mp4"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure(queued: int) -> tuple[list[float], list[float]]:
    """Accept latencies (ms) of SUBMISSIONS submissions with `queued` unfinished jobs
    already in the store, and the latencies of 20 `/metrics` scrapes after them."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = get_settings(
            data_dir=Path(tmp),
            workers=0,
            max_queued_jobs=queued + SUBMISSIONS + 1,
            rate_limit_burst=SUBMISSIONS + 100,
        )
        store = SqliteJobStore(Path(tmp) / "jobs.db")
        for i in range(queued):  # straight into the store: only the depth matters
            store.submit(NewJob(f"queued-{i}", VIDEO, settings.backend_url), queued + 1, 0.0)
        server = ServerThread(create_app(settings, store)).start()
        latencies_ms: list[float] = []
        scrapes_ms: list[float] = []
        try:
            with httpx.Client(base_url=server.url) as client:
                client.get("/health")  # warm the connection
                for i in range(SUBMISSIONS):
                    body = {"job_id": f"bench-{i}", "video_url": VIDEO, "language": "auto"}
                    start = time.perf_counter()
                    answer = client.post("/api/upload-video/process-video", json=body)
                    latencies_ms.append((time.perf_counter() - start) * 1000)
                    assert answer.status_code == 200, answer.text
                for _ in range(20):
                    start = time.perf_counter()
                    assert client.get("/metrics").status_code == 200
                    scrapes_ms.append((time.perf_counter() - start) * 1000)
        finally:
            server.stop()
            store.close()
    return latencies_ms, scrapes_ms


def run() -> str:
    rows = []
    for queued in (0, DEEP_QUEUE):
        latencies_ms, scrapes_ms = _measure(queued)
        rows.append(
            f"| {queued} | {statistics.median(latencies_ms):.1f} ms"
            f" | {_percentile(latencies_ms, 0.99):.1f} ms | {max(latencies_ms):.1f} ms"
            f" | {statistics.median(scrapes_ms):.1f} ms | p99 ≤ 50 ms |"
        )
    return "\n".join(
        [
            "## Accept latency",
            "",
            f"{SUBMISSIONS} sequential `POST /api/upload-video/process-video` to a real uvicorn",
            "server with the SQLite store (WAL), measured at the client over keep-alive HTTP,",
            f"on an empty queue and behind {DEEP_QUEUE} unfinished jobs (jobs are queued, not",
            "refused: admission and `estimated_time` read the queue on every submission);",
            "then 20 `GET /metrics` scrapes.",
            "",
            "| jobs already queued | p50 | p99 | max | /metrics p50 | target |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


if __name__ == "__main__":
    print(run())
