"""The SQLite store on its own: reopening, migrations, several processes, connections."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.store.kit import BASE, LEASE_S, claim, complete, progress, states, submit
from voxtrace.domain import JobStatus
from voxtrace.store import SqliteJobStore
from voxtrace.store.sqlite import SCHEMA_VERSION

# ------------------------------------------------------------------------ sqlite only


def test_sqlite_keeps_jobs_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jobs.db"
    first = SqliteJobStore(path)
    submit(first, "a")
    job_id, attempt = claim(first)
    progress(first, job_id, attempt, 30)
    first.close()

    second = SqliteJobStore(path)  # schema creation is idempotent
    job = second.get("a")
    assert job is not None
    assert (job.status, job.progress, job.worker_id) == (JobStatus.PROCESSING, 30, "w1")
    assert states(second, "a") == [("processing", "pending")]
    second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_reports_a_store_it_cannot_write_as_not_writable(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    assert store.check_writable()
    # query_only stands in for a full disk or a read-only mount (root ignores chmod).
    store._conn().execute("PRAGMA query_only = ON")
    assert not store.check_writable()
    assert store.get("a") is None  # reads still work
    store.close()


def test_the_database_refuses_a_second_terminal_callback(tmp_path: Path) -> None:
    """Belt and braces: even a buggy code path cannot queue two terminal callbacks."""
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(path)
    submit(store, "a")
    job_id, attempt = claim(store)
    complete(store, job_id, attempt)
    store.close()
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO outbox (job_id, seq, base_url, payload, terminal, state, attempts,"
            " created_at, next_attempt_at) VALUES ('a', 9, 'x', '{}', 1, 'pending', 0, 0, 0)"
        )


def test_sqlite_migrates_a_version_1_database(tmp_path: Path) -> None:
    """A job database written before `not_before` existed opens, keeps its jobs, and
    learns to hold a retry back."""
    from voxtrace.store.sqlite import _SCHEMA_V1

    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA_V1)
        conn.execute(
            "INSERT INTO jobs (job_id, video_url, callback_base_url, options, status,"
            " created_at, updated_at) VALUES ('old', 'https://x/v.mp4', ?, '{}', 'accepted',"
            " 1.0, 1.0)",
            (BASE,),
        )
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = SqliteJobStore(path)
    job_id, attempt = claim(store)
    assert job_id == "old"
    assert store.requeue(job_id, "w1", attempt, now=12.0, not_before=30.0)
    assert store.claim("w1", LEASE_S, now=29.0) is None
    assert claim(store, now=30.0) == ("old", 2)
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def _claim_all(path: str, worker_id: str, start: Any, out: str) -> None:
    """Runs in a child process: claim and finish jobs until none is left."""
    store = SqliteJobStore(Path(path), busy_timeout_s=30.0)
    start.wait()  # a barrier: both processes go at once
    claimed = []
    while (job := store.claim(worker_id, LEASE_S, now=10.0)) is not None:
        claimed.append(job.job_id)
        progress(store, job.job_id, job.attempts, 50, worker=worker_id)
        complete(store, job.job_id, job.attempts, worker=worker_id)
    store.close()
    Path(out).write_text("\n".join(claimed))


def test_two_processes_never_claim_the_same_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(path)
    job_ids = [f"job-{i:03d}" for i in range(80)]
    submit(store, *job_ids)

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    outs = [tmp_path / f"claimed-{n}.txt" for n in range(2)]
    procs = [
        ctx.Process(target=_claim_all, args=(str(path), f"p{n}", start, str(outs[n])))
        for n in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0

    per_process = [out.read_text().splitlines() for out in outs]
    claimed = [job_id for mine in per_process for job_id in mine]
    assert sorted(claimed) == job_ids  # every job once, none twice
    stats = store.stats()
    assert (stats.completed, stats.callbacks_pending) == (80, 80)
    assert all(
        states(store, job_id) == [("processing", "superseded"), ("completed", "pending")]
        for job_id in job_ids
    )
    store.close()


def test_sqlite_closes_connections_of_finished_threads(tmp_path: Path) -> None:
    """Each job's heartbeat thread touches the store; its connection must not outlive it."""
    import threading

    store = SqliteJobStore(tmp_path / "jobs.db")
    store.get("warm-up")

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for _ in range(30):
        thread = threading.Thread(target=store.get, args=("x",))
        thread.start()
        thread.join()
    store.get("again")  # a new connection prunes those of finished threads
    assert open_fds() - before <= 4
    store.close()
