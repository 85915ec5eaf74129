"""Per-word loudness and pitch on synthetic tones of known level and f0, and on speech."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pytest

from voxtrace.domain import TranscribedWord
from voxtrace.pipeline.audio import SAMPLE_RATE, extract_audio
from voxtrace.pipeline.prosody import measure_words
from voxtrace.pipeline.transcribe import TranscribeOptions, transcribe
from voxtrace.pipeline.vad import VadOptions, detect_speech

if TYPE_CHECKING:
    from faster_whisper import WhisperModel


def harmonic_tone(f0_hz: float, seconds: float, amplitude: float) -> npt.NDArray[np.float32]:
    """A voice-like tone: f0 plus four harmonics of falling strength."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * f0_hz * k * t) / k for k in range(1, 6))
    return (amplitude * wave / np.abs(wave).max()).astype(np.float32)


def word(start_s: float, end_s: float, text: str = " la") -> TranscribedWord:
    return TranscribedWord(text=text, start_s=start_s, end_s=end_s, probability=0.9)


def rms_db(chunk: npt.NDArray[np.float32]) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))))


def test_known_pitch_and_level() -> None:
    tone_a = harmonic_tone(220.0, 1.0, 0.5)
    tone_b = harmonic_tone(150.0, 1.0, 0.05)
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    samples = np.concatenate([tone_a, silence, tone_b])
    words = [word(0.2, 0.8), word(1.2, 1.8), word(2.2, 2.8)]
    a, gap, b = measure_words(samples, words)
    assert a.pitch_hz == pytest.approx(220.0, rel=0.01) and a.voiced
    assert b.pitch_hz == pytest.approx(150.0, rel=0.01) and b.voiced
    assert a.volume_db == pytest.approx(rms_db(tone_a), abs=0.1)
    assert b.volume_db == pytest.approx(rms_db(tone_b), abs=0.1)
    assert a.volume_db - b.volume_db == pytest.approx(20.0, abs=0.2)
    # The silent word: floor loudness, pitch borrowed from its neighbours, flagged.
    assert gap.volume_db == -60.0
    assert not gap.voiced
    assert gap.pitch_hz == pytest.approx((220.0 + 150.0) / 2, rel=0.01)


def test_values_stay_in_the_contract_ranges() -> None:
    low = harmonic_tone(80.0, 1.0, 1.0)  # a low voice below the contract's 100 Hz
    loud = np.ones(SAMPLE_RATE // 2, dtype=np.float32)  # DC at full scale: 0 dBFS, unvoiced
    samples = np.concatenate([low, loud])
    out = measure_words(samples, [word(0.1, 0.9), word(1.1, 1.4), word(1.45, 1.45), word(5, 6)])
    assert out[0].pitch_hz == 100.0 and out[0].voiced  # tracked at 80 Hz, clamped
    for p in out:
        assert 100.0 <= p.pitch_hz <= 1000.0
        assert -60.0 <= p.volume_db <= 0.0
        assert math.isfinite(p.pitch_hz) and math.isfinite(p.volume_db)
    assert out[1].volume_db == pytest.approx(0.0, abs=0.01)
    assert out[3].volume_db == -60.0  # beyond the end of the audio


def test_no_voiced_word_at_all_still_gives_numbers() -> None:
    out = measure_words(np.zeros(SAMPLE_RATE, np.float32), [word(0.1, 0.5)])
    assert out[0].volume_db == -60.0 and not out[0].voiced
    assert 100.0 <= out[0].pitch_hz <= 1000.0
    assert measure_words(np.zeros(10, np.float32), []) == []


@pytest.mark.slow
def test_real_speech(data_dir: Path, tmp_path: Path, whisper_model: WhisperModel) -> None:
    samples = extract_audio(data_dir / "jfk.flac", tmp_path, 60, 60)
    regions = detect_speech(samples, VadOptions())
    result = transcribe(samples, regions, whisper_model, TranscribeOptions(), lambda _: None)
    words = [w for s in result.segments for w in s.words]
    prosody = measure_words(samples, words)
    assert len(prosody) == len(words) == 22
    voiced = [p.pitch_hz for p in prosody if p.voiced]
    assert len(voiced) >= 18  # nearly every word of continuous speech has voiced frames
    # JFK declaims: his f0 here sits near 235 Hz (Praat with a 300 Hz ceiling agrees).
    assert 200.0 <= float(np.median(voiced)) <= 270.0
    assert all(-45.0 < p.volume_db < -5.0 for p in prosody)
