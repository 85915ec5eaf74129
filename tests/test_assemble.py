"""Caption segmentation, speaker assignment, the contract's result shape, SRT/VTT."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace

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
from voxtrace.pipeline.captions import CaptionRules
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
    t = transcription(timed("Mr. Smith came. Did he go there? Yes, he did."))
    segments = build_segments(t, flat_prosody(t), [])
    assert texts(segments) == ["Mr. Smith came.", "Did he go there?", "Yes, he did."]
    # a one-word sentence does not stand alone as a caption when it can join one
    t = transcription(timed("Mr. Smith came. Did he? Yes!"))
    assert texts(build_segments(t, flat_prosody(t), [])) == ["Mr. Smith came.", "Did he? Yes!"]
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
        "start",
        "end",
        "duration",
        "speaker",
        "text",
        "lines",
        "confidence",
        "words",
        "emotion",
    }
    assert (first["start"], first["end"], first["duration"]) == (0.123, 0.9, 0.777)
    assert first["lines"] == ["Hello world."]  # no suggested lines: the text as one
    assert out["speakers"] == ["SPEAKER_01", "SPEAKER_03"]
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
        "voiced": False,  # made without a measured f0
        "pitch_hz_raw": None,
        "volume_rel_db": 0.0,  # the speaker's median of -19.876, -60 (clamped), -19.876
        "pitch_rel_st": None,
    }
    assert world["volume_db"] == -60.0 and world["pitch_hz"] == 100.0
    assert world["confidence"] == 0.0


def test_subtitles() -> None:
    result = make_result()
    srt = to_srt(result)
    assert srt.startswith("1\n00:00:00,123 --> 00:00:00,900\nHello world.\n")
    assert "\n3\n00:00:02,000 --> 00:00:02,500\nBye.\n" in srt
    vtt = to_vtt(result)
    assert vtt.startswith("WEBVTT\n\n00:00:00.123 --> 00:00:00.900\n<v SPEAKER_01>Hello world.\n")


def test_cues_have_the_segment_lines_and_stay_up_long_enough_to_read() -> None:
    lines = ("one two three four five", "six seven eight nine ten")
    words = tuple(
        Word(t, 0.3 * i, 0.3 * i + 0.25, 0.9, "SPEAKER_01", -20.0, 150.0)
        for i, t in enumerate(" ".join(lines).split())
    )
    fast = Segment(0.0, 2.95, "SPEAKER_01", " ".join(lines), words, 0.9, lines=lines)
    later = Segment(10.0, 11.0, "SPEAKER_02", "Bye.", words[:1], 0.9, lines=("Bye.",))
    result = Result("a.mp4", 12.0, "en", (fast, later))
    srt = to_srt(result)
    # 48 characters at 20 a second need 2.4 s: the speech's own 2.95 s is enough
    assert srt.startswith(
        "1\n00:00:00,000 --> 00:00:02,950\none two three four five\nsix seven eight nine ten\n"
    )
    slow_reader = CaptionRules(max_chars_per_s=5.0)  # 48 / 5 = 9.6 s, capped at 7 s
    assert "00:00:00,000 --> 00:00:07,000" in to_srt(result, slow_reader)
    tight = Result("a.mp4", 12.0, "en", (fast, replace(later, start_s=4.0, end_s=5.0)))
    assert "00:00:00,000 --> 00:00:04,000" in to_srt(tight, slow_reader)  # not past the next
    assert "<v SPEAKER_02>Bye.\n" in to_vtt(result)


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


def test_prosody_relative_to_the_speaker_and_statistics() -> None:
    def word(t: str, speaker: str, volume_db: float, f0: float | None) -> Word:
        pitch = 100.0 if f0 is None or f0 < 100 else f0  # the contract's clamped value
        return Word(t, 0.0, 0.1, 0.9, speaker, volume_db, pitch, f0 is not None, f0)

    a = (word("a", "S1", -30.0, 80.0), word("b", "S1", -20.0, 160.0), word("c", "S1", -10.0, None))
    b = (word("d", "S2", -40.0, 200.0), word("e", "S2", -36.0, 400.0))
    result = Result(
        "x.mp4",
        5.0,
        "en",
        (
            Segment(0.0, 1.0, "S1", "a b c", a, 0.9),
            Segment(1.0, 2.0, "S2", "d e", b, 0.9),
        ),
    )
    out = result_to_contract(result)
    json.dumps(out, allow_nan=False)
    first, second = out["segments"]
    low, mid, unvoiced = first["words"]
    assert (low["pitch_hz"], low["pitch_hz_raw"], low["voiced"]) == (100.0, 80.0, True)
    assert unvoiced["voiced"] is False and unvoiced["pitch_hz_raw"] is None
    assert unvoiced["pitch_rel_st"] is None and unvoiced["pitch_hz"] == 100.0
    # S1's medians: volume -20 dB, pitch 120 Hz (of its voiced words 80 and 160)
    assert [w["volume_rel_db"] for w in first["words"]] == [-10.0, 0.0, 10.0]
    assert low["pitch_rel_st"] == round(12 * math.log2(80 / 120), 2)
    assert mid["pitch_rel_st"] == round(12 * math.log2(160 / 120), 2)
    assert [w["pitch_rel_st"] for w in second["words"]] == [-7.02, 4.98]  # from 300 Hz
    volume, pitch = out["volume_statistics"], out["pitch_statistics"]
    assert volume["global_min_db"] == -40.0 and volume["global_max_db"] == -10.0
    assert volume["global_mean_db"] == -27.2 and volume["baseline_db"] == -30.0
    assert volume["whisper_threshold_db"] == -36.0 and volume["loud_threshold_db"] == -20.0
    assert volume["per_speaker"]["S2"]["baseline_db"] == -38.0
    assert pitch["global_min_hz"] == 80.0 and pitch["baseline_hz"] == 180.0
    assert set(pitch) == {
        "global_min_hz",
        "global_max_hz",
        "global_mean_hz",
        "baseline_hz",
        "low_threshold_hz",
        "high_threshold_hz",
        "per_speaker",
    }
    assert out["speakers"] == ["S1", "S2"]
    assert all(isinstance(s, str) for s in out["speakers"])
