"""The API under load, from processes other than the server's (SPEC.md §10, issue 4).

Starts the real `voxtrace serve` in a subprocess on 127.0.0.1 with an SQLite store and
no workers (nothing is processed, so every accepted job stays unfinished and the
counts are exact), then from this process fires bounded bursts with a few client
threads while a third process measures `/health` latency.

Measured: health latency during a burst of submissions and status queries, accept
latency (in the burst and 200 sequential), admission control with concurrent
submitters (exactly N accepted), per-client rate limiting (exactly the bucket's
allowance), server RSS and open files before/after, and that no accepted job is lost
(every id answers 200, and is in the SQLite file after the server stopped).

    python -m reliability.load          # prints the markdown section
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from testing.helpers import ServeProcess

__all__ = [
    "Answer",
    "HealthProbe",
    "ServeProcess",
    "fire",
    "open_fds",
    "percentile",
    "query_many",
    "rss_mb",
    "run_load",
    "submit_many",
]

SUBMIT = "/api/upload-video/process-video"
VIDEO = "https://bucket.s3.ap-northeast-2.amazonaws.com/videos/load/{}.mp4"
HUGE = 10_000_000  # "no limit" for the settings a scenario does not exercise
REQUEST_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------- measuring


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# ---------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Answer:
    job_id: str
    status: int
    latency_s: float
    retry_after: str | None
    code: str | None  # the envelope's error code, if any


def _answer(job_id: str, response: httpx.Response, latency_s: float) -> Answer:
    code = None
    if response.status_code >= 300:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "NOT_AN_ENVELOPE"
    return Answer(
        job_id, response.status_code, latency_s, response.headers.get("retry-after"), code
    )


def fire(
    work: Sequence[str],
    clients: int,
    call: Callable[[httpx.Client, str], httpx.Response],
    base_url: str,
    deadline_s: float = 300,
) -> list[Answer]:
    """Run `call` once per item of `work`, spread over `clients` threads, each with its own
    keep-alive connection. Bounded by the work's length and by `deadline_s`."""
    answers: list[Answer] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s
    shares = [work[i::clients] for i in range(clients)]
    start = threading.Barrier(clients)

    def client(share: Sequence[str]) -> None:
        with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as http:
            start.wait()
            mine = []
            for item in share:
                if time.monotonic() > stop_at:
                    break
                t0 = time.perf_counter()
                response = call(http, item)
                mine.append(_answer(item, response, time.perf_counter() - t0))
            with lock:
                answers.extend(mine)

    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _post_job(http: httpx.Client, job_id: str) -> httpx.Response:
    return http.post(SUBMIT, json={"job_id": job_id, "video_url": VIDEO.format(job_id)})


def _get_job(http: httpx.Client, job_id: str) -> httpx.Response:
    return http.get(f"/api/jobs/{job_id}")


def submit_many(base_url: str, job_ids: Sequence[str], clients: int) -> list[Answer]:
    return fire(job_ids, clients, _post_job, base_url)


def query_many(base_url: str, job_ids: Sequence[str], clients: int) -> list[Answer]:
    return fire(job_ids, clients, _get_job, base_url)


def job_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


# ---------------------------------------------------------------------- health probe


