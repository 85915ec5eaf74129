"""What the store backends share about rows: the outbox states, the typed records a
store hands out besides `Job`, and the mappers from a database row to them.

SQLite hands JSON columns over as text, PostgreSQL as decoded values: the mappers take
either, so both backends build the same `Job` and `OutboxItem` the same way.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, TypedDict, cast

from voxtrace.domain import Job, JobOptions, JobStatus, OutboxItem

__all__ = [
    "CallbackLogEntry",
    "OutboxState",
    "WorkerStatus",
    "callback_log_entry",
    "job_from_row",
    "outbox_item_from_row",
    "worker_status",
]


class OutboxState(enum.StrEnum):
    """Where one callback of the outbox stands."""

    PENDING = "pending"  # waiting for (its next) delivery attempt
    DELIVERED = "delivered"  # the backend answered 2xx
    DEAD = "dead"  # given up: a final answer, or out of its retry window
    SUPERSEDED = "superseded"  # a newer progress callback of the job replaced it

    @property
    def sql(self) -> str:
        """The state as an SQL literal, for the queries of the SQL backends."""
        return f"'{self.value}'"


class CallbackLogEntry(TypedDict):
    """One callback of a job, as `GET /api/jobs/{job_id}` shows it."""

    seq: int
    status: str | None
    progress: int | None
    terminal: bool
    state: str  # an OutboxState value
    attempts: int
    last_error: str | None
    created_at: float
    delivered_at: float | None


class WorkerStatus(TypedDict, total=False):
    """A worker as it last reported itself (`JobStore.live_workers`)."""

    worker_id: str
    pid: int
    models_loaded: bool
    state: str  # idle | busy
    job_id: str
    last_seen: float


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def job_from_row(row: Mapping[str, Any]) -> Job:
    result = row["result"]
    return Job(
        job_id=row["job_id"],
        video_url=row["video_url"],
        callback_base_url=row["callback_base_url"],
        options=JobOptions.from_dict(_json(row["options"])),
        status=JobStatus(row["status"]),
        progress=row["progress"],
        message=row["message"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker_id=row["worker_id"],
        lease_expires_at=row["lease_expires_at"],
        result=_json(result) if result is not None else None,
        error_code=row["error_code"],
        error_message=row["error_message"],
        not_before=row["not_before"],
    )


def outbox_item_from_row(row: Mapping[str, Any]) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        job_id=row["job_id"],
        seq=row["seq"],
        base_url=row["base_url"],
        payload=_json(row["payload"]),
        terminal=bool(row["terminal"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
    )


def callback_log_entry(row: Mapping[str, Any]) -> CallbackLogEntry:
    return CallbackLogEntry(
        seq=row["seq"],
        status=row["status"],
        progress=row["progress"],
        terminal=bool(row["terminal"]),
        state=OutboxState(row["state"]).value,
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )


def worker_status(worker_id: str, info: Any, last_seen: float) -> WorkerStatus:
    """A worker row: the info it reported (JSON), with its id and when it was seen."""
    status = cast(WorkerStatus, dict(_json(info)))
    status["worker_id"] = worker_id
    status["last_seen"] = last_seen
    return status
