"""The job store in one SQLite file: the default for a single machine.

The API process and every worker process open the same file. WAL mode lets readers
run beside the one writer; every state change is one `BEGIN IMMEDIATE` transaction
(it takes the write lock up front, so two processes never both read "accepted" and
both claim), and `busy_timeout` makes a blocked writer wait instead of failing.
`synchronous=NORMAL` with WAL keeps commits off fsync: a power cut may lose the last
few commits but never corrupts the file, and a submission costs well under a
millisecond.

Each thread gets its own connection (sqlite3 connections are not shared between
threads), and a process forked from one that had connections opens fresh ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from voxtrace import errors
from voxtrace.contract import COMPLETED_MESSAGE, strict_json
from voxtrace.domain import Job, JobStatus, NewJob, OutboxItem, QueueStats
from voxtrace.store.base import (
    WORKER_RETENTION_S,
    JobStore,
    Payload,
    WorkerInfo,
    check_owner_args,
)
from voxtrace.store.rows import (
    CallbackLogEntry,
    OutboxState,
    WorkerStatus,
    callback_log_entry,
    job_from_row,
    outbox_item_from_row,
    worker_status,
)

__all__ = ["SCHEMA_VERSION", "SqliteJobStore"]

logger = logging.getLogger(__name__)

# The outbox states as SQL literals (the schema's CHECK lists the same `OutboxState`s).
PENDING, DELIVERED, DEAD, SUPERSEDED = (
    state.sql
    for state in (
        OutboxState.PENDING,
        OutboxState.DELIVERED,
        OutboxState.DEAD,
        OutboxState.SUPERSEDED,
    )
)

SCHEMA_VERSION = 2

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id            TEXT PRIMARY KEY,
    video_url         TEXT NOT NULL,
    callback_base_url TEXT NOT NULL,
    options           TEXT NOT NULL,
    status            TEXT NOT NULL,
    progress          INTEGER NOT NULL DEFAULT 0,
    message           TEXT NOT NULL DEFAULT '',
    attempts          INTEGER NOT NULL DEFAULT 0,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    worker_id         TEXT,
    lease_expires_at  REAL,
    result            TEXT,
    error_code        TEXT,
    error_message     TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status_created ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_status_finished ON jobs (status, finished_at);

CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    base_url        TEXT NOT NULL,
    payload         TEXT NOT NULL,
    terminal        INTEGER NOT NULL,
    state           TEXT NOT NULL,  -- pending | delivered | dead | superseded
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    delivered_at    REAL,
    UNIQUE (job_id, seq)
);
-- The database itself refuses a second terminal callback for a job.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_one_terminal ON outbox (job_id) WHERE terminal = 1;
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (job_id, seq) WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    info      TEXT NOT NULL,
    last_seen REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# v2: a requeued job may wait (`not_before`) before it is claimed again.
_SCHEMA_V2 = """
ALTER TABLE jobs ADD COLUMN not_before REAL;
"""

_UNFINISHED = (JobStatus.ACCEPTED.value, JobStatus.PROCESSING.value)
_FENCE = "job_id = ? AND status = 'processing' AND worker_id = ? AND attempts = ?"
_DUE = "status = 'accepted' AND (not_before IS NULL OR not_before <= ?)"


class _Connection(sqlite3.Connection):
    """A connection whose statements fail as `StoreUnavailable` when the file cannot be
    used (locked past the busy timeout, a full disk, an I/O error, a deleted or
    read-only file): the one place this store's I/O happens."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: sqlite3.Error) -> errors.StoreUnavailable:
    logger.debug("job store unavailable: %s", exc)
    return errors.StoreUnavailable()


