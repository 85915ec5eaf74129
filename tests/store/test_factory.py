"""`open_store`: which backend a store URL names."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxtrace.store import MemoryJobStore, SqliteJobStore, open_store

# ------------------------------------------------------------------------ factory


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryJobStore)
    for location in (tmp_path / "a.db", str(tmp_path / "b.db"), f"sqlite://{tmp_path}/c.db"):
        opened = open_store(location)
        assert isinstance(opened, SqliteJobStore)
        opened.close()
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["a.db", "b.db", "c.db"]
    with pytest.raises(ValueError, match="no Redis job store"):
        open_store("redis://localhost:6379/0")
    with pytest.raises(ValueError, match="unknown job store"):
        open_store("mysql://db/jobs")
