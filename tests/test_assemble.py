"""Caption segmentation, speaker assignment, the contract's result shape, SRT/VTT."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest

from voxtrace.domain import (
    Emotion,
    Result,
    Segment,
    SpeakerTurn,
    TranscribedSegment,
    TranscribedWord,
    Transcription,
    Word,
    WordProsody,
)
from voxtrace.pipeline.assemble import assign_speaker, build_segments, result_to_contract
from voxtrace.pipeline.formats import to_srt, to_vtt


def words_from(spec: Sequence[tuple[str, float, float]]) -> tuple[TranscribedWord, ...]:
    return tuple(TranscribedWord(t, s, e, 0.8) for t, s, e in spec)


def transcription(*segments: Sequence[tuple[str, float, float]], lang: str = "en") -> Transcription:
    built = tuple(
        TranscribedSegment(seg[0][1], seg[-1][2], "".join(w[0] for w in seg), words_from(seg))
        for seg in segments
    )
    return Transcription(language=lang, language_probability=0.9, segments=built)


def flat_prosody(t: Transcription) -> list[WordProsody]:
    n = sum(len(s.words) for s in t.segments)
    return [WordProsody(volume_db=-20.0, pitch_hz=150.0, voiced=True)] * n


def texts(segments: Sequence[Segment]) -> list[str]:
    return [s.text for s in segments]


def timed(text: str, start_s: float = 0.0, step_s: float = 0.3) -> list[tuple[str, float, float]]:
    return [
        (f" {w}", start_s + i * step_s, start_s + i * step_s + 0.25)
        for i, w in enumerate(text.split())
    ]


def test_assign_speaker_by_largest_overlap() -> None:
    turns = [SpeakerTurn(0.0, 1.0, "SPEAKER_01"), SpeakerTurn(1.0, 3.0, "SPEAKER_02")]
    assert assign_speaker(0.8, 1.5, turns) == "SPEAKER_02"
    assert assign_speaker(0.2, 1.1, turns) == "SPEAKER_01"
    assert assign_speaker(5.0, 5.2, turns) == "SPEAKER_02"  # none overlaps: the nearest
    assert assign_speaker(0.2, 1.1, []) == "SPEAKER_00"


def test_in_overlapping_speech_a_word_goes_to_the_leading_voice() -> None:
    """SPEAKER_01 talks over SPEAKER_00 from 1 s to 2 s and leads there: the words there
    are SPEAKER_01's, however long SPEAKER_00's (secondary) turn is."""
    turns = [
        SpeakerTurn(0.0, 1.0, "SPEAKER_00"),
        SpeakerTurn(1.0, 2.0, "SPEAKER_00", dominant=False),
        SpeakerTurn(2.0, 4.0, "SPEAKER_00"),
        SpeakerTurn(1.0, 2.0, "SPEAKER_01"),
    ]
    assert assign_speaker(1.2, 1.6, turns) == "SPEAKER_01"
    assert assign_speaker(0.5, 1.1, turns) == "SPEAKER_00"  # leads most of the word
    assert assign_speaker(1.9, 2.6, turns) == "SPEAKER_00"  # pieces of one speaker add up
    secondary_only = [SpeakerTurn(1.0, 2.0, "SPEAKER_03", dominant=False)]
    assert assign_speaker(1.2, 1.6, secondary_only) == "SPEAKER_03"  # better than nobody


def test_splits_at_sentence_ends_but_not_after_abbreviations() -> None:
    t = transcription(timed("Mr. Smith came. Did he? Yes!"))
    segments = build_segments(t, flat_prosody(t), [])
    assert texts(segments) == ["Mr. Smith came.", "Did he?", "Yes!"]
    assert {s.speaker_id for s in segments} == {"SPEAKER_00"}


def test_splits_at_speaker_changes_and_pauses() -> None:
    t = transcription(timed("hello there my friend", 0.0), timed("and you", 3.0))
    turns = [SpeakerTurn(0.0, 0.55, "SPEAKER_01"), SpeakerTurn(0.55, 5.0, "SPEAKER_02")]
    segments = build_segments(t, flat_prosody(t), turns)
    assert texts(segments) == ["hello there", "my friend", "and you"]
    assert [s.speaker_id for s in segments] == ["SPEAKER_01", "SPEAKER_02", "SPEAKER_02"]
    assert segments[2].start_s == 3.0


def test_long_speech_is_cut_into_balanced_captions_preferring_commas() -> None:
    sentence = " ".join(f"w{i}," if i == 14 else f"w{i}" for i in range(30))
    t = transcription(timed(sentence, step_s=0.2))
    segments = build_segments(t, flat_prosody(t), [])
    assert [len(s.words) for s in segments] == [15, 15]
    assert segments[0].text.endswith("w14,")
    long_words = transcription(timed(" ".join(f"x{i}" for i in range(45)), step_s=0.1))
    # 45 words need 3 captions of at most 20: evenly sized, no 5-word orphan at the end
    sizes = [len(s.words) for s in build_segments(long_words, flat_prosody(long_words), [])]
    assert len(sizes) == 3 and sum(sizes) == 45 and min(sizes) >= 12 and max(sizes) <= 20
    # a long sentence that ends just past the limit keeps no one-word tail
    tail = transcription(timed(" ".join(f"z{i}" for i in range(22)) + ".", step_s=0.2))
    assert min(len(s.words) for s in build_segments(tail, flat_prosody(tail), [])) >= 3
    slow = transcription(timed(" ".join(f"y{i}" for i in range(12)), step_s=0.9))
    for seg in build_segments(slow, flat_prosody(slow), []):
        assert seg.end_s - seg.start_s <= 8.0


def test_cjk_words_join_without_spaces() -> None:
    t = transcription([("我", 0.0, 0.2), ("们", 0.2, 0.4), ("好。", 0.4, 0.6)], lang="zh")
    assert texts(build_segments(t, flat_prosody(t), [])) == ["我们好。"]


def test_segment_carries_words_prosody_and_mean_confidence() -> None:
    t = Transcription(
        "en",
        1.0,
        (
            TranscribedSegment(
                0.0,
                1.0,
                "Hi you",
                (TranscribedWord(" Hi", 0.0, 0.4, 0.5), TranscribedWord(" you", 0.5, 1.0, 1.0)),
            ),
        ),
    )
    prosody = [WordProsody(-10.0, 120.0, True), WordProsody(-30.0, 300.0, False)]
    (segment,) = build_segments(t, prosody, [])
    assert segment.confidence == pytest.approx(0.75)
    assert [(w.volume_db, w.pitch_hz) for w in segment.words] == [(-10.0, 120.0), (-30.0, 300.0)]
    with pytest.raises(ValueError):
        build_segments(t, prosody[:1], [])


def make_result() -> Result:
    words = (
        Word(" Hello", 0.12345, 0.5, 0.91234, "SPEAKER_01", -19.876, 851.0912),
        Word(" world.", 0.5, 0.9, math.nan, "SPEAKER_01", -math.inf, math.nan),
    )
    emotion = Emotion("joy", 0.81234, {"joy": 0.81234, "neutral": 0.18766})
    return Result(
        filename="talk.mp4",
        duration_s=143.391,
        language="en",
        segments=(
            Segment(0.12345, 0.9, "SPEAKER_01", "Hello world.", words, 0.91234, emotion),
            Segment(1.0, 1.5, "SPEAKER_01", "Again.", words[:1], 0.5),
            Segment(2.0, 2.5, "SPEAKER_03", "Bye.", words[:1], 0.5),
        ),
    )


def test_result_to_contract_has_the_exact_shape() -> None:
    out = result_to_contract(make_result())
    json.dumps(out, allow_nan=False)  # every number finite
    assert out["metadata"] == {
        "filename": "talk.mp4",
        "duration": 143.391,
        "total_segments": 3,
        "unique_speakers": 2,
        "language": "en",
    }
    first = out["segments"][0]
    assert set(first) == {
        "start_time",
        "end_time",
        "speaker",
        "text",
        "confidence",
        "words",
        "emotion",
    }
    assert first["speaker"] == {"speaker_id": "SPEAKER_01"}
    assert first["start_time"] == 0.123
    assert first["emotion"] == {
        "emotion": "joy",
        "confidence": 0.812,
        "probabilities": {"joy": 0.812, "neutral": 0.188},
        "source": "text",
    }
    assert "emotion" not in out["segments"][1]
    hello, world = first["words"]
    assert hello == {
        "word": "Hello",
        "start": 0.123,
        "end": 0.5,
        "volume_db": -19.88,
        "pitch_hz": 851.09,
        "confidence": 0.912,
    }
    assert world["volume_db"] == -60.0 and world["pitch_hz"] == 100.0
    assert world["confidence"] == 0.0


def test_subtitles() -> None:
    result = make_result()
    srt = to_srt(result)
    assert srt.startswith("1\n00:00:00,123 --> 00:00:00,900\n[SPEAKER_01] Hello world.\n")
    assert "\n3\n00:00:02,000 --> 00:00:02,500\n[SPEAKER_03] Bye.\n" in srt
    vtt = to_vtt(result)
    assert vtt.startswith("WEBVTT\n\n00:00:00.123 --> 00:00:00.900\n[SPEAKER_01] Hello world.\n")


def test_rounded_emotion_probabilities_still_sum_to_one() -> None:
    from voxtrace.contract import _round_distribution

    probs = {
        "anger": 0.0034,
        "disgust": 0.0004,
        "fear": 0.0004,
        "joy": 0.2064,
        "neutral": 0.7694,
        "sadness": 0.0064,
        "surprise": 0.0136,
    }
    rounded = _round_distribution(probs, 3)
    assert sum(rounded.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(abs(rounded[k] - probs[k]) <= 0.001 for k in probs)
    assert max(rounded, key=rounded.__getitem__) == "neutral"
