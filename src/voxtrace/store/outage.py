"""A job store outage as one process sees it: what counts as one, and waiting it out.

The worker, its supervisor and the callback dispatcher all keep running while the store
is unreachable (a PostgreSQL restart, a locked SQLite file); each logs the outage once
when it starts and once when it ends, and retries with a bounded backoff.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from voxtrace.errors import StoreUnavailable
from voxtrace.retry import compute_backoff

__all__ = ["STORE_UNAVAILABLE", "StoreOutage", "WorkerStopping"]

log = logging.getLogger(__name__)

# Waits between tries while the job store is unavailable: 0.5 s doubling up to 5 s, so a
# worker is back within seconds of the store, and a fleet of them is not a load.
STORE_RETRY_BASE_S = 0.5
STORE_RETRY_CAP_S = 5.0

# What the stores raise when they cannot be reached or written: every backend translates
# its own failures (PostgreSQL's connection errors and timeouts, SQLite's locked past its
# busy timeout, I/O errors, a full disk, a file it cannot open) into StoreUnavailable;
# sqlite3.OperationalError stays listed for a failure outside a statement (a cursor).
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (StoreUnavailable, sqlite3.OperationalError)

_T = TypeVar("_T")


class WorkerStopping(Exception):
    """The process was told to stop while it waited for the job store."""


class StoreOutage:
    """A job store outage as one process sees it, shared by its threads.

    Logged once when it starts and once when it ends, not per attempt (and without a
    stack trace: an outage is an operating condition, not a bug); each failed try
    lengthens the wait before the next, up to STORE_RETRY_CAP_S.
    """

    def __init__(self, who: str) -> None:
        self._who = who
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    def failed(self, exc: Exception) -> float:
        """Note a failed store call; returns how long to wait before the next try."""
        with self._lock:
            self._failures += 1
            failures = self._failures
            starts = self._since is None
            if starts:
                self._since = time.monotonic()
        if starts:
            cause = exc.__cause__ or exc  # the backend's own error says more than ours
            log.warning(
                "%s: job store unavailable (%s: %s); waiting for it, retrying up to every %.0f s",
                self._who,
                type(cause).__name__,
                cause,
                STORE_RETRY_CAP_S,
            )
        return compute_backoff(failures, STORE_RETRY_BASE_S, STORE_RETRY_CAP_S, jitter=0.5)

    def recovered(self) -> None:
        """Note a store call that worked: ends the outage, if there was one."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._since, self._failures = self._since, None, 0
        if since is not None:
            log.info(
                "%s: job store reachable again after %.1f s", self._who, time.monotonic() - since
            )

    def retry(self, call: Callable[[], _T], stopping: threading.Event) -> _T:
        """`call()` until the store takes it; WorkerStopping if told to stop first.

        Only for calls that are safe to repeat: every write is fenced or idempotent.
        """
        while True:
            try:
                result = call()
            except STORE_UNAVAILABLE as exc:
                if stopping.wait(self.failed(exc)):
                    raise WorkerStopping from None
                continue
            self.recovered()
            return result
