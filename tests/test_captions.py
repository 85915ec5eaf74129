"""Captions an editor can use: caption rules, whole words, prosody for animation, and
no words invented where nobody speaks. Pure rules first, then real audio."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxtrace.domain import JobOptions, Result, TranscribedWord
from voxtrace.models import ModelBundle
from voxtrace.pipeline.assemble import result_to_contract
from voxtrace.pipeline.captions import CaptionRules, cut_captions, ends_sentence, layout_lines
from voxtrace.pipeline.prosody import measure_words
from voxtrace.pipeline.runner import PipelineOptions, run_pipeline
from voxtrace.pipeline.transcribe import is_phantom, join_pieces, speech_evidence
from voxtrace.pipeline.vad import VAD_WINDOW_SAMPLES

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "mixA_en_7spk_exactref.mp4"


@dataclass(frozen=True)
class W:
    text: str
    start_s: float
    end_s: float
    speaker_id: str = "S1"


def timed(text: str, start_s: float = 0.0, step_s: float = 0.3, speaker: str = "S1") -> list[W]:
    return [
        W(t, start_s + i * step_s, start_s + i * step_s + 0.25, speaker)
        for i, t in enumerate(text.split())
    ]


def cut(words: Sequence[W], rules: CaptionRules | None = None) -> list[str]:
    rules = rules or CaptionRules()
    return [" ".join(w.text for w in c) for c in cut_captions(words, rules)]


# ------------------------------------------------------------------ the rules


def test_rules_per_language_and_per_request() -> None:
    en, ko = CaptionRules.for_language("en"), CaptionRules.for_language("ko")
    assert (en.max_chars_per_line, en.max_lines, en.max_caption_s, en.max_chars_per_s) == (
        42,
        2,
        7.0,
        20.0,
    )
    assert (ko.max_chars_per_line, ko.max_lines, ko.max_caption_s) == (18, 2, 7.0)
    assert CaptionRules.for_language("fr") == en  # space-delimited Latin script: English's
    assert not CaptionRules.for_language("ja").spaced
    job = JobOptions(language="ko", max_chars_per_line=16, max_lines=None, max_caption_s=5.0)
    mine = ko.with_overrides(job.to_dict())
    assert (mine.max_chars_per_line, mine.max_lines, mine.max_caption_s) == (16, 2, 5.0)
    assert JobOptions.from_dict(job.to_dict()) == job  # stored with the job, read back


def test_lines_are_balanced_and_within_the_limit() -> None:
    rules = CaptionRules()
    sentence = "And so my fellow Americans, ask not what your country can do for you"
    texts = sentence.split()
    lines = layout_lines(texts, rules)
    assert lines is not None and len(lines) == 2
    assert " ".join(lines) == " ".join(texts)
    assert all(len(line) <= 42 for line in lines)
    assert abs(len(lines[0]) - len(lines[1])) < 20
    assert layout_lines(["short", "text"], rules) == ["short text"]
    assert layout_lines(["x" * 30] * 3, rules) is None  # three 30-char words: no 2 lines
    assert layout_lines(["y" * 50], rules) == ["y" * 50]  # one long word: a line of its own


def test_a_speaker_change_always_ends_a_caption() -> None:
    words = timed("so I said", 0.0) + timed("yes", 0.9, speaker="S2") + timed("ok then", 1.2)
    assert cut(words) == ["so I said", "yes", "ok then"]


def test_cuts_prefer_sentence_ends_then_commas_then_pauses() -> None:
    sentence = "we went down to the river early in the morning and the water was cold."
    words = timed(sentence + " " + sentence)
    assert cut(words) == [sentence, sentence]  # two sentences of 72 characters each
    with_comma = "we went down to the river early, in the morning and the water was cold"
    words = timed(with_comma, step_s=0.35)
    rules = CaptionRules(max_chars_per_line=21)  # 42 characters a caption: must cut
    first, *_ = cut(words, rules)
    assert first.endswith("early,")
    paused = timed("we went down to the river early in")
    paused += timed("the morning and the water was cold", start_s=paused[-1].end_s + 0.6)
    assert cut(paused, rules)[0] == "we went down to the river early in"


def test_no_one_word_orphans_when_the_rules_allow() -> None:
    words = timed(" ".join(f"word{i}" for i in range(17)))  # 101 characters: two captions
    sizes = [len(c) for c in cut_captions(words, CaptionRules())]
    assert sum(sizes) == 17 and min(sizes) >= 5
    tail = timed("this sentence is long enough to need two captions on the screen today ok.")
    assert min(len(c) for c in cut_captions(tail, CaptionRules(max_chars_per_line=30))) > 1


def test_captions_respect_duration_and_characters() -> None:
    slow = timed(" ".join(f"w{i}" for i in range(30)), step_s=0.9)
    for caption in cut_captions(slow, CaptionRules()):
        assert caption[-1].end_s - caption[0].start_s <= 7.0
    ko = CaptionRules.for_language("ko")
    words = timed("그는 이리저리 피하면서 길 한 옆으로 걸어갔다 그리고 다시 돌아와서 집으로 갔다")
    for caption in cut_captions(words, ko):
        lines = layout_lines([w.text for w in caption], ko)
        assert lines is not None and len(lines) <= 2 and all(len(x) <= 18 for x in lines)


def test_abbreviations_do_not_end_sentences() -> None:
    assert ends_sentence("done.") and ends_sentence("really?") and ends_sentence('"no!"')
    assert not ends_sentence("Mr.") and not ends_sentence("J.") and not ends_sentence("so,")


# --------------------------------------------------------------- whole words


def test_pieces_without_a_leading_space_join_the_word_before() -> None:
    pieces = [
        TranscribedWord(" an", 0.0, 0.2, 0.9),
        TranscribedWord(" ill", 0.3, 0.5, 0.8),
        TranscribedWord("-disposed", 0.5, 0.9, 0.4),
        TranscribedWord(" man", 1.0, 1.2, 0.95),
        TranscribedWord(" 0", 1.3, 1.4, 0.9),
        TranscribedWord(".1", 1.4, 1.5, 0.7),
        TranscribedWord("%", 1.5, 1.7, 0.6),
    ]
    words = join_pieces(pieces)
    assert [w.text for w in words] == ["an", "ill-disposed", "man", "0.1%"]
    joined = words[1]
    assert (joined.start_s, joined.end_s, joined.probability) == (0.3, 0.9, 0.4)
    assert (words[3].start_s, words[3].end_s, words[3].probability) == (1.3, 1.7, 0.6)


def test_a_joined_word_has_the_loudness_and_pitch_of_its_whole_span() -> None:
    sr = 16000
    t = np.arange(sr) / sr
    # 0.5 s at 200 Hz (loud) then 0.5 s at 300 Hz (quiet)
    tone = np.where(t < 0.5, 0.5 * np.sin(2 * np.pi * 200 * t), 0.05 * np.sin(2 * np.pi * 300 * t))
    samples = tone.astype(np.float32)
    pieces = [TranscribedWord(" ill", 0.0, 0.5, 0.9), TranscribedWord("-bred", 0.5, 1.0, 0.5)]
    (word,) = join_pieces(pieces)
    (joined,) = measure_words(samples, [word])
    rms = math.sqrt((0.5**2 / 2 + 0.05**2 / 2) / 2)  # the energy of the whole second
    assert joined.volume_db == pytest.approx(20 * math.log10(rms), abs=0.2)
    assert joined.voiced and joined.pitch_hz_raw is not None
    assert 190 < joined.pitch_hz_raw < 310  # the median over both halves' voiced frames
    alone = measure_words(samples, pieces)
    assert alone[0].volume_db > joined.volume_db > alone[1].volume_db


# ------------------------------------------------------------- invented words


def test_phantom_phrases_and_count_ins() -> None:
    for text in (
        "Thanks for watching!",
        "Thank you for watching.",
        "시청해주셔서 감사합니다.",
        "시청해 주셔서 감사합니다",
        "One, two, three, four.",
        "1,2,3,4 1,2,3,4",
        "하나, 둘, 셋, 넷",
        "",
    ):
        assert is_phantom(text), text
    for text in (
        "Thanks for watching the kids yesterday.",
        "One of the two, three at most.",
        "We have four.",
        "오늘 날씨가 좋네요",
    ):
        assert not is_phantom(text), text


def test_speech_evidence_is_the_vad_probability_over_the_words() -> None:
    per_s = 16000 / VAD_WINDOW_SAMPLES  # 31.25 windows a second
    probs = np.zeros(int(4 * per_s), dtype=np.float32)
    probs[int(1 * per_s) : int(2 * per_s)] = 1.0
    on = [TranscribedWord("yes", 1.1, 1.9, 0.9)]
    off = [TranscribedWord("one", 2.5, 3.5, 0.99)]
    assert speech_evidence(probs, on) == pytest.approx(1.0)
    assert speech_evidence(probs, off) == pytest.approx(0.0)
    assert speech_evidence(probs, on + off) == pytest.approx(0.45, abs=0.05)
    assert speech_evidence(None, on) is None


# ----------------------------------------------------------------- real audio


def _run(path: Path, bundle: ModelBundle, tmp: Path, language: str | None = None) -> Result:
    return run_pipeline(
        str(path), tmp, bundle, PipelineOptions(), JobOptions(language=language), _ignore
    )


def _ignore(_: int, __: str) -> None:
    return None


@pytest.fixture(scope="module")
def full_bundle(bundle: ModelBundle) -> ModelBundle:
    """Whisper and the speaker models, as a worker loads them (speaker changes matter)."""
    from voxtrace.config import get_settings
    from voxtrace.models.speaker import load_speaker_models

    model_dir = get_settings().models_path / "speaker"
    if not model_dir.is_absolute():
        model_dir = REPO / model_dir
    return ModelBundle(whisper=bundle.whisper, diarizer=load_speaker_models(model_dir, threads=1))


@pytest.fixture(scope="module")
def sample_result(full_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> Result:
    return _run(SAMPLE, full_bundle, tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def korean_result(
    bundle: ModelBundle, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Result:
    return _run(data_dir / "test_ko.wav", bundle, tmp_path_factory.mktemp("ko"))


def _check_caption_rules(result: Result, rules: CaptionRules) -> None:
    assert result.segments
    for seg in result.segments:
        words = [w.text for w in seg.words]
        assert seg.text.split(" ") == words  # a word is one space-delimited unit of text
        assert " ".join(seg.lines) == seg.text
        assert 1 <= len(seg.lines) <= rules.max_lines
        if len(words) > 1:
            assert all(len(line) <= rules.max_chars_per_line for line in seg.lines), seg.lines
            assert seg.end_s - seg.start_s <= rules.max_caption_s + 1e-6
        assert {w.speaker_id for w in seg.words} == {seg.speaker_id}
        for line in seg.lines:  # lines break only between whole words
            assert all(unit in words for unit in line.split(" "))
    for before, after in zip(result.segments, result.segments[1:], strict=False):
        assert before.end_s <= after.start_s + 0.5  # in time order


def _check_contract(out: dict[str, Any]) -> None:
    from voxtrace.devbackend import contract_violations

    assert contract_violations(out) == []  # the deployed backend's schema and SPEC part 3
    json.dumps(out, allow_nan=False)
    assert isinstance(out["speakers"], list)
    assert all(isinstance(s, str) for s in out["speakers"])
    assert out["speakers"] == list(
        dict.fromkeys(s["speaker"]["speaker_id"] for s in out["segments"])
    )
    assert out["metadata"]["unique_speakers"] == len(out["speakers"])
    for key in ("global_min_db", "baseline_db", "whisper_threshold_db", "loud_threshold_db"):
        assert isinstance(out["volume_statistics"][key], float)
    assert set(out["volume_statistics"]["per_speaker"]) == set(out["speakers"])
    for seg in out["segments"]:
        assert (seg["start"], seg["end"]) == (seg["start_time"], seg["end_time"])
        assert seg["duration"] == pytest.approx(seg["end"] - seg["start"], abs=0.002)
        assert isinstance(seg["speaker"], dict) and isinstance(seg["speaker"]["speaker_id"], str)
        for w in seg["words"]:
            assert isinstance(w["volume_db"], float) and -60.0 <= w["volume_db"] <= 0.0
            assert isinstance(w["pitch_hz"], float) and 100.0 <= w["pitch_hz"] <= 1000.0
            assert 0.0 <= w["start"] <= w["end"]
            assert w["voiced"] is (w["pitch_hz_raw"] is not None)
            assert isinstance(w["volume_rel_db"], float)
            if w["voiced"]:
                assert isinstance(w["pitch_rel_st"], float)


@pytest.mark.slow
def test_the_90_s_sample_follows_the_caption_rules(sample_result: Result) -> None:
    _check_caption_rules(sample_result, CaptionRules.for_language("en"))
    assert len(sample_result.segments) >= 10
    # a speaker change ends a caption: each caption has one speaker (checked above), and
    # the diarizer found several
    assert len({s.speaker_id for s in sample_result.segments}) >= 3
    out = result_to_contract(sample_result)
    _check_contract(out)
    voiced = [w for s in out["segments"] for w in s["words"] if w["voiced"]]
    assert voiced and all(w["pitch_hz_raw"] > 0 for w in voiced)


@pytest.mark.slow
def test_hyphenated_words_of_the_sample_arrive_whole(
    sample_result: Result, full_bundle: ModelBundle, tmp_path: Path
) -> None:
    """The issue's "ill" + "-disposed": one word, with the prosody of its whole span."""
    from voxtrace.pipeline.audio import extract_audio

    words = [w for s in sample_result.segments for w in s.words]
    hyphenated = [w for w in words if "-" in w.text.strip("-")]
    assert hyphenated, [w.text for w in words]
    assert not [w for w in words if w.text.startswith("-")]
    samples = extract_audio(SAMPLE, tmp_path, 60, 600)
    for word in hyphenated:
        (expected,) = measure_words(
            samples, [TranscribedWord(word.text, word.start_s, word.end_s, 1.0)]
        )
        assert word.volume_db == pytest.approx(expected.volume_db)
        assert word.pitch_hz_raw == expected.pitch_hz_raw


