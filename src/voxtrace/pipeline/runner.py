"""The stage order and the contract's progress table, in one place.

    stage                         progress   what runs
    initialisation                 0 – 10    (caller) models, job set-up
    audio extraction              10 – 25    fetch (URL) or local file, probe, ffmpeg
    speech detection (VAD)        25 – 40    Silero VAD
    speaker identification        40 – 60    diarization (one speaker when no diarizer)
    transcript generation         60 – 75    faster-whisper, progress from its stream
    emotion and confidence        75 – 90    prosody, caption segments, emotion
    assembling the result         90 – 100   Result

The runner knows nothing of settings, stores or HTTP callbacks: it is handed its models
and options and reports `(progress, message)` through a callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from voxtrace.domain import JobOptions, Result, Segment, SpeakerTurn, SpeechRegion
from voxtrace.errors import AudioExtractionError, MediaTooLong
from voxtrace.models import ModelBundle
from voxtrace.pipeline.assemble import DEFAULT_SPEAKER, SegmentRules, build_segments
from voxtrace.pipeline.audio import SAMPLE_RATE, extract_audio, probe
from voxtrace.pipeline.fetch import FetchOptions, fetch, filename_from_url
from voxtrace.pipeline.prosody import measure_words
from voxtrace.pipeline.transcribe import TranscribeOptions, transcribe
from voxtrace.pipeline.vad import VadOptions, detect_speech

if TYPE_CHECKING:
    from voxtrace.pipeline.emotion import EmotionPrefetch

__all__ = ["STAGES", "AudioOptions", "PipelineOptions", "ProgressReporter", "run_pipeline"]

logger = logging.getLogger(__name__)

Report = Callable[[int, str], None]

# (start %, end %, message) per stage, as in the contract's table.
STAGES: dict[str, tuple[int, int, str]] = {
    "init": (0, 10, "Initializing..."),
    "audio": (10, 25, "Extracting audio..."),
    "vad": (25, 40, "Detecting speech regions..."),
    "speakers": (40, 60, "Identifying speakers..."),
    "transcript": (60, 75, "Generating transcript..."),
    "analysis": (75, 90, "Analyzing emotion and confidence..."),
    "assemble": (90, 100, "Assembling results..."),
}


@dataclass(frozen=True)
class AudioOptions:
    ffmpeg_timeout_s: float = 600.0
    max_duration_s: float = 60 * 60.0


@dataclass(frozen=True)
class PipelineOptions:
    fetch: FetchOptions = field(default_factory=FetchOptions)
    audio: AudioOptions = field(default_factory=AudioOptions)
    vad: VadOptions = field(default_factory=VadOptions)
    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    segments: SegmentRules = field(default_factory=SegmentRules)


class ProgressReporter:
    """Integer progress that never goes backwards, mapped into each stage's range."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self._last = -1
        self._last_message = ""

    def emit(self, progress: float, message: str) -> None:
        value = max(0, min(100, int(progress)))
        if value < self._last:
            return  # late or out of order: never step back
        if value == self._last and message == self._last_message:
            return  # nothing new to tell
        self._last, self._last_message = value, message
        self._report(value, message)

    def stage(self, name: str) -> None:
        start, _, message = STAGES[name]
        self.emit(start, message)

    def within(self, name: str, fraction: float) -> None:
        start, end, message = STAGES[name]
        self.emit(start + (end - start) * min(1.0, max(0.0, fraction)), message)


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in ("http", "https")