def _probe(url: str, interval_s: float, limit: int, ready: Any, stop: Any, out: Any) -> None:
    """Child process: GET /health every `interval_s` until told to stop (or `limit`)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
        http.get(f"{url}/health")  # connect once; the measured probes reuse the connection
        ready.set()
        while not stop.is_set() and len(latencies) < limit:
            t0 = time.perf_counter()
            try:
                statuses[http.get(f"{url}/health").status_code] += 1
            except httpx.HTTPError:
                statuses[0] += 1
            latencies.append(time.perf_counter() - t0)
            stop.wait(interval_s)
    out.put((latencies, dict(statuses)))


@dataclass
class HealthProbe:
    """Measures `/health` latency from a process of its own, so the load generator's
    threads do not slow the measurement down (they share no interpreter lock)."""

    url: str
    interval_s: float = 0.02
    limit: int = 50_000
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @contextmanager
    def running(self) -> Iterator[HealthProbe]:
        ctx = multiprocessing.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        out: Any = ctx.Queue()
        proc = ctx.Process(
            target=_probe,
            args=(self.url, self.interval_s, self.limit, ready, stop, out),
            daemon=True,
        )
        proc.start()
        try:
            # The measurement must cover the whole burst: start it once the probe runs.
            if not ready.wait(60):
                raise RuntimeError("health probe did not start")
            yield self
        finally:
            stop.set()
            self.latencies_s, self.statuses = out.get(timeout=60)
            proc.join(10)


# ---------------------------------------------------------------------- scenarios


@dataclass
class BurstReport:
    submitted: int
    queried: int
    submit_statuses: Counter[int]
    query_statuses: Counter[int]
    accept_latencies_s: list[float]
    query_latencies_s: list[float]
    health_latencies_s: list[float]
    health_statuses: dict[int, int]
    wall_s: float
    accepted_ids: list[str]


def burst(
    server: ServeProcess,
    submissions: int,
    queries: int,
    submitters: int = 4,
    queriers: int = 4,
    prefix: str = "burst",
) -> BurstReport:
    """Submissions and status queries at the same time, while /health is probed."""
    ids = job_ids(prefix, submissions)
    rng = random.Random(4)
    # Status queries ask for ids of this burst: early ones exist, late ones may not yet.
    targets = [ids[rng.randrange(submissions)] for _ in range(queries)]
    results: dict[str, list[Answer]] = {}

    def run(name: str, work: list[str], clients: int, call: Any) -> None:
        results[name] = fire(work, clients, call, server.url)

    probe = HealthProbe(server.url)
    with probe.running():
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=run, args=("submit", ids, submitters, _post_job)),
            threading.Thread(target=run, args=("query", targets, queriers, _get_job)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall_s = time.perf_counter() - t0
    submitted, queried = results["submit"], results["query"]
    return BurstReport(
        submitted=len(submitted),
        queried=len(queried),
        submit_statuses=Counter(a.status for a in submitted),
        query_statuses=Counter(a.status for a in queried),
        accept_latencies_s=[a.latency_s for a in submitted if a.status == 200],
        query_latencies_s=[a.latency_s for a in queried],
        health_latencies_s=probe.latencies_s,
        health_statuses=probe.statuses,
        wall_s=wall_s,
        accepted_ids=[a.job_id for a in submitted if a.status == 200],
    )


@dataclass
class AdmissionReport:
    limit: int
    answers: list[Answer]

    @property
    def accepted(self) -> list[str]:
        return [a.job_id for a in self.answers if a.status == 200]

    @property
    def refused(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 503]

    @property
    def refused_with_retry_after(self) -> int:
        return sum(
            1
            for a in self.refused
            if a.code == "INSUFFICIENT_RESOURCES" and a.retry_after and int(a.retry_after) >= 1
        )


def admission(server: ServeProcess, limit: int, submissions: int, clients: int) -> AdmissionReport:
    """Concurrent submitters against `VOXTRACE_MAX_QUEUED_JOBS=limit` (the server must have
    been started with it, and no workers, so no job finishes meanwhile)."""
    answers = submit_many(server.url, job_ids("admit", submissions), clients)
    return AdmissionReport(limit, answers)


@dataclass
class RateReport:
    per_minute: int
    burst: int
    answers: list[Answer]
    span_lo_s: float  # the server saw the requests within a span between these two
    span_hi_s: float

    @property
    def allowed(self) -> int:
        return sum(1 for a in self.answers if a.status != 429)

    @property
    def limited(self) -> int:
        return sum(1 for a in self.answers if a.status == 429)

    def allowance(self, span_s: float) -> int:
        """Tokens a full bucket hands out over `span_s` of continuous demand."""
        return self.burst + math.floor(self.per_minute / 60 * span_s)

    @property
    def allowance_range(self) -> tuple[int, int]:
        return self.allowance(self.span_lo_s), self.allowance(self.span_hi_s)


def rate_limit(
    server: ServeProcess,
    per_minute: int,
    bucket: int,
    requests: int,
    clients: int,
    duration_s: float | None = None,
) -> RateReport:
    """Hammer a limited endpoint from one address; the server must run with
    `VOXTRACE_RATE_LIMIT_PER_MINUTE=per_minute` and `VOXTRACE_RATE_LIMIT_BURST=bucket`.
    With `duration_s`, each client keeps asking until then (still at most `requests`)."""
    marks: list[tuple[float, float]] = []
    lock = threading.Lock()

    def call(http: httpx.Client, item: str) -> httpx.Response:
        sent = time.monotonic()
        response = http.get("/api/jobs/rate-probe")
        with lock:
            marks.append((sent, time.monotonic()))
        return response

    answers = fire(
        [str(i) for i in range(requests)],
        clients,
        call,
        server.url,
        deadline_s=duration_s if duration_s is not None else 300,
    )
    first_sent = min(s for s, _ in marks)
    first_done = min(d for _, d in marks)
    last_sent = max(s for s, _ in marks)
    last_done = max(d for _, d in marks)
    return RateReport(
        per_minute,
        bucket,
        answers,
        span_lo_s=max(0.0, last_sent - first_done),
        span_hi_s=last_done - first_sent,
    )


def lost_jobs(server: ServeProcess, accepted: Sequence[str], clients: int = 4) -> list[str]:
    """Accepted ids that do not answer 200 on the manual status query."""
    answers = query_many(server.url, accepted, clients)
    return sorted(a.job_id for a in answers if a.status != 200)


def missing_from_store(store_path: Path, accepted: Sequence[str]) -> list[str]:
    """Accepted ids absent from the SQLite file (read after the server has stopped)."""
    from voxtrace.store import SqliteJobStore

    store = SqliteJobStore(store_path)
    try:
        return sorted(job_id for job_id in accepted if store.get(job_id) is None)
    finally:
        store.close()


# ---------------------------------------------------------------------- the report


def _latency_row(name: str, values: Sequence[float], target: str) -> str:
    return (
        f"| {name} | {len(values)} | {ms(percentile(values, 50))} | {ms(percentile(values, 99))}"
        f" | {ms(max(values)) if values else 'n/a'} | {target} |"
    )


def run_load(
    submissions: int = 1000,
    queries: int = 5000,
    sequential: int = 200,
    admission_limit: int = 100,
    admission_submissions: int = 400,
) -> str:
    """Run every load scenario against fresh `voxtrace serve` processes; markdown out."""
    lines: list[str] = ["## API under load", ""]
    with tempfile.TemporaryDirectory(prefix="voxtrace-load-") as tmp:
        root = Path(tmp)

        # 1. the burst, sequential accepts, RSS, nothing lost
        server = ServeProcess(
            root / "burst",
            VOXTRACE_MAX_QUEUED_JOBS=HUGE,
            VOXTRACE_RATE_LIMIT_PER_MINUTE=HUGE,
            VOXTRACE_RATE_LIMIT_BURST=HUGE,
        ).start()
        try:
            warm = submit_many(server.url, job_ids("warm", 50), 2)
            assert all(a.status == 200 for a in warm), Counter(a.status for a in warm)
            rss0, fds0 = rss_mb(server.pid), open_fds(server.pid)
            first = burst(server, submissions, queries, prefix="burst1")
            rss1, fds1 = rss_mb(server.pid), open_fds(server.pid)
            seq = [
                a.latency_s
                for a in submit_many(server.url, job_ids("seq", sequential), clients=1)
                if a.status == 200
            ]
            second = burst(server, submissions, queries, prefix="burst2")
            rss2, fds2 = rss_mb(server.pid), open_fds(server.pid)
            accepted = [a.job_id for a in warm] + first.accepted_ids + second.accepted_ids
            accepted += job_ids("seq", sequential)
            lost = lost_jobs(server, accepted)
            unfinished = httpx.get(f"{server.url}/api/queue", timeout=10).json()["unfinished"]
        finally:
            exit_code = server.stop()
        missing = missing_from_store(server.store_path, accepted)

        # 2. admission control, concurrent submitters
        with ServeProcess(
            root / "admission",
            VOXTRACE_MAX_QUEUED_JOBS=admission_limit,
            VOXTRACE_RATE_LIMIT_PER_MINUTE=HUGE,
            VOXTRACE_RATE_LIMIT_BURST=HUGE,
        ) as server:
            adm = admission(server, admission_limit, admission_submissions, clients=8)
            adm_lost = lost_jobs(server, adm.accepted)

        # 3. rate limiting: exact with no refill, then with a refill over a few seconds
        with ServeProcess(
            root / "rate1",
            VOXTRACE_RATE_LIMIT_PER_MINUTE=1,
            VOXTRACE_RATE_LIMIT_BURST=100,
        ) as server:
            exact = rate_limit(server, per_minute=1, bucket=100, requests=400, clients=4)
        with ServeProcess(
            root / "rate2",
            VOXTRACE_RATE_LIMIT_PER_MINUTE=600,
            VOXTRACE_RATE_LIMIT_BURST=50,
        ) as server:
            refill = rate_limit(
                server, per_minute=600, bucket=50, requests=20_000, clients=4, duration_s=5
            )

    health = first.health_latencies_s + second.health_latencies_s
    errors = sum(
        n for b in (first, second) for status, n in b.health_statuses.items() if status != 200
    )
    health_p99 = percentile(health, 99)
    seq_p99 = percentile(seq, 99)
    lines += [
        "`voxtrace serve` in a subprocess on 127.0.0.1 (SQLite store, `VOXTRACE_WORKERS=0`, so "
        "no model is loaded and no job finishes), driven from this process by keep-alive "
        "httpx clients in threads; `/health` is probed every 20 ms from a third process. "
        f"All on the same {os.cpu_count()} cores, so client time is included in every figure.",
        "",
        f"### Burst: {submissions} submissions (4 clients) and {queries} status queries "
        "(4 clients) at once, run twice",
        "",
        "| burst | wall s | submissions/s | submit answers | query answers |",
        "|---|---|---|---|---|",
    ]
    for name, b in (("1", first), ("2", second)):
        lines.append(
            f"| {name} | {b.wall_s:.1f} | {b.submitted / b.wall_s:.0f} | "
            f"{dict(sorted(b.submit_statuses.items()))} | "
            f"{dict(sorted(b.query_statuses.items()))} |"
        )
    lines += [
        "",
        "| latency (ms) | n | p50 | p99 | max | target |",
        "|---|---|---|---|---|---|",
        _latency_row("`/health` during the bursts", health, "p99 < 100 ms"),
        _latency_row(
            "accept, in the bursts", first.accept_latencies_s + second.accept_latencies_s, "-"
        ),
        _latency_row(
            "status query, in the bursts", first.query_latencies_s + second.query_latencies_s, "-"
        ),
        _latency_row(f"accept, {sequential} sequential (1 client)", seq, "p99 <= 50 ms"),
        "",
        f"- `/health` p99 during the bursts: **{ms(health_p99)} ms** "
        f"({'meets' if health_p99 < 0.1 else 'misses'} the 100 ms target); "
        f"non-200 health answers: {errors}.",
        f"- Accept p99, {sequential} sequential: **{ms(seq_p99)} ms** "
        f"({'meets' if seq_p99 <= 0.05 else 'misses'} the 50 ms target).",
        "",
        "| server process | RSS MB | open fds |",
        "|---|---|---|",
        f"| after 50 warm-up submissions | {rss0:.1f} | {fds0} |",
        f"| after burst 1 | {rss1:.1f} | {fds1} |",
        f"| after {sequential} sequential + burst 2 | {rss2:.1f} | {fds2} |",
        "",
        f"- RSS growth over the second burst: {rss2 - rss1:+.1f} MB "
        f"({len(accepted)} jobs in the store by then).",
        f"- Nothing accepted lost: {len(accepted)} accepted ids, {len(lost)} not answering 200 "
        f"on `GET /api/jobs/{{id}}`; `/api/queue` unfinished = {unfinished}; after SIGTERM "
        f"(exit code {exit_code}) {len(missing)} missing from the SQLite file.",
        "",
        f"### Admission control: `VOXTRACE_MAX_QUEUED_JOBS={admission_limit}`, "
        f"{admission_submissions} distinct jobs from 8 concurrent clients",
        "",
        f"- Accepted (200): **{len(adm.accepted)}** (expected exactly {admission_limit}); "
        f"refused 503: **{len(adm.refused)}**, of which with `INSUFFICIENT_RESOURCES` and "
        f"`Retry-After` >= 1: {adm.refused_with_retry_after}; other answers: "
        f"{len(adm.answers) - len(adm.accepted) - len(adm.refused)}; "
        f"accepted ids not found afterwards: {len(adm_lost)}.",
        "",
        "### Rate limiting (per client address, token bucket)",
        "",
        "| settings | requests (4 clients) | span s | allowed | 429 | bucket allowance |",
        "|---|---|---|---|---|---|",
        f"| 1/min, burst 100 | {len(exact.answers)} | {exact.span_hi_s:.2f} | {exact.allowed} | "
        f"{exact.limited} | 100 + floor(1/60 x span) = {exact.allowance_range[1]} |",
        f"| 600/min, burst 50 | {len(refill.answers)} | {refill.span_hi_s:.2f} | "
        f"{refill.allowed} | {refill.limited} | 50 + floor(10/s x span) = "
        f"{refill.allowance_range[0]}..{refill.allowance_range[1]} |",
        "",
        "The span is bracketed from the client side (first answer to last request sent, "
        "first request sent to last answer); the allowance over it is a range of one or two.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    print(run_load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
