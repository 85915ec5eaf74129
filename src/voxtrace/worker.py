"""Workers run jobs; the supervisor keeps workers alive and enforces the limits.

The one place that wires the job store, the pipeline and the callbacks together.

    Supervisor (thread in `voxtrace serve` / `voxtrace worker`)
      ├── worker processes (spawned; each loads its models once and loops:
      │     claim -> run pipeline -> complete | fail | requeue)
      ├── monitor: dead worker -> its job back to the queue (bounded attempts) and a
      │     new worker; job over the time limit -> kill, PROCESSING_TIMEOUT; worker over
      │     its memory cap -> kill, INSUFFICIENT_RESOURCES; lapsed leases -> requeue
      └── callback dispatcher thread (drains the durable outbox)

Worker ids are `<node_id>/<supervisor pid>/<index>.<generation>`: on start, a supervisor
takes back every job still held by an earlier incarnation on its node (kill -9 then
restart loses nothing).

Workers die with their supervisor in every state (starting, idle, running a job, waiting
out a store outage): on Linux the kernel sends SIGKILL when the supervisor's thread that
started them ends (PR_SET_PDEATHSIG, set first thing in the worker; a supervisor that
died before that is caught by comparing the parent pid), and everywhere a watch thread
sees the end of the pipe multiprocessing keeps to the parent (and a changed parent pid)
within a second, and ends the worker. A worker's ffmpeg dies with it the same way.

A job store outage (the database restarts, the network drops) does not end a worker:
restarting it would only reload its models, and the store is still gone. It waits with
a bounded backoff, says so once per outage, and goes on; a running job keeps running,
its progress and lease writes are retried, and its outcome is written once the store is
back, where the `worker_id` + `attempt` fence refuses it if the lease lapsed meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from voxtrace import metrics
from voxtrace.callbacks import CallbackDispatcher, new_callback_client
from voxtrace.config import Settings
from voxtrace.domain import Job
from voxtrace.errors import InsufficientResources, ProcessingTimeout, classify_exception
from voxtrace.logs import job_context
from voxtrace.models import ModelBundle, ModelsNotReady, load_models, pipeline_options
from voxtrace.payloads import completed_payload, failed_payload, progress_payload
from voxtrace.pipeline.assemble import result_to_contract
from voxtrace.pipeline.runner import PipelineOptions, run_pipeline
from voxtrace.retry import compute_backoff
from voxtrace.store import open_store
from voxtrace.store.base import JobStore, WorkerInfo
from voxtrace.store.outage import STORE_UNAVAILABLE, StoreOutage, WorkerStopping

__all__ = ["JobRunner", "Supervisor", "worker_main"]

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = "Processing was interrupted repeatedly"
MONITOR_INTERVAL_S = 1.0
IDLE_POLL_S = 0.5
PARENT_POLL_S = 1.0
_T = TypeVar("_T")


def job_work_dir(work_path: Path, job_id: str) -> Path:
    """A fresh private directory for one attempt of a job: `<job id>.<128 random bits>`,
    mode 0700, inside a 0700 `work_path`.

    The name cannot be guessed from the job id (which `/api/queue` once showed), so a
    hostile file cannot name another job's media by `../<job id>/download.mp4`, and other
    local users cannot list or read it. Directories of this job's earlier attempts (an
    orphaned decoder may still write there) are removed first.
    """
    work_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    work_path.chmod(0o700)
    remove_job_dirs(work_path, job_id)
    path = work_path / f"{job_id}.{secrets.token_hex(16)}"
    path.mkdir(mode=0o700)
    path.chmod(0o700)  # whatever the umask
    return path


def job_of_work_dir(path: Path) -> str:
    """The job id a `job_work_dir` belongs to ("" for anything else)."""
    job_id, dot, token = path.name.rpartition(".")
    return job_id if dot and len(token) == 32 else ""


def remove_job_dirs(work_path: Path, job_id: str) -> None:
    """Remove every work directory of `job_id` (all attempts)."""
    if not work_path.is_dir():
        return
    for child in work_path.iterdir():
        if job_of_work_dir(child) == job_id:
            shutil.rmtree(child, ignore_errors=True)


class LostOwnership(Exception):
    """The job was taken from this worker (lease lapsed, time limit): stop quietly."""


# ------------------------------------------------------------------------ one job


class _Progress:
    """Reports progress through the store: monotonic, de-duplicated, kept alive.

    A keep-alive thread extends the lease and, when the pipeline has been silent for
    `heartbeat_s`, repeats the last progress callback: the backend hears from us at
    least every 30 s even inside one long stage.

    While the store is unavailable the pipeline goes on: the latest progress is kept
    (the pipeline does not wait on the store again) and the keep-alive thread writes it,
    and extends the lease, as soon as the store answers.
    """

    def __init__(
        self,
        store: JobStore,
        job: Job,
        worker_id: str,
        settings: Settings,
        outage: StoreOutage | None = None,
    ) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.settings = settings
        self.progress = job.progress
        self.message = job.message
        self._outage = outage or StoreOutage(worker_id)
        self._last_sent = 0.0
        self._unsent = False  # the latest progress is not in the store yet (an outage)
        self._lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="job-heartbeat", daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __call__(self, progress: int, message: str) -> None:
        if self._lost:
            raise LostOwnership
        with self._lock:
            progress = max(self.progress, int(progress))
            if (progress, message) == (self.progress, self.message) and self._last_sent:
                return
            self.progress, self.message = progress, message
            if self._unsent:  # the store is out: the keep-alive thread writes it later
                return
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
            self._lost = True
            raise LostOwnership

    def _keep_alive(self) -> None:
        with job_context(self.job.job_id):
            self._keep_alive_loop()

    def _keep_alive_loop(self) -> None:
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
                self._lost = True
                return
            try:
                with self._lock:
                    silent_s = time.monotonic() - self._last_sent
                    if self._unsent or silent_s >= self.settings.heartbeat_s:
                        self._send()
            except LostOwnership:
                return
            except Exception:
                log.exception("job %s: progress report failed", self.job.job_id)


@dataclass
class JobRunner:
    """Runs claimed jobs inside a worker process, with the models it was handed.

    A job's outcome (complete, requeue, fail) waits out a store outage rather than being
    lost with the process; `stopping` ends that wait.
    """

    settings: Settings
    store: JobStore
    models: ModelBundle
    worker_id: str
    stopping: threading.Event = field(default_factory=threading.Event)
    outage: StoreOutage = field(default_factory=lambda: StoreOutage("worker"))
    _options: PipelineOptions | None = field(default=None, init=False)

    def run(self, job: Job) -> None:
        with job_context(job.job_id):
            self._run_logged(job)

    def _run_logged(self, job: Job) -> None:
        log.info("job %s: attempt %d started on %s", job.job_id, job.attempts, self.worker_id)
        try:
            self._run(job)
        except WorkerStopping:
            log.warning(
                "job %s: stopped before its outcome could be stored; it runs again once"
                " its lease lapses",
                job.job_id,
            )
        finally:
            remove_job_dirs(self.settings.work_path, job.job_id)

    def _stored(self, call: Callable[[], _T]) -> _T:
        return self.outage.retry(call, self.stopping)

    def _run(self, job: Job) -> None:
        try:
            with _Progress(self.store, job, self.worker_id, self.settings, self.outage) as report:
                report(max(job.progress, 1), "Initialising")
                _check_free_disk(self.settings)
                work_dir = job_work_dir(self.settings.work_path, job.job_id)
                result = run_pipeline(
                    job.video_url,
                    work_dir,
                    self.models,
                    self.pipeline_options(),
                    job.options,
                    report,
                    metrics.observe_stage,
                )
                report(99, "Assembling the result")
                contract = result_to_contract(result)
            payload = completed_payload(job.job_id, contract)
            done = self._stored(
                lambda: self.store.complete(
                    job.job_id, self.worker_id, job.attempts, contract, payload, time.time()
                )
            )
            log.info(
                "job %s: %s", job.job_id, "completed" if done else "result dropped (lost ownership)"
            )
        except LostOwnership:
            log.warning("job %s: ownership lost; leaving it to its new owner", job.job_id)
        except WorkerStopping:
            raise
        except Exception as exc:
            self._fail(job, exc)

    def pipeline_options(self) -> PipelineOptions:
        if self._options is None:
            self._options = pipeline_options(self.settings)
        return self._options

    def _fail(self, job: Job, exc: Exception) -> None:
        error = classify_exception(exc)
        if error.code == "INTERNAL_ERROR":
            log.exception("job %s: unexpected error", job.job_id)
        else:
            log.warning("job %s: %s (%s)", job.job_id, error.code, error.message)
        now = time.time()
        retry = error.retryable and job.attempts < self.settings.max_attempts
        if retry:
            # Wait before the next attempt: a full disk or a memory squeeze takes a while
            # to pass, and a fleet of jobs failing together should not retry in lockstep.
            delay_s = compute_backoff(
                job.attempts,
                self.settings.job_retry_backoff_base_s,
                self.settings.job_retry_backoff_cap_s,
                jitter=0.2,
            )
            if self._stored(
                lambda: self.store.requeue(
                    job.job_id, self.worker_id, job.attempts, now, not_before=now + delay_s
                )
            ):
                log.info(
                    "job %s: requeued after a retryable error; next attempt in %.1f s",
                    job.job_id,
                    delay_s,
                )
                return
        current = self._stored(lambda: self.store.get(job.job_id))
        progress = current.progress if current else job.progress
        payload = failed_payload(job.job_id, progress, error.code, error.message)
        self._stored(
            lambda: self.store.fail(
                job.job_id, self.worker_id, job.attempts, error.code, error.message, payload, now
            )
        )


def _check_free_disk(settings: Settings) -> None:
    settings.work_path.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(settings.work_path).free / 2**20
    if free_mb < settings.min_free_disk_mb:
        raise InsufficientResources("Not enough free disk space to process the job")


# ------------------------------------------------------------------ worker process


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """End this process when its supervisor ends, whatever the process is doing.

    Linux: the kernel SIGKILLs us when the parent's spawning thread ends. The signal
    is armed only now, a second or more after the spawn (the interpreter and its
    imports): a supervisor killed meanwhile left us with another parent already, so
    that is checked right after arming. Everywhere, a daemon thread watches the parent.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        _orphaned(parent_pid)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True
    ).start()


