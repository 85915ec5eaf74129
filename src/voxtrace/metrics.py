"""Prometheus metrics (`GET /metrics`), across the API process and its worker processes.

Two sources, because the numbers live in two places:

- **The job store, read at scrape time** (`StoreCollector`): jobs by state, queue depth
  and bound, live and busy workers, pending callbacks, the typical job time. The store
  is the truth for these whichever process or machine changed them, so nothing is
  counted twice or lost with a worker; on a shared PostgreSQL store every node reports
  the same, store-wide values (take them from one node, or `max` over nodes).
- **Where things happen**: stage durations (histogram, in the worker processes) and
  callback attempts and failures by answer (the dispatcher thread). These use
  prometheus-client's multiprocess mode: `voxtrace serve` / `voxtrace worker` call
  `use_multiprocess_dir()` before anything imports prometheus_client, every process
  they start inherits `PROMETHEUS_MULTIPROC_DIR` and writes its samples to files
  there, and a scrape adds them up. These are per node (Prometheus sums over nodes).

Without the multiprocess directory (the API in tests, `voxtrace process`) the same
instruments count in-process. prometheus_client is imported on first use, never at
import time, so an entry point can still choose the mode.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector as Collector_

    from voxtrace.api.admission import QueueSnapshot
    from voxtrace.config import Settings
else:  # the base class only names the interface: prometheus_client loads on first use
    Collector_ = object

__all__ = [
    "MULTIPROC_ENV",
    "count_callback",
    "observe_stage",
    "render",
    "use_multiprocess_dir",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Stage wall times run from well under a second (VAD of a short clip) to many minutes
# (transcribing an hour on a CPU).
STAGE_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def use_multiprocess_dir(root: Path) -> Path:
    """Count across processes from now on: samples go to `root/<pid>`, emptied first;
    directories of processes that no longer exist are removed. Call before anything
    imports prometheus_client (it chooses its mode once, at import)."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None and os.environ.get(MULTIPROC_ENV) is None:
        raise RuntimeError("prometheus_client was imported before use_multiprocess_dir()")
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.name.isdigit() and not _alive(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)
    path = root / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class _Instruments:
    stage_seconds: Histogram
    callback_attempts: Counter
    callback_failures: Counter


_instruments: _Instruments | None = None


def _get() -> _Instruments:
    global _instruments
    if _instruments is None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        registry = CollectorRegistry(auto_describe=True)
        _instruments = _Instruments(
            stage_seconds=Histogram(
                "voxtrace_stage_duration_seconds",
                "Wall time of each pipeline stage of a job that got through it",
                ["stage"],
                buckets=STAGE_BUCKETS_S,
                registry=registry,
            ),
            callback_attempts=Counter(
                "voxtrace_callback_attempts",
                "Callback deliveries tried, by the backend's answer (an HTTP status, or"
                " the connection error) and the callback's status",
                ["answer", "status"],
                registry=registry,
            ),
            callback_failures=Counter(
                "voxtrace_callback_failures",
                "Callback deliveries that failed, by answer and what followed (retry, or give_up)",
                ["answer", "action"],
                registry=registry,
            ),
        )
        _LOCAL.append(registry)
    return _instruments


_LOCAL: list[Collector_] = []  # the in-process registry, once built


def observe_stage(stage: str, seconds: float) -> None:
    """A pipeline stage finished after `seconds` (wall time)."""
    _get().stage_seconds.labels(stage=stage).observe(max(0.0, seconds))


def count_callback(answer: str, status: str, action: str | None) -> None:
    """One delivery attempt: `answer` the HTTP status ("200", "503") or the error's name
    ("ConnectError"); `action` None when delivered, else "retry" or "give_up"."""
    instruments = _get()
    instruments.callback_attempts.labels(answer=answer, status=status).inc()
    if action is not None:
        instruments.callback_failures.labels(answer=answer, action=action).inc()


def render(read: Callable[[], QueueSnapshot], settings: Settings) -> tuple[bytes, str]:
    """The exposition text for one scrape, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_Scrape(read, settings)), CONTENT_TYPE_LATEST


def collector(read: Callable[[], QueueSnapshot], settings: Settings) -> Collector_:
    """Everything one scrape reports, for `start_http_server` on nodes without the API."""
    return _Scrape(read, settings)


class _Scrape(Collector_):
    """The process (or multiprocess) samples plus the store's numbers, read now."""

    def __init__(self, read: Callable[[], QueueSnapshot], settings: Settings) -> None:
        self._read = read
        self._settings = settings

    def collect(self) -> Iterable[Metric]:
        _get()  # the instruments exist (zero) even before their first sample
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client.multiprocess import MultiProcessCollector

            yield from MultiProcessCollector(None).collect()  # type: ignore[no-untyped-call]
        else:
            for registry in _LOCAL:
                yield from registry.collect()
        yield from _store_metrics(self._read, self._settings)


def _store_metrics(read: Callable[[], QueueSnapshot], settings: Settings) -> Iterable[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily("voxtrace_store_up", "1 when the job store answered this scrape")
    try:
        queue = read()
    except Exception:
        # An outage is an operating condition: report it, never fail the scrape.
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    yield up
    stats = queue.stats
    jobs = GaugeMetricFamily("voxtrace_jobs", "Jobs in the job store, by state", labels=["state"])
    for state, count in (
        ("accepted", stats.accepted),
        ("processing", stats.processing),
        ("completed", stats.completed),
        ("failed", stats.failed),
    ):
        jobs.add_metric([state], count)
    yield jobs
    yield GaugeMetricFamily(
        "voxtrace_queue_depth", "Jobs waiting for a worker (accepted)", value=stats.accepted
    )
    yield GaugeMetricFamily(
        "voxtrace_queue_capacity",
        "Unfinished jobs accepted before submit answers 503 (VOXTRACE_MAX_QUEUED_JOBS)",
        value=settings.max_queued_jobs,
    )
    busy = sum(1 for w in queue.workers if w.get("state") == "busy")
    workers = GaugeMetricFamily(
        "voxtrace_workers_alive",
        "Worker processes seen within VOXTRACE_WORKER_STALE_S, by state",
        labels=["state"],
    )
    workers.add_metric(["busy"], busy)
    workers.add_metric(["idle"], len(queue.workers) - busy)
    yield workers
    yield GaugeMetricFamily(
        "voxtrace_callbacks_pending",
        "Callbacks in the outbox not yet delivered",
        value=stats.callbacks_pending,
    )
    yield GaugeMetricFamily(
        "voxtrace_job_typical_seconds",
        "Mean wall time of recent completed jobs (what estimated_time uses)",
        value=queue.per_job_s,
    )
