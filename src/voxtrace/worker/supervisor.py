"""The supervisor keeps worker processes alive and enforces the limits of a job.

    Supervisor (thread in `voxtrace serve` / `voxtrace worker`)
      ├── worker processes (spawned; see `process.worker_main`)
      ├── monitor: dead worker -> its job back to the queue (bounded attempts) and a
      │     new worker (`RestartPolicy`); job over `TimeLimit` -> kill,
      │     PROCESSING_TIMEOUT; worker over its `MemoryCap` -> kill,
      │     INSUFFICIENT_RESOURCES; lapsed leases -> requeue
      └── callback dispatcher thread (drains the durable outbox)

On start, a supervisor takes back every job still held by an earlier incarnation on its
node (`WorkerId` names the supervisor pid: kill -9 then restart loses nothing).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.process
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from voxtrace.config import Settings
from voxtrace.domain import Job
from voxtrace.errors import InsufficientResources, JobError, ProcessingTimeout
from voxtrace.retry import compute_backoff
from voxtrace.store.base import JobStore
from voxtrace.store.outage import STORE_UNAVAILABLE, StoreOutage
from voxtrace.wiring import callback_dispatcher
from voxtrace.worker.ids import WorkerId
from voxtrace.worker.job import fail_job
from voxtrace.worker.process import worker_main
from voxtrace.worker.workdir import job_of_work_dir, remove_job_dirs

__all__ = ["MemoryCap", "RestartPolicy", "Supervisor", "TimeLimit"]

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = "Processing was interrupted repeatedly"
MONITOR_INTERVAL_S = 1.0
REAP_INTERVAL_S = 5.0


# --------------------------------------------------------------------- policies


@dataclass(frozen=True)
class TimeLimit:
    """A job attempt running longer than `limit_s` is stopped: PROCESSING_TIMEOUT."""

    limit_s: float

    def exceeded(self, job: Job, now: float) -> bool:
        return bool(job.started_at) and now - (job.started_at or 0.0) > self.limit_s


@dataclass(frozen=True)
class MemoryCap:
    """A worker running a job above `cap_mb` (with its ffmpeg) is replaced and its job
    fails INSUFFICIENT_RESOURCES. An idle worker holds only its models: killing it for
    that would loop forever on a too-small cap."""

    cap_mb: int
    rss_mb: Callable[[int | None], int] = lambda pid: _rss_mb(pid)

    def exceeded(self, pid: int | None, busy: bool) -> int | None:
        """The worker's memory in MB when it is over the cap, else None."""
        if not busy:
            return None
        used_mb = self.rss_mb(pid)
        return used_mb if used_mb > self.cap_mb else None


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead worker is replaced: at once if it died ready (killed mid-job); with
    a doubling delay for one that keeps dying before its models load (a broken model, a
    bad setting), so a crash loop does not burn the machine."""

    base_s: float = 1.0
    cap_s: float = 30.0

    def delay_s(self, quick_deaths: int) -> float:
        if quick_deaths < 1:
            return 0.0
        return compute_backoff(quick_deaths, self.base_s, self.cap_s, jitter=0.0)


# ------------------------------------------------------------------- supervisor


@dataclass
class _Slot:
    index: int
    generation: int = 0
    process: multiprocessing.process.BaseProcess | None = None
    worker_id: str = ""
    restart_at: float = 0.0
    quick_deaths: int = 0
    started_at: float = 0.0


class Supervisor:
    """Keeps `settings.worker_processes` worker processes running and enforces job limits."""

    def __init__(self, settings: Settings, store: JobStore, log_level: str = "INFO") -> None:
        self.settings = settings
        self.store = store
        self.log_level = log_level
        self.pid = os.getpid()
        self.prefix = WorkerId.supervisor_prefix(settings.node_id, self.pid)
        self.time_limit = TimeLimit(settings.job_timeout_s)
        self.memory_cap = MemoryCap(settings.worker_max_rss_mb)
        self.restart = RestartPolicy()
        self._ctx = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(settings.worker_processes)]
        if settings.workers > settings.worker_processes:
            log.info(
                "%d workers configured, %d started: at most %d jobs run at once"
                " (VOXTRACE_MAX_CONCURRENT_JOBS)",
                settings.workers,
                settings.worker_processes,
                settings.max_concurrent_jobs,
            )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: httpx.Client | None = None

    # -- lifecycle
    def start(self, dispatch_callbacks: bool = True) -> None:
        self.recover()
        for slot in self._slots:
            self._spawn(slot)
        self._threads.append(threading.Thread(target=self._monitor, name="supervisor", daemon=True))
        if dispatch_callbacks:
            dispatcher, self._http = callback_dispatcher(self.settings, self.store)
            self._threads.append(
                threading.Thread(
                    target=dispatcher.run, args=(self._stop,), name="callbacks", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for slot in self._slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()
        deadline = time.monotonic() + timeout_s
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join(max(0.1, deadline - time.monotonic()))
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join(2)
        for thread in self._threads:
            thread.join(timeout=5)
        for slot in self._slots:
            dead = slot.process is None or not slot.process.is_alive()
            try:
                self._reclaim(slot.worker_id, reason="worker stopped", owner_dead=dead)
            except STORE_UNAVAILABLE:
                log.warning(
                    "job store unavailable: the jobs of worker %s run again once their"
                    " leases lapse",
                    slot.worker_id,
                )
        if self._http is not None:
            self._http.close()

    def recover(self) -> None:
        """Take back jobs of this node's earlier incarnations; drop their temp files."""
        for job in self.store.jobs_owned_by(self.settings.node_prefix):
            if not job.worker_id or not job.worker_id.startswith(self.prefix):
                owner = WorkerId.parse(job.worker_id)
                gone = owner is not None and owner.supervisor_gone()
                self._give_back(job, reason="server restarted", owner_dead=gone)
        work = self.settings.work_path
        if work.exists():
            busy = {j.job_id for j in self.store.jobs_owned_by(self.settings.node_prefix)}
            for child in work.iterdir():
                if job_of_work_dir(child) not in busy:
                    shutil.rmtree(child, ignore_errors=True)

    # -- internals
    def _spawn(self, slot: _Slot) -> None:
        # Native thread pools (OpenBLAS, OpenMP) read these when the child imports them:
        # each worker keeps to its share of the cores instead of oversubscribing them.
        threads = str(self.settings.threads_per_worker)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)
        slot.generation += 1
        slot.worker_id = str(WorkerId(self.settings.node_id, self.pid, slot.index, slot.generation))
        slot.process = self._ctx.Process(
            target=worker_main,
            args=(self.settings, slot.worker_id, self.log_level, os.getpid()),
            name=f"voxtrace-worker-{slot.index}",
        )
        slot.process.start()
        slot.started_at = time.monotonic()
        log.info("started worker %s (pid %s)", slot.worker_id, slot.process.pid)

    def _monitor(self) -> None:
        last_reap = 0.0
        # Without the store the supervisor can only wait: its workers wait too, and it
        # checks again every pass (a dead worker is replaced once the store is back).
        outage = StoreOutage("supervisor")
        while not self._stop.wait(MONITOR_INTERVAL_S):
            try:
                for slot in self._slots:
                    self._check_slot(slot)
                if time.monotonic() - last_reap > REAP_INTERVAL_S:
                    self._reap_lapsed_leases()
                    last_reap = time.monotonic()
            except STORE_UNAVAILABLE as exc:
                outage.failed(exc)
                continue
            except Exception:
                log.exception("supervisor pass failed")
                continue
            outage.recovered()

    def _check_slot(self, slot: _Slot) -> None:
        proc = slot.process
        now = time.monotonic()
        if proc is None:
            if now >= slot.restart_at:
                self._spawn(slot)
            return
        if not proc.is_alive():
            log.warning("worker %s exited (code %s)", slot.worker_id, proc.exitcode)
            self._reclaim(slot.worker_id, reason="worker died", owner_dead=True)
            ready = any(
                w.get("worker_id") == slot.worker_id and w.get("models_loaded")
                for w in self.store.live_workers(since=0)
            )
            slot.quick_deaths = 0 if ready else slot.quick_deaths + 1
            slot.restart_at = now + self.restart.delay_s(slot.quick_deaths)
            slot.process = None
            return
        jobs = self.store.jobs_owned_by(slot.worker_id)
        for job in jobs:
            if self.time_limit.exceeded(job, time.time()):
                log.warning(
                    "job %s: over the time limit; stopping worker %s", job.job_id, slot.worker_id
                )
                self._kill(slot)
                self._fail(job, ProcessingTimeout())
                return
        rss_mb = self.memory_cap.exceeded(proc.pid, busy=bool(jobs))
        if rss_mb is not None:
            log.warning(
                "worker %s uses %d MB (cap %d); replacing it",
                slot.worker_id,
                rss_mb,
                self.memory_cap.cap_mb,
            )
            self._kill(slot)
            for job in jobs:
                self._fail(job, InsufficientResources("Not enough memory to process the job"))

    def _kill(self, slot: _Slot) -> None:
        if slot.process is not None:
            slot.process.kill()
            slot.process.join(5)
        slot.process = None
        slot.restart_at = time.monotonic()

    def _reclaim(self, worker_id: str, reason: str, owner_dead: bool = False) -> None:
        if worker_id:
            for job in self.store.jobs_owned_by(worker_id):
                self._give_back(job, reason, owner_dead)

    def _reap_lapsed_leases(self) -> None:
        for job in self.store.expired_leases(time.time()):
            self._give_back(job, reason="lease lapsed")

    def _give_back(self, job: Job, reason: str, owner_dead: bool = False) -> None:
        """A job whose worker is gone: run it again, or fail it when attempts are spent.

        When the worker is known dead (we reaped it, or its supervisor's pid is gone) the
        job is requeued at once, fenced on that worker and attempt; otherwise only once
        its lease has lapsed (the owner may still be alive elsewhere).
        """
        if job.attempts < self.settings.max_attempts:
            now = time.time()
            if owner_dead and job.worker_id:
                queued = self.store.requeue(job.job_id, job.worker_id, job.attempts, now)
            else:
                queued = self.store.release_lapsed(job.job_id, job.attempts, now)
            if queued:
                log.warning(
                    "job %s: %s; queued again (attempt %d done)", job.job_id, reason, job.attempts
                )
        else:
            log.error("job %s: %s; attempts exhausted", job.job_id, reason)
            self._fail(job, InsufficientResources(INTERRUPTED_MESSAGE))

    def _fail(self, job: Job, error: JobError) -> None:
        fail_job(self.store, job, error, time.time())
        remove_job_dirs(self.settings.work_path, job.job_id)


def _rss_mb(pid: int | None) -> int:
    """Resident memory of a process and its children (ffmpeg), in MB."""
    if pid is None:
        return 0
    total_kb = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb // 1024
