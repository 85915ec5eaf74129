"""Renderings of a finished result: subtitles (SRT and WebVTT: one cue per segment, its
suggested `lines` as the cue's lines) and speaker turns (RTTM).

A cue stays on screen into the following gap until its text could be read at the
rules' reading speed (never past the next cue nor beyond `max_caption_s`). WebVTT names
the speaker with a voice tag (`<v SPEAKER_01>`, not shown as text); SRT has no such tag,
so its cues hold the lines alone.
"""

from __future__ import annotations

import re

from voxtrace.domain import Result, Segment, SpeakerTurn
from voxtrace.pipeline.captions import CaptionRules

__all__ = ["cue_times", "merge_turns", "to_rttm", "to_srt", "to_vtt"]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _lines(seg: Segment) -> list[str]:
    return list(seg.lines) or [seg.text]


def cue_times(result: Result, rules: CaptionRules | None = None) -> list[tuple[float, float]]:
    """(start, end) per segment: the speech's own span, held longer for reading."""
    rules = rules or CaptionRules.for_language(result.language)
    times: list[tuple[float, float]] = []
    segments = result.segments
    for i, seg in enumerate(segments):
        end = seg.end_s
        if rules.max_chars_per_s > 0:
            chars = sum(len(line) for line in _lines(seg))
            wanted = seg.start_s + chars / rules.max_chars_per_s
            limit = seg.start_s + rules.max_caption_s
            if i + 1 < len(segments):
                limit = min(limit, segments[i + 1].start_s)
            end = max(end, min(wanted, limit))
        times.append((seg.start_s, end))
    return times


def to_srt(result: Result, rules: CaptionRules | None = None) -> str:
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n"
        + "\n".join(_lines(seg))
        + "\n"
        for i, (seg, (start, end)) in enumerate(
            zip(result.segments, cue_times(result, rules), strict=True), start=1
        )
    ]
    return "\n".join(blocks)


def to_vtt(result: Result, rules: CaptionRules | None = None) -> str:
    blocks = []
    for seg, (start, end) in zip(result.segments, cue_times(result, rules), strict=True):
        lines = _lines(seg)
        lines[0] = f"<v {seg.speaker_id}>{lines[0]}"
        blocks.append(
            f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n" + "\n".join(lines) + "\n"
        )
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
