"""Transcribe the speech regions with faster-whisper, with word timestamps.

This is what faster-whisper's `vad_filter=True` does, but with the regions our own VAD
stage found: the speech is concatenated, decoded once, and every segment and word time is
mapped back onto the original timeline. Segments are consumed as a stream so that
progress follows the decoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from voxtrace.domain import SpeechRegion, TranscribedSegment, TranscribedWord, Transcription
from voxtrace.errors import TranscriptionError
from voxtrace.pipeline.audio import SAMPLE_RATE

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment as RawSegment
    from faster_whisper.vad import SpeechTimestampsMap

__all__ = ["TranscribeOptions", "transcribe"]

logger = logging.getLogger(__name__)

_AUTO_LANGUAGES = frozenset({"", "auto"})


@dataclass(frozen=True)
class TranscribeOptions:
    """All decoding choices in one place (faster-whisper's defaults unless noted)."""

    language: str | None = None  # ISO code; None or "auto" = detect
    beam_size: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    # Skip silent stretches > 2 s inside a window when a hallucination is suspected.
    hallucination_silence_threshold: float | None = 2.0
    # A segment whose decoder thinks it is probably not speech AND whose words are all
    # unsure is dropped (typical "Thank you." on noise).
    drop_no_speech_prob: float = 0.5
    drop_max_word_probability: float = 0.5


def _language(code: str | None) -> str | None:
    if code is None or code.strip().lower() in _AUTO_LANGUAGES:
        return None
    return code.strip().lower()


def transcribe(
    samples: npt.NDArray[np.float32],
    regions: Sequence[SpeechRegion],
    model: WhisperModel,
    opts: TranscribeOptions,
    on_progress: Callable[[float], None],
    on_segment: Callable[[TranscribedSegment], None] | None = None,
) -> Transcription:
    """Decode the speech in `regions`; `on_progress(fraction)` follows each segment, and
    `on_segment` (optional) gets each segment as soon as it is decoded."""
    from faster_whisper.vad import SpeechTimestampsMap, collect_chunks

    chunks = [
        {"start": round(r.start_s * SAMPLE_RATE), "end": round(r.end_s * SAMPLE_RATE)}
        for r in regions
    ]
    chunks = [c for c in chunks if c["end"] > c["start"]]
    language = _language(opts.language)
    if not chunks:
        return Transcription(language=language or "", language_probability=0.0, segments=())

    audio_chunks, _ = collect_chunks(samples, chunks, sampling_rate=SAMPLE_RATE)
    speech = np.concatenate(audio_chunks).astype(np.float32, copy=False)
    speech_s = speech.shape[0] / SAMPLE_RATE
    ts_map = SpeechTimestampsMap(chunks, SAMPLE_RATE)

    segments: list[TranscribedSegment] = []
    try:
        stream, info = model.transcribe(
            speech,
            language=language,
            beam_size=opts.beam_size,
            temperature=list(opts.temperatures),
            compression_ratio_threshold=opts.compression_ratio_threshold,
            log_prob_threshold=opts.log_prob_threshold,
            no_speech_threshold=opts.no_speech_threshold,
            condition_on_previous_text=opts.condition_on_previous_text,
            hallucination_silence_threshold=opts.hallucination_silence_threshold,
            word_timestamps=True,
            vad_filter=False,
        )
        for raw in stream:
            on_progress(min(1.0, max(0.0, float(raw.end) / speech_s)))
            segment = _restore(raw, ts_map, opts)
            if segment is not None:
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
    except (RuntimeError, ValueError, IndexError) as exc:
        logger.debug("Transcription failed: %s", exc)
        raise TranscriptionError() from None
    on_progress(1.0)
    return Transcription(
        language=str(info.language),
        language_probability=float(info.language_probability),
        segments=tuple(segments),
    )


def _restore(
    raw: RawSegment, ts_map: SpeechTimestampsMap, opts: TranscribeOptions
) -> TranscribedSegment | None:
    """Map one faster-whisper segment back onto the original timeline, or drop it."""
    words: list[TranscribedWord] = []
    for word in raw.words or ():
        if not word.word.strip():
            continue
        # Resolve start and end in the same chunk, as faster-whisper does.
        chunk_index = ts_map.get_chunk_index((word.start + word.end) / 2)
        start_s = float(ts_map.get_original_time(word.start, chunk_index))
        end_s = float(ts_map.get_original_time(word.end, chunk_index))
        words.append(
            TranscribedWord(
                text=str(word.word),
                start_s=start_s,
                end_s=max(start_s, end_s),
                probability=float(word.probability),
            )
        )
    if not words:
        return None
    if float(raw.no_speech_prob) > opts.drop_no_speech_prob and (
        max(w.probability for w in words) < opts.drop_max_word_probability
    ):
        logger.debug("Dropped a probable non-speech segment")
        return None
    return TranscribedSegment(
        start_s=words[0].start_s,
        end_s=words[-1].end_s,
        text=str(raw.text).strip(),
        words=tuple(words),
    )
