"""The worker process: load models once, then claim and run jobs until told to stop.

Presence: a worker reports itself to the store (`idle`, `busy` with its job) every
`worker_report_s`, also through a long job, so `/api/queue`, `/health` and the estimates
see it alive; a worker unseen for `worker_stale_s` is not.

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
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from voxtrace.config import Settings
from voxtrace.models import ModelsNotReady
from voxtrace.store import open_store
from voxtrace.store.base import JobStore, WorkerInfo
from voxtrace.store.outage import STORE_UNAVAILABLE, StoreOutage, WorkerStopping
from voxtrace.wiring import load_models
from voxtrace.worker.job import JobRunner

__all__ = ["Presence", "worker_main"]

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5
PARENT_POLL_S = 1.0
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


class Presence:
    """A worker's row in the store's live workers: what it is doing, kept fresh."""

    def __init__(
        self, store: JobStore, worker_id: str, outage: StoreOutage, interval_s: float
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.info: dict[str, Any] = {
            "worker_id": worker_id,
            "pid": os.getpid(),
            "models_loaded": False,
        }
        self._outage = outage
        self._interval_s = interval_s

    def seen(self, info: WorkerInfo) -> bool:
        """Report the worker's state; during an outage the next report says it again."""
        try:
            self.store.worker_seen(self.worker_id, info, time.time())
        except STORE_UNAVAILABLE as exc:
            self._outage.failed(exc)
            return False
        self._outage.recovered()
        return True

    @contextlib.contextmanager
    def busy(self, job_id: str) -> Iterator[None]:
        """Keep a busy worker visible (`/api/queue`, `/health`) through a long job:
        without this it vanishes from the live workers after `worker_stale_s`."""
        busy = {**self.info, "state": "busy", "job_id": job_id}
        self.seen(busy)
        done = threading.Event()
        beat = threading.Thread(target=self._keep_busy, args=(busy, done), daemon=True)
        beat.start()
        try:
            yield
        finally:
            done.set()
            beat.join(timeout=5)

    def _keep_busy(self, info: WorkerInfo, done: threading.Event) -> None:
        while not done.wait(self._interval_s):
            try:
                self.seen(info)
            except Exception:
                log.exception("worker %s: could not report itself", self.worker_id)


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
    presence = Presence(store, worker_id, outage, settings.worker_report_s)
    presence.seen(presence.info)
    try:
        models = load_models(settings)
    except ModelsNotReady as exc:  # removed after `serve` checked them: not ready, backs off
        log.error("worker %s cannot start: %s", worker_id, exc)
        return
    presence.info["models_loaded"] = True
    runner = JobRunner(settings, store, models, worker_id, stopping, outage)
    last_seen = 0.0
    log.info("worker %s ready", worker_id)
    while not stopping.is_set():
        now = time.time()
        try:
            if now - last_seen >= settings.worker_report_s:
                store.worker_seen(worker_id, {**presence.info, "state": "idle"}, now)
                last_seen = now
            job = store.claim(worker_id, settings.lease_s, now)
        except STORE_UNAVAILABLE as exc:
            stopping.wait(outage.failed(exc))
            continue
        outage.recovered()
        if job is None:
            stopping.wait(IDLE_POLL_S)
            continue
        with presence.busy(job.job_id):
            runner.run(job)
        last_seen = 0.0
    store.close()
