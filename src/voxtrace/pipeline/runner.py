"""The stage order and the contract's progress table, in one place.

    stage                         progress   what runs
    initialisation                 0 – 10    (caller) models, job set-up
    audio extraction              10 – 25    fetch (URL) or local file, probe, ffmpeg
    speech detection (VAD)        25 – 40    Silero VAD
    speaker identification        40 – 60    diarization (one speaker when switched off)
    transcript generation         60 – 75    faster-whisper, progress from its stream

Diarization runs in a thread beside transcription (onnxruntime and CTranslate2 both
release the GIL): on a GPU it hides entirely behind Whisper, on the CPU it fills the
cores beam search leaves idle. Progress shows the speakers stage until it is done,
then the transcript's, so it still climbs through the table's ranges in order.
    emotion and confidence        75 – 90    prosody, caption segments, emotion
    assembling the result         90 – 100   Result

The runner knows nothing of settings, stores or HTTP callbacks: it is handed its models
and options and reports `(progress, message)` through a callable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from voxtrace.domain import JobOptions, Result, Segment, SpeakerTurn, SpeechRegion
from voxtrace.errors import AudioExtractionError, MediaTooLong
from voxtrace.models import ModelBundle
from voxtrace.pipeline.assemble import DEFAULT_SPEAKER, build_segments
from voxtrace.pipeline.audio import SAMPLE_RATE, AudioOptions, extract_audio_streams, probe
from voxtrace.pipeline.captions import CaptionRules
from voxtrace.pipeline.fetch import FetchOptions, fetch, filename_from_url
from voxtrace.pipeline.prosody import measure_words
from voxtrace.pipeline.transcribe import TranscribeOptions, transcribe
from voxtrace.pipeline.vad import VadOptions, detect_speech, speech_probabilities

__all__ = [
    "STAGES",
    "AudioOptions",
    "PipelineOptions",
    "ProgressReporter",
    "StageTimer",
    "run_pipeline",
]

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
class PipelineOptions:
    fetch: FetchOptions = field(default_factory=FetchOptions)
    audio: AudioOptions = field(default_factory=AudioOptions)
    vad: VadOptions = field(default_factory=VadOptions)
    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    # Caption rules per language code (CaptionRules.for_language's defaults otherwise);
    # a job's own caption options override either.
    captions: dict[str, CaptionRules] = field(default_factory=dict)


StageTimer = Callable[[str, float], None]  # (stage name, wall seconds) once it ends


class ProgressReporter:
    """Integer progress that never goes backwards, mapped into each stage's range.

    With a `timer`, each stage's wall time is handed to it when the next one starts
    (and the last one's on `finish`): a stage that fails is not timed.
    """

    def __init__(self, report: Report, timer: StageTimer | None = None) -> None:
        self._report = report
        self._last = -1
        self._last_message = ""
        self._timer = timer
        self._stage: str | None = None
        self._stage_started = 0.0

    def emit(self, progress: float, message: str) -> None:
        value = max(0, min(100, int(progress)))
        if value < self._last:
            return  # late or out of order: never step back
        if value == self._last and message == self._last_message:
            return  # nothing new to tell
        self._last, self._last_message = value, message
        self._report(value, message)

    def stage(self, name: str) -> None:
        self.finish()
        self._stage, self._stage_started = name, time.monotonic()
        start, _, message = STAGES[name]
        self.emit(start, message)

    def finish(self) -> None:
        """The current stage is done: time it."""
        if self._stage is not None and self._timer is not None:
            self._timer(self._stage, time.monotonic() - self._stage_started)
        self._stage = None

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
    stage_timer: StageTimer | None = None,
) -> Result:
    """Process one video (an http(s) URL or a local path) into a Result; `stage_timer`
    hears each finished stage's wall time (the worker's metrics)."""
    progress = ProgressReporter(report, stage_timer)

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
    tracks = extract_audio_streams(
        media_path,
        work_dir,
        opts.audio.ffmpeg_timeout_s,
        opts.audio.max_duration_s,
        info.demuxer or None,
        info.audio_streams,
    )
    duration_s = max(info.duration_s or 0.0, max(t.shape[0] for t in tracks) / SAMPLE_RATE)

    progress.stage("vad")
    samples, regions = _track_with_speech(tracks, opts.vad)
    del tracks
    speech_prob = speech_probabilities(samples) if regions else None
    logger.info("Found %d speech regions", len(regions))

    progress.stage("speakers")
    transcribe_opts = opts.transcribe
    if job.language:
        transcribe_opts = replace(transcribe_opts, language=job.language)
    both = _TwoStages(progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="diarize") as pool:
        diarizing = pool.submit(both.run_speakers, _speaker_turns, samples, regions, models, job)
        try:
            transcription = transcribe(
                samples, regions, models.whisper, transcribe_opts, both.transcript, speech_prob
            )
        except BaseException:
            both.cancel()  # the diarizer stops at its next progress report
            raise
        turns = diarizing.result()

    progress.stage("analysis")
    words = [w for seg in transcription.segments for w in seg.words]
    prosody = measure_words(samples, words)
    language = transcription.language
    rules = opts.captions.get(language) or CaptionRules.for_language(language)
    rules = rules.with_overrides(job.to_dict())
    segments = build_segments(transcription, prosody, turns, rules)
    segments = _classify_emotions(segments, transcription.language, models)

    progress.stage("assemble")
    result = Result(
        filename=filename,
        duration_s=duration_s,
        language=transcription.language,
        segments=tuple(segments),
        speaker_turns=tuple(turns),
    )
    progress.finish()
    return result


def _track_with_speech(
    tracks: Sequence[npt.NDArray[np.float32]], vad: VadOptions
) -> tuple[npt.NDArray[np.float32], list[SpeechRegion]]:
    """The audio track with the most speech, and its speech regions.

    A file may carry music or silence on its first track and the voices on another (a
    dub, a commentary, a recorder's second microphone): the first track alone would
    give an empty transcript. Ties keep the earlier (default) track.
    """
    best = (tracks[0], detect_speech(tracks[0], vad))
    best_speech_s = _speech_s(best[1])
    for index, track in enumerate(tracks[1:], start=1):
        regions = detect_speech(track, vad)
        speech_s = _speech_s(regions)
        if speech_s > best_speech_s:
            logger.info("Audio track %d has the most speech (%.1f s)", index, speech_s)
            best, best_speech_s = (track, regions), speech_s
    return best


def _speech_s(regions: Sequence[SpeechRegion]) -> float:
    return sum(r.end_s - r.start_s for r in regions)


class _Cancelled(Exception):
    """Stops the diarizer thread once transcription has failed."""


class _TwoStages:
    """Progress of diarization and transcription running side by side: the speakers
    stage's range until diarization is done, then the transcript's (never backwards)."""

    def __init__(self, progress: ProgressReporter) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._speakers = 0.0
        self._transcript = 0.0
        self._cancelled = False
        self._transcribing = False

    def cancel(self) -> None:
        self._cancelled = True

    def run_speakers(
        self,
        stage: Callable[..., list[SpeakerTurn]],
        *args: object,
    ) -> list[SpeakerTurn]:
        """Run the speakers stage with this progress, and mark it done when it returns."""
        turns = stage(*args, self.speakers)
        self.speakers(1.0)
        return turns

    def speakers(self, fraction: float) -> None:
        if self._cancelled:
            raise _Cancelled
        with self._lock:
            self._speakers = fraction
            self._emit()

    def transcript(self, fraction: float) -> None:
        with self._lock:
            self._transcript = fraction
            self._emit()

    def _emit(self) -> None:
        if self._speakers < 1.0:
            self._progress.within("speakers", self._speakers)
            return
        if not self._transcribing:
            self._transcribing = True
            self._progress.stage("transcript")
        self._progress.within("transcript", self._transcript)


def _speaker_turns(
    samples: npt.NDArray[np.float32],
    regions: Sequence[SpeechRegion],
    models: ModelBundle,
    job: JobOptions,
    on_progress: Callable[[float], None],
) -> list[SpeakerTurn]:
    """Diarization hook: one speaker over all speech when diarization is switched off."""
    if not regions:
        return []
    if models.diarizer is None:
        logger.info("Diarization is off: every word goes to %s", DEFAULT_SPEAKER)
        return [SpeakerTurn(regions[0].start_s, regions[-1].end_s, DEFAULT_SPEAKER)]
    from voxtrace.pipeline.diarize import SpeakerHints, diarize

    hints = SpeakerHints(
        num_speakers=job.num_speakers,
        min_speakers=job.min_speakers,
        max_speakers=job.max_speakers,
    )
    return list(diarize(samples, regions, models.diarizer, hints, on_progress))


def _classify_emotions(
    segments: list[Segment], language: str, models: ModelBundle
) -> list[Segment]:
    """Emotion hook: segments come back with `emotion` set, or unchanged without a model.

    Each segment's words already carry their volume and pitch, which the classifier uses
    as a per-speaker arousal cue.
    """
    if models.emotion is None or not segments:
        return segments
    from voxtrace.pipeline.emotion import with_emotions

    return list(with_emotions(segments, language, models.emotion))
