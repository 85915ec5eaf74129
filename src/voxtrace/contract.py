"""The wire contract (SPEC.md) in one module: what the backend receives, byte for byte.

    result_to_contract   a `Result` -> the contract's `result` object, every number
                         finite and within its range
    *_payload            the callback bodies (progress, completed, failed)
    strict_json          the one JSON encoding: stored payloads and the bytes sent are
                         the same text, so a retried callback carries the same bytes
                         (and the same HMAC) as its first attempt
    *_MESSAGE            the status messages the API and the callbacks use; the progress
                         messages are `pipeline.runner.STAGES`

Imports only `domain`: the API, the stores and the pipeline may all use it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from voxtrace.domain import JobStatus, Result

__all__ = [
    "ACCEPTED_MESSAGE",
    "COMPLETED_MESSAGE",
    "MAX_PITCH_HZ",
    "MAX_VOLUME_DB",
    "MIN_PITCH_HZ",
    "MIN_VOLUME_DB",
    "completed_payload",
    "failed_payload",
    "progress_payload",
    "result_to_contract",
    "strict_json",
]

# The contract's ranges for a word's loudness and pitch (SPEC.md).
MIN_VOLUME_DB = -60.0
MAX_VOLUME_DB = 0.0
MIN_PITCH_HZ = 100.0
MAX_PITCH_HZ = 1000.0

ACCEPTED_MESSAGE = "Processing started"  # POST process-video, a new job
COMPLETED_MESSAGE = "Processing completed"  # the completed callback and the job's status


def strict_json(data: Any) -> str:
    """Compact strict JSON: NaN/Infinity raise ValueError here, before a store writes
    anything (the backend could not read such a callback body)."""
    return json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------- result


def _finite(value: float, digits: int, low: float = -math.inf, high: float = math.inf) -> float:
    """Round and clamp; a non-finite value would break the backend's JSONB storage."""
    value = float(value)
    if not math.isfinite(value):
        value = low if math.isfinite(low) else 0.0
    return round(min(high, max(low, value)), digits)


def _round_distribution(probabilities: dict[str, float], digits: int) -> dict[str, float]:
    """Round probabilities so they still sum to exactly 1 (largest remainder first)."""
    scale = 10**digits
    values = {k: _finite(p, 12, 0.0, 1.0) for k, p in probabilities.items()}
    total = sum(values.values()) or 1.0
    exact = {k: v / total * scale for k, v in values.items()}
    units = {k: math.floor(v) for k, v in exact.items()}
    short = scale - sum(units.values())
    for k in sorted(exact, key=lambda k: exact[k] - units[k], reverse=True)[:short]:
        units[k] += 1
    return {k: u / scale for k, u in units.items()}


def result_to_contract(result: Result) -> dict[str, Any]:
    """The contract's `result` object: every number finite and within its range."""
    segments: list[dict[str, Any]] = []
    for seg in result.segments:
        entry: dict[str, Any] = {
            "start_time": _finite(seg.start_s, 3, 0.0),
            "end_time": _finite(max(seg.end_s, seg.start_s), 3, 0.0),
            "speaker": {"speaker_id": seg.speaker_id},
            "text": seg.text,
            "confidence": _finite(seg.confidence, 3, 0.0, 1.0),
            "words": [
                {
                    "word": w.text.strip(),
                    "start": _finite(w.start_s, 3, 0.0),
                    "end": _finite(max(w.end_s, w.start_s), 3, 0.0),
                    "volume_db": _finite(w.volume_db, 2, MIN_VOLUME_DB, MAX_VOLUME_DB),
                    "pitch_hz": _finite(w.pitch_hz, 2, MIN_PITCH_HZ, MAX_PITCH_HZ),
                    "confidence": _finite(w.confidence, 3, 0.0, 1.0),
                }
                for w in seg.words
            ],
        }
        if seg.emotion is not None:
            entry["emotion"] = {
                "emotion": seg.emotion.label,
                "confidence": _finite(seg.emotion.confidence, 3, 0.0, 1.0),
                "probabilities": _round_distribution(seg.emotion.probabilities, 3),
                "source": seg.emotion.source,
            }
        segments.append(entry)
    return {
        "metadata": {
            "filename": result.filename,
            "duration": _finite(result.duration_s, 3, 0.0),
            "total_segments": len(segments),
            "unique_speakers": len({seg.speaker_id for seg in result.segments}),
            "language": result.language,
        },
        "segments": segments,
    }


# ------------------------------------------------------------------- callbacks


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
        "message": COMPLETED_MESSAGE,
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
