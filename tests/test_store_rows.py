"""The row mappers the SQL backends share, and the outbox states against the schema."""

from __future__ import annotations

import json
import re

from voxtrace.domain import JobStatus
from voxtrace.store import postgres
from voxtrace.store.rows import (
    OutboxState,
    callback_log_entry,
    job_from_row,
    outbox_item_from_row,
    worker_status,
)

_JOB = {
    "job_id": "j1",
    "video_url": "https://h/v.mp4",
    "callback_base_url": "http://b",
    "options": {"language": "ko", "num_speakers": 2},
    "status": "completed",
    "progress": 100,
    "message": "Processing complete",
    "attempts": 1,
    "created_at": 1.0,
    "updated_at": 2.0,
    "started_at": 1.5,
    "finished_at": 2.0,
    "worker_id": None,
    "lease_expires_at": None,
    "result": {"segments": []},
    "error_code": None,
    "error_message": None,
    "not_before": None,
}


def test_a_job_row_reads_the_same_from_json_text_and_decoded_json() -> None:
    """SQLite hands JSON columns over as text, PostgreSQL decoded: one Job either way."""
    as_text = {**_JOB, "options": json.dumps(_JOB["options"]), "result": json.dumps(_JOB["result"])}
    job = job_from_row(_JOB)
    assert job_from_row(as_text) == job
    assert job.status is JobStatus.COMPLETED
    assert (job.options.language, job.options.num_speakers) == ("ko", 2)
    assert job.result == {"segments": []}


def test_an_outbox_row_and_a_log_row() -> None:
    row = {
        "id": 7,
        "job_id": "j1",
        "seq": 3,
        "base_url": "http://b",
        "payload": '{"status": "processing", "progress": 40}',
        "terminal": 0,
        "attempts": 2,
        "created_at": 1.0,
        "next_attempt_at": 3.0,
    }
    item = outbox_item_from_row(row)
    assert (item.payload, item.terminal) == ({"status": "processing", "progress": 40}, False)
    entry = callback_log_entry(
        {
            "seq": 3,
            "status": "processing",
            "progress": 40,
            "terminal": 0,
            "state": "superseded",
            "attempts": 0,
            "last_error": None,
            "created_at": 1.0,
            "delivered_at": None,
        }
    )
    assert entry["terminal"] is False and entry["state"] == OutboxState.SUPERSEDED


def test_a_worker_row_keeps_what_the_worker_reported() -> None:
    status = worker_status("n/1/0.1", '{"pid": 5, "state": "busy", "job_id": "j1"}', 9.0)
    assert status == {
        "pid": 5,
        "state": "busy",
        "job_id": "j1",
        "worker_id": "n/1/0.1",
        "last_seen": 9.0,
    }


def test_the_postgres_schema_allows_exactly_the_outbox_states() -> None:
    schema = " ".join(postgres._SCHEMA_V1)
    check = re.search(r"CHECK \(state IN \(([^)]*)\)\)", schema)
    assert check is not None
    assert {s.strip(" '") for s in check.group(1).split(",")} == {s.value for s in OutboxState}