@pytest.mark.slow
def test_korean_breaks_only_between_eojeol(korean_result: Result, data_dir: Path) -> None:
    assert korean_result.language == "ko"
    rules = CaptionRules.for_language("ko")
    _check_caption_rules(korean_result, rules)
    out = result_to_contract(korean_result)
    _check_contract(out)
    reference = (data_dir / "test_ko.txt").read_text(encoding="utf-8").split()
    words = [w["word"] for s in out["segments"] for w in s["words"]]
    assert len(words) == len(reference)  # one word per 어절, as in the text
    assert any(len(s["lines"]) == 2 for s in out["segments"])  # 27 characters: two lines


@pytest.mark.slow
@pytest.mark.parametrize("language", [None, "ko", "en"])
@pytest.mark.parametrize("name", ["acoustic_guitar_8s.wav", "hens_10s.wav", "empty-8s.wav"])
def test_non_speech_gives_no_words(
    name: str, language: str | None, bundle: ModelBundle, data_dir: Path, tmp_path: Path
) -> None:
    result = _run(data_dir / name, bundle, tmp_path, language)
    assert result.segments == ()
    out = result_to_contract(result)
    assert out["segments"] == [] and out["speakers"] == []
    json.dumps(out, allow_nan=False)


@dataclass(frozen=True)
class _Piece:  # the fields of faster-whisper's Word that _restore reads
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class _Raw:  # the fields of faster-whisper's Segment that _restore reads
    text: str
    words: list[_Piece]
    no_speech_prob: float


