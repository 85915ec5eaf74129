"""Find speech with the Silero VAD that faster-whisper bundles (ONNX, no torch).

The regions found here drive everything downstream: diarization and transcription both
see only speech, and transcription does not run a second VAD pass of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxtrace.domain import SpeechRegion
from voxtrace.pipeline.audio import SAMPLE_RATE

__all__ = ["VAD_WINDOW_SAMPLES", "VadOptions", "detect_speech", "speech_probabilities"]

VAD_WINDOW_SAMPLES = 512  # Silero's window at 16 kHz: one probability per 32 ms


@dataclass(frozen=True)
class VadOptions:
    """Defaults are faster-whisper's `vad_filter=True` defaults, its tuned baseline."""

    threshold: float = 0.5
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = math.inf
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400


def detect_speech(samples: npt.NDArray[np.float32], opts: VadOptions) -> list[SpeechRegion]:
    """Speech regions in seconds, in order, non-overlapping; [] for silence."""
    from faster_whisper.vad import VadOptions as SileroOptions
    from faster_whisper.vad import get_speech_timestamps

    if samples.size == 0:
        return []
    silero = SileroOptions(
        threshold=opts.threshold,
        min_speech_duration_ms=opts.min_speech_duration_ms,
        max_speech_duration_s=opts.max_speech_duration_s,
        min_silence_duration_ms=opts.min_silence_duration_ms,
        speech_pad_ms=opts.speech_pad_ms,
    )
    chunks = get_speech_timestamps(samples, silero, sampling_rate=SAMPLE_RATE)
    return [
        SpeechRegion(start_s=chunk["start"] / SAMPLE_RATE, end_s=chunk["end"] / SAMPLE_RATE)
        for chunk in chunks
        if chunk["end"] > chunk["start"]
    ]


def speech_probabilities(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Silero's speech probability per `VAD_WINDOW_SAMPLES` window of the whole audio:
    the evidence transcription checks its segments against."""
    from faster_whisper.vad import get_vad_model

    if samples.size == 0:
        return np.zeros(0, dtype=np.float32)
    padded = np.pad(samples, (0, -samples.shape[0] % VAD_WINDOW_SAMPLES))
    probabilities = get_vad_model()(padded)
    return np.asarray(probabilities, dtype=np.float32).reshape(-1)
