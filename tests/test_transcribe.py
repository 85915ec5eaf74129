"""VAD and transcription with the bundled Whisper base on real speech."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import jiwer
import numpy as np
import numpy.typing as npt
import pytest

from voxtrace.domain import SpeechRegion, Transcription
from voxtrace.errors import TranscriptionError
from voxtrace.pipeline.audio import SAMPLE_RATE, extract_audio
from voxtrace.pipeline.transcribe import TranscribeOptions, transcribe
from voxtrace.pipeline.vad import VadOptions, detect_speech

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

pytestmark = pytest.mark.slow


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@pytest.fixture(scope="module")
def jfk(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> npt.NDArray[np.float32]:
    return extract_audio(data_dir / "jfk.flac", tmp_path_factory.mktemp("a"), 60, 60)


@pytest.fixture(scope="module")
def jfk_transcription(
    jfk: npt.NDArray[np.float32], whisper_model: WhisperModel
) -> tuple[Transcription, list[float]]:
    fractions: list[float] = []
    regions = detect_speech(jfk, VadOptions())
    result = transcribe(jfk, regions, whisper_model, TranscribeOptions(), fractions.append)
    return result, fractions


def test_vad_finds_nothing_in_room_tone(data_dir: Path, tmp_path: Path) -> None:
    silence = extract_audio(data_dir / "empty-8s.wav", tmp_path, 60, 60)
    assert detect_speech(silence, VadOptions()) == []


def test_vad_finds_the_speech(jfk: npt.NDArray[np.float32]) -> None:
    regions = detect_speech(jfk, VadOptions())
    assert regions
    assert all(0 <= r.start_s < r.end_s <= jfk.shape[0] / SAMPLE_RATE for r in regions)
    speech_s = sum(r.end_s - r.start_s for r in regions)
    assert 6.0 < speech_s <= 11.0


def test_jfk_is_transcribed_exactly(
    jfk_transcription: tuple[Transcription, list[float]], data_dir: Path
) -> None:
    result, _ = jfk_transcription
    reference = (data_dir / "jfk.txt").read_text()
    hypothesis = " ".join(s.text for s in result.segments)
    assert jiwer.wer(normalise(reference), normalise(hypothesis)) == 0.0
    assert result.language == "en"


def test_words_are_timed_plain_floats(
    jfk_transcription: tuple[Transcription, list[float]],
) -> None:
    result, _ = jfk_transcription
    words = [w for s in result.segments for w in s.words]
    assert len(words) == 22
    for seg in result.segments:
        assert type(seg.start_s) is float and seg.start_s == seg.words[0].start_s
    for word in words:
        assert type(word.start_s) is float and type(word.probability) is float
        assert 0.0 <= word.start_s <= word.end_s <= 11.1
        assert 0.0 <= word.probability <= 1.0
    starts = [w.start_s for w in words]
    assert starts == sorted(starts)
    assert words[0].text.strip() == "And" and words[0].start_s < 0.8


def test_progress_rises_to_one(jfk_transcription: tuple[Transcription, list[float]]) -> None:
    _, fractions = jfk_transcription
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0 and len(fractions) >= 2


def test_times_are_restored_to_the_original_timeline(
    jfk: npt.NDArray[np.float32], whisper_model: WhisperModel
) -> None:
    """Silence before the speech is cut out for decoding and added back to the times.

    The same speech regions, moved by the padding, give the decoder identical input, so
    every time must move by exactly the padding (decoded without the extra context
    either side, which the unshifted clip has no room for before its first word).
    """
    tight = TranscribeOptions(chunk_pad_s=0.0, whole_audio_max_s=0.0)
    offset_s = 7.0
    padded = np.concatenate([np.zeros(int(offset_s * SAMPLE_RATE), np.float32), jfk])
    assert detect_speech(padded, VadOptions())[0].start_s > offset_s - 1.0
    regions = [
        SpeechRegion(r.start_s + offset_s, r.end_s + offset_s)
        for r in detect_speech(jfk, VadOptions())
    ]
    shifted = transcribe(padded, regions, whisper_model, tight, lambda _: None)
    unshifted = [SpeechRegion(r.start_s - offset_s, r.end_s - offset_s) for r in regions]
    original = transcribe(jfk, unshifted, whisper_model, tight, lambda _: None)
    before = [w for s in original.segments for w in s.words]
    after = [w for s in shifted.segments for w in s.words]
    assert [w.text for w in after] == [w.text for w in before]
    for a, b in zip(after, before, strict=True):
        assert a.start_s == pytest.approx(b.start_s + offset_s, abs=0.011)
        assert a.end_s == pytest.approx(b.end_s + offset_s, abs=0.011)


def test_no_regions_means_no_decoding(jfk: npt.NDArray[np.float32]) -> None:
    class Untouchable:
        def transcribe(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the model must not run without speech")

    calls: list[float] = []
    result = transcribe(jfk, [], Untouchable(), TranscribeOptions(), calls.append)  # type: ignore[arg-type]
    assert result.segments == () and calls == []


def test_noise_gives_no_words(whisper_model: WhisperModel) -> None:
    noise = (np.random.default_rng(1).standard_normal(8 * SAMPLE_RATE) * 0.05).astype(np.float32)
    result = transcribe(
        noise, [SpeechRegion(0.0, 8.0)], whisper_model, TranscribeOptions(), lambda _: None
    )
    assert result.segments == ()


def test_decoder_errors_become_transcription_errors(
    jfk: npt.NDArray[np.float32], whisper_model: WhisperModel
) -> None:
    with pytest.raises(TranscriptionError) as info:
        transcribe(
            jfk,
            [SpeechRegion(0.0, 3.0)],
            whisper_model,
            TranscribeOptions(language="zz"),
            lambda _: None,
        )
    assert info.value.message == "Speech recognition failed"


def _count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the encoder passes that really run (the parent class's `encode`)."""
    from faster_whisper import WhisperModel as PlainWhisperModel

    calls: list[int] = []  # a hash of each encoded window
    original = PlainWhisperModel.encode

    def counting(self: PlainWhisperModel, features: npt.NDArray[np.float32]) -> object:
        calls.append(hash(np.ascontiguousarray(features).tobytes()))
        return original(self, features)

    monkeypatch.setattr(PlainWhisperModel, "encode", counting)
    return calls


