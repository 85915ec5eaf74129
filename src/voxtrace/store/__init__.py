"""Job stores: one interface (`JobStore`), a backend per deployment, chosen by URL.

memory://                  in-process (tests, one-off runs)
sqlite:///abs/path/jobs.db one SQLite file shared by the API and worker processes
/path/jobs.db, jobs.db     the same, as a plain path
redis://...                not available yet (a later backend slots in here)
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from voxtrace.store.base import JobStore, Payload, WorkerInfo
from voxtrace.store.memory import MemoryJobStore
from voxtrace.store.sqlite import SqliteJobStore

__all__ = [
    "JobStore",
    "MemoryJobStore",
    "Payload",
    "SqliteJobStore",
    "WorkerInfo",
    "open_store",
]


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
    if scheme in ("redis", "rediss"):
        raise ValueError("the Redis job store is not available yet; use sqlite:// or a path")
    raise ValueError(f"unknown job store scheme {scheme!r}: use memory://, sqlite:// or a path")
