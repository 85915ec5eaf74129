"""Typed records passed between the parts of voxtrace. Units are in the names.

Imports nothing of ours: every other module may depend on this one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TERMINAL_STATUSES",
    "Emotion",
    "Job",
    "JobOptions",
    "JobStatus",
    "NewJob",
    "OutboxItem",
    "QueueStats",
    "Result",
    "Segment",
    "SpeakerTurn",
    "SpeechRegion",
    "TranscribedSegment",
    "TranscribedWord",
    "Transcription",
    "Word",
    "WordProsody",
]


class JobStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})


# ---------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobOptions:
    """Per-job choices a request may make (all optional)."""

    language: str | None = None  # ISO code; None = detect
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    # Caption shape (None = the language's default; see pipeline/captions.py)
    max_chars_per_line: int | None = None
    max_lines: int | None = None
    max_caption_s: float | None = None
    max_chars_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobOptions:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class NewJob:
    """What an accepted request puts into the job store."""

    job_id: str
    video_url: str
    callback_base_url: str
    options: JobOptions = field(default_factory=JobOptions)


@dataclass(frozen=True)
class Job:
    """A job as the store knows it."""

    job_id: str
    video_url: str
    callback_base_url: str
    options: JobOptions
    status: JobStatus
    progress: int
    message: str
    attempts: int
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    result: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    not_before: float | None = None  # an accepted retry waits until then; None = at once

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class QueueStats:
    accepted: int
    processing: int
    completed: int
    failed: int
    callbacks_pending: int

    @property
    def unfinished(self) -> int:
        return self.accepted + self.processing


@dataclass(frozen=True)
class OutboxItem:
    """One callback waiting to be delivered (the durable outbox)."""

    id: int
    job_id: str
    seq: int  # 1, 2, 3 ... within the job: delivery order and idempotency key
    base_url: str  # the job's callback base; the dispatcher appends the configured path
    payload: dict[str, Any]
    terminal: bool
    attempts: int
    created_at: float
    next_attempt_at: float


# ------------------------------------------------------------------- pipeline data


@dataclass(frozen=True)
class SpeechRegion:
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SpeakerTurn:
    """A stretch of one speaker's voice. Turns of different speakers may overlap; where
    they do, the likelier voice's turn is `dominant` and the other's is not."""

    start_s: float
    end_s: float
    speaker_id: str
    dominant: bool = True


@dataclass(frozen=True)
class TranscribedWord:
    text: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True)
class TranscribedSegment:
    start_s: float
    end_s: float
    text: str
    words: tuple[TranscribedWord, ...]
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class Transcription:
    language: str
    language_probability: float
    segments: tuple[TranscribedSegment, ...]


@dataclass(frozen=True)
class WordProsody:
    volume_db: float  # RMS dBFS, within [-60, 0]
    pitch_hz: float  # median f0, within [100, 1000]
    voiced: bool  # False when the pitch is a fallback value
    pitch_hz_raw: float | None = None  # the measured median f0, unclamped; None = unvoiced


@dataclass(frozen=True)
class Emotion:
    label: str
    confidence: float
    probabilities: dict[str, float]
    source: str = "text"  # "text": text model (+ voice); "voice": voice-only fallback


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float
    confidence: float
    speaker_id: str
    volume_db: float
    pitch_hz: float
    voiced: bool = True
    pitch_hz_raw: float | None = None  # measured f0; None when unvoiced


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    speaker_id: str
    text: str
    words: tuple[Word, ...]
    confidence: float
    emotion: Emotion | None = None
    lines: tuple[str, ...] = ()  # the caption's suggested lines (joined they give `text`)


@dataclass(frozen=True)
class Result:
    filename: str
    duration_s: float
    language: str
    segments: tuple[Segment, ...]
    # the diarization's own turns (overlap included), for RTTM; segments carry the ids
    speaker_turns: tuple[SpeakerTurn, ...] = ()