def _watch_parent(parent_pid: int) -> None:
    """Backstop for PR_SET_PDEATHSIG (other systems; a prctl that failed): the pipe
    multiprocessing holds open to the parent reads as ready once the parent is gone."""
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    while True:
        if sentinel is not None:
            gone = bool(multiprocessing.connection.wait([sentinel], timeout=PARENT_POLL_S))
        else:
            time.sleep(PARENT_POLL_S)
            gone = False
        if gone or os.getppid() != parent_pid:
            _orphaned(parent_pid)


def _orphaned(parent_pid: int) -> None:
    """The supervisor is gone: nobody will reap, time or restart us. End now; the
    job we held runs again from the store (its lease lapses, or a restarted
    supervisor takes it back at once)."""
    with contextlib.suppress(Exception):
        log.error("supervisor (pid %d) is gone; worker %d exits", parent_pid, os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


def worker_main(
    settings: Settings, worker_id: str, log_level: str = "INFO", parent_pid: int | None = None
) -> None:
    """Entry point of a worker process: load models once, then claim and run jobs.

    The store may be unavailable at any point: the worker waits for it (see
    `StoreOutage`) instead of exiting, so its models are loaded once per process.
    `parent_pid` is the supervisor's pid, as it was when it started us.
    """
    from voxtrace.logs import configure_logging

    _die_with_parent(os.getppid() if parent_pid is None else parent_pid)
    configure_logging(log_level, settings.secret_values(), settings.log_format)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides

    outage = StoreOutage(f"worker {worker_id}")
    try:
        store = outage.retry(lambda: open_store(settings.store_location), stopping)
    except WorkerStopping:
        return
    info: dict[str, Any] = {"worker_id": worker_id, "pid": os.getpid(), "models_loaded": False}
    _seen(store, worker_id, info, outage)
    try:
        models = load_models(settings)
    except ModelsNotReady as exc:  # removed after `serve` checked them: not ready, backs off
        log.error("worker %s cannot start: %s", worker_id, exc)
        return
    info["models_loaded"] = True
    runner = JobRunner(settings, store, models, worker_id, stopping, outage)
    last_seen = 0.0
    log.info("worker %s ready", worker_id)
    while not stopping.is_set():
        now = time.time()
        try:
            if now - last_seen >= settings.worker_report_s:
                store.worker_seen(worker_id, {**info, "state": "idle"}, now)
                last_seen = now
            job = store.claim(worker_id, settings.lease_s, now)
        except STORE_UNAVAILABLE as exc:
            stopping.wait(outage.failed(exc))
            continue
        outage.recovered()
        if job is None:
            stopping.wait(IDLE_POLL_S)
            continue
        busy = {**info, "state": "busy", "job_id": job.job_id}
        _seen(store, worker_id, busy, outage)
        done = threading.Event()
        beat = threading.Thread(
            target=_report_busy,
            args=(store, worker_id, busy, done, outage, settings.worker_report_s),
            daemon=True,
        )
        beat.start()
        try:
            runner.run(job)
        finally:
            done.set()
            beat.join(timeout=5)
        last_seen = 0.0
    store.close()


def _seen(store: JobStore, worker_id: str, info: WorkerInfo, outage: StoreOutage) -> bool:
    """Report the worker's state; during an outage the next report says it again."""
    try:
        store.worker_seen(worker_id, info, time.time())
    except STORE_UNAVAILABLE as exc:
        outage.failed(exc)
        return False
    outage.recovered()
    return True


def _report_busy(
    store: JobStore,
    worker_id: str,
    info: WorkerInfo,
    done: threading.Event,
    outage: StoreOutage,
    interval_s: float,
) -> None:
    """Keep a busy worker visible (`/api/queue`, `/health`) through a long job: without
    this it vanishes from the live workers after `worker_stale_s` and /health says so."""
    while not done.wait(interval_s):
        try:
            _seen(store, worker_id, info, outage)
        except Exception:
            log.exception("worker %s: could not report itself", worker_id)


# ----------------------------------------------------------------------- supervisor


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
        self.prefix = f"{settings.node_prefix}{os.getpid()}/"
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
            self._http = new_callback_client()
            dispatcher = CallbackDispatcher(
                self.store,
                self._http,
                path=self.settings.callback_path,
                secret=(
                    self.settings.callback_secret.get_secret_value()
                    if self.settings.callback_secret
                    else None
                ),
                retry_window_s=self.settings.callback_retry_window_s,
                timeout_s=self.settings.callback_timeout_s,
                backoff_base_s=self.settings.callback_backoff_base_s,
                backoff_cap_s=self.settings.callback_backoff_cap_s,
                per_destination=self.settings.callback_concurrency,
                redirect_destinations=(
                    self.settings.backend_url,
                    *self.settings.callback_allowlist,
                ),
            )
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
                gone = _supervisor_gone(job.worker_id)
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
        slot.worker_id = f"{self.prefix}{slot.index}.{slot.generation}"
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
                if time.monotonic() - last_reap > 5:
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
            # Back off only for workers that die before they are ready (a broken model,
            # a bad setting): a worker killed mid-job is replaced at once.
            ready = any(
                w.get("worker_id") == slot.worker_id and w.get("models_loaded")
                for w in self.store.live_workers(since=0)
            )
            slot.quick_deaths = 0 if ready else slot.quick_deaths + 1
            slot.restart_at = (
                now + min(30.0, 0.5 * 2**slot.quick_deaths) if slot.quick_deaths else now
            )
            slot.process = None
            return
        jobs = self.store.jobs_owned_by(slot.worker_id)
        for job in jobs:
            if job.started_at and time.time() - job.started_at > self.settings.job_timeout_s:
                log.warning(
                    "job %s: over the time limit; stopping worker %s", job.job_id, slot.worker_id
                )
                self._kill(slot)
                self._fail(job, ProcessingTimeout())
                return
        # The memory cap applies to a worker running a job: an idle worker holds only its
        # models, and killing it for that would loop forever on a too-small cap.
        rss_mb = _rss_mb(proc.pid) if jobs else 0
        if rss_mb > self.settings.worker_max_rss_mb:
            log.warning(
                "worker %s uses %d MB (cap %d); replacing it",
                slot.worker_id,
                rss_mb,
                self.settings.worker_max_rss_mb,
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

    def _fail(self, job: Job, error: Exception) -> None:
        err = classify_exception(error)
        current = self.store.get(job.job_id)
        progress = current.progress if current else job.progress
        self.store.fail(
            job.job_id,
            None,
            None,
            err.code,
            err.message,
            failed_payload(job.job_id, progress, err.code, err.message),
            time.time(),
        )
        remove_job_dirs(self.settings.work_path, job.job_id)


def _supervisor_gone(worker_id: str | None) -> bool:
    """True when the supervisor pid in `<node>/<pid>/<slot>` no longer exists here."""
    parts = (worker_id or "").split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, owned by someone else
    return False


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
