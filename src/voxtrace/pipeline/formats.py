"""Subtitle renderings of a finished result (SRT and WebVTT), speaker-labelled."""

from __future__ import annotations

from voxtrace.domain import Result

__all__ = ["to_srt", "to_vtt"]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(result: Result) -> str:
    blocks = [
        f"{i}\n{_timestamp(seg.start_s, ',')} --> {_timestamp(seg.end_s, ',')}\n"
        f"[{seg.speaker_id}] {seg.text}\n"
        for i, seg in enumerate(result.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(result: Result) -> str:
    blocks = [
        f"{_timestamp(seg.start_s, '.')} --> {_timestamp(seg.end_s, '.')}\n"
        f"[{seg.speaker_id}] {seg.text}\n"
        for seg in result.segments
    ]
    return "\n".join(["WEBVTT\n", *blocks])
