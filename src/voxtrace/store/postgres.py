"""The job store in PostgreSQL: several machines share one queue and one outbox.

The same behaviour as the SQLite store (the shared contract suite checks both); what
changes is how concurrent writers are kept apart:

- `claim` takes the oldest due job with `FOR UPDATE SKIP LOCKED` in one statement:
  workers on any number of machines never claim the same job, and never queue up
  behind each other's row locks.
- Every other state change is one short transaction fenced on `worker_id` + `attempt`;
  the job row's lock orders a job's callbacks (they are only queued while it is held).
- `submit` checks capacity and inserts under a transaction-level advisory lock, so two
  API processes cannot both take the last free place.
- Callback delivery needs one deliverer at a time (see `store.base`): the first
  dispatcher to call `due_callbacks` takes a session-level advisory lock and keeps it
  while its connection lives; every other dispatcher's `due_callbacks` returns nothing
  until that session ends (process gone, connection closed or dropped by the server),
  and then one of them takes over. A callback in flight at a hand-over may be sent
  twice, with the same `Idempotency-Key`.

Tables are prefixed `voxtrace_` and live in the connection's schema (the first one on
the `search_path`: pass `?options=-csearch_path%3Dvoxtrace` in the URL to choose one);
they are created on first open, and `voxtrace_meta` holds the schema version.

Connections come from a small per-process pool (psycopg connections are not shared
between threads at once): idle ones are reused, and a process forked from one that had
connections never touches them (psycopg does not close a parent's connection either).
Connect directly or through a session-mode pooler: the dispatcher's lock is per session.

Every session runs with `statement_timeout` 30 s, `lock_timeout` 10 s and
`idle_in_transaction_session_timeout` 60 s unless the URL's `options` (or PGOPTIONS) set
them (`-cstatement_timeout=0` turns one off): a statement stuck behind someone's lock or
on a sick server ends as "unavailable", which every caller already waits out, instead of
hanging a worker or an API request for ever. The dispatcher's lock is taken with
`pg_try_advisory_lock` (it never waits) on a session that is never inside a transaction,
and outlives a cancelled statement; `submit`'s advisory lock is a lock wait like any other.

Times are the callers' `now` (epoch seconds), as in the other backends: keep the
machines' clocks in sync (NTP), since leases and retry times compare across machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row

from voxtrace import errors
from voxtrace.contract import COMPLETED_MESSAGE, strict_json
from voxtrace.domain import Job, JobStatus, NewJob, OutboxItem, QueueStats
from voxtrace.logs import redact_url
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

__all__ = ["SCHEMA_VERSION", "PostgresJobStore"]

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

SCHEMA_VERSION = 1

_Conn = psycopg.Connection[DictRow]
_T = TypeVar("_T")

# Applied when the URL does not say otherwise: never hang on an unreachable server,
# and notice a dead peer within about a minute (the dispatcher's lock depends on it).
_CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "application_name": "voxtrace",
}
# Server settings for every session, unless the URL's `options` set them: no statement
# (a lock wait included) runs for ever, and a transaction whose client vanished (a
# machine losing power mid-transaction) does not hold its row locks until TCP notices,
# which on a server without keepalive settings takes hours. Ours take milliseconds; a
# schema migration that needs longer sets its own with SET LOCAL.
_SESSION_DEFAULTS = {
    "statement_timeout": "30s",
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
}
# `-c name=value`, `-cname=value` or `--name=value` in libpq's `options`.
_OPTION_NAME = re.compile(r"(?:-c\s*|--)([A-Za-z_][\w.-]*)\s*=")
# The server side of the same: a dispatcher whose machine vanished releases its lock.
_SERVER_KEEPALIVES = (
    "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3"
)

_UNAVAILABLE = "Job store unavailable; retry later"
_TX_RETRIES = 3  # deadlock / serialization failure: the transaction is simply run again

_SCHEMA_V1 = (
    """CREATE TABLE IF NOT EXISTS voxtrace_jobs (
        job_id            TEXT PRIMARY KEY,
        seq               BIGINT GENERATED ALWAYS AS IDENTITY,  -- breaks created_at ties
        video_url         TEXT NOT NULL,
        callback_base_url TEXT NOT NULL,
        options           JSON NOT NULL,
        status            TEXT NOT NULL
            CHECK (status IN ('accepted', 'processing', 'completed', 'failed')),
        progress          INTEGER NOT NULL DEFAULT 0,
        message           TEXT NOT NULL DEFAULT '',
        attempts          INTEGER NOT NULL DEFAULT 0,
        created_at        DOUBLE PRECISION NOT NULL,
        updated_at        DOUBLE PRECISION NOT NULL,
        started_at        DOUBLE PRECISION,
        finished_at       DOUBLE PRECISION,
        worker_id         TEXT,
        lease_expires_at  DOUBLE PRECISION,
        not_before        DOUBLE PRECISION,
        result            JSON,  -- JSON, not JSONB: the result keeps its key order
        error_code        TEXT,
        error_message     TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS voxtrace_jobs_queue
        ON voxtrace_jobs (created_at, seq) WHERE status = 'accepted'""",
    "CREATE INDEX IF NOT EXISTS voxtrace_jobs_by_status ON voxtrace_jobs (status)",
    """CREATE INDEX IF NOT EXISTS voxtrace_jobs_by_worker
        ON voxtrace_jobs (worker_id) WHERE status = 'processing'""",
    """CREATE INDEX IF NOT EXISTS voxtrace_jobs_finished
        ON voxtrace_jobs (finished_at) WHERE status = 'completed'""",
    """CREATE TABLE IF NOT EXISTS voxtrace_outbox (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id          TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        base_url        TEXT NOT NULL,
        payload         JSON NOT NULL,
        terminal        BOOLEAN NOT NULL,
        state           TEXT NOT NULL
            CHECK (state IN ('pending', 'delivered', 'dead', 'superseded')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at      DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error      TEXT,
        delivered_at    DOUBLE PRECISION,
        UNIQUE (job_id, seq)
    )""",
    # The database itself refuses a second terminal callback for a job.
    """CREATE UNIQUE INDEX IF NOT EXISTS voxtrace_outbox_one_terminal
        ON voxtrace_outbox (job_id) WHERE terminal""",
    """CREATE INDEX IF NOT EXISTS voxtrace_outbox_pending
        ON voxtrace_outbox (job_id, seq) WHERE state = 'pending'""",
    """CREATE TABLE IF NOT EXISTS voxtrace_workers (
        worker_id TEXT PRIMARY KEY,
        info      JSON NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL
    )""",
)
_META = "CREATE TABLE IF NOT EXISTS voxtrace_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

_FENCE = "job_id = %s AND status = 'processing' AND worker_id = %s AND attempts = %s"
_QUEUED = (
    "status = 'accepted', worker_id = NULL, lease_expires_at = NULL, not_before = %s,"
    " updated_at = %s"
)


def _with_session_defaults(options: str) -> str:
    """libpq `options` plus each of _SESSION_DEFAULTS it does not set itself."""
    named = {m.group(1).replace("-", "_").lower() for m in _OPTION_NAME.finditer(options)}
    added = [f"-c{name}={value}" for name, value in _SESSION_DEFAULTS.items() if name not in named]
    return " ".join(part for part in (options.strip(), *added) if part)


def _lock_key(schema: str, purpose: str) -> int:
    """A 64-bit advisory-lock key per schema: two deployments in one database stay apart."""
    digest = hashlib.blake2b(f"voxtrace:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresJobStore(JobStore):
    """`JobStore` over PostgreSQL, safe across threads, processes and machines."""

    def __init__(self, url: str, max_idle_connections: int = 8) -> None:
        self._where = redact_url(url) if "://" in url else "postgresql (key=value DSN)"
        try:
            given = conninfo_to_dict(url)
            self._password = str(given.get("password") or "")
            defaults = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}
            # libpq reads PGOPTIONS only when the URL has no `options`: merge it the same way.
            options = given["options"] if "options" in given else os.environ.get("PGOPTIONS")
            defaults["options"] = _with_session_defaults(str(options or ""))
            self._conninfo = make_conninfo(url, **defaults)
        except psycopg.Error:
            raise ValueError(f"invalid PostgreSQL job store URL: {self._where}") from None
        self._max_idle = max_idle_connections
        self._lock = threading.Lock()
        self._down = False  # in an outage: said once, not once per failed call
        self._pid = os.getpid()
        self._idle: list[_Conn] = []
        # The dispatcher's session: it holds the delivery lock while it lives.
        self._dispatch_lock = threading.Lock()
        self._dispatch_conn: _Conn | None = None
        self._dispatching = False
        try:
            self._schema, self._submit_key, self._dispatch_key = self._create_schema()
        except BaseException:
            self.close()
            raise

    @property
    def schema(self) -> str:
        """The schema the tables live in."""
        return self._schema

    # ------------------------------------------------------------------ plumbing
    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "<redacted>") if self._password else text

    def _unavailable(self, exc: BaseException) -> errors.StoreUnavailable:
        """The project's error for a store that cannot be reached or written; the
        detail goes to the log (redacted URL, no password), not to clients.

        Callers retry through an outage (workers every few seconds, the dispatcher twice
        a second): the first failure is a warning, the repeats until a call succeeds
        again are debug lines.
        """
        level = logging.DEBUG if self._down else logging.WARNING
        self._down = True
        logger.log(
            level,
            "job store %s unavailable: %s: %s",
            self._where,
            type(exc).__name__,
            self._scrub(str(exc)).strip(),
        )
        return errors.StoreUnavailable(_UNAVAILABLE)

    def _available(self) -> None:
        if self._down:
            self._down = False
            logger.info("job store %s is reachable again", self._where)

    def _connect(self) -> _Conn:
        try:
            return psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None

    def _forget_parent(self) -> None:
        """After a fork: drop (never close) the connections the parent owns."""
        pid = os.getpid()
        if self._pid != pid:
            self._pid = pid
            self._idle = []
            self._dispatch_conn, self._dispatching = None, False

    def _checkout(self) -> tuple[_Conn, bool]:
        """A connection for this thread's next step, and whether it was used before."""
        with self._lock:
            self._forget_parent()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
        return self._connect(), False

    def _checkin(self, conn: _Conn) -> None:
        healthy = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._lock:
            if healthy and self._pid == os.getpid() and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        if self._pid == os.getpid():
            conn.close()

    def _drop_idle(self) -> None:
        """A dropped connection usually means the server restarted: so are the others."""
        with self._lock:
            stale, self._idle = self._idle, []
        for conn in stale:
            conn.close()

    def _run(self, work: Callable[[_Conn], _T], transaction: bool = True) -> _T:
        """Run `work` in one transaction (or in autocommit, for single reads).

        A pooled connection found dead (the server restarted or dropped it while it sat
        idle) is replaced and `work` runs once more; so does a transaction the server
        rolled back for a deadlock or a serialization failure. Any other loss of the
        server is `StoreUnavailable`. Running again is safe because every change is
        fenced: in the rare case that the connection died after the server committed
        but before it answered, the repeat finds nothing to do (a repeated `claim` would
        take a second job, and the first waits for its lease to lapse).
        """
        for tries in range(1, _TX_RETRIES + 1):
            conn, reused = self._checkout()
            try:
                if transaction:
                    with conn.transaction():
                        result = work(conn)
                else:
                    result = work(conn)
            except psycopg.errors.TransactionRollback:
                self._checkin(conn)
                if tries == _TX_RETRIES:
                    raise
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                lost = conn.closed or conn.broken
                self._checkin(conn)
                if lost:
                    self._drop_idle()
                    if reused and tries == 1:  # it died while idle: run `work` again
                        logger.info(
                            "job store %s: a connection was lost while idle (%s); reconnecting",
                            self._where,
                            type(exc).__name__,
                        )
                        continue
                raise self._unavailable(exc) from None
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                self._checkin(conn)
                raise self._unavailable(exc) from None
            except BaseException:
                self._checkin(conn)
                raise
            self._checkin(conn)
            self._available()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, work: Callable[[_Conn], _T]) -> _T:
        return self._run(work, transaction=False)

    def _create_schema(self) -> tuple[str, int, int]:
        def create(conn: _Conn) -> tuple[str, int, int]:
            row = conn.execute("SELECT current_schema() AS schema").fetchone()
            schema = row["schema"] if row else None
            if schema is None:
                raise ValueError(
                    f"job store {self._where}: no schema to create the tables in"
                    " (the search_path names none that exists)"
                )
            # Several processes start at once: one creates or migrates, the others wait.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema, "schema"),))
            version = 0
            exists = conn.execute("SELECT to_regclass('voxtrace_meta') AS t").fetchone()
            if exists and exists["t"] is not None:
                found = conn.execute(
                    "SELECT value FROM voxtrace_meta WHERE key = 'schema_version'"
                ).fetchone()
                version = int(found["value"]) if found else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError("the job database was written by a newer voxtrace")
            if version < SCHEMA_VERSION:  # DDL only when needed: a read-only replica opens
                conn.execute(_META)
                for statement in _SCHEMA_V1:
                    conn.execute(statement)
                # Future migrations go here: `if version < 2: ...`.
                conn.execute(
                    "INSERT INTO voxtrace_meta (key, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (str(SCHEMA_VERSION),),
                )
            return schema, _lock_key(schema, "submit"), _lock_key(schema, "dispatch")

        return self._run(create)

    def close(self) -> None:
        """Close this process's idle connections; a dispatcher's lock goes with its own."""
        with self._lock:
            self._forget_parent()
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        with self._dispatch_lock:
            session = self._dispatch_conn
            if session is not None and self._pid == os.getpid() and not session.closed:
                if self._dispatching:  # hand over now, not when the server notices
                    with contextlib.suppress(psycopg.Error):
                        session.execute("SELECT pg_advisory_unlock(%s)", (self._dispatch_key,))
                session.close()
            self._dispatch_conn, self._dispatching = None, False

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _enqueue(
        conn: _Conn, job_id: str, base_url: str, body: str, terminal: bool, now: float
    ) -> None:
        """Queue a callback; it supersedes the job's undelivered progress callbacks.

        The new callback keeps the backoff of the ones it replaces, so a stream of
        progress reports cannot turn a struggling backend's backoff into hammering.
        Callers hold the job's row lock, which keeps `seq` free of races.
        """
        conn.execute(
            "WITH superseded AS ("
            f"  UPDATE voxtrace_outbox SET state = {SUPERSEDED}"
            f"  WHERE job_id = %(job_id)s AND state = {PENDING} AND NOT terminal"
            "  RETURNING next_attempt_at)"
            " INSERT INTO voxtrace_outbox (job_id, seq, base_url, payload, terminal, state,"
            " attempts, created_at, next_attempt_at)"
            " SELECT %(job_id)s,"
            "  (SELECT COALESCE(MAX(seq), 0) + 1 FROM voxtrace_outbox WHERE job_id = %(job_id)s),"
            f"  %(base_url)s, %(body)s::json, %(terminal)s, {PENDING}, 0, %(now)s,"
            "  GREATEST(%(now)s, (SELECT MAX(next_attempt_at) FROM superseded))",
            {
                "job_id": job_id,
                "base_url": base_url,
                "body": body,
                "terminal": terminal,
                "now": now,
            },
        )

    def _select_jobs(self, sql: str, params: Sequence[Any]) -> list[Job]:
        return self._read(
            lambda conn: [job_from_row(r) for r in conn.execute(sql, params).fetchall()]
        )

    # ------------------------------------------------------------------ submission
    def submit(self, job: NewJob, max_unfinished: int, now: float) -> tuple[Job, bool]:
        options = strict_json(job.options.to_dict())

        def insert(conn: _Conn) -> tuple[Job, bool]:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._submit_key,))
            row = conn.execute(
                "SELECT * FROM voxtrace_jobs WHERE job_id = %s", (job.job_id,)
            ).fetchone()
            if row is not None:
                existing = job_from_row(row)
                if existing.video_url != job.video_url:
                    raise errors.JobConflict()
                return existing, False
            counted = conn.execute(
                "SELECT COUNT(*) AS n FROM voxtrace_jobs WHERE status IN ('accepted', 'processing')"
            ).fetchone()
            if counted is not None and counted["n"] >= max_unfinished:
                raise errors.CapacityExceeded()
            created = conn.execute(
                "INSERT INTO voxtrace_jobs (job_id, video_url, callback_base_url, options,"
                " status, progress, message, attempts, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s::json, 'accepted', 0, 'Waiting in queue', 0, %s, %s)"
                " RETURNING *",
                (job.job_id, job.video_url, job.callback_base_url, options, now, now),
            ).fetchone()
            assert created is not None
            return job_from_row(created), True

        return self._run(insert)

    def get(self, job_id: str) -> Job | None:
        def select(conn: _Conn) -> Job | None:
            row = conn.execute("SELECT * FROM voxtrace_jobs WHERE job_id = %s", (job_id,))
            found = row.fetchone()
            return job_from_row(found) if found is not None else None

        return self._read(select)

    # ------------------------------------------------------------------ dispatch
    def claim(self, worker_id: str, lease_s: float, now: float) -> Job | None:
        def take(conn: _Conn) -> Job | None:
            row = conn.execute(
                "UPDATE voxtrace_jobs SET status = 'processing', attempts = attempts + 1,"
                " worker_id = %(worker_id)s, lease_expires_at = %(lease)s,"
                " started_at = %(now)s, updated_at = %(now)s, not_before = NULL"
                " WHERE status = 'accepted' AND job_id = ("
                "  SELECT job_id FROM voxtrace_jobs"
                "  WHERE status = 'accepted' AND (not_before IS NULL OR not_before <= %(now)s)"
                "  ORDER BY created_at, seq LIMIT 1"
                "  FOR UPDATE SKIP LOCKED)"
                " RETURNING *",
                {"worker_id": worker_id, "lease": now + lease_s, "now": now},
            ).fetchone()
            return job_from_row(row) if row is not None else None

        return self._run(take)

    def heartbeat(
        self, job_id: str, worker_id: str, attempt: int, lease_s: float, now: float
    ) -> bool:
        def extend(conn: _Conn) -> bool:
            cur = conn.execute(
                f"UPDATE voxtrace_jobs SET lease_expires_at = %s, updated_at = %s WHERE {_FENCE}",
                (now + lease_s, now, job_id, worker_id, attempt),
            )
            return cur.rowcount == 1

        return self._run(extend)

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

        def record(conn: _Conn) -> bool:
            row = conn.execute(
                "UPDATE voxtrace_jobs SET progress = GREATEST(progress, %s), message = %s,"
                f" updated_at = %s WHERE {_FENCE} RETURNING progress, callback_base_url",
                (progress, message, now, job_id, worker_id, attempt),
            ).fetchone()
            if row is None:
                return False
            if callback is None:
                return True
            terminal_queued = conn.execute(
                "SELECT 1 FROM voxtrace_outbox WHERE job_id = %s AND terminal", (job_id,)
            ).fetchone()
            if terminal_queued is None:
                body = strict_json({**callback, "progress": row["progress"]})
                self._enqueue(conn, job_id, row["callback_base_url"], body, False, now)
            return True

        return self._run(record)

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

        def finish(conn: _Conn) -> bool:
            row = conn.execute(
                "UPDATE voxtrace_jobs SET status = 'completed', progress = 100,"
                f" message = '{COMPLETED_MESSAGE}', result = %s::json, finished_at = %s,"
                f" updated_at = %s, lease_expires_at = NULL WHERE {_FENCE}"
                " RETURNING callback_base_url",
                (result_json, now, now, job_id, worker_id, attempt),
            ).fetchone()
            if row is None:
                return False
            self._enqueue(conn, job_id, row["callback_base_url"], body, True, now)
            return True

        return self._run(finish)

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
        set_failed = (
            "UPDATE voxtrace_jobs SET status = 'failed', error_code = %s, error_message = %s,"
            " message = %s, finished_at = %s, updated_at = %s, lease_expires_at = NULL,"
            " not_before = NULL"
        )
        returning = " RETURNING progress, callback_base_url"

        def end(conn: _Conn) -> bool:
            if worker_id is None:
                cur = conn.execute(
                    f"{set_failed} WHERE job_id = %s AND status IN ('accepted', 'processing')"
                    + returning,
                    (code, message, message, now, now, job_id),
                )
            else:
                cur = conn.execute(
                    f"{set_failed} WHERE {_FENCE}{returning}",
                    (code, message, message, now, now, job_id, worker_id, attempt),
                )
            row = cur.fetchone()
            if row is None:
                return False
            body = strict_json({**callback, "progress": row["progress"]})
            self._enqueue(conn, job_id, row["callback_base_url"], body, True, now)
            return True

        return self._run(end)

    def requeue(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        now: float,
        not_before: float | None = None,
    ) -> bool:
        def give_back(conn: _Conn) -> bool:
            cur = conn.execute(
                f"UPDATE voxtrace_jobs SET {_QUEUED} WHERE {_FENCE}",
                (not_before, now, job_id, worker_id, attempt),
            )
            return cur.rowcount == 1

        return self._run(give_back)

    def expired_leases(self, now: float) -> list[Job]:
        return self._select_jobs(
            "SELECT * FROM voxtrace_jobs WHERE status = 'processing' AND lease_expires_at < %s"
            " ORDER BY lease_expires_at",
            (now,),
        )

    def release_lapsed(self, job_id: str, attempt: int, now: float) -> bool:
        def release(conn: _Conn) -> bool:
            cur = conn.execute(
                f"UPDATE voxtrace_jobs SET {_QUEUED}"
                " WHERE job_id = %s AND status = 'processing' AND attempts = %s"
                " AND lease_expires_at < %s",
                (None, now, job_id, attempt, now),
            )
            return cur.rowcount == 1

        return self._run(release)

    def jobs_owned_by(self, worker_prefix: str) -> list[Job]:
        # starts_with, not LIKE: a prefix may contain '%' or '_'.
        return self._select_jobs(
            "SELECT * FROM voxtrace_jobs"
            " WHERE status = 'processing' AND starts_with(worker_id, %s)"
            " ORDER BY created_at, seq",
            (worker_prefix,),
        )

    # ------------------------------------------------------------------ outbox
    def due_callbacks(self, now: float, limit: int) -> list[OutboxItem]:
        """Due callbacks, for the one dispatcher that holds the delivery lock.

        Any other caller gets an empty list (it stands by). The lock is taken and the
        items read on one dedicated session, so they are only handed out while the
        lock is held; a session the server dropped is replaced once, and one whose
        statement timed out is kept (with its lock).
        """
        with self._dispatch_lock:
            for tries in (1, 2):
                try:
                    return self._due_as_dispatcher(now, limit)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    conn = self._dispatch_conn
                    if conn is not None and not conn.closed and not conn.broken:
                        # The server cancelled a statement (a timeout): the session and
                        # the lock it holds are intact, and the next poll tries again.
                        raise self._unavailable(exc) from None
                    self._dispatch_conn, self._dispatching = None, False
                    if conn is not None and not conn.closed:
                        conn.close()  # its lock, if any, goes with it
                    if tries == 2 or conn is None:
                        raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _due_as_dispatcher(self, now: float, limit: int) -> list[OutboxItem]:
        with self._lock:
            self._forget_parent()
        conn = self._dispatch_conn
        if conn is None or conn.closed:
            conn = self._connect()
            self._dispatch_conn, self._dispatching = conn, False
            conn.execute(_SERVER_KEEPALIVES)
        if not self._dispatching:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s) AS mine", (self._dispatch_key,)
            ).fetchone()
            if not (row and row["mine"]):
                return []
            self._dispatching = True
            logger.info("job store %s: this process now delivers the callbacks", self._where)
        rows = conn.execute(
            "SELECT o.* FROM voxtrace_outbox AS o"
            f" WHERE o.state = {PENDING} AND o.next_attempt_at <= %s"
            " AND NOT EXISTS (SELECT 1 FROM voxtrace_outbox AS p"
            f"  WHERE p.job_id = o.job_id AND p.state = {PENDING} AND p.seq < o.seq)"
            " ORDER BY o.next_attempt_at, o.id LIMIT %s",
            (now, limit),
        ).fetchall()
        return [outbox_item_from_row(row) for row in rows]

    def mark_delivered(self, item_id: int, now: float) -> None:
        # A superseded callback may have been in flight; it did arrive, so say so.
        self._run(
            lambda conn: conn.execute(
                f"UPDATE voxtrace_outbox SET state = {DELIVERED}, attempts = attempts + 1,"
                " delivered_at = %s, last_error = NULL"
                f" WHERE id = %s AND state IN ({PENDING}, {SUPERSEDED})",
                (now, item_id),
            )
        )

    def schedule_retry(self, item_id: int, next_attempt_at: float, error: str, now: float) -> None:
        self._run(
            lambda conn: conn.execute(
                "UPDATE voxtrace_outbox SET attempts = attempts + 1, next_attempt_at = %s,"
                f" last_error = %s WHERE id = %s AND state = {PENDING}",
                (next_attempt_at, error, item_id),
            )
        )

    def mark_dead(self, item_id: int, error: str, now: float) -> None:
        self._run(
            lambda conn: conn.execute(
                f"UPDATE voxtrace_outbox SET state = {DEAD}, attempts = attempts + 1,"
                f" last_error = %s WHERE id = %s AND state = {PENDING}",
                (error, item_id),
            )
        )

    def callback_log(self, job_id: str) -> list[CallbackLogEntry]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT seq, payload -> 'status' AS status, payload -> 'progress' AS progress,"
                " terminal, state, attempts, last_error, created_at, delivered_at"
                " FROM voxtrace_outbox WHERE job_id = %s ORDER BY seq",
                (job_id,),
            ).fetchall()
        )
        return [callback_log_entry(row) for row in rows]

    # ------------------------------------------------------------------ monitoring
    def stats(self) -> QueueStats:
        def count(conn: _Conn) -> QueueStats:
            counts = {
                row["status"]: row["n"]
                for row in conn.execute(
                    "SELECT status, COUNT(*) AS n FROM voxtrace_jobs GROUP BY status"
                ).fetchall()
            }
            pending = conn.execute(
                f"SELECT COUNT(*) AS n FROM voxtrace_outbox WHERE state = {PENDING}"
            ).fetchone()
            return QueueStats(
                accepted=counts.get(JobStatus.ACCEPTED.value, 0),
                processing=counts.get(JobStatus.PROCESSING.value, 0),
                completed=counts.get(JobStatus.COMPLETED.value, 0),
                failed=counts.get(JobStatus.FAILED.value, 0),
                callbacks_pending=pending["n"] if pending else 0,
            )

        return self._run(count)  # one snapshot for both counts

    def mean_processing_s(self, last_n: int = 50) -> float | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT AVG(finished_at - started_at) AS mean FROM ("
                "  SELECT finished_at, started_at FROM voxtrace_jobs"
                "  WHERE status = 'completed' AND started_at IS NOT NULL"
                "  ORDER BY finished_at DESC LIMIT %s) AS recent",
                (last_n,),
            ).fetchone()
        )
        return float(row["mean"]) if row is not None and row["mean"] is not None else None

    def worker_seen(self, worker_id: str, info: WorkerInfo, now: float) -> None:
        body = strict_json(info)

        def record(conn: _Conn) -> None:
            conn.execute(
                "INSERT INTO voxtrace_workers (worker_id, info, last_seen)"
                " VALUES (%s, %s::json, %s) ON CONFLICT (worker_id) DO UPDATE"
                " SET info = EXCLUDED.info, last_seen = EXCLUDED.last_seen",
                (worker_id, body, now),
            )
            # Workers gone for a day; rows another session is writing are left for later.
            conn.execute(
                "DELETE FROM voxtrace_workers WHERE worker_id IN ("
                " SELECT worker_id FROM voxtrace_workers WHERE last_seen < %s"
                " FOR UPDATE SKIP LOCKED)",
                (now - WORKER_RETENTION_S,),
            )

        self._run(record)

    def live_workers(self, since: float) -> list[WorkerStatus]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT worker_id, info, last_seen FROM voxtrace_workers"
                " WHERE last_seen >= %s ORDER BY worker_id",
                (since,),
            ).fetchall()
        )
        return [worker_status(row["worker_id"], row["info"], row["last_seen"]) for row in rows]

    def check_writable(self) -> bool:
        """Write for real: an unreachable server, a read-only replica or a full disk
        shows up here, not in a job."""
        try:
            self._run(
                lambda conn: conn.execute(
                    "INSERT INTO voxtrace_meta (key, value) VALUES ('write_check', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (str(os.getpid()),),
                )
            )
        except (errors.StoreUnavailable, psycopg.Error) as exc:
            logger.warning("job store %s is not writable: %s", self._where, type(exc).__name__)
            return False
        return True
