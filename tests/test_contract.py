"""The wire contract's one module: one JSON encoding for what is stored and what is sent,
and the progress table's first and last messages from STAGES."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from voxtrace.callbacks import encode_body
from voxtrace.config import get_settings
from voxtrace.contract import completed_payload, progress_payload, strict_json
from voxtrace.domain import NewJob
from voxtrace.models import ModelBundle
from voxtrace.pipeline.runner import STAGES
from voxtrace.store import SqliteJobStore
from voxtrace.worker import JobRunner


def test_the_bytes_sent_are_the_text_stored() -> None:
    """The "same bytes on retry" guarantee: the dispatcher sends the stored text as is."""
    payload = completed_payload("잡-1", {"segments": [{"text": "안녕하세요", "start_time": 0.5}]})
    assert encode_body(payload) == strict_json(payload).encode("utf-8")
    assert "안녕하세요" in strict_json(payload)  # UTF-8, not \\u escapes
    assert json.loads(encode_body(payload)) == payload
    with pytest.raises(ValueError):
        strict_json(progress_payload("j", 1, "x") | {"progress": float("nan")})


def test_a_job_reports_the_first_and_last_messages_of_the_progress_table(
    tmp_path: Path,
) -> None:
    """A job that fails at once (the free-disk floor, last attempt) still said
    STAGES' initialisation message first."""
    store = SqliteJobStore(tmp_path / "jobs.db")
    settings = get_settings(data_dir=tmp_path, min_free_disk_mb=2**40, max_attempts=1)
    store.submit(NewJob("j1", "https://h/v.mp4", "http://backend"), 10, now=time.time())
    job = store.claim("w1", lease_s=30, now=time.time())
    assert job is not None
    JobRunner(settings, store, ModelBundle(whisper=None), "w1").run(job)  # type: ignore[arg-type]
    stored = store.get("j1")
    assert stored is not None and stored.error_code == "INSUFFICIENT_RESOURCES"
    log = store.callback_log("j1")
    assert [e["status"] for e in log] == ["processing", "failed"]
    store.close()
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        (body,) = conn.execute("SELECT payload FROM outbox ORDER BY seq LIMIT 1").fetchone()
    assert json.loads(body)["message"] == STAGES["init"][2]