def test_language_detection_costs_no_extra_encoder_pass(
    jfk: npt.NDArray[np.float32], whisper_model: WhisperModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faster-whisper alone encodes the first window twice when it detects the language;
    the loaded model encodes it once, and says the same as when told the language."""
    regions = [SpeechRegion(0.0, jfk.size / SAMPLE_RATE)]
    told = transcribe(jfk, regions, whisper_model, TranscribeOptions(language="en"), _ignore)
    calls = _count_encodes(monkeypatch)
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)  # something else encoded in between
    transcribe(silence, [SpeechRegion(0.0, 1.0)], whisper_model, TranscribeOptions(), _ignore)
    calls.clear()
    found = transcribe(jfk, regions, whisper_model, TranscribeOptions(), _ignore)
    assert found.language == "en" and found.language_probability > 0.5
    assert len(calls) == 1, calls  # an 11-s clip is one window
    assert [s.text for s in found.segments] == [s.text for s in told.segments]
    # over 30 s: detection and decoding share the first window; every window once
    long_audio = np.concatenate([jfk, jfk, jfk])
    calls.clear()
    regions = [SpeechRegion(0.0, long_audio.size / SAMPLE_RATE)]
    transcribe(long_audio, regions, whisper_model, TranscribeOptions(), _ignore)
    assert len(calls) >= 2 and len(set(calls)) == len(calls), calls


def test_a_short_file_is_read_whole_even_where_the_vad_heard_little(
    jfk: npt.NDArray[np.float32], whisper_model: WhisperModel
) -> None:
    """Under one Whisper window the file is decoded whole, as bare Whisper decodes it;
    cut to the speech regions (`whole_audio_max_s=0`) only those are read."""
    regions = [SpeechRegion(0.3, 2.5)]
    english = TranscribeOptions(language="en")
    whole = transcribe(jfk, regions, whisper_model, english, lambda _: None)
    cut_opts = TranscribeOptions(language="en", whole_audio_max_s=0.0)
    cut = transcribe(jfk, regions, whisper_model, cut_opts, lambda _: None)
    whole_text = " ".join(s.text for s in whole.segments).lower()
    cut_text = " ".join(s.text for s in cut.segments).lower()
    assert "country" in whole_text and "country" not in cut_text
    assert whole.segments[-1].end_s > 9.0


def _ignore(_: float) -> None:
    return None
