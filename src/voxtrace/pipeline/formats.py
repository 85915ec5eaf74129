"""Renderings of a finished result: subtitles (SRT, WebVTT) and speaker turns (RTTM)."""

from __future__ import annotations

import re

from voxtrace.domain import Result, SpeakerTurn

__all__ = ["merge_turns", "to_rttm", "to_srt", "to_vtt"]


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


def merge_turns(turns: tuple[SpeakerTurn, ...] | list[SpeakerTurn]) -> list[SpeakerTurn]:
    """Each speaker's turns with touching or overlapping pieces joined (a turn split where
    another voice starts to lead is one stretch of speech), sorted by time."""
    merged: list[SpeakerTurn] = []
    last: dict[str, int] = {}
    for turn in sorted(turns, key=lambda t: (t.start_s, t.end_s)):
        index = last.get(turn.speaker_id)
        if index is not None and turn.start_s <= merged[index].end_s + 1e-6:
            previous = merged[index]
            merged[index] = SpeakerTurn(
                previous.start_s, max(previous.end_s, turn.end_s), turn.speaker_id
            )
            continue
        last[turn.speaker_id] = len(merged)
        merged.append(SpeakerTurn(turn.start_s, turn.end_s, turn.speaker_id))
    return sorted(merged, key=lambda t: (t.start_s, t.end_s, t.speaker_id))


def to_rttm(result: Result) -> str:
    """NIST RTTM, one SPEAKER line per turn (overlapping turns stay overlapping):
    `SPEAKER <file> 1 <onset> <duration> <NA> <NA> <speaker> <NA> <NA>`."""
    uri = re.sub(r"\s+", "_", result.filename.rsplit(".", 1)[0]) or "audio"
    lines = [
        f"SPEAKER {uri} 1 {turn.start_s:.3f} {turn.end_s - turn.start_s:.3f} "
        f"<NA> <NA> {turn.speaker_id} <NA> <NA>\n"
        for turn in merge_turns(result.speaker_turns)
        if turn.end_s > turn.start_s
    ]
    return "".join(lines)
