"""The `store` fixture: every JobStore contract test runs against each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.postgres import in_schema
from voxtrace.store import MemoryJobStore, SqliteJobStore, open_store
from voxtrace.store.base import JobStore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    impl: JobStore
    if request.param == "memory":
        impl = MemoryJobStore()
    elif request.param == "sqlite":
        impl = SqliteJobStore(tmp_path / "jobs.db")
    else:
        impl = open_store(in_schema(request.getfixturevalue("pg_schema")))
    yield impl
    impl.close()