class SqliteJobStore(JobStore):
    """`JobStore` over one SQLite file, safe across threads and processes."""

    def __init__(self, path: Path | str, busy_timeout_s: float = 10.0) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._lock = threading.Lock()
        # (pid, owning thread, connection): connections of finished threads are closed
        # when the next one opens, so short-lived threads (a job's heartbeat) leak nothing.
        self._connections: list[tuple[int, threading.Thread, sqlite3.Connection]] = []
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._create_schema()

    @property
    def path(self) -> Path:
        return self._path

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,  # only so close() may close it from another thread
                factory=_Connection,
            )
        except sqlite3.OperationalError as exc:  # cannot open: a missing or unreadable dir
            raise _unavailable(exc) from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != pid:
            # A connection inherited through fork belongs to the parent: leave it alone.
            conn = self._connect()
            self._local.conn = conn
            self._local.pid = pid
            with self._lock:
                alive = []
                for owner_pid, thread, other in self._connections:
                    if owner_pid == pid and not thread.is_alive():
                        other.close()
                    else:
                        alive.append((owner_pid, thread, other))
                alive.append((pid, threading.current_thread(), conn))
                self._connections = alive
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One atomic read-modify-write: the write lock is taken before the first read."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _create_schema(self) -> None:
        with self._write() as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise RuntimeError("the job database was written by a newer voxtrace")
            for target, script in ((1, _SCHEMA_V1), (2, _SCHEMA_V2)):
                if version < target:
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
            # Future migrations go here: `(3, _SCHEMA_V3)`.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        pid = os.getpid()
        with self._lock:
            mine = [conn for owner, _, conn in self._connections if owner == pid]
            self._connections = [item for item in self._connections if item[0] != pid]
        for conn in mine:
            conn.close()
        self._local = threading.local()

    # ------------------------------------------------------------------ rows

    def _select_job(self, conn: sqlite3.Connection, job_id: str) -> Job | None:
        row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return job_from_row(row) if row is not None else None

    def _select_jobs(self, sql: str, params: Sequence[Any]) -> list[Job]:
        return [job_from_row(row) for row in self._conn().execute(sql, params).fetchall()]

    def _enqueue(
        self, conn: sqlite3.Connection, job_id: str, body: str, terminal: bool, now: float
    ) -> None:
        """Queue a callback; it supersedes the job's undelivered progress callbacks.

        The new callback keeps the backoff of the ones it replaces, so a stream of
        progress reports cannot turn a struggling backend's backoff into hammering.
        """
        (base_url,) = conn.execute(
            "SELECT callback_base_url FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        (held_until,) = conn.execute(
            "SELECT MAX(next_attempt_at) FROM outbox"
            f" WHERE job_id = ? AND state = {PENDING} AND terminal = 0",
            (job_id,),
        ).fetchone()
        conn.execute(
            f"UPDATE outbox SET state = {SUPERSEDED}"
            f" WHERE job_id = ? AND state = {PENDING} AND terminal = 0",
            (job_id,),
        )
        (seq,) = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox WHERE job_id = ?", (job_id,)
        ).fetchone()
        conn.execute(
            "INSERT INTO outbox (job_id, seq, base_url, payload, terminal, state, attempts,"
            f" created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, {PENDING}, 0, ?, ?)",
            (job_id, seq, base_url, body, int(terminal), now, max(now, held_until or now)),
        )

    # ------------------------------------------------------------------ submission
    def submit(self, job: NewJob, max_unfinished: int, now: float) -> tuple[Job, bool]:
        options = strict_json(job.options.to_dict())
        with self._write() as conn:
            existing = self._select_job(conn, job.job_id)
            if existing is not None:
                if existing.video_url != job.video_url:
                    raise errors.JobConflict()
                return existing, False
            (unfinished,) = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", _UNFINISHED
            ).fetchone()
            if unfinished >= max_unfinished:
                raise errors.CapacityExceeded()
            conn.execute(
                "INSERT INTO jobs (job_id, video_url, callback_base_url, options, status,"
                " progress, message, attempts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'accepted', 0, 'Waiting in queue', 0, ?, ?)",
                (job.job_id, job.video_url, job.callback_base_url, options, now, now),
            )
            created = self._select_job(conn, job.job_id)
        assert created is not None
        return created, True

    def get(self, job_id: str) -> Job | None:
        return self._select_job(self._conn(), job_id)

    # ------------------------------------------------------------------ dispatch
    def claim(self, worker_id: str, lease_s: float, now: float) -> Job | None:
        oldest = f"FROM jobs WHERE {_DUE} ORDER BY created_at, rowid LIMIT 1"
        conn = self._conn()
        # Idle workers poll often: look without the write lock first.
        if conn.execute(f"SELECT 1 {oldest}", (now,)).fetchone() is None:
            return None
        with self._write() as conn:
            row = conn.execute(f"SELECT job_id {oldest}", (now,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'processing', attempts = attempts + 1,"
                " worker_id = ?, lease_expires_at = ?, started_at = ?, updated_at = ?,"
                " not_before = NULL WHERE job_id = ?",
                (worker_id, now + lease_s, now, now, row["job_id"]),
            )
            return self._select_job(conn, row["job_id"])

    def heartbeat(
        self, job_id: str, worker_id: str, attempt: int, lease_s: float, now: float
    ) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE {_FENCE}",
                (now + lease_s, now, job_id, worker_id, attempt),
            )
            return cur.rowcount == 1

    def report_progress(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        progress: int,
        message: str,
        callback: Payload | None,
        now: float,
    ) -> bool:
        progress = max(0, min(100, int(progress)))
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET progress = MAX(progress, ?), message = ?, updated_at = ?"
                f" WHERE {_FENCE}",
                (progress, message, now, job_id, worker_id, attempt),
            )
            if cur.rowcount != 1:
                return False
            if callback is None:
                return True
            terminal_queued = conn.execute(
                "SELECT 1 FROM outbox WHERE job_id = ? AND terminal = 1", (job_id,)
            ).fetchone()
            if terminal_queued is None:
                (stored,) = conn.execute(
                    "SELECT progress FROM jobs WHERE job_id = ?", (job_id,)
                ).fetchone()
                body = strict_json({**callback, "progress": stored})
                self._enqueue(conn, job_id, body, terminal=False, now=now)
            return True

    def complete(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        result: dict[str, Any],
        callback: Payload,
        now: float,
    ) -> bool:
        result_json, body = strict_json(result), strict_json(callback)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'completed', progress = 100,"
                f" message = '{COMPLETED_MESSAGE}', result = ?, finished_at = ?,"
                f" updated_at = ?, lease_expires_at = NULL WHERE {_FENCE}",
                (result_json, now, now, job_id, worker_id, attempt),
            )
            if cur.rowcount != 1:
                return False
            self._enqueue(conn, job_id, body, terminal=True, now=now)
            return True

    def fail(
        self,
        job_id: str,
        worker_id: str | None,
        attempt: int | None,
        code: str,
        message: str,
        callback: Payload,
        now: float,
    ) -> bool:
        check_owner_args(worker_id, attempt)
        strict_json(callback)  # refuse a body that cannot be sent before touching the job
        with self._write() as conn:
            set_failed = (
                "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?,"
                " message = ?, finished_at = ?, updated_at = ?, lease_expires_at = NULL,"
                " not_before = NULL"
            )
            if worker_id is None:
                cur = conn.execute(
                    f"{set_failed} WHERE job_id = ? AND status IN (?, ?)",
                    (code, message, message, now, now, job_id, *_UNFINISHED),
                )
            else:
                cur = conn.execute(
                    f"{set_failed} WHERE {_FENCE}",
                    (code, message, message, now, now, job_id, worker_id, attempt),
                )
            if cur.rowcount != 1:
                return False
            (stored,) = conn.execute(
                "SELECT progress FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            body = strict_json({**callback, "progress": stored})
            self._enqueue(conn, job_id, body, terminal=True, now=now)
            return True

    def requeue(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        now: float,
        not_before: float | None = None,
    ) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'accepted', worker_id = NULL, lease_expires_at = NULL,"
                f" not_before = ?, updated_at = ? WHERE {_FENCE}",
                (not_before, now, job_id, worker_id, attempt),
            )
            return cur.rowcount == 1

    def expired_leases(self, now: float) -> list[Job]:
        return self._select_jobs(
            "SELECT * FROM jobs WHERE status = 'processing' AND lease_expires_at < ?"
            " ORDER BY lease_expires_at",
            (now,),
        )

    def release_lapsed(self, job_id: str, attempt: int, now: float) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'accepted', worker_id = NULL,"
                " lease_expires_at = NULL, not_before = NULL, updated_at = ?"
                " WHERE job_id = ? AND status = 'processing' AND attempts = ?"
                " AND lease_expires_at < ?",
                (now, job_id, attempt, now),
            )
            return cur.rowcount == 1

    def jobs_owned_by(self, worker_prefix: str) -> list[Job]:
        # substr, not LIKE: a prefix may contain '%' or '_'.
        return self._select_jobs(
            "SELECT * FROM jobs WHERE status = 'processing' AND substr(worker_id, 1, ?) = ?"
            " ORDER BY created_at, rowid",
            (len(worker_prefix), worker_prefix),
        )

    # ------------------------------------------------------------------ outbox
    def due_callbacks(self, now: float, limit: int) -> list[OutboxItem]:
        rows = (
            self._conn()
            .execute(
                "SELECT o.* FROM outbox AS o JOIN ("
                "  SELECT job_id, MIN(seq) AS seq FROM outbox"
                f"  WHERE state = {PENDING} GROUP BY job_id"
                ") AS head ON o.job_id = head.job_id AND o.seq = head.seq"
                " WHERE o.next_attempt_at <= ? ORDER BY o.next_attempt_at, o.id LIMIT ?",
                (now, limit),
            )
            .fetchall()
        )
        return [outbox_item_from_row(row) for row in rows]

    def mark_delivered(self, item_id: int, now: float) -> None:
        # A superseded callback may have been in flight; it did arrive, so say so.
        with self._write() as conn:
            conn.execute(
                f"UPDATE outbox SET state = {DELIVERED}, attempts = attempts + 1,"
                " delivered_at = ?, last_error = NULL"
                f" WHERE id = ? AND state IN ({PENDING}, {SUPERSEDED})",
                (now, item_id),
            )

    def schedule_retry(self, item_id: int, next_attempt_at: float, error: str, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                f" WHERE id = ? AND state = {PENDING}",
                (next_attempt_at, error, item_id),
            )

    def mark_dead(self, item_id: int, error: str, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                f"UPDATE outbox SET state = {DEAD}, attempts = attempts + 1, last_error = ?"
                f" WHERE id = ? AND state = {PENDING}",
                (error, item_id),
            )

    def callback_log(self, job_id: str) -> list[CallbackLogEntry]:
        rows = (
            self._conn()
            .execute(
                "SELECT seq, json_extract(payload, '$.status') AS status,"
                " json_extract(payload, '$.progress') AS progress, terminal, state, attempts,"
                " last_error, created_at, delivered_at FROM outbox WHERE job_id = ? ORDER BY seq",
                (job_id,),
            )
            .fetchall()
        )
        return [callback_log_entry(row) for row in rows]

    # ------------------------------------------------------------------ monitoring
    def stats(self) -> QueueStats:
        conn = self._conn()
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        (pending,) = conn.execute(f"SELECT COUNT(*) FROM outbox WHERE state = {PENDING}").fetchone()
        return QueueStats(
            accepted=counts.get(JobStatus.ACCEPTED.value, 0),
            processing=counts.get(JobStatus.PROCESSING.value, 0),
            completed=counts.get(JobStatus.COMPLETED.value, 0),
            failed=counts.get(JobStatus.FAILED.value, 0),
            callbacks_pending=pending,
        )

    def mean_processing_s(self, last_n: int = 50) -> float | None:
        (mean,) = (
            self._conn()
            .execute(
                "SELECT AVG(finished_at - started_at) FROM ("
                "  SELECT finished_at, started_at FROM jobs"
                "  WHERE status = 'completed' AND started_at IS NOT NULL"
                "  ORDER BY finished_at DESC LIMIT ?)",
                (last_n,),
            )
            .fetchone()
        )
        return float(mean) if mean is not None else None

    def worker_seen(self, worker_id: str, info: WorkerInfo, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO workers (worker_id, info, last_seen) VALUES (?, ?, ?)"
                " ON CONFLICT (worker_id) DO UPDATE"
                " SET info = excluded.info, last_seen = excluded.last_seen",
                (worker_id, strict_json(info), now),
            )
            conn.execute("DELETE FROM workers WHERE last_seen < ?", (now - WORKER_RETENTION_S,))

    def live_workers(self, since: float) -> list[WorkerStatus]:
        rows = (
            self._conn()
            .execute(
                "SELECT worker_id, info, last_seen FROM workers"
                " WHERE last_seen >= ? ORDER BY worker_id",
                (since,),
            )
            .fetchall()
        )
        return [worker_status(row["worker_id"], row["info"], row["last_seen"]) for row in rows]

    def check_writable(self) -> bool:
        """Write for real: a full disk or a read-only file shows up here, not in a job."""
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('write_check', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(os.getpid()),),
                )
        except (sqlite3.Error, errors.StoreUnavailable) as exc:
            logger.warning("job store is not writable: %s", exc.__cause__ or exc)
            return False
        return True
