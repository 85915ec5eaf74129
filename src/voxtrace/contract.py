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
import statistics
from collections.abc import Sequence
from typing import Any

from voxtrace.domain import JobStatus, Result, Word

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


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _summary(values: Sequence[float], unit: str, digits: int = 2) -> dict[str, float] | None:
    """The keys the product's earlier ML server used: range, mean, median as the
    baseline, and the quartiles as whisper/loud (low/high for pitch) thresholds."""
    if not values:
        return None
    low_key, high_key = ("whisper", "loud") if unit == "db" else ("low", "high")
    return {
        f"global_min_{unit}": round(min(values), digits),
        f"global_max_{unit}": round(max(values), digits),
        f"global_mean_{unit}": round(statistics.fmean(values), digits),
        f"baseline_{unit}": round(statistics.median(values), digits),
        f"{low_key}_threshold_{unit}": round(_percentile(values, 0.25), digits),
        f"{high_key}_threshold_{unit}": round(_percentile(values, 0.75), digits),
    }


def _statistics(values: dict[str, list[float]], unit: str) -> dict[str, Any]:
    """Whole-file figures at the top level, the same per speaker under `per_speaker`."""
    every = [v for speaker_values in values.values() for v in speaker_values]
    whole: dict[str, Any] = dict(_summary(every, unit) or dict.fromkeys(_summary_keys(unit)))
    whole["per_speaker"] = {
        speaker: _summary(speaker_values, unit) for speaker, speaker_values in values.items()
    }
    return whole


def _summary_keys(unit: str) -> list[str]:
    return list(_summary([0.0], unit) or {})


def _word_values(result: Result) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per speaker (in order of first appearance): every word's volume_db, and the
    measured f0 of its voiced words."""
    volumes: dict[str, list[float]] = {}
    pitches: dict[str, list[float]] = {}
    for seg in result.segments:
        for w in seg.words:
            speaker = w.speaker_id or seg.speaker_id
            volumes.setdefault(speaker, []).append(
                _finite(w.volume_db, 6, MIN_VOLUME_DB, MAX_VOLUME_DB)
            )
            pitches.setdefault(speaker, [])
            raw = w.pitch_hz_raw
            if w.voiced and raw is not None and math.isfinite(raw) and raw > 0:
                pitches[speaker].append(float(raw))
    return volumes, pitches


def _word_entry(
    w: Word, volume_base_db: float | None, pitch_base_hz: float | None
) -> dict[str, Any]:
    volume_db = _finite(w.volume_db, 2, MIN_VOLUME_DB, MAX_VOLUME_DB)
    raw = w.pitch_hz_raw if w.voiced else None
    if raw is not None and not (math.isfinite(raw) and raw > 0):
        raw = None
    return {
        "word": w.text.strip(),
        "start": _finite(w.start_s, 3, 0.0),
        "end": _finite(max(w.end_s, w.start_s), 3, 0.0),
        "volume_db": volume_db,
        "pitch_hz": _finite(w.pitch_hz, 2, MIN_PITCH_HZ, MAX_PITCH_HZ),
        "confidence": _finite(w.confidence, 3, 0.0, 1.0),
        "voiced": raw is not None,
        "pitch_hz_raw": None if raw is None else round(raw, 2),
        "volume_rel_db": (
            None if volume_base_db is None else round(volume_db - volume_base_db, 2) + 0.0
        ),
        "pitch_rel_st": (
            None
            if raw is None or pitch_base_hz is None
            else round(12.0 * math.log2(raw / pitch_base_hz), 2) + 0.0
        ),
    }


def result_to_contract(result: Result) -> dict[str, Any]:
    """The contract's `result` object: every number finite and within its range.

    Extra (non-contract) fields: `speakers` (ids in order of first appearance),
    `volume_statistics`/`pitch_statistics`, per segment `start`/`end`/`duration`/`lines`,
    per word `confidence`, `voiced`, `pitch_hz_raw`, `volume_rel_db`, `pitch_rel_st`.
    Only the extra fields may be null (no measurement: an unvoiced word has no pitch).
    """
    volumes, pitches = _word_values(result)
    volume_base = {k: statistics.median(v) for k, v in volumes.items() if v}
    pitch_base = {k: statistics.median(v) for k, v in pitches.items() if v}
    speakers = list(dict.fromkeys(seg.speaker_id for seg in result.segments))
    segments: list[dict[str, Any]] = []
    for seg in result.segments:
        start = _finite(seg.start_s, 3, 0.0)
        end = _finite(max(seg.end_s, seg.start_s), 3, 0.0)
        entry: dict[str, Any] = {
            "start_time": start,
            "end_time": end,
            "start": start,
            "end": end,
            "duration": round(max(0.0, end - start), 3),
            "speaker": {"speaker_id": seg.speaker_id},
            "text": seg.text,
            "lines": list(seg.lines) or [seg.text],
            "confidence": _finite(seg.confidence, 3, 0.0, 1.0),
            "words": [
                _word_entry(
                    w,
                    volume_base.get(w.speaker_id or seg.speaker_id),
                    pitch_base.get(w.speaker_id or seg.speaker_id),
                )
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
        "speakers": speakers,
        "volume_statistics": _statistics(volumes, "db"),
        "pitch_statistics": _statistics(pitches, "hz"),
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