def run_pipeline(
    source: str,
    work_dir: Path,
    models: ModelBundle,
    opts: PipelineOptions,
    job: JobOptions,
    report: Report,
) -> Result:
    """Process one video (an http(s) URL or a local path) into a Result."""
    progress = ProgressReporter(report)

    progress.stage("audio")
    if _is_url(source):
        filename = filename_from_url(source)
        media_path = fetch(source, work_dir, opts.fetch)
    else:
        media_path = Path(source)
        filename = media_path.name or "video.mp4"
        if not media_path.is_file():
            raise AudioExtractionError("Audio extraction failed: file not found")
    progress.within("audio", 0.5)
    info = probe(media_path, opts.audio.ffmpeg_timeout_s)
    if not info.has_audio:
        raise AudioExtractionError("Audio extraction failed: no audio stream")
    if info.duration_s is not None and info.duration_s > opts.audio.max_duration_s:
        raise MediaTooLong()
    samples = extract_audio(
        media_path, work_dir, opts.audio.ffmpeg_timeout_s, opts.audio.max_duration_s
    )
    duration_s = max(info.duration_s or 0.0, samples.shape[0] / SAMPLE_RATE)

    progress.stage("vad")
    regions = detect_speech(samples, opts.vad)
    logger.info("Found %d speech regions", len(regions))

    progress.stage("speakers")
    turns = _speaker_turns(
        samples, regions, models, job, lambda fraction: progress.within("speakers", fraction)
    )

    progress.stage("transcript")
    transcribe_opts = opts.transcribe
    if job.language:
        transcribe_opts = replace(transcribe_opts, language=job.language)
    with _emotion_prefetch(models, job, turns, opts.segments) as prefetch:
        transcription = transcribe(
            samples,
            regions,
            models.whisper,
            transcribe_opts,
            lambda fraction: progress.within("transcript", fraction),
            prefetch.add if prefetch is not None else None,
        )
    known = prefetch.embeddings() if prefetch is not None else {}

    progress.stage("analysis")
    words = [w for seg in transcription.segments for w in seg.words]
    prosody = measure_words(samples, words)
    segments = build_segments(transcription, prosody, turns, opts.segments)
    segments = _classify_emotions(segments, transcription.language, models, known)

    progress.stage("assemble")
    return Result(
        filename=filename,
        duration_s=duration_s,
        language=transcription.language,
        segments=tuple(segments),
    )


def _speaker_turns(
    samples: npt.NDArray[np.float32],
    regions: Sequence[SpeechRegion],
    models: ModelBundle,
    job: JobOptions,
    on_progress: Callable[[float], None],
) -> list[SpeakerTurn]:
    """Diarization hook: one speaker over all speech when no diarizer is loaded."""
    if not regions:
        return []
    if models.diarizer is None:
        return [SpeakerTurn(regions[0].start_s, regions[-1].end_s, DEFAULT_SPEAKER)]
    from voxtrace.pipeline.diarize import SpeakerHints, diarize

    hints = SpeakerHints(
        num_speakers=job.num_speakers,
        min_speakers=job.min_speakers,
        max_speakers=job.max_speakers,
    )
    return list(diarize(samples, regions, models.diarizer, hints, on_progress))


@contextmanager
def _emotion_prefetch(
    models: ModelBundle, job: JobOptions, turns: Sequence[SpeakerTurn], rules: SegmentRules
) -> Iterator[EmotionPrefetch | None]:
    """Caption texts encoded while Whisper decodes, when the text model will be used."""
    if models.emotion is None or (job.language and not models.emotion.covers(job.language)):
        yield None
        return
    from voxtrace.pipeline.emotion import EmotionPrefetch

    with EmotionPrefetch(models.emotion, turns, rules) as prefetch:
        yield prefetch


def _classify_emotions(
    segments: list[Segment],
    language: str,
    models: ModelBundle,
    known: Mapping[str, npt.NDArray[np.float32]],
) -> list[Segment]:
    """Emotion hook: segments come back with `emotion` set, or unchanged without a model.

    Each segment's words already carry their volume and pitch, which the classifier uses
    as a per-speaker arousal cue.
    """
    if models.emotion is None or not segments:
        return segments
    from voxtrace.pipeline.emotion import with_emotions

    return list(with_emotions(segments, language, models.emotion, known))
