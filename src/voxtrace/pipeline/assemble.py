"""Join words, speakers and prosody into caption segments and the contract's JSON.

Segments are cut for reading: at a change of speaker, at the end of a sentence, at a
pause, and before they grow too long. `result_to_contract` is the one place that knows
the wire shape of `result` and guarantees its numeric invariants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voxtrace.domain import (
    Result,
    Segment,
    SpeakerTurn,
    TranscribedSegment,
    Transcription,
    Word,
    WordProsody,
)
from voxtrace.pipeline.prosody import MAX_PITCH_HZ, MAX_VOLUME_DB, MIN_PITCH_HZ, MIN_VOLUME_DB

__all__ = [
    "DEFAULT_SPEAKER",
    "SegmentRules",
    "SegmentTextStream",
    "assign_speaker",
    "build_segments",
    "result_to_contract",
]

DEFAULT_SPEAKER = "SPEAKER_00"
_SENTENCE_ENDS = (".", "?", "!", "…", "。", "？", "！", "｡", "؟", "।")
# Words ending in "." that do not end a sentence (compared lower-case, without the dot).
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "mt"}
)
_CLAUSE_ENDS = (",", ";", ":", "，", "、", "；", "：")


@dataclass(frozen=True)
class SegmentRules:
    max_pause_s: float = 1.0
    max_duration_s: float = 8.0
    max_words: int = 20


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
    rules: SegmentRules | None = None,
) -> list[Segment]:
    """Caption segments from the transcription's words (in order, one prosody per word)."""
    rules = rules or SegmentRules()
    raw_words = [w for seg in transcription.segments for w in seg.words]
    if len(raw_words) != len(prosody):
        raise ValueError("prosody must hold exactly one entry per transcribed word")
    words = [
        Word(
            text=raw.text,
            start_s=raw.start_s,
            end_s=raw.end_s,
            confidence=raw.probability,
            speaker_id=assign_speaker(raw.start_s, raw.end_s, turns),
            volume_db=p.volume_db,
            pitch_hz=p.pitch_hz,
        )
        for raw, p in zip(raw_words, prosody, strict=True)
    ]
    return [
        _make_segment(part)
        for sentence in _sentences(words, rules)
        for part in _split_long(sentence, rules)
    ]


def _sentences(words: Sequence[Word], rules: SegmentRules) -> list[list[Word]]:
    """Words grouped at natural cuts; a cut depends only on the two words around it."""
    sentences: list[list[Word]] = []
    for word in words:
        if sentences and not _is_boundary(sentences[-1][-1], word, rules):
            sentences[-1].append(word)
        else:
            sentences.append([word])
    return sentences


class SegmentTextStream:
    """The caption texts `build_segments` will produce, as soon as each is certain.

    Fed the transcription segment by segment (while Whisper still decodes), it yields
    the texts of every sentence a later word has closed; `finish()` yields the rest.
    Text depends only on words, timing and speaker turns (known before transcription),
    never on prosody, so these are exactly the final segments' texts.
    """

    def __init__(self, turns: Sequence[SpeakerTurn], rules: SegmentRules | None = None) -> None:
        self._turns = turns
        self._rules = rules or SegmentRules()
        self._open: list[Word] = []  # words of the sentence no later word has closed yet

    def add(self, segment: TranscribedSegment) -> list[str]:
        for raw in segment.words:
            self._open.append(
                Word(
                    text=raw.text,
                    start_s=raw.start_s,
                    end_s=raw.end_s,
                    confidence=raw.probability,
                    speaker_id=assign_speaker(raw.start_s, raw.end_s, self._turns),
                    volume_db=0.0,
                    pitch_hz=0.0,
                )
            )
        sentences = _sentences(self._open, self._rules)
        if len(sentences) < 2:
            return []
        self._open = sentences[-1]
        return self._texts(sentences[:-1])

    def finish(self) -> list[str]:
        texts = self._texts(_sentences(self._open, self._rules))
        self._open = []
        return texts

    def _texts(self, sentences: Sequence[list[Word]]) -> list[str]:
        return [
            _join_words(part)
            for sentence in sentences
            for part in _split_long(sentence, self._rules)
        ]


def _is_boundary(last: Word, nxt: Word, rules: SegmentRules) -> bool:
    """A natural cut: another speaker, the end of a sentence, or a pause."""
    return (
        nxt.speaker_id != last.speaker_id
        or _ends_sentence(last.text)
        or nxt.start_s - last.end_s > rules.max_pause_s
    )


def _ends_sentence(text: str) -> bool:
    """Sentence-final punctuation, except after an abbreviation or an initial ("J.")."""
    text = text.strip()
    if not text.endswith(_SENTENCE_ENDS):
        return False
    if text.endswith(".") and not text.endswith(".."):
        stem = text[:-1].lower()
        if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
            return False
    return True


def _fits(words: Sequence[Word], rules: SegmentRules) -> bool:
    duration_s = words[-1].end_s - words[0].start_s
    return duration_s <= rules.max_duration_s and len(words) <= rules.max_words


def _split_long(words: list[Word], rules: SegmentRules) -> list[list[Word]]:
    """Cut a too-long sentence into as few, evenly sized captions as the limits allow,
    each cut preferring a comma or a pause near its ideal place.

    A greedy cut at the length limit leaves orphans ("for them." alone on screen).
    """
    if _fits(words, rules) or len(words) < 2:
        return [words]
    total_s = max(1e-6, words[-1].end_s - words[0].start_s)
    pieces = math.ceil(max(len(words) / rules.max_words, total_s / rules.max_duration_s))
    pieces = max(2, pieces)
    best_i, best_score = 1, -math.inf
    for i in range(1, len(words)):
        if not _fits(words[:i], rules):
            break
        left_s = words[i - 1].end_s - words[0].start_s
        balance = abs(pieces * left_s / total_s - 1)  # 0 = an exact 1/pieces share
        pause_s = max(0.0, words[i].start_s - words[i - 1].end_s)
        clause = 0.35 if words[i - 1].text.rstrip().endswith(_CLAUSE_ENDS) else 0.0
        score = clause + min(pause_s, 1.0) - balance
        if score > best_score:
            best_i, best_score = i, score
    return [words[:best_i], *_split_long(words[best_i:], rules)]


def _join_words(words: Sequence[Word]) -> str:
    """faster-whisper words carry their own leading space where the language puts one
    (none in CJK, none inside a word split into pieces like " ill-di" + "sposed")."""
    return "".join(w.text for w in words).strip()


def _make_segment(words: Sequence[Word]) -> Segment:
    return Segment(
        start_s=words[0].start_s,
        end_s=max(w.end_s for w in words),
        speaker_id=words[0].speaker_id,
        text=_join_words(words),
        words=tuple(words),
        confidence=sum(w.confidence for w in words) / len(words),
    )


# ------------------------------------------------------------------- wire shape


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
