"""What runs beside a job: named hooks around one attempt, as in dramatiq's middleware.

    ProgressSink   the pipeline's `report(progress, message)`: monotonic, de-duplicated,
                   written to the store with the progress callback
    LeaseKeeper    a thread that extends the job's lease and, after each beat, runs its
                   `after_beat` hooks (the sink repeats a progress callback the pipeline
                   has not renewed for `heartbeat_s`: the backend hears from us at least
                   every 30 s even inside one long stage)
    JobHooks       both for one attempt, as a context manager

While the store is unavailable the pipeline goes on: the latest progress is kept (the
pipeline does not wait on the store again) and the keeper writes it, and extends the
lease, as soon as the store answers. A lost lease raises `LostOwnership` in the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from voxtrace.config import Settings
from voxtrace.contract import progress_payload
from voxtrace.domain import Job
from voxtrace.logs import job_context
from voxtrace.store.base import JobStore
from voxtrace.store.outage import STORE_UNAVAILABLE, StoreOutage

__all__ = ["JobHooks", "LeaseKeeper", "LostOwnership", "ProgressSink"]

log = logging.getLogger(__name__)


class LostOwnership(Exception):
    """The job was taken from this worker (lease lapsed, time limit): stop quietly."""


class ProgressSink:
    """The pipeline's progress callback for one attempt of one job."""

    def __init__(
        self, store: JobStore, job: Job, worker_id: str, settings: Settings, outage: StoreOutage
    ) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.settings = settings
        self.progress = job.progress
        self.message = job.message
        self.lost = False
        self._outage = outage
        self._last_sent = 0.0
        self._unsent = False  # the latest progress is not in the store yet (an outage)
        self._lock = threading.Lock()

    def __call__(self, progress: int, message: str) -> None:
        if self.lost:
            raise LostOwnership
        with self._lock:
            progress = max(self.progress, int(progress))
            if (progress, message) == (self.progress, self.message) and self._last_sent:
                return
            self.progress, self.message = progress, message
            if self._unsent:  # the store is out: the keeper writes it later
                return
            self._send()

    def resend_if_due(self) -> None:
        """A `LeaseKeeper.after_beat` hook: write progress still unsent after an outage,
        or repeat the last one when the pipeline has been silent for `heartbeat_s`."""
        with self._lock:
            silent_s = time.monotonic() - self._last_sent
            if self._unsent or silent_s >= self.settings.heartbeat_s:
                self._send()

    def _send(self) -> None:
        """Write the current progress (the caller holds the lock)."""
        callback = None
        if self.settings.send_progress:
            callback = progress_payload(self.job.job_id, self.progress, self.message)
        try:
            owned = self.store.report_progress(
                self.job.job_id,
                self.worker_id,
                self.job.attempts,
                self.progress,
                self.message,
                callback,
                time.time(),
            )
        except STORE_UNAVAILABLE as exc:
            self._unsent = True
            self._outage.failed(exc)
            return
        self._unsent = False
        self._outage.recovered()
        self._last_sent = time.monotonic()
        if not owned:
            self.lost = True
            raise LostOwnership


class LeaseKeeper:
    """Extends a running job's lease from a thread; stops once the lease is lost."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        worker_id: str,
        settings: Settings,
        outage: StoreOutage,
        after_beat: list[Callable[[], None]] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.settings = settings
        self.after_beat = after_beat or []
        self._on_lost = on_lost
        self._outage = outage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with job_context(self.job.job_id):
            self._loop()

    def _loop(self) -> None:
        interval = min(self.settings.heartbeat_s, self.settings.lease_s / 3) / 2
        while not self._stop.wait(interval):
            try:
                owned = self.store.heartbeat(
                    self.job.job_id,
                    self.worker_id,
                    self.job.attempts,
                    self.settings.lease_s,
                    time.time(),
                )
            except STORE_UNAVAILABLE as exc:
                # Try again next time round; should the lease lapse meanwhile, the fence
                # on worker_id + attempt decides whose outcome counts.
                self._outage.failed(exc)
                continue
            except Exception:
                log.exception("job %s: heartbeat failed", self.job.job_id)
                continue
            self._outage.recovered()
            if not owned:
                if self._on_lost is not None:
                    self._on_lost()
                return
            for hook in self.after_beat:
                try:
                    hook()
                except LostOwnership:
                    return
                except Exception:
                    log.exception("job %s: %s failed", self.job.job_id, _name(hook))


class JobHooks:
    """The hooks of one attempt: `with JobHooks(...) as report:` runs the lease keeper
    for the block and hands the pipeline its progress sink."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        worker_id: str,
        settings: Settings,
        outage: StoreOutage | None = None,
    ) -> None:
        outage = outage or StoreOutage(worker_id)
        self.progress = ProgressSink(store, job, worker_id, settings, outage)
        self.lease = LeaseKeeper(
            store,
            job,
            worker_id,
            settings,
            outage,
            after_beat=[self.progress.resend_if_due],
            on_lost=self._lost,
        )

    def _lost(self) -> None:
        self.progress.lost = True

    def __enter__(self) -> ProgressSink:
        self.lease.start()
        return self.progress

    def __exit__(self, *exc: object) -> None:
        self.lease.stop()


def _name(hook: Callable[[], None]) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)
