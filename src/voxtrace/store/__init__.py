"""Job stores: one interface (`JobStore`), a backend per deployment, chosen by URL.

memory://                  in-process (tests, one-off runs)
sqlite:///abs/path/jobs.db one SQLite file shared by the API and worker processes
/path/jobs.db, jobs.db     the same, as a plain path
postgresql://user:pw@host:5432/db (or postgres://)
                           one PostgreSQL database shared by several machines: the API
                           (`voxtrace serve`) on one, `voxtrace worker` on the others, all
                           with the same VOXTRACE_STORE_URL; `?options=-csearch_path%3Dvt`
                           picks the schema (it must exist). Every machine may run a
                           callback dispatcher: one delivers, the others stand by.
redis://...                not available (PostgreSQL is the backend for several machines)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from voxtrace.store.base import JobStore, Payload, WorkerInfo
from voxtrace.store.memory import MemoryJobStore
from voxtrace.store.sqlite import SqliteJobStore

if TYPE_CHECKING:
    from voxtrace.store.postgres import PostgresJobStore

__all__ = [
    "JobStore",
    "MemoryJobStore",
    "Payload",
    "PostgresJobStore",
    "SqliteJobStore",
    "WorkerInfo",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # psycopg is imported only where PostgreSQL is used (it adds ~0.15 s to start-up).
    if name == "PostgresJobStore":
        from voxtrace.store.postgres import PostgresJobStore

        return PostgresJobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(url_or_path: str | Path) -> JobStore:
    """Open the job store that `url_or_path` names (see the module docstring)."""
    if isinstance(url_or_path, Path):
        return SqliteJobStore(url_or_path)
    text = url_or_path.strip()
    if not text:
        raise ValueError("empty job store location")
    if "://" not in text:
        return SqliteJobStore(Path(text))
    scheme = urlsplit(text).scheme.lower()
    if scheme == "memory":
        return MemoryJobStore()
    if scheme == "sqlite":
        # sqlite:///abs/path -> /abs/path; sqlite://rel/path -> rel/path
        path = text.split("://", 1)[1]
        if not path or path == "/":
            raise ValueError("sqlite:// needs a file path, e.g. sqlite:///var/lib/voxtrace/jobs.db")
        return SqliteJobStore(Path(path))
    if scheme in ("postgresql", "postgres"):
        from voxtrace.store.postgres import PostgresJobStore

        return PostgresJobStore(text)
    if scheme in ("redis", "rediss"):
        raise ValueError("there is no Redis job store; use postgresql:// for several machines")
    raise ValueError(
        f"unknown job store scheme {scheme!r}: use memory://, sqlite://, postgresql:// or a path"
    )
