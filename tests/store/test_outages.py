"""The JobStore contract, run against every backend: a store that cannot be written
raises StoreUnavailable (503, retryable) and writes nothing, each backend made
unwritable its own real way."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.store.kit import claim, complete, holding, new_job, pg_store, submit
from voxtrace import errors
from voxtrace.domain import JobStatus
from voxtrace.store import MemoryJobStore, SqliteJobStore
from voxtrace.store.base import JobStore

# ------------------------------------------------------------------------ outages


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def breakable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, Any]]:
    """A store and a way to make it unwritable for real, each backend its own way:
    memory its outage switch, SQLite another connection holding the write lock past a
    short busy timeout, PostgreSQL a session holding its tables locked past a short
    lock_timeout."""
    impl: JobStore
    if request.param == "memory":
        memory = MemoryJobStore()

        @contextlib.contextmanager
        def broken() -> Iterator[None]:
            memory.outage = True
            yield
            memory.outage = False

        impl = memory
    elif request.param == "sqlite":
        path = tmp_path / "jobs.db"
        impl = SqliteJobStore(path, busy_timeout_s=0.2)

        @contextlib.contextmanager
        def broken() -> Iterator[None]:
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            yield
            other.execute("COMMIT")
            other.close()

    else:
        schema = request.getfixturevalue("pg_schema")
        impl = pg_store(schema, "lock_timeout=200")

        @contextlib.contextmanager
        def broken() -> Iterator[None]:
            other = holding(
                schema, "LOCK TABLE voxtrace_jobs, voxtrace_meta IN ACCESS EXCLUSIVE MODE"
            )
            yield
            other.rollback()
            other.close()

    yield impl, broken
    impl.close()


def test_an_unwritable_store_raises_store_unavailable_and_writes_nothing(
    breakable: tuple[JobStore, Any],
) -> None:
    store, broken = breakable
    submit(store, "before")
    with broken():
        with pytest.raises(errors.StoreUnavailable) as raised:
            store.submit(new_job("during"), max_unfinished=100, now=2.0)
        assert not store.check_writable()
    error = raised.value
    assert (error.code, error.http_status, error.retryable) == ("INSUFFICIENT_RESOURCES", 503, True)
    assert error.retry_after_s and error.retry_after_s > 0  # the API sends it as Retry-After
    assert "database" not in error.message.lower()  # generic: no backend text for clients
    assert store.get("during") is None
    submit(store, "after", now=3.0)  # back as soon as the outage ends
    assert store.check_writable()
    assert {store.get(j) is not None for j in ("before", "after")} == {True}


def test_a_worker_write_during_an_outage_is_store_unavailable_and_changes_nothing(
    breakable: tuple[JobStore, Any],
) -> None:
    store, broken = breakable
    submit(store, "j")
    job_id, attempt = claim(store)
    with broken(), pytest.raises(errors.StoreUnavailable):
        complete(store, job_id, attempt)
    stored = store.get(job_id)
    assert stored is not None and stored.status is JobStatus.PROCESSING
    assert store.callback_log(job_id) == []
    assert complete(store, job_id, attempt)  # the same write, retried after the outage
