"""The PostgreSQL store on its own: several machines, dispatcher election, dropped
sessions, timeouts, forks. Each test gets a schema of its own (`pg_schema`).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from testing.postgres import POSTGRES_URL, admin, in_schema
from tests.store.kit import (
    LEASE_S,
    claim,
    complete,
    holding,
    new_job,
    pg_store,
    progress,
    states,
    submit,
)
from voxtrace import errors
from voxtrace.domain import JobStatus
from voxtrace.payloads import completed_payload
from voxtrace.store import open_store
from voxtrace.store.base import JobStore

# ------------------------------------------------------------------------ postgres only


def test_postgres_keeps_jobs_across_reopening(pg_schema: str) -> None:
    from voxtrace.store.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION

    first = pg_store(pg_schema)
    assert first.schema == pg_schema
    submit(first, "a")
    job_id, attempt = claim(first)
    progress(first, job_id, attempt, 30)
    first.close()

    second = pg_store(pg_schema)  # schema creation is idempotent
    job = second.get("a")
    assert job is not None
    assert (job.status, job.progress, job.worker_id) == (JobStatus.PROCESSING, 30, "w1")
    assert states(second, "a") == [("processing", "pending")]
    second.close()
    version = admin(
        sql.SQL("SELECT value FROM {}.voxtrace_meta WHERE key = 'schema_version'").format(
            sql.Identifier(pg_schema)
        )
    )
    assert version == [(str(PG_SCHEMA_VERSION),)]


def test_postgres_keeps_the_results_key_order(pg_schema: str) -> None:
    """JSON, not JSONB: the stored result reads back in the order it was written."""
    store = pg_store(pg_schema)
    submit(store, "a")
    job_id, attempt = claim(store)
    result = {"segments": [], "metadata": {"zeta": 1, "alpha": 2}}
    assert store.complete(job_id, "w1", attempt, result, completed_payload(job_id, result), 20.0)
    stored = store.get(job_id)
    assert stored is not None and stored.result is not None
    assert list(stored.result) == ["segments", "metadata"]
    assert list(stored.result["metadata"]) == ["zeta", "alpha"]
    store.close()


def test_postgres_needs_an_existing_schema(pg_schema: str) -> None:
    with pytest.raises(ValueError, match="no schema"):
        pg_store(pg_schema + "_missing")


def test_postgres_the_database_refuses_a_second_terminal_callback(pg_schema: str) -> None:
    store = pg_store(pg_schema)
    submit(store, "a")
    job_id, attempt = claim(store)
    complete(store, job_id, attempt)
    store.close()
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin(
            sql.SQL(
                "INSERT INTO {}.voxtrace_outbox (job_id, seq, base_url, payload, terminal,"
                " state, attempts, created_at, next_attempt_at)"
                " VALUES ('a', 9, 'x', '{{}}', true, 'pending', 0, 0, 0)"
            ).format(sql.Identifier(pg_schema))
        )


def test_postgres_two_machines_never_claim_the_same_job(pg_schema: str) -> None:
    """Two stores (two machines' connections), two threads each, race for 120 jobs."""
    import threading

    stores = [pg_store(pg_schema), pg_store(pg_schema)]
    job_ids = [f"job-{i:03d}" for i in range(120)]
    for n, job_id in enumerate(job_ids):
        stores[n % 2].submit(new_job(job_id), max_unfinished=1000, now=1.0 + n)
    start = threading.Barrier(4)
    claimed: dict[str, list[str]] = {}

    def run(store: JobStore, worker_id: str) -> None:
        mine = claimed.setdefault(worker_id, [])
        start.wait()
        while (job := store.claim(worker_id, LEASE_S, now=10.0)) is not None:
            mine.append(job.job_id)
            assert progress(store, job.job_id, job.attempts, 50, worker=worker_id)
            assert complete(store, job.job_id, job.attempts, worker=worker_id)

    threads = [
        threading.Thread(target=run, args=(stores[n % 2], f"m{n % 2}/w{n}")) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    all_claimed = [job_id for mine in claimed.values() for job_id in mine]
    assert sorted(all_claimed) == job_ids  # every job once, none twice
    assert all(claimed.values())  # every worker got some: nobody waited on a row lock
    stats = stores[1].stats()
    assert (stats.completed, stats.callbacks_pending) == (120, 120)
    for store in stores:
        store.close()


def test_postgres_claim_skips_a_row_another_session_holds(pg_schema: str) -> None:
    """SKIP LOCKED: a claim does not wait for (or take) a job another claim has locked."""
    store = pg_store(pg_schema)
    submit(store, "first", "second")
    with psycopg.connect(in_schema(pg_schema)) as other:  # a transaction left open
        other.execute("SELECT 1 FROM voxtrace_jobs WHERE job_id = 'first' FOR UPDATE")
        assert claim(store, "w1") == ("second", 1)
        assert store.claim("w2", LEASE_S, now=10.0) is None
        other.rollback()
    assert claim(store, "w2") == ("first", 1)
    store.close()


def _finished_job(store: JobStore, job_id: str) -> None:
    submit(store, job_id)
    claimed, attempt = claim(store)
    assert complete(store, claimed, attempt)


def test_postgres_one_dispatcher_delivers_the_others_stand_by(pg_schema: str) -> None:
    first, second = pg_store(pg_schema), pg_store(pg_schema)
    _finished_job(first, "a")
    (item,) = first.due_callbacks(now=100.0, limit=10)
    assert second.due_callbacks(now=100.0, limit=10) == []  # first delivers
    assert first.due_callbacks(now=100.0, limit=10) == [item]  # and still does
    first.close()  # its session ends: a stand-by takes over
    assert second.due_callbacks(now=100.0, limit=10) == [item]
    assert first.due_callbacks(now=100.0, limit=10) == []
    second.mark_delivered(item.id, now=101.0)
    assert states(first, "a") == [("completed", "delivered")]
    second.close()


def test_postgres_racing_dispatchers_elect_one(pg_schema: str) -> None:
    import threading

    stores = [pg_store(pg_schema) for _ in range(4)]
    _finished_job(stores[0], "a")
    start = threading.Barrier(len(stores))
    got: list[int] = [0] * len(stores)

    def poll(n: int) -> None:
        start.wait()
        got[n] = len(stores[n].due_callbacks(now=100.0, limit=10))

    threads = [threading.Thread(target=poll, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(got) == [0, 0, 0, 1]
    for store in stores:
        store.close()


def _terminate_sessions(application_name: str, only_pid: int | None = None) -> int:
    """Kill a test's sessions as a server restart would; return once they are gone."""
    import time

    rows = admin(
        sql.SQL(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND (%s::int IS NULL OR pid = %s::int)"
        ),
        application_name,
        only_pid,
        only_pid,
    )
    pids = [pid for pid, _ in rows]
    deadline = time.monotonic() + 10
    alive = sql.SQL("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)")
    while pids and admin(alive, pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(pids)


def _poll(call: Any, timeout_s: float = 10.0) -> Any:
    """`call()` until it returns something: the server ends a killed session's locks
    a moment after the session itself is gone."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (result := call()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_postgres_a_dispatcher_whose_session_dies_is_replaced(pg_schema: str) -> None:
    first, second = pg_store(pg_schema), pg_store(pg_schema)
    _finished_job(first, "a")
    (item,) = first.due_callbacks(now=100.0, limit=10)
    backend_pid = first._dispatch_conn.info.backend_pid
    assert _terminate_sessions(pg_schema, backend_pid) == 1  # its machine vanished
    assert _poll(lambda: second.due_callbacks(now=100.0, limit=10)) == [item]
    # The old dispatcher comes back on a new session and finds the place taken.
    assert first.due_callbacks(now=100.0, limit=10) == []
    first.close()
    second.close()


def test_postgres_reconnects_after_the_server_drops_its_sessions(
    pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server restart or failover: idle pooled connections die; the next call works."""
    store = pg_store(pg_schema)
    submit(store, "a")
    assert store.get("a") is not None
    assert _terminate_sessions(pg_schema) >= 1
    with caplog.at_level("INFO", logger="voxtrace.store.postgres"):
        job_id, attempt = claim(store)  # a dead idle connection is replaced, once
    assert (job_id, attempt) == ("a", 1)
    assert "connection was lost while idle" in caplog.text
    assert store.check_writable()
    store.close()


def test_postgres_an_unreachable_store_never_logs_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from voxtrace.store.postgres import PostgresJobStore

    url = "postgresql://voxtrace:hunter2-secret@127.0.0.1:1/jobs?connect_timeout=2"
    with pytest.raises(errors.StoreUnavailable) as raised:
        PostgresJobStore(url)
    assert raised.value.message == "Job store unavailable; retry later"
    assert "hunter2" not in str(raised.value)
    assert "postgresql://127.0.0.1:1/jobs" in caplog.text
    assert "hunter2" not in caplog.text


def test_postgres_a_read_only_store_reads_but_is_not_writable(pg_schema: str) -> None:
    """A read-only server (a standby, a full disk's emergency mode) shows up in /health,
    and a submission is refused with the project's 503 error, not a library error."""
    pg_store(pg_schema).close()  # the tables exist
    store = pg_store(pg_schema, "default_transaction_read_only=on")
    assert store.get("a") is None
    assert not store.check_writable()
    with pytest.raises(errors.StoreUnavailable):
        store.submit(new_job("a"), max_unfinished=10, now=1.0)
    store.close()


def _setting(store: Any, name: str, dispatcher: bool = False) -> str:
    if dispatcher:
        store.due_callbacks(now=0.0, limit=1)
        row = store._dispatch_conn.execute(f"SHOW {name}").fetchone()
    else:
        row = store._read(lambda conn: conn.execute(f"SHOW {name}").fetchone())
    return str(row[name])


def test_postgres_sessions_get_a_statement_and_lock_timeout_unless_the_url_sets_them(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pg_store(pg_schema)
    assert store.schema == pg_schema  # the URL's own options are kept
    for dispatcher in (False, True):
        assert _setting(store, "statement_timeout", dispatcher) == "30s"
        assert _setting(store, "lock_timeout", dispatcher) == "10s"
        assert _setting(store, "idle_in_transaction_session_timeout", dispatcher) == "1min"
    store.close()
    store = pg_store(pg_schema, "statement_timeout=0", "lock_timeout=2500")  # the URL wins
    assert (_setting(store, "statement_timeout"), _setting(store, "lock_timeout")) == (
        "0",
        "2500ms",
    )
    store.close()
    # Without `options` in the URL, libpq would read PGOPTIONS: so does the merge.
    from voxtrace.store.postgres import PostgresJobStore

    monkeypatch.setenv("PGOPTIONS", f"-csearch_path={pg_schema} --statement-timeout=7s")
    store = PostgresJobStore(
        f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}application_name=x"
    )
    assert store.schema == pg_schema
    assert (_setting(store, "statement_timeout"), _setting(store, "lock_timeout")) == ("7s", "10s")
    store.close()


def test_postgres_a_statement_stuck_behind_a_lock_is_cut_off(
    pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends it; callers see the store's usual "unavailable" error, which they
    wait out; the session goes back to the pool and works once the lock is gone."""
    import time

    store = pg_store(pg_schema, "statement_timeout=400", "lock_timeout=0")
    submit(store, "a")
    job_id, attempt = claim(store)
    other = holding(pg_schema, "SELECT 1 FROM voxtrace_jobs WHERE job_id = 'a' FOR UPDATE")
    started = time.monotonic()
    with pytest.raises(errors.StoreUnavailable, match="Job store unavailable"):
        store.heartbeat(job_id, "w1", attempt, LEASE_S, now=11.0)
    assert 0.3 < time.monotonic() - started < 5
    assert "QueryCanceled" in caplog.text
    other.rollback()
    assert store.heartbeat(job_id, "w1", attempt, LEASE_S, now=12.0)
    other.close()
    store.close()


def test_postgres_submit_waits_for_its_lock_only_so_long(pg_schema: str) -> None:
    """`submit`'s advisory lock is a lock wait: `lock_timeout` ends it, as "unavailable"
    (the API's 503, which the backend retries)."""
    import time

    store = pg_store(pg_schema, "lock_timeout=300")
    other = holding(pg_schema, f"SELECT pg_advisory_xact_lock({store._submit_key})")
    started = time.monotonic()
    with pytest.raises(errors.StoreUnavailable, match="Job store unavailable"):
        submit(store, "a")
    assert time.monotonic() - started < 5
    other.rollback()
    submit(store, "a")
    assert store.get("a") is not None
    other.close()
    store.close()


def test_postgres_a_dispatcher_keeps_its_lock_through_a_timed_out_poll(pg_schema: str) -> None:
    first = pg_store(pg_schema, "lock_timeout=300")
    second = pg_store(pg_schema, "lock_timeout=300")
    _finished_job(first, "a")
    (item,) = first.due_callbacks(now=100.0, limit=10)
    other = holding(pg_schema, "LOCK TABLE voxtrace_outbox IN ACCESS EXCLUSIVE MODE")
    with pytest.raises(errors.StoreUnavailable):
        first.due_callbacks(now=100.0, limit=10)
    assert second.due_callbacks(now=100.0, limit=10) == []  # no hand-over: first still delivers
    other.rollback()
    assert first.due_callbacks(now=100.0, limit=10) == [item]
    assert second.due_callbacks(now=100.0, limit=10) == []
    other.close()
    first.close()
    second.close()


def _claim_in_child(store: Any, out: str) -> None:
    """Runs in a forked child: use the inherited store, then drop it."""
    import gc

    job = store.claim("child", LEASE_S, now=10.0)
    store.close()
    del store
    gc.collect()  # the parent's connection objects die here, too
    Path(out).write_text(job.job_id if job else "")


def test_postgres_a_forked_child_leaves_the_parents_connections_alone(
    pg_schema: str, tmp_path: Path
) -> None:
    store = pg_store(pg_schema)
    submit(store, "a", "b")
    parent_backend = store._read(lambda conn: conn.info.backend_pid)
    out = tmp_path / "child.txt"
    child = multiprocessing.get_context("fork").Process(
        target=_claim_in_child, args=(store, str(out))
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert out.read_text() == "a"
    # The same session as before the fork, alive: the child opened its own.
    assert store._read(lambda conn: conn.info.backend_pid) == parent_backend
    assert claim(store, "parent") == ("b", 1)
    store.close()


def test_open_store_by_postgres_url(pg_schema: str) -> None:
    from voxtrace.store import PostgresJobStore

    for scheme in ("postgresql", "postgres"):
        url = in_schema(pg_schema).replace("postgresql://", f"{scheme}://", 1)
        opened = open_store(url)
        assert isinstance(opened, PostgresJobStore)
        assert opened.schema == pg_schema
        opened.close()
