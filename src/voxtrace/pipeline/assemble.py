"""Join words, speakers and prosody into caption segments and the contract's JSON.

Segments are captions, cut by `captions.CaptionRules`. The wire shape of `result` is
`voxtrace.contract.result_to_contract` (re-exported here for older imports).
"""

from __future__ import annotations

from collections.abc import Sequence

from voxtrace.contract import result_to_contract
from voxtrace.domain import (
    Segment,
    SpeakerTurn,
    Transcription,
    Word,
    WordProsody,
)
from voxtrace.pipeline.captions import CaptionRules, cut_captions, layout_lines

__all__ = [
    "DEFAULT_SPEAKER",
    "CaptionRules",
    "assign_speaker",
    "build_segments",
    "result_to_contract",
]

DEFAULT_SPEAKER = "SPEAKER_00"


def assign_speaker(start_s: float, end_s: float, turns: Sequence[SpeakerTurn]) -> str:
    """The speaker who talks over most of the span, counting only the leading voice
    where two overlap (`dominant` turns; any turn when none leads there); the nearest
    turn's speaker when none overlaps."""
    if not turns:
        return DEFAULT_SPEAKER
    for candidates in ([t for t in turns if t.dominant], turns):
        cover: dict[str, float] = {}
        for turn in candidates:
            overlap = min(end_s, turn.end_s) - max(start_s, turn.start_s)
            if overlap > 0:
                cover[turn.speaker_id] = cover.get(turn.speaker_id, 0.0) + overlap
        if cover:
            return max(cover, key=cover.__getitem__)  # a tie goes to the earlier turn
    middle = (start_s + end_s) / 2
    nearest = min(turns, key=lambda t: max(t.start_s - middle, middle - t.end_s, 0.0))
    return nearest.speaker_id


def build_segments(
    transcription: Transcription,
    prosody: Sequence[WordProsody],
    turns: Sequence[SpeakerTurn],
    rules: CaptionRules | None = None,
) -> list[Segment]:
    """Caption segments from the transcription's words (in order, one prosody per word),
    cut by `rules` (the transcription language's defaults when None)."""
    rules = rules or CaptionRules.for_language(transcription.language)
    raw_words = [w for seg in transcription.segments for w in seg.words]
    if len(raw_words) != len(prosody):
        raise ValueError("prosody must hold exactly one entry per transcribed word")
    words = [
        Word(
            text=raw.text.strip(),
            start_s=raw.start_s,
            end_s=raw.end_s,
            confidence=raw.probability,
            speaker_id=assign_speaker(raw.start_s, raw.end_s, turns),
            volume_db=p.volume_db,
            pitch_hz=p.pitch_hz,
            voiced=p.voiced,
            pitch_hz_raw=p.pitch_hz_raw,
        )
        for raw, p in zip(raw_words, prosody, strict=True)
        if raw.text.strip()
    ]
    return [_make_segment(caption, rules) for caption in cut_captions(words, rules)]


def _make_segment(words: Sequence[Word], rules: CaptionRules) -> Segment:
    texts = [w.text for w in words]
    lines = layout_lines(texts, rules) or [rules.joiner.join(texts)]
    return Segment(
        start_s=words[0].start_s,
        end_s=max(w.end_s for w in words),
        speaker_id=words[0].speaker_id,
        text=rules.joiner.join(texts),
        words=tuple(words),
        confidence=sum(w.confidence for w in words) / len(words),
        lines=tuple(lines),
    )
