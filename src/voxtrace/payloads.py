"""Callback bodies exactly as the contract (SPEC.md §3) defines them."""

from __future__ import annotations

from typing import Any

from voxtrace.domain import JobStatus

__all__ = ["completed_payload", "failed_payload", "progress_payload"]


def progress_payload(job_id: str, progress: int, message: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": JobStatus.PROCESSING.value,
        "progress": int(progress),
        "message": message,
    }


def completed_payload(job_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": JobStatus.COMPLETED.value,
        "progress": 100,
        "message": "Processing completed",
        "result": result,
    }


def failed_payload(job_id: str, progress: int, code: str, message: str) -> dict[str, Any]:
    """`progress` is where the job stopped; the store rewrites it to the stored value."""
    return {
        "job_id": job_id,
        "status": JobStatus.FAILED.value,
        "progress": int(progress),
        "error_message": message,
        "error_code": code,
    }