def _decided(text: str, vad_prob: float, no_speech_prob: float, language: str = "en") -> bool:
    """Whether a decoded segment over 1-3 s survives, the VAD saying `vad_prob` there."""
    from faster_whisper.vad import SpeechTimestampsMap

    from voxtrace.pipeline.transcribe import TranscribeOptions, _restore

    units = text.split()
    step = 2.0 / len(units)
    pieces = [
        _Piece(" " + u, 1.0 + i * step, 1.0 + (i + 1) * step, 0.99) for i, u in enumerate(units)
    ]
    probs = np.full(int(4 * 16000 / VAD_WINDOW_SAMPLES), vad_prob, dtype=np.float32)
    ts_map = SpeechTimestampsMap([{"start": 0, "end": 4 * 16000}], 16000)
    raw = _Raw(text, pieces, no_speech_prob)
    kept = _restore(raw, ts_map, TranscribeOptions(), language, probs)
    return kept is not None


def test_sure_sounding_inventions_go_where_the_vad_hears_no_speech() -> None:
    """The issue's guitar: "One, two, three, four" at word probability 0.99."""
    assert not _decided("One, two, three, four.", vad_prob=0.3, no_speech_prob=0.1)
    assert not _decided("1,2,3,4 1,2,3,4", vad_prob=0.3, no_speech_prob=0.1, language="ko")
    assert not _decided(
        "시청해주셔서 감사합니다.", vad_prob=0.9, no_speech_prob=0.45, language="ko"
    )
    assert not _decided("Thanks for watching!", vad_prob=0.4, no_speech_prob=0.05)
    # any text at all where the VAD hears nothing
    assert not _decided("The river was cold that morning.", vad_prob=0.05, no_speech_prob=0.1)


def test_real_speech_is_kept_even_when_it_sounds_like_a_phantom() -> None:
    assert _decided("Thank you.", vad_prob=0.9, no_speech_prob=0.05)
    assert _decided("감사합니다.", vad_prob=0.8, no_speech_prob=0.1, language="ko")
    assert _decided("One, two, three, four.", vad_prob=0.85, no_speech_prob=0.1)
    # quiet speech: the VAD unsure, the decoder sure, ordinary words
    assert _decided("we should go home now", vad_prob=0.3, no_speech_prob=0.2)


@pytest.mark.slow
def test_a_korean_recording_opening_in_english_is_detected_as_korean(
    bundle: ModelBundle, data_dir: Path, tmp_path: Path
) -> None:
    """33 s of English (JFK thrice) then a minute of Korean: Whisper's first window says
    English; the windows spread over the speech say Korean."""
    from voxtrace.pipeline.audio import extract_audio
    from voxtrace.pipeline.transcribe import TranscribeOptions, _detect_language

    english = extract_audio(data_dir / "jfk.flac", tmp_path, 60, 60)
    korean = extract_audio(data_dir / "test_ko.wav", tmp_path, 60, 60)
    speech = np.concatenate([english, english, english, *([korean] * 16)])
    first_window, _, _ = bundle.whisper.detect_language(audio=speech)
    assert first_window == "en"
    language, probability = _detect_language(bundle.whisper, speech, TranscribeOptions())
    assert language == "ko" and 0.5 < probability <= 1.0
    only_english = TranscribeOptions(candidate_languages=("en", "de"))
    assert _detect_language(bundle.whisper, speech, only_english)[0] == "en"
